"""ShotFrustums: each view's current image drawn where it was taken, from the calibration
when the view is calibrated, else from the simulated C-arm's truth of that very shot, else
not at all; one render per batch of changes. Ground truth: the simulator (block phantom,
256² image intensifier) and the real calibration pipeline on its shots."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from app.scene_shots import ShotFrustums, actor_name
from app.session import Session
from core.imaging.fluoro_image import FluoroImage
from core.calibration.frustum import frustum_from_geometry

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def simulated():
    import torch
    torch.set_num_threads(2)
    from core.calibration import calibrate
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), shape=(256, 256))
    shots = {v: sim.acquire(v) for v in ("ap", "lat")}
    cal = calibrate(sim.cage, {v: s.image.pixels for v, s in shots.items()},
                    {v: s.distortion for v, s in shots.items()})
    return sim, shots, cal


@pytest.fixture
def scene(module_scene_view):
    return module_scene_view


@pytest.fixture
def shots3d(scene, simulated, tmp_path, qtbot):
    sim, _, _ = simulated
    session = Session(tmp_path / "sessions", save_images=False)
    T = {"now": sim.T_world_cage}
    s = ShotFrustums(scene, session, lambda: T["now"])
    renders = []
    original = scene.render
    scene.render = lambda *a, **k: (renders.append(1), original(*a, **k))
    yield s, session, renders
    del scene.render
    for name in list(scene.actor_names()):
        scene.remove_actor(name)


def settle(qtbot, s):
    qtbot.waitUntil(lambda: not s._pending, timeout=3000)


def test_truth_then_calibration_then_back(shots3d, simulated, qtbot, caplog):
    s, session, renders = shots3d
    sim, shots, cal = simulated
    scene = s.scene_view
    caplog.set_level(logging.INFO, logger="app.scene_shots")
    # an image alone (no calibration, no truth) has no place in 3D: said once, calmly
    session.set_image("ap", shots["ap"].image)
    settle(qtbot, s)
    assert actor_name("ap") not in scene.actor_names() and "not calibrated" in s.status["ap"]
    said = [r for r in caplog.records if "not shown in 3D" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    # the simulated C-arm's truth of that shot: drawn at the true source and detector
    renders.clear()
    for v in ("ap", "lat"):
        session.set_image(v, shots[v].image)
        s.set_truth(v, {"shot": shots[v], "cage": sim.cage})
    settle(qtbot, s)
    assert len(renders) == 1                                  # four changes, one frame
    for v in ("ap", "lat"):
        assert actor_name(v) in scene.actor_names() and s.status[v] == "the simulated C-arm"
        truth = frustum_from_geometry(shots[v].geometry_world, shots[v].distortion)
        assert np.abs(s.frustums[v].points_mm - truth.points_mm).max() < 1e-6
        assert s.actors[v].shows_image
    # calibrated: the calibration's camera, placed with T_scene_cage (the cage pose of the shots)
    assembly = s.actors["ap"].assembly
    session.set_calibration(cal)
    settle(qtbot, s)
    balls = np.concatenate([p.balls_mm for p in sim.cage.planes])
    world = balls @ sim.T_world_cage[:3, :3].T + sim.T_world_cage[:3, 3]
    for v in ("ap", "lat"):
        f, shot = s.frustums[v], shots[v]
        assert s.status[v].startswith("calibration") and "SID 1000" in s.status[v]
        assert np.linalg.norm(f.source_mm - shot.geometry_world.source_mm) < 3.0
        true_uv = shot.project_raw(balls)
        seen = shot.in_field(true_uv, 4)
        err = np.linalg.norm(f.pixel_at(world)[seen] - true_uv[seen], axis=1)
        assert seen.sum() > 40 and err.max() < 1.0          # a ball is seen on its own pixel
    assert s.actors["ap"].assembly is assembly                # updated in place
    # a later AP shot at other C-arm angles is not where the calibration says: its own truth is used,
    # and without one it is not drawn (and the status says why)
    turned = sim.acquire("ap", 15.0, 0.0)
    session.set_image("ap", turned.image)
    settle(qtbot, s)
    assert actor_name("ap") not in scene.actor_names() and "other C-arm angles (+15.0° / +0.0°)" in s.status["ap"]
    s.set_truth("ap", {"shot": turned})
    settle(qtbot, s)
    assert s.status["ap"] == "the simulated C-arm"
    assert np.abs(s.frustums["ap"].source_mm - turned.geometry_world.source_mm).max() < 1e-9
    session.set_image("ap", shots["ap"].image)                # back to the calibrated shot
    settle(qtbot, s)
    assert s.status["ap"].startswith("calibration")
    # the calibration dropped (the cage moved): back to the simulated truth
    session.set_calibration(None)
    settle(qtbot, s)
    assert s.status["ap"] == "the simulated C-arm"
    assert np.abs(s.frustums["ap"].source_mm - shots["ap"].geometry_world.source_mm).max() < 1e-9


def test_images_without_a_place_are_removed_and_the_toggle_hides_images(shots3d, simulated, qtbot):
    s, session, renders = shots3d
    sim, shots, cal = simulated
    scene = s.scene_view
    for v in ("ap", "lat"):
        session.set_image(v, shots[v].image)
        s.set_truth(v, {"shot": shots[v]})
    settle(qtbot, s)
    assert {actor_name("ap"), actor_name("lat")} <= set(scene.actor_names())
    # the same shot read back from its file (the Shots strip: new pixels, same acquisition time)
    again = replace(shots["ap"].image, pixels=shots["ap"].image.pixels.copy())
    session.set_image("ap", again)
    settle(qtbot, s)
    assert s.status["ap"] == "the simulated C-arm" and actor_name("ap") in scene.actor_names()
    # another AP image that no truth knows (a file): the AP shot leaves the 3D view, LAT stays
    other = replace(shots["ap"].image, pixels=shots["ap"].image.pixels.copy(), acquired_at=None)
    session.set_image("ap", other)
    settle(qtbot, s)
    assert actor_name("ap") not in scene.actor_names() and actor_name("lat") in scene.actor_names()
    # calibrated, but an image of another size than the calibrated one: not placed, and why
    session.set_calibration(cal)
    session.set_image("ap", FluoroImage(np.full((128, 128), 1000, np.uint16), view="ap"))
    settle(qtbot, s)
    assert actor_name("ap") not in scene.actor_names() and "not the size" in s.status["ap"]
    assert s.status["lat"].startswith("calibration")
    # "Images in 3D" off: the images go, the beams stay; on again: back
    s.set_images_visible(False)
    lat = s.actors["lat"]
    assert not lat.shows_image and lat.line_actor.GetVisibility()
    session.set_image("lat", shots["lat"].image)      # a new image while off stays hidden
    settle(qtbot, s)
    assert not lat.shows_image
    s.set_images_visible(True)
    assert lat.shows_image
    # a truth message without a shot is ignored
    s.set_truth("ap", {})
    s.set_truth("xx", {"shot": shots["ap"]})
    settle(qtbot, s)
    assert actor_name("ap") not in scene.actor_names()
