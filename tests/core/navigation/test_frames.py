"""The calibration in the robot base frame: survives robot motion, falls on a C-arm move."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.calibration.cage import load_cage
from core.calibration.calibration import CageCalibration, PlaneFit, ViewCalibration
from core.calibration.distortion import NoDistortion
from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import apply, from_euler, invert
from core.imaging.fluoro_image import FluoroImage
from core.navigation.frames import BaseFrameCalibration, CArmMovedError, FrameError
from core.planning.two_view import Trajectory
from core.robot.kinematics.hybrid5 import load_hybrid5
from resources import path as resource_path

SHAPE = (256, 256)
SPACING = 0.9
ISO_CAGE = np.array([0.0, 0.0, -140.0])      # the vertebra, in the cage frame at the shots


def geometry(view, iso, sod=625.0, sid=1000.0):
    """A C-arm view in the cage frame: AP from above (-z beam), LAT from -x (+x beam)."""
    beam, u, v = {"ap": ([0, 0, -1.0], [1.0, 0, 0], [0, 1.0, 0]),
                  "lat": ([1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0])}[view]
    beam, u, v = (np.array(a) for a in (beam, u, v))
    src = iso - sod * beam
    centre = iso + (sid - sod) * beam
    origin = centre - (SHAPE[1] - 1) / 2 * SPACING * u - (SHAPE[0] - 1) / 2 * SPACING * v
    return ConeBeamGeometry(src, origin, u, v, (SPACING, SPACING), SHAPE)


def calibration_of(geoms, cage, method="3d2d") -> CageCalibration:
    """The exact calibration of known pinholes: P and each ball plane's homography."""
    views = {}
    for view, g in geoms.items():
        P = g.projection_matrix
        planes = []
        for p in cage.planes_for(view):
            M = np.zeros((4, 3))
            M[:3, 0], M[:3, 1], M[:3, 2], M[3, 2] = p.axes[0], p.axes[1], p.origin_mm, 1.0
            n = p.n_balls
            planes.append(PlaneFit(p.id, p.origin_mm, p.axes, P @ M, np.arange(n), np.zeros((n, 2)),
                                   np.zeros(n), np.zeros(n), n))
        views[view] = ViewCalibration(view, SHAPE, NoDistortion(), P, planes)
    return CageCalibration(method, views)


@pytest.fixture(scope="module")
def setup():
    k = load_hybrid5()
    cage = load_cage(resource_path("cages", "default.json"))
    q0 = k.joints_for_pose([625.0, 475.0, -135.0, 0.0, 0.0])
    geoms_cage = {v: geometry(v, ISO_CAGE) for v in ("ap", "lat")}
    T0 = k.cage(q0)
    geoms_base = {v: g.transformed(T0) for v, g in geoms_cage.items()}   # the C-arm, fixed in base
    calib = calibration_of(geoms_cage, cage)
    bf = BaseFrameCalibration(calib, k, q0, {"ap": (0.0, 0.0), "lat": (90.0, 0.0)})
    q1 = k.joints_for_pose([650.0, 455.0, -120.0, math.radians(6), math.radians(-4)])
    return k, cage, q0, q1, calib, bf, geoms_base


def test_rays_locate_and_project_are_in_base(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    rng = np.random.default_rng(3)
    pts = bf.to_base(ISO_CAGE) + rng.uniform(-40, 40, (20, 3))
    uv = {v: gb[v].project(pts) for v in ("ap", "lat")}
    proj = bf.project(pts)
    for v in ("ap", "lat"):
        assert np.abs(proj[v] - uv[v]).max() < 1e-6
    located, gaps = bf.locate_many(uv["ap"], uv["lat"])
    assert np.abs(located - pts).max() < 1e-6 and gaps.max() < 1e-6
    p, g = bf.locate(uv["ap"][0], uv["lat"][0])
    assert np.linalg.norm(p - pts[0]) < 1e-6 and g < 1e-6
    ray = bf.ray("ap", uv["ap"][1])
    assert ray.distance_to(pts[1]) < 1e-6
    assert np.linalg.norm(bf.source_mm("ap") - gb["ap"].source_mm) < 1e-6
    src, d = bf.beam_axis("lat")
    assert np.linalg.norm(src - gb["lat"].source_mm) < 1e-6
    assert np.degrees(np.arccos(d @ -gb["lat"].detector_normal)) < 1e-6


def test_calibration_and_plan_survive_robot_motion(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    # a patient point clicked at q0 (cage frame of the calibration) ...
    entry_c, target_c = ISO_CAGE + [-20.0, 5.0, 30.0], ISO_CAGE + [-5.0, 8.0, -10.0]
    uv = calib.project(np.stack([entry_c, target_c]))
    traj = Trajectory("L4 left", clicks={"entry": {"ap": uv["ap"][0], "lat": uv["lat"][0]},
                                         "target": {"ap": uv["ap"][1], "lat": uv["lat"][1]}},
                      entry_mm=calib.locate(uv["ap"][0], uv["lat"][0])[0],
                      target_mm=calib.locate(uv["ap"][1], uv["lat"][1])[0])
    e_b, t_b = bf.trajectory_in_base(traj)
    assert np.linalg.norm(e_b - apply(k.cage(q0), entry_c)) < 1e-6
    # ... the robot moves: the C-arm still shows the point at the same pixels, and they locate
    # to the same base point; the cage frame itself moved by tens of mm
    T1 = bf.cage_frame_at(q1)
    assert np.linalg.norm(T1[:3, 3] - bf.T_base_cage0[:3, 3]) > 20
    uv_now = {v: gb[v].project(e_b) for v in ("ap", "lat")}
    assert np.linalg.norm(bf.locate(uv_now["ap"], uv_now["lat"])[0] - e_b) < 1e-6
    # the plan re-expressed in the cage frame at q1: other coordinates, same points, same length
    in1 = bf.in_cage_at(q1, np.stack([traj.entry_mm, traj.target_mm]))
    assert np.linalg.norm(in1[0] - np.asarray(traj.entry_mm)) > 20
    assert np.abs(apply(T1, in1) - np.stack([e_b, t_b])).max() < 1e-9
    assert np.linalg.norm(in1[1] - in1[0]) == pytest.approx(traj.length_mm, abs=1e-9)
    assert np.linalg.norm(bf.to_calibration_frame(e_b) - np.asarray(traj.entry_mm)) < 1e-9
    # the cage's balls seen at q1 are where the calibration predicts them: still valid
    balls = cage.balls_for("ap")
    true_uv = gb["ap"].project(apply(T1, balls))
    check = bf.check_balls("ap", q1, true_uv, balls)
    assert check.agrees and check.checked and check.ball_offset_px < 1e-6 and check.balls_compared >= 20
    # with the pose at the shots instead of the robot's present one, the balls would disagree
    assert not bf.check_balls("ap", q0, true_uv, balls).agrees


def test_the_2d2d_model_maps_the_same(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    bf2 = BaseFrameCalibration(calib.with_method("2d2d"), k, q0)
    p = bf.to_base(ISO_CAGE + [10.0, -12.0, 15.0])
    uv = {v: gb[v].project(p) for v in ("ap", "lat")}
    assert np.linalg.norm(bf2.locate(uv["ap"], uv["lat"])[0] - p) < 1e-6
    assert np.abs(bf2.project(p)["lat"] - uv["lat"]).max() < 1e-4


def moved_carm(gb, view, deg, iso_base):
    """The view's C-arm turned by ``deg`` about the isocentre (base frame)."""
    R = from_euler("y", math.radians(deg))
    T = np.eye(4)
    T[:3, :3] = R[:3, :3]
    T[:3, 3] = iso_base - R[:3, :3] @ iso_base
    return gb[view].transformed(T)


def test_a_carm_move_invalidates_with_its_reason(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    iso_b = bf.to_base(ISO_CAGE)
    balls = cage.balls_for("ap")
    moved = moved_carm(gb, "ap", 1.0, iso_b)
    uv = moved.project(apply(bf.cage_frame_at(q1), balls))
    c = bf.check_balls("ap", q1, uv, balls)
    assert not c.agrees and c.checked and c.ball_offset_px > 5.0
    assert "C-arm moved" in c.reason and "calibrate again" in c.reason and "\n" not in c.reason
    with pytest.raises(CArmMovedError, match="AP shot"):
        c.raise_if_moved()
    # unlabelled detections: shuffled, two false blobs and five balls missed
    rng = np.random.default_rng(11)
    true_uv = gb["ap"].project(apply(bf.cage_frame_at(q1), balls))
    keep = np.flatnonzero(np.all(np.isfinite(true_uv), 1))[5:]
    det = np.vstack([true_uv[keep] + rng.normal(0, 0.2, (len(keep), 2)), [[10.0, 12.0], [200.0, 40.0]]])
    det = det[rng.permutation(len(det))]
    ok = bf.check_balls("ap", q1, det, balls, matched=False)
    assert ok.agrees and ok.checked and ok.ball_offset_px < 0.5
    far = moved_carm(gb, "ap", 4.0, iso_b).project(apply(bf.cage_frame_at(q1), balls))
    bad = bf.check_balls("ap", q1, far[np.all(np.isfinite(far), 1)], balls, matched=False)
    assert not bad.agrees and "C-arm moved" in bad.reason


def test_angle_tags(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    img = lambda p, s: FluoroImage(np.zeros((8, 8), np.uint16), primary_angle_deg=p, secondary_angle_deg=s)
    c = bf.check_image("lat", img(92.0, 0.0))
    assert not c.agrees and c.angle_change_deg == pytest.approx(2.0)
    assert "primary 92.0°" in c.reason and "90.0°" in c.reason and "calibrate again" in c.reason
    assert bf.check_image("lat", img(90.2, -0.1)).agrees
    assert bf.check_image("ap", img(359.9, 0.0)).agrees           # wrapped angles
    none = bf.check_image("ap", img(None, None))
    assert none.agrees and not none.checked and "no C-arm angle tags" in none.reason
    # the combined check: angles that agree, balls that do not -> the balls' verdict
    balls = cage.balls_for("ap")
    uv = moved_carm(gb, "ap", 1.0, bf.to_base(ISO_CAGE)).project(apply(bf.cage_frame_at(q1), balls))
    both = bf.check_shot("ap", q1, image=img(0.0, 0.0), uv_detected=uv, balls_cage_mm=balls)
    assert not both.agrees and both.ball_offset_px > 5
    good = bf.check_shot("ap", q1, image=img(0.1, 0.0),
                         uv_detected=gb["ap"].project(apply(bf.cage_frame_at(q1), balls)), balls_cage_mm=balls)
    assert good.agrees and good.checked and good.angle_change_deg == pytest.approx(0.1)
    bf_tags = BaseFrameCalibration.from_shots(calib, k, q0, {"ap": img(3.0, 1.0), "lat": img(None, None)})
    assert bf_tags.carm_angles_deg == {"ap": (3.0, 1.0)}


def test_bad_input(setup):
    k, cage, q0, q1, calib, bf, gb = setup
    with pytest.raises(FrameError, match="view"):
        bf.ray("side", (1.0, 2.0))
    with pytest.raises(FrameError, match="no 3D entry"):
        bf.trajectory_in_base(Trajectory("T1"))
    with pytest.raises(FrameError, match="one per ball"):
        bf.check_balls("ap", q1, np.zeros((3, 2)), cage.balls_for("ap"))
    with pytest.raises(FrameError, match="finite"):
        bf.to_base([1.0, np.nan, 2.0])
    with pytest.raises(FrameError):
        BaseFrameCalibration(object(), k, q0)
    with pytest.raises(FrameError, match="image"):
        bf.check_shot("ap")
    few = bf.check_balls("ap", q1, np.zeros((2, 2)), cage.balls_for("ap")[:2])
    assert few.agrees and not few.checked
    assert set(bf.to_dict()) >= {"q0", "T_base_cage0", "carm_angles_deg"}


def test_a_planned_trajectory_aligns_through_the_base_frame(setup):
    from core.navigation.align import IncompleteTrajectoryError, alignment_for_trajectory
    k, cage, q0, q1, calib, bf, gb = setup
    e_c, t_c = ISO_CAGE + [-15.0, 5.0, 20.0], ISO_CAGE + [-5.0, 8.0, -20.0]
    traj = Trajectory("L3 right", side="right", entry_mm=e_c, target_mm=t_c)
    plan = alignment_for_trajectory(traj, bf, k, stand_off_mm=20.0, q_current=q1)
    e_b, t_b = apply(k.cage(q0), e_c), apply(k.cage(q0), t_c)
    d = (t_b - e_b) / np.linalg.norm(t_b - e_b)
    T = k.forward(plan.q_goal)
    assert np.linalg.norm(T[:3, 3] - (e_b - 20.0 * d)) < 1e-6 and np.degrees(np.arccos(min(1, T[:3, 2] @ d))) < 1e-6
    with pytest.raises(IncompleteTrajectoryError, match="L3 right has no 3D"):
        alignment_for_trajectory(Trajectory("L3 right"), bf, k)
