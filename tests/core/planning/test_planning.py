"""Trajectory planning math against ground truth from two known cone-beam views.

The views mimic the simulated operating room: AP and lateral C-arm shots of a
spine 140 mm below the cage origin, source-to-isocentre 600 mm, SID 1000 mm,
0.3 mm detector pixels (0.18 mm at the spine). A distorted variant bends the
pixel mapping with a radial term, as an image intensifier does.
"""
import re
import warnings

import numpy as np
import pytest

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import from_euler, triangulate_rays
from core.planning.two_view import (MAX_RAY_GAP_MM, ClickOutsideImageError, ConeBeamPair, PatientAxes, PlanningError,
                           RayGapWarning, Trajectory, TwoViewCalibration, check_click, clip_polyline, epipolar_line,
                           image_angles, plan_warnings,
                           locate_trajectory, snap_to_epipolar, tool_band, trajectory_angles, triangulate)

ISO = np.array([0.0, 0.0, -140.0])
SHAPE = (600, 640)
SPACING = 0.3


def carm(beam, up, sad=600.0, sid=1000.0, shape=SHAPE, spacing=SPACING):
    """A C-arm shot: source ``sad`` before the isocentre along ``-beam``, detector ``sid`` from it."""
    beam = np.asarray(beam, float) / np.linalg.norm(beam)
    u = np.cross(beam, up)
    u /= np.linalg.norm(u)
    v = np.cross(beam, u)
    source = ISO - sad * beam
    centre = source + sid * beam
    rows, cols = shape
    origin = centre - u * spacing * (cols - 1) / 2 - v * spacing * (rows - 1) / 2
    return ConeBeamGeometry(source, origin, u, v, (spacing, spacing), shape)


def pair(tilt_deg=0.0):
    ap = carm([0, 0, 1], [0, 1, 0])
    lat = carm([np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg)), 0], [0, 0, 1])
    return ConeBeamPair(ap, lat)


class DistortedPair:
    """A pinhole pair seen through a radial pixel distortion (image intensifier pincushion)."""

    def __init__(self, base: ConeBeamPair, k=3e-7):
        self.base, self.k = base, k
        self.centre = {v: np.array([(g.shape[1] - 1) / 2, (g.shape[0] - 1) / 2]) for v, g in base.geometry.items()}

    def distort(self, view, uv):
        d = np.atleast_2d(uv) - self.centre[view]
        return self.centre[view] + d * (1 + self.k * np.sum(d * d, axis=1, keepdims=True))

    def undistort(self, view, uv):
        q = np.atleast_2d(np.asarray(uv, float))
        d = q - self.centre[view]
        x = d.copy()
        for _ in range(50):  # fixed point of d = x (1 + k |x|^2)
            x = d / (1 + self.k * np.sum(x * x, axis=1, keepdims=True))
        return self.centre[view] + x

    def ray(self, view, uv_raw):
        return self.base.ray(view, self.undistort(view, uv_raw)[0])

    def locate(self, uv_ap, uv_lat):
        return triangulate_rays(self.ray("ap", uv_ap), self.ray("lat", uv_lat))

    def project(self, points_mm):
        return {v: self.distort(v, uv) for v, uv in self.base.project(points_mm).items()}


def spine_points(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return ISO + rng.uniform([-30, -60, -30], [30, 60, 30], (n, 3))


def one_px_noise(rng, n):
    """Clicks off by exactly 1 px in a random direction."""
    a = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([np.cos(a), np.sin(a)])


def test_helpers_satisfy_protocol():
    assert isinstance(pair(), TwoViewCalibration) and isinstance(DistortedPair(pair()), TwoViewCalibration)


# --- epipolar line ---------------------------------------------------------------
@pytest.mark.parametrize("calib", [pair(), pair(tilt_deg=15), DistortedPair(pair())], ids=["ortho", "tilted", "distorted"])
@pytest.mark.parametrize("from_view,to_view", [("ap", "lat"), ("lat", "ap")])
def test_epipolar_line_passes_through_true_projection(calib, from_view, to_view):
    pts = spine_points()
    uv = calib.project(pts)
    for i in range(len(pts)):
        line = epipolar_line(calib, from_view, uv[from_view][i], to_view)
        _, dist = snap_to_epipolar(uv[to_view][i], line)
        assert dist < 0.1, f"point {i}: {dist:.3f} px off the epipolar line"


def test_distorted_epipolar_line_is_a_curve():
    calib = DistortedPair(pair(), k=1e-6)
    line = epipolar_line(calib, "ap", (100.0, 80.0), "lat")
    inside = line[(line[:, 0] > 0) & (line[:, 0] < 639) & (line[:, 1] > 0) & (line[:, 1] < 599)]
    chord = inside[-1] - inside[0]
    normal = np.array([-chord[1], chord[0]]) / np.linalg.norm(chord)
    bow = np.abs((inside - inside[0]) @ normal).max()
    assert bow > 2.0  # a straight line would miss the true projections by this much


def test_snap_to_epipolar_returns_foot_and_distance():
    calib = pair()
    p = spine_points(1, seed=4)
    uv = calib.project(p)
    line = epipolar_line(calib, "ap", uv["ap"][0], "lat")
    direction = line[-1] - line[0]
    normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
    snapped, dist = snap_to_epipolar(uv["lat"][0] + 5.0 * normal, line)
    assert dist == pytest.approx(5.0, abs=0.1)
    assert np.linalg.norm(snapped - uv["lat"][0]) < 0.1


def test_snapped_click_triangulates_with_tiny_gap():
    calib = pair()
    truth = spine_points(1, seed=6)[0]
    uv = calib.project(truth)
    line = epipolar_line(calib, "ap", uv["ap"][0], "lat")
    snapped, _ = snap_to_epipolar(uv["lat"][0] + [4.0, -3.0], line)
    loc = triangulate(calib, uv["ap"][0], snapped)
    assert loc.ray_gap_mm < 0.02 and loc.gap_ok


def test_epipolar_same_view_rejected():
    with pytest.raises(PlanningError, match="other view"):
        epipolar_line(pair(), "ap", (10, 10), "ap")


def test_epipolar_bad_view_rejected():
    with pytest.raises(PlanningError, match="view must be"):
        epipolar_line(pair(), "pa", (10, 10), "lat")


def test_epipolar_bad_depth_range_rejected():
    with pytest.raises(PlanningError, match="depth range"):
        epipolar_line(pair(), "ap", (10, 10), "lat", depth_range_mm=(500, 100))


def test_epipolar_nonfinite_click_rejected():
    with pytest.raises(PlanningError, match="finite pixel"):
        epipolar_line(pair(), "ap", (np.nan, 10), "lat")


def test_snap_bad_polyline_rejected():
    with pytest.raises(PlanningError, match="polyline"):
        snap_to_epipolar((1, 1), [[0, 0]])


# --- triangulation ---------------------------------------------------------------------
@pytest.mark.parametrize("calib", [pair(), pair(tilt_deg=20), DistortedPair(pair())], ids=["ortho", "tilted", "distorted"])
def test_triangulation_within_half_mm_with_1px_noise(calib):
    rng = np.random.default_rng(11)
    pts = spine_points(40, seed=2)
    uv = calib.project(pts)
    errors = []
    for i, truth in enumerate(pts):
        loc = triangulate(calib, uv["ap"][i] + one_px_noise(rng, 1)[0], uv["lat"][i] + one_px_noise(rng, 1)[0])
        errors.append(np.linalg.norm(loc.point_mm - truth))
        assert loc.gap_ok and loc.ray_gap_mm < 0.5
    assert max(errors) < 0.5, f"max 3D error {max(errors):.3f} mm"


def test_exact_clicks_triangulate_exactly():
    calib = pair()
    truth = spine_points(1, seed=9)[0]
    uv = calib.project(truth)
    loc = triangulate(calib, uv["ap"][0], uv["lat"][0])
    assert np.linalg.norm(loc.point_mm - truth) < 1e-6 and loc.ray_gap_mm < 1e-6


def test_clicks_on_different_points_warn_with_gap():
    calib = pair()
    pts = spine_points(2, seed=3)
    uv = calib.project(pts)
    line = epipolar_line(calib, "ap", uv["ap"][0], "lat")
    d = line[-1] - line[0]
    off = uv["lat"][0] + 40.0 * np.array([-d[1], d[0]]) / np.linalg.norm(d)  # 40 px off the line
    with pytest.warns(RayGapWarning, match="do not show the same point"):
        loc = triangulate(calib, uv["ap"][0], off)
    assert not loc.gap_ok
    assert loc.ray_gap_mm == pytest.approx(40 * SPACING * 600 / 1000, rel=0.05)  # 40 px at the isocentre


def test_click_outside_image_rejected():
    with pytest.raises(ClickOutsideImageError, match=r"outside the 640x600 pixels of the LAT image"):
        triangulate(pair(), (10, 10), (700, 10), shapes={"ap": SHAPE, "lat": SHAPE})


def test_click_edges_of_image_accepted():
    assert check_click((-0.5, 599.5), SHAPE).tolist() == [-0.5, 599.5]
    with pytest.raises(ClickOutsideImageError):
        check_click((-0.6, 10), SHAPE)


def test_triangulate_bad_threshold_rejected():
    with pytest.raises(PlanningError, match="threshold"):
        triangulate(pair(), (10, 10), (10, 10), max_gap_mm=0)


def test_parallel_views_rejected():
    same = ConeBeamPair(carm([0, 0, 1], [0, 1, 0]), carm([0, 0, 1], [0, 1, 0]))
    with pytest.raises(PlanningError, match="cannot triangulate"):
        triangulate(same, (320, 300), (320, 300))


# --- angles -----------------------------------------------------------------------------
def direction(axes: PatientAxes, transverse_deg, sagittal_deg):
    left, post, sup = (np.asarray(a) for a in (axes.left, axes.posterior, axes.superior))
    d = -post + np.tan(np.radians(transverse_deg)) * left + np.tan(np.radians(sagittal_deg)) * sup
    return d / np.linalg.norm(d)


@pytest.mark.parametrize("side,medial,cranial", [("left", 20, 10), ("right", 15, -5), ("left", -8, 0)])
def test_angles_of_constructed_trajectory(side, medial, cranial):
    axes = PatientAxes()
    transverse = -medial if side == "left" else medial  # medial = towards the midline
    entry = np.array([12.0, 40.0, -3.0])
    target = entry + 45.0 * direction(axes, transverse, cranial)
    a = trajectory_angles(entry, target, side, axes)
    assert a.length_mm == pytest.approx(45.0, abs=1e-9)
    assert np.degrees(a.medial_rad) == pytest.approx(medial, abs=1e-9)
    assert np.degrees(a.cranial_rad) == pytest.approx(cranial, abs=1e-9)
    assert np.degrees(a.transverse_rad) == pytest.approx(transverse, abs=1e-9)


def test_angles_follow_the_patient_axes_in_a_rotated_cage():
    R = from_euler("zyx", [0.4, -0.2, 1.1])[:3, :3]  # patient axes in the cage frame
    axes = PatientAxes.from_rotation(R)
    entry = np.array([5.0, -7.0, 100.0])
    target = entry + 50.0 * direction(axes, -18.0, 7.0)
    a = trajectory_angles(entry, target, "left", axes)
    assert np.degrees(a.medial_rad) == pytest.approx(18.0, abs=1e-9)
    assert np.degrees(a.cranial_rad) == pytest.approx(7.0, abs=1e-9)


def test_angles_reject_coincident_points():
    with pytest.raises(PlanningError, match="place the target deeper"):
        trajectory_angles((0, 0, 0), (0, 0, 0.5))


def test_angles_reject_bad_side():
    with pytest.raises(PlanningError, match="side"):
        trajectory_angles((0, 0, 0), (0, 0, 10), side="middle")


def test_patient_axes_must_be_right_handed():
    with pytest.raises(PlanningError, match="right-handed"):
        PatientAxes(left=(1, 0, 0), posterior=(0, 1, 0), superior=(0, 0, -1))


def test_image_angles():
    calib = pair()
    ap = calib.geometry["ap"]
    entry = ISO + [0, 0, 0]
    target = ISO + 30 * ap.detector_u + 30 * ap.detector_v  # parallel to the AP detector, 45 deg
    ang = image_angles(calib, entry, target)
    assert np.degrees(ang["ap"][0]) == pytest.approx(45.0, abs=1e-6)
    mag = 1000 / 600
    assert ang["ap"][1] == pytest.approx(30 * np.sqrt(2) * mag / SPACING, rel=1e-6)


# --- tool band ------------------------------------------------------------------------------
def test_tool_band_width_in_pixels():
    calib = pair()
    ap = calib.geometry["ap"]
    entry, target = ISO - 20 * ap.detector_u, ISO + 20 * ap.detector_u  # across the AP beam, at the isocentre
    band = tool_band(calib, "ap", entry, target, diameter_mm=6.0, n=9)
    width = np.linalg.norm(band.edge_a[4] - band.edge_b[4])
    assert width == pytest.approx(6.0 * (1000 / 600) / SPACING, rel=0.005)
    np.testing.assert_allclose((band.edge_a + band.edge_b) / 2, band.axis, atol=0.05)


def test_tool_band_end_on_is_a_disc():
    calib = pair()
    ap = calib.geometry["ap"]
    beam = -ap.detector_normal
    band = tool_band(calib, "ap", ISO - 20 * beam, ISO + 20 * beam, diameter_mm=6.0)
    centre = calib.project(ISO)["ap"][0]
    radii = np.linalg.norm(band.outline - centre, axis=1)
    near_radius = 3.0 * (1000 / 580) / SPACING  # the end nearest the source is the largest
    assert radii.max() == pytest.approx(near_radius, rel=0.01)
    assert np.allclose(band.outline[0], band.outline[-1])  # closed


def test_tool_band_bad_diameter_rejected():
    with pytest.raises(PlanningError, match="diameter"):
        tool_band(pair(), "ap", ISO, ISO + 10, diameter_mm=-1)


def test_tool_band_coincident_points_rejected():
    with pytest.raises(PlanningError, match="coincide"):
        tool_band(pair(), "ap", ISO, ISO, diameter_mm=5)


# --- the trajectory record ----------------------------------------------------------------
def test_trajectory_clicks_locate_and_roundtrip():
    calib = pair()
    pts = spine_points(2, seed=8)
    uv = calib.project(pts)
    t = Trajectory("L4 left", level="L4", side="left")
    t = t.with_click("entry", "ap", uv["ap"][0]).with_click("entry", "lat", uv["lat"][0])
    t = t.with_click("target", "ap", uv["ap"][1])
    t = locate_trajectory(calib, t)
    assert np.linalg.norm(np.subtract(t.entry_mm, pts[0])) < 1e-6 and t.entry_gap_mm < 1e-6
    assert t.target_mm is None and not t.complete and t.length_mm is None
    t = locate_trajectory(calib, t.with_click("target", "lat", uv["lat"][1]))
    assert t.length_mm == pytest.approx(np.linalg.norm(pts[1] - pts[0]), abs=1e-6)
    assert Trajectory.from_dict(t.to_dict()) == t


def test_trajectory_large_gap_kept_not_warned():
    calib = pair()
    t = Trajectory("x").with_click("entry", "ap", (100, 100)).with_click("entry", "lat", (500, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = locate_trajectory(calib, t)
    assert t.entry_gap_mm > MAX_RAY_GAP_MM


def test_with_click_leaves_original_unchanged():
    t = Trajectory("a")
    t2 = t.with_click("entry", "ap", (1, 2))
    assert t.click("entry", "ap") is None and t2.click("entry", "ap") == (1.0, 2.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": " "}, "needs a name"), ({"name": "a", "level": "L9"}, "level"),
    ({"name": "a", "side": "up"}, "side"), ({"name": "a", "colour": "red"}, "colour"),
    ({"name": "a", "diameter_mm": 50}, "diameter"), ({"name": "a", "clicks": {"tip": {}}}, "clicks"),
    ({"name": "a", "entry_mm": (1, 2)}, "entry_mm")])
def test_trajectory_validation(kwargs, match):
    with pytest.raises(PlanningError, match=match):
        Trajectory(**kwargs)


def test_trajectory_from_dict_unknown_field():
    with pytest.raises(PlanningError, match="unknown trajectory field"):
        Trajectory.from_dict({"name": "a", "colour_rgb": 3})


# --- clipping ---------------------------------------------------------------------------------
def test_clip_polyline_reaches_the_border_exactly():
    line = np.array([[-100.0, 50.0], [300.0, 50.0], [700.0, 50.0]])
    clipped = clip_polyline(line, (100, 640))
    np.testing.assert_allclose(clipped, [[-0.5, 50], [300, 50], [639.5, 50]])


def test_clip_polyline_missing_the_image_is_empty():
    assert clip_polyline([[-100.0, -50.0], [-10.0, -60.0]], (100, 100)).shape == (0, 2)


def test_clipped_epipolar_line_still_passes_through_truth():
    calib = DistortedPair(pair())
    pts = ISO + np.random.default_rng(12).uniform(-25, 25, (5, 3))  # all inside both images
    uv = calib.project(pts)
    for i in range(5):
        line = epipolar_line(calib, "lat", uv["lat"][i], "ap", n=64, shape=SHAPE)  # resampled inside
        assert line.min() >= -0.5 and line[:, 0].max() <= 639.5 and line[:, 1].max() <= 599.5
        assert snap_to_epipolar(uv["ap"][i], line)[1] < 0.1


def test_clip_polyline_bad_shape_rejected():
    with pytest.raises(PlanningError, match="polyline"):
        clip_polyline(np.zeros((3, 3)), (10, 10))


def test_epipolar_line_missing_the_image_is_empty():
    calib = pair()
    far = calib.project(ISO + [0, 400, 0])  # far outside the LAT field along y
    assert epipolar_line(calib, "ap", far["ap"][0], "lat", shape=SHAPE).shape == (0, 2)


def test_default_patient_axes_match_the_simulated_cage_mounting():
    from core.simulation.scene import R_WORLD_CAGE  # world = LPS
    default = PatientAxes()
    mounted = PatientAxes.from_rotation(R_WORLD_CAGE.T)
    for a in ("left", "posterior", "superior"):
        np.testing.assert_allclose(getattr(default, a), getattr(mounted, a), atol=1e-12)


def test_tool_band_edges_are_the_exact_silhouette():
    """Against the tangent generators computed with the known source (oblique tool, near the source)."""
    calib = pair(tilt_deg=10)
    g = calib.geometry["lat"]
    entry, target = ISO + [-150.0, 20.0, 30.0], ISO + [-100.0, -25.0, -10.0]  # closer to the LAT source
    r = 4.0
    band = tool_band(calib, "lat", entry, target, diameter_mm=2 * r, n=5)
    a = (target - entry) / np.linalg.norm(target - entry)
    w = g.source_mm - entry
    w_perp = w - (w @ a) * a
    L = np.linalg.norm(w_perp)
    m = np.cross(a, w_perp) / L
    exact = [(r / L) * w_perp / L + s * np.sqrt(1 - (r / L) ** 2) * m for s in (1, -1)]
    axis = entry + np.outer(np.linspace(0, 1, 5), target - entry)
    truths = [g.project(axis + r * n) for n in exact]
    for edge in (band.edge_a, band.edge_b):
        err = min(np.abs(edge - truth).max() for truth in truths)
        assert err < 0.01, f"edge off the silhouette by {err:.4f} px"
    assert np.abs(band.edge_a - band.edge_b).max() > 5  # two distinct edges


def test_clip_polyline_keeps_the_first_inside_run():
    line = np.array([[5.0, 5.0], [5.0, -20.0], [8.0, -20.0], [8.0, 5.0]])  # leaves through the top, comes back
    np.testing.assert_allclose(clip_polyline(line, (10, 10)), [[5, 5], [5, -0.5]])


# --- with the real cage calibration on simulated shots -----------------------------------------
@pytest.fixture(scope="module")
def calibrated_or():
    """Flat-panel shots of the spine phantom with the cage, calibrated by core.calibration."""
    from core.calibration.pipeline import calibrate
    from core.geometry.rigid import apply, invert
    from core.simulation.phantom import make_spine_phantom
    from core.simulation.scene import SimulatedOR

    phantom = make_spine_phantom(seed=3, spacing_mm=2.0)
    sim = SimulatedOR(seed=3, phantom=phantom, detector="flat_panel")
    shots = {v: sim.acquire(v) for v in VIEWS_}
    calib = calibrate(sim.cage, {v: s.image.pixels for v, s in shots.items()})
    T_cage_world = invert(sim.T_world_cage)
    points = []
    for p in phantom.pedicles:
        for X in (p.entry_mm, p.target_mm):
            Xc = apply(T_cage_world, np.asarray(X, float))
            uv = {v: s.project_raw(Xc)[0] for v, s in shots.items()}
            if all(shots[v].in_field(uv[v][None], margin_px=5)[0] for v in VIEWS_):
                points.append((Xc, uv))
    assert len(points) >= 10
    return calib, points


VIEWS_ = ("ap", "lat")


@pytest.mark.slow
def test_pedicle_points_with_the_cage_calibration_within_half_mm(calibrated_or):
    calib, points = calibrated_or
    assert isinstance(calib, TwoViewCalibration)
    rng = np.random.default_rng(21)
    errors = []
    for truth, uv in points:
        noise = one_px_noise(rng, 2)
        loc = triangulate(calib, uv["ap"] + noise[0], uv["lat"] + noise[1], shapes={"ap": (512, 512), "lat": (512, 512)})
        errors.append(np.linalg.norm(loc.point_mm - truth))
    assert max(errors) < 0.5, f"max {max(errors):.2f} mm over {len(errors)} pedicle points"


@pytest.mark.slow
def test_epipolar_line_with_the_cage_calibration(calibrated_or):
    calib, points = calibrated_or
    for truth, uv in points:
        for a, b in (("ap", "lat"), ("lat", "ap")):
            line = epipolar_line(calib, a, uv[a], b, shape=(512, 512))
            # a point of the calibration's ray, where it passes the truth, is drawn on the line (0.1 px);
            # the simulator's true pixel lies within the calibration's error (0.5 px)
            ray = calib.ray(a, uv[a])
            on_ray = ray.at((truth - ray.origin) @ ray.direction)
            assert snap_to_epipolar(calib.project(on_ray[None])[b][0], line)[1] < 0.1
            assert snap_to_epipolar(uv[b], line)[1] < 0.5


# --- plausibility -------------------------------------------------------------------------------
def _complete(entry, target, side="left", gaps=(0.1, 0.2)):
    return Trajectory("t", side=side, entry_mm=tuple(entry), target_mm=tuple(target),
                      entry_gap_mm=gaps[0], target_gap_mm=gaps[1])


def test_plan_warnings_none_for_a_good_pedicle_trajectory():
    axes = PatientAxes()
    entry = np.array([25.0, 0.0, 0.0])
    target = entry + 50 * direction(axes, -15.0, 3.0)  # left pedicle, 15 deg medial
    assert plan_warnings(_complete(entry, target), axes) == []


@pytest.mark.parametrize("case,match", [
    ("swapped", "swapped"), ("short", "outside 15-90 mm"), ("long", "outside 15-90 mm"),
    ("lateral", "away from the midline"), ("gap", "entry: the AP and LAT clicks are 3.5 mm apart")])
def test_plan_warnings(case, match):
    axes = PatientAxes()
    entry = np.array([25.0, 0.0, 0.0])
    d = direction(axes, -15.0, 3.0)
    target, gaps = entry + 50 * d, (0.1, 0.2)
    if case == "swapped":
        entry, target = target, entry
    elif case == "short":
        target = entry + 10 * d
    elif case == "long":
        target = entry + 120 * d
    elif case == "lateral":
        target = entry + 50 * direction(axes, 10.0, 0.0)  # left pedicle heading further left
    elif case == "gap":
        gaps = (3.5, 0.2)
    warnings_ = plan_warnings(_complete(entry, target, gaps=gaps), axes)
    assert any(re.search(match, w) for w in warnings_), warnings_
