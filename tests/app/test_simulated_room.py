"""The simulated room: the robot holds the cage; a jog moves the balls in the next shot by the
projected amount; a moved cage invalidates the calibration; requests run in the C-arm's thread."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from app.config import load_defaults
from app.devices_controller import DevicesController
from app.session import Session
from app.simulated_room import SimulatedRoom, T_world_base_holding, cage_pose_change, robot_home_q
from core.geometry.rigid import from_euler, make_transform
from core.robot.kinematics.hybrid5 import load_hybrid5
from devices.carm import SimulatedCArm

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def kin():
    return load_hybrid5()


def test_base_placement_makes_the_held_cage_coincide_with_the_given_pose(kin):
    q0 = robot_home_q(kin)
    T_world_cage = make_transform(from_euler("xyz", [0.3, -0.2, 1.1])[:3, :3], [12.0, 250.0, -40.0])
    T_world_base = T_world_base_holding(kin, q0, T_world_cage)
    assert np.abs(T_world_base @ kin.cage(q0) - T_world_cage).max() < 1e-9
    # a +10 mm jog along the base x moves the cage 10 mm along the base's x axis in the world
    q1 = kin.joints_for_pose(kin.pose(q0) + np.array([10.0, 0, 0, 0, 0]))
    moved = T_world_base @ kin.cage(q1)
    assert moved[:3, 3] - T_world_cage[:3, 3] == pytest.approx(10.0 * T_world_base[:3, 0], abs=1e-6)
    mm, deg = cage_pose_change(T_world_cage, moved)
    assert mm == pytest.approx(10.0, abs=1e-6) and deg == pytest.approx(0.0, abs=1e-6)


def test_bad_cage_pose_is_refused(kin):
    with pytest.raises(ValueError, match="finite 4x4"):
        T_world_base_holding(kin, robot_home_q(kin), np.eye(3))
    T = np.eye(4)
    T[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite 4x4"):
        T_world_base_holding(kin, robot_home_q(kin), T)


class ThreadCheckedCArm(SimulatedCArm):
    """The simulated C-arm, noting the thread of each cage-pose change and acquisition."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.threads = []

    def set_cage_pose(self, T):
        self.threads.append(("cage", threading.get_ident()))
        super().set_cage_pose(T)

    def acquire(self, view, **kw):
        self.threads.append(("acquire", threading.get_ident()))
        return super().acquire(view, **kw)


@pytest.fixture
def room(qtbot, kin, tmp_path):
    session = Session(tmp_path, save_images=False)
    devices = DevicesController(load_defaults(), session)
    carm = ThreadCheckedCArm(seed=0, shape=(256, 256), latency_s=0.0)
    devices.add_device("carm", lambda: carm)
    qtbot.waitUntil(lambda: session.device_ready("carm"), timeout=60000)
    room = SimulatedRoom(devices, session, kin, robot_home_q(kin))
    with qtbot.waitSignal(room.scene_ready, timeout=60000):
        room.request_scene(step_mm=4.0)
    shots = {}
    devices.simulated_shot.connect(lambda view, truth: shots.__setitem__(view, truth["shot"]))
    yield room, devices, session, carm, shots
    devices.shutdown()


def _shoot(qtbot, devices, shots, view):
    shots.pop(view, None)
    devices.acquire(view)
    qtbot.waitUntil(lambda: view in shots, timeout=30000)
    return shots[view]


def test_jog_moves_the_balls_in_the_next_shot_and_invalidates_the_calibration(room, qtbot, kin, caplog):
    room, devices, session, carm, shots = room
    q0 = robot_home_q(kin)
    assert np.abs(room.T_world_base @ kin.cage(q0) - room.scene["T_world_cage"]).max() < 1e-9
    assert len(room.scene["mesh"]) > 1000  # the bone surface came from the C-arm's thread
    room.robot_moved(q0)  # the robot at home: the cage stays where the simulator put it
    before = _shoot(qtbot, devices, shots, "ap")
    assert np.abs(before.T_world_cage - room.scene["T_world_cage"]).max() < 1e-9
    session.set_calibration({"rms_px": 0.2})  # calibrated on this shot's cage pose
    assert "plan" in session.allowed_steps()

    q1 = kin.joints_for_pose(kin.pose(q0) + np.array([10.0, 0, 0, 0, 0]))  # jog +10 mm in x
    with caplog.at_level(logging.WARNING, logger="app.simulated_room"):
        room.robot_state({"q": q1})
    after = _shoot(qtbot, devices, shots, "ap")
    balls = np.concatenate([p.balls_mm for p in room.scene["cage"].planes])
    # expected: the same pinhole, the cage where kinematics says the robot put it
    T_expected = room.T_world_base @ kin.cage(q1)
    uv_expected = before.geometry_world.project(balls @ T_expected[:3, :3].T + T_expected[:3, 3])
    if before.distortion is not None:
        uv_expected = after.distortion.ideal_to_raw(uv_expected)
    uv_before, uv_after = before.project_raw(balls), after.project_raw(balls)
    moved_px = np.linalg.norm(uv_after - uv_before, axis=1)
    assert moved_px.min() > 2.0, "a 10 mm move must show in the image"
    assert np.abs(uv_after - uv_expected).max() < 0.1
    # the image itself: each well-separated ball's dark disc is found at its new place
    from core.calibration.beads import density_of, refine_centre
    d = density_of(after.image.pixels.astype(np.float32))
    r_px = 0.5 * room.scene["cage"].ball_diameter_mm * 1.6 / after.image.pixel_spacing_mm[0]
    sep = np.linalg.norm(uv_after[:, None] - uv_after[None], axis=2) + 1e9 * np.eye(len(uv_after))
    lone = np.flatnonzero((sep.min(axis=1) > 6 * r_px) & after.in_field(uv_after, 4 * r_px))
    assert len(lone) >= 5
    found = [refine_centre(d, uv_after[i], r_px)[0] for i in lone]
    err = [np.linalg.norm(np.asarray(f) - uv_after[i]) for f, i in zip(found, lone) if f is not None]
    assert len(err) >= 5 and np.median(err) < 0.5
    # the calibration no longer matches: cleared, the Plan step asks for it, the log says why
    assert session.calibration is None and "plan" not in session.allowed_steps()
    assert session.step_blocker("plan") == "calibrate the cage first"
    assert any("moved the cage by 10.0 mm" in r.getMessage() for r in caplog.records)
    # every driver call ran in the C-arm's thread, none on this (the GUI) thread
    assert {t for _, t in carm.threads} and threading.get_ident() not in {t for _, t in carm.threads}
    assert [k for k, _ in carm.threads][-2:] == ["cage", "acquire"]


def test_a_small_move_keeps_the_calibration(room, qtbot, kin):
    room, devices, session, carm, shots = room
    q0 = robot_home_q(kin)
    room.robot_moved(q0)
    _shoot(qtbot, devices, shots, "lat")
    session.set_calibration({"rms_px": 0.2})
    room.robot_moved(kin.joints_for_pose(kin.pose(q0) + np.array([0.01, 0, 0, 0, 0])))
    assert session.calibration == {"rms_px": 0.2}


def test_carm_pose_runs_in_its_thread_and_bad_angles_come_back_as_one_line(room, qtbot):
    room, devices, session, carm, shots = room
    answers = []
    devices.set_carm_pose(20.0, -10.0, lambda r, err: answers.append(err))
    qtbot.waitUntil(lambda: len(answers) == 1, timeout=5000)
    assert answers == [""] and (carm.primary_deg, carm.secondary_deg) == (20.0, -10.0)
    shot = _shoot(qtbot, devices, shots, "ap")
    assert shot.image.primary_angle_deg == 20.0 and shot.image.secondary_angle_deg == -10.0
    devices.set_carm_pose(150.0, 0.0, lambda r, err: answers.append(err))
    qtbot.waitUntil(lambda: len(answers) == 2, timeout=5000)
    assert "out of range" in answers[1] and carm.primary_deg == 20.0
    from devices.base import DeviceError
    with pytest.raises(DeviceError, match="tracker is not running"):
        devices.call("tracker", lambda d: None)
