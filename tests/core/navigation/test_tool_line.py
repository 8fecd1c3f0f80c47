"""K-wire detection in simulated AP / LAT shots and its triangulation, against the simulator's truth.

Figures (256 x 256 shots, 0.9 mm detector pixels, ~0.56 mm at the spine): the centreline's
distance to the true projected axis (px), the 3D line's angle (deg) and its distance at the
entry (mm), the tip (mm), with the image intensifier's distortion and without.
"""
import numpy as np
import pytest

from core.imaging.fluoro_image import FluoroImage
from core.navigation.tool_line import (ToolLine2D, ToolLineError, ToolPose, ToolTriangulationError,
                                       detect_tool_line, expected_width_px, plan_hint, tip_offset_mm, triangulate_tool,
                                       _polyline_distance)
from core.simulation.instruments import KWire
from tool_scene import cached_case, make_case


def detect(case, view, **kw):
    hint = plan_hint(case.calibration, case.plan_entry, case.plan_target)[view]
    return detect_tool_line(case.shots[view].image, calibration=case.calibration, view=view, hint=hint, **kw)


def centreline_error(case, view, det):
    return np.abs(_polyline_distance(det.samples_raw, case.truth_raw(view)))


def true_end_raw(case, view):
    """Where the detector's end criterion should land: the tip minus ``tip_offset_mm`` along the axis."""
    w = case.wire
    return case.shots[view].project_raw((w.tip_mm - tip_offset_mm(w.tip, w.tip_length_mm) * w.axis)[None])[0]


def angle_deg(a, b):
    return np.degrees(np.arccos(min(1.0, abs(float(a @ b)))))


@pytest.mark.parametrize("detector", ["image_intensifier", "flat_panel"])
@pytest.mark.parametrize("tip", ["sharp", "flat"])
def test_wire_found_and_triangulated_within_the_truth(detector, tip):
    case = cached_case(detector=detector, tip=tip)
    dets = {v: detect(case, v) for v in ("ap", "lat")}
    for v, det in dets.items():
        e = centreline_error(case, v, det)
        assert len(det.samples_raw) >= 30, v               # samples next to a ball on the wire leave the fit
        assert e.mean() < 0.06 and e.max() < 0.5, (v, e.mean(), e.max())
        assert np.linalg.norm(det.tip_raw - true_end_raw(case, v)) < 0.8, v
        assert det.contrast > 1.0 and det.cnr > 15 and det.rms_px < 0.15
        assert 2.0 < det.width_px < 4.5                        # 2 mm x 1.6 / 0.9 mm = 3.6 px
    pose = triangulate_tool(case.calibration, dets["ap"], dets["lat"],
                            tip_offset_mm=tip_offset_mm(case.wire.tip, case.wire.tip_length_mm))
    assert isinstance(pose, ToolPose)
    assert angle_deg(pose.direction, case.wire.axis) < 0.15
    assert pose.direction @ case.wire.axis > 0                  # toward the tip
    assert pose.distance_to(case.wire.entry_mm) < 0.05
    assert np.linalg.norm(pose.tip_mm - case.wire.tip_mm) < 0.15
    assert 20 < pose.plane_angle_deg < 50 and not pose.ill_conditioned
    assert pose.rms_px < 0.1 and pose.tip_gap_mm < 1.0


def test_distortion_bends_the_raw_line_and_the_ideal_fit_straightens_it():
    """With the II on, the raw centreline is curved; without the correction the straight fit is off."""
    case = cached_case(detector="image_intensifier", tip="sharp")
    det = detect(case, "lat")
    c = det.samples_raw.mean(0)
    _, _, vt = np.linalg.svd(det.samples_raw - c)
    raw_dev = np.abs((det.samples_raw - c) @ vt[1])
    raw_rms = np.sqrt(np.mean(raw_dev ** 2))
    assert raw_rms > 2.5 * det.rms_px and det.rms_px < 0.1     # a bow in raw px, straight in ideal px
    plain = detect_tool_line(case.shots["lat"].image,
                             hint=plan_hint(case.calibration, case.plan_entry, case.plan_target)["lat"])
    assert plain.rms_px > det.rms_px


def wire_widths(case):
    return {v: expected_width_px(case.calibration, v, case.plan_entry, case.plan_target, 2.0) for v in ("ap", "lat")}


def test_hint_picks_the_wire_among_guide_tube_screw_and_stray_wire():
    case = cached_case(detector="image_intensifier", tip="sharp", guide=True, clutter="other level")
    widths = wire_widths(case)
    assert all(3.0 < w < 4.5 for w in widths.values())       # 2 mm x 1.6 / 0.9 mm
    dets = {v: detect(case, v, width_px=(0.6 * widths[v], 1.5 * widths[v])) for v in ("ap", "lat")}
    for v, det in dets.items():
        e = centreline_error(case, v, det)
        assert e.mean() < 0.1 and np.median(e) < 0.08, (v, e.mean())
        assert np.linalg.norm(det.tip_raw - true_end_raw(case, v)) < 1.0, v
    pose = triangulate_tool(case.calibration, dets["ap"], dets["lat"],
                            tip_offset_mm=tip_offset_mm(case.wire.tip, case.wire.tip_length_mm))
    assert angle_deg(pose.direction, case.wire.axis) < 0.3
    assert np.linalg.norm(pose.tip_mm - case.wire.tip_mm) < 0.25


@pytest.mark.parametrize("seed", [11, 31, 41, 51, 61])
def test_wire_over_the_other_pedicles_screw_in_lat_is_found_along_its_line(seed):
    """In LAT the contralateral screw (titanium, 6 mm) lies under the wire, the wire across the
    screw's edge: the expected width passes over the screw's 11 px shadow, the wire's edges are
    pulled by the screw's (~0.5 px in LAT, under 2 deg in 3D). The line holds in every noise
    realisation; the tip does not: with the LAT end lost at the screw only the AP tip is used,
    1.1-4.9 mm off along the wire over these five (so a verification here needs the tip from a
    view the screw does not cover). One noise seed had fixed a 1.1 mm tip before (seed 11)."""
    case = make_case(detector="image_intensifier", tip="sharp", guide=True, clutter="same level", seed=seed)
    widths = wire_widths(case)
    dets = {v: detect(case, v, width_px=(0.6 * widths[v], 1.5 * widths[v])) for v in ("ap", "lat")}
    assert np.median(centreline_error(case, "ap", dets["ap"])) < 0.1
    assert np.median(centreline_error(case, "lat", dets["lat"])) < 0.8
    pose = triangulate_tool(case.calibration, dets["ap"], dets["lat"],
                            tip_offset_mm=tip_offset_mm(case.wire.tip, case.wire.tip_length_mm))
    assert angle_deg(pose.direction, case.wire.axis) < 2.0
    assert pose.distance_to(case.wire.entry_mm) < 0.7
    assert np.linalg.norm(pose.tip_mm - case.wire.tip_mm) < 5.5


@pytest.mark.xfail(strict=True, reason="known: in this noise realisation the LAT line locks onto the "
                   "contralateral screw (12 samples, 19 mm off); only the 16.7 mm tip gap between the views shows it")
def test_wire_over_the_other_pedicles_screw_in_lat_does_not_lock_onto_the_screw():
    case = make_case(detector="image_intensifier", tip="sharp", guide=True, clutter="same level", seed=21)
    widths = wire_widths(case)
    lat = detect(case, "lat", width_px=(0.6 * widths["lat"], 1.5 * widths["lat"]))
    assert np.median(centreline_error(case, "lat", lat)) < 0.8


def test_a_hint_elsewhere_finds_the_object_there():
    """A hint along the stray wire (not the plan) gives the stray wire, not the K-wire."""
    case = cached_case(detector="image_intensifier", tip="sharp", guide=True, clutter="other level")
    stray = KWire([-60.0, 60.0, -70.0], [40.0, 30.0, 50.0], 1.6, 0.0, "flat")
    from tool_scene import to_cage
    a, b = to_cage(case.sim, stray.entry_mm), to_cage(case.sim, stray.tip_mm)
    shot = case.shots["ap"]
    uv = shot.project_raw(np.array([a + 0.3 * (b - a), a + 0.7 * (b - a)]))
    det = detect_tool_line(shot.image, distortion=shot.distortion, hint=uv)
    truth = shot.project_raw(np.linspace(a, b, 3000))
    assert np.median(np.abs(_polyline_distance(det.samples_raw, truth))) < 0.1
    assert centreline_error(case, "ap", det).min() > 3.0


def test_inverted_image_with_monochrome1_gives_the_same_line():
    case = cached_case(detector="image_intensifier", tip="sharp")
    img = case.shots["ap"].image
    full = (1 << img.bits_stored) - 1
    inv = FluoroImage(pixels=(full - img.pixels.astype(np.int64)).astype(np.uint16), photometric="MONOCHROME1",
                      bits_stored=img.bits_stored)
    a, b = detect(case, "ap"), detect_tool_line(inv, calibration=case.calibration, view="ap",
                                                hint=plan_hint(case.calibration, case.plan_entry,
                                                               case.plan_target)["ap"])
    assert b.polarity == -1
    assert np.abs(_polyline_distance(b.samples_raw, case.truth_raw("ap"))).mean() < 0.1
    assert np.linalg.norm(a.tip_raw - b.tip_raw) < 0.5


def test_wire_in_the_epipolar_plane_is_refused():
    """The axial plane through the isocentre holds both sources (AP along y, LAT along x at 0/0):
    a wire lying in it back-projects to the same plane in both views."""
    wire = KWire([30.0, 40.0, 0.0], [-10.0, -5.0, 0.0], tip="flat")
    case = make_case(detector="flat_panel", wire_world=wire)
    dets = {v: detect_tool_line(case.shots[v].image, calibration=case.calibration, view=v,
                                hint=case.calibration.project(np.array([case.wire.entry_mm, case.wire.tip_mm]))[v])
            for v in ("ap", "lat")}
    with pytest.raises(ToolTriangulationError, match="epipolar plane"):
        triangulate_tool(case.calibration, dets["ap"], dets["lat"])


def test_a_wire_near_the_epipolar_plane_is_flagged_and_a_tilted_ap_view_cures_it():
    """L3's pedicle axis runs almost in the axial plane of the isocentre: at 0/0 the two
    back-projected planes meet at ~6 deg (flagged), with the AP view tilted 20 deg cranially at ~55."""
    straight = make_case(detector="flat_panel", level="L3", tip="flat", offset_mm=0.0, angle_deg=0.0, depth_mm=0.0)
    tilted = make_case(detector="flat_panel", level="L3", tip="flat", offset_mm=0.0, angle_deg=0.0, depth_mm=0.0,
                       poses={"ap": (0.0, 20.0), "lat": (0.0, 0.0)})
    out = {}
    for name, case in (("straight", straight), ("tilted", tilted)):
        dets = {v: detect(case, v) for v in ("ap", "lat")}
        pose = triangulate_tool(case.calibration, dets["ap"], dets["lat"])
        out[name] = (pose, angle_deg(pose.direction, case.wire.axis), pose.distance_to(case.wire.entry_mm),
                     np.linalg.norm(pose.tip_mm - case.wire.tip_mm))
    pose, ang, entry, tip = out["straight"]
    assert pose.ill_conditioned and 3.0 < pose.plane_angle_deg < 9.0
    assert ang < 0.5 and entry < 0.3 and tip < 0.3
    pose, ang, entry, tip = out["tilted"]
    assert not pose.ill_conditioned and pose.plane_angle_deg > 40.0
    assert ang < 0.1 and entry < 0.05 and tip < 0.15


def test_no_wire_blank_nan_and_bad_input_are_typed_errors():
    case = cached_case(detector="image_intensifier", tip="sharp")
    bare = case.sim.acquire("ap", seed=5)               # cage and anatomy, no wire
    hint = plan_hint(case.calibration, case.plan_entry, case.plan_target)["ap"]
    with pytest.raises(ToolLineError, match="no thin dense straight object|no line-like"):
        detect_tool_line(bare.image, distortion=bare.distortion, hint=hint)
    with pytest.raises(ToolLineError, match="blank"):
        detect_tool_line(np.full((128, 128), 900, np.uint16))
    nan = case.shots["ap"].image.pixels.astype(float)
    nan[40, 40] = np.nan
    with pytest.raises(ToolLineError, match="non-finite"):
        detect_tool_line(nan)
    with pytest.raises(ToolLineError, match="2-D"):
        detect_tool_line(np.ones(100))
    with pytest.raises(ToolLineError, match="hint"):
        detect_tool_line(case.shots["ap"].image, hint=[[1.0, 2.0]])
    with pytest.raises(ToolLineError, match="view"):
        detect_tool_line(case.shots["ap"].image, calibration=case.calibration)
    with pytest.raises(ToolLineError, match="ToolLine2D"):
        triangulate_tool(case.calibration, "ap", "lat")
    with pytest.raises(ToolLineError, match="camera"):
        det = detect(case, "ap")
        triangulate_tool(object(), det, det)


def test_result_records_are_plain_data():
    case = cached_case(detector="image_intensifier", tip="sharp")
    det = detect(case, "ap")
    assert isinstance(det, ToolLine2D)
    d = det.to_dict()
    assert d["view"] == "ap" and len(d["samples_raw"]) == len(det.samples_raw)
    assert np.all(det.distance_px(det.samples_raw) < 0.5)
    assert tip_offset_mm("flat") == 0.0 and tip_offset_mm("sharp", 3.0) == pytest.approx(3.0 / np.sqrt(2))
    with pytest.raises(ToolLineError, match="tip"):
        tip_offset_mm("round")
