"""The simulated optical tracker against its own law: marker noise statistics at two depths,
the pose fit's accuracy, the flags at the measurement volume's edge, and line-of-sight loss
(an occluder -> MISSING with a NaN pose)."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert, make_transform, rotation_angle
from core.simulation.tracker import (MISSING, OK, OUT_OF_VOLUME, PARTIALLY_OUT, PATIENT_REF, ROBOT_REF, MarkerBody, MeasurementVolume, Occluder,
                                     TrackerModel, TrackerSimError, T_world_tracker_looking_at, carm_occluders,
                                     kabsch, marker_rms_mm)


def _at(x, y, z, rotvec=(0.0, 0.0, 0.0)):
    return make_transform(Rotation.from_rotvec(rotvec).as_matrix(), [x, y, z])


def test_kabsch_recovers_a_known_pose_and_refuses_collinear_points():
    rng = np.random.default_rng(0)
    T = _at(10, -20, 1400, (0.3, -0.2, 0.5))
    src = ROBOT_REF.markers_mm
    dst = src @ T[:3, :3].T + T[:3, 3]
    T_fit, rms = kabsch(src, dst)
    assert np.allclose(T_fit, T, atol=1e-9) and rms < 1e-9
    with pytest.raises(TrackerSimError, match="collinear"):
        kabsch([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(TrackerSimError, match=">= 3"):
        kabsch(src[:2], dst[:2])
    with pytest.raises(TrackerSimError, match="at least|>= 3"):
        MarkerBody("two", rng.normal(size=(2, 3)))


@pytest.mark.parametrize("depth", [1200.0, 2000.0])
def test_marker_noise_follows_its_law_at_each_depth(depth):
    """Measured markers: 3D RMS error over 2000 frames within 4 % of 0.25 mm * (z / 1500)^2,
    isotropic (per-axis RMS within 6 % of each other) and unbiased (mean under 3 % of the RMS)."""
    m = TrackerModel(seed=3)
    T = _at(0, 0, depth)
    P = ROBOT_REF.markers_mm @ T[:3, :3].T + T[:3, 3]
    e = np.concatenate([m.measure_markers("robot_ref", T)[0] - P for _ in range(2000)])
    expected = 0.25 * (depth / 1500.0) ** 2        # the markers lie in the plane z = depth
    rms = float(np.sqrt(np.mean(np.sum(e ** 2, 1))))
    assert abs(rms - expected) < 0.04 * expected
    axis = np.sqrt(np.mean(e ** 2, 0))
    assert axis.max() / axis.min() < 1.06
    assert np.all(np.abs(e.mean(0)) < 0.03 * expected)
    assert marker_rms_mm(1500.0) == pytest.approx(0.25)


def test_pose_fit_rms_and_pose_scatter_match_the_marker_noise():
    """Through the model's frames: the fit's reported RMS agrees with the residual RMS a
    4-marker fit leaves of sigma (sqrt((N - 2) / N) of the marker RMS for N = 4 in a plane,
    within 10 %), and the translation scatter is below the marker RMS."""
    m = TrackerModel(seed=5)
    T = _at(30, -40, 1500, (0.1, 0.2, 0.0))
    rms, dt, da = [], [], []
    for _ in range(800):
        p = m.measure_body("robot_ref", T)
        assert p.status is OK
        rms.append(p.rms_mm)
        d = invert(T) @ p.T_tracker_body
        dt.append(np.linalg.norm(d[:3, 3]))
        da.append(math.degrees(rotation_angle(d)))
    law = marker_rms_mm(1500.0)
    mean_rms = float(np.sqrt(np.mean(np.square(rms))))
    # 4 points, 6 pose parameters: 12 - 6 = 6 residual degrees of freedom of 12 -> sqrt(1/2)
    assert abs(mean_rms - law * math.sqrt(0.5)) < 0.10 * law
    assert 0.05 < float(np.sqrt(np.mean(np.square(dt)))) < law
    assert float(np.mean(da)) < 0.5


def test_volume_edge_flags():
    vol = MeasurementVolume()
    m = TrackerModel(seed=1, volume=vol)
    assert m.measure_body("robot_ref", _at(0, 0, 1500)).status is OK
    far = m.measure_body("robot_ref", _at(0, 0, 2600))
    assert far.status is OUT_OF_VOLUME and np.isnan(far.T_tracker_body).all() and math.isnan(far.rms_mm)
    near = m.measure_body("robot_ref", _at(0, 0, 900))
    assert near.status is OUT_OF_VOLUME
    # the body straddles the pyramid's side: at z = 1500 the edge is at x = 1500 tan(15.5 deg) = 416 mm;
    # robot_ref's markers span x in [-25, 35] mm about the origin
    edge = 1500.0 * math.tan(vol.half_angle_x)
    part = m.measure_body("robot_ref", _at(edge - 5.0, 0, 1500))
    assert part.status is PARTIALLY_OUT and np.isnan(part.T_tracker_body).all()
    assert m.measure_body("robot_ref", _at(edge - 40.0, 0, 1500)).status is OK
    assert m.measure_body("robot_ref", _at(edge + 40.0, 0, 1500)).status is OUT_OF_VOLUME


def test_occlusion_makes_the_body_missing_with_nan():
    m = TrackerModel(seed=2)
    T = _at(0, 0, 1500)
    # a surgeon's head (capsule of radius 120 mm) half way, in front of both cameras' sight lines
    head = Occluder(np.array([-400.0, 0.0, 800.0]), np.array([400.0, 0.0, 800.0]), 120.0, "surgeon")
    p = m.measure_body("robot_ref", T, [head])
    assert p.status is MISSING and np.isnan(p.T_tracker_body).all() and not p.ok
    # beside the sight lines it changes nothing
    aside = Occluder(np.array([-400.0, 600.0, 800.0]), np.array([400.0, 600.0, 800.0]), 120.0)
    assert m.measure_body("robot_ref", T, [aside]).ok
    # one marker hidden (a thin rod in front of the topmost marker, seen by one camera): 3 left -> OK
    P = ROBOT_REF.markers_mm @ T[:3, :3].T + T[:3, 3]
    cam = m.cameras[0]
    mid = cam + 0.5 * (P[3] - cam)
    rod = Occluder(mid - [0, 0, 1.0], mid + [0, 0, 1.0], 6.0)
    _, seen, _ = m.observe("robot_ref", T, [rod])
    assert seen.tolist() == [True, True, True, False]
    assert m.measure_body("robot_ref", T, [rod]).ok


def test_the_carm_between_camera_and_marker_hides_it():
    T_w_tr = T_world_tracker_looking_at(np.zeros(3), np.array([0.0, -1.0, 0.6]), 1600.0)
    T_tr_w = invert(T_w_tr)
    body_w = _at(0, 0, 0)
    T_tr_body = T_tr_w @ body_w
    assert TrackerModel(seed=0).measure_body("patient_ref", T_tr_body).ok
    # the detector housing between: centred on the sight line 600 mm from the marker
    cam_w = T_w_tr[:3, 3]
    det = 0.6 * cam_w
    src = -0.6 * cam_w
    occ = carm_occluders(src, det, T_tr_w)
    assert TrackerModel(seed=0).measure_body("patient_ref", T_tr_body, occ).status is MISSING


def test_frame_lists_every_body_and_the_missing_ones():
    from core.navigation.tracker_sim import frame_from
    from core.navigation.tracking import ToolStatus
    m = TrackerModel(seed=4)
    f = frame_from(m.measure({"robot_ref": _at(0, 0, 1500)}), frame_number=7, timestamp=1.25)
    assert f.frame_number == 7 and f.timestamp == 1.25
    assert f.pose("robot_ref").ok and f.pose("patient_ref").status is ToolStatus.MISSING
    assert np.isnan(f.pose("patient_ref").T_tracker_tool).all()
    assert f.pose("not a tool").status is ToolStatus.MISSING
    assert set(f.tools) == {ROBOT_REF.name, PATIENT_REF.name}
    with pytest.raises(TrackerSimError, match="no marker body"):
        m.measure_body("nope", np.eye(4))
