"""Shot frustums: where each raw pixel of a shot lies on its detector plane in 3D.

Ground truth: the simulator's C-arm (``ConeBeamGeometry``) and image-intensifier
distortion (``IIDistortion``), and the real calibration pipeline on small simulated
shots (block phantom, 256² image intensifier; the true distortion as its correction).
"""
from __future__ import annotations

import numpy as np
import pytest

from core.calibration.calibration import ViewCalibration
from core.calibration.distortion import NoDistortion
from core.calibration.frustum import (DEFAULT_SID_MM, FieldCircle, ShotGeometryError, field_from_image,
                                focal_length_px, frustum_from_geometry, frustum_from_view, raw_grid)
from core.simulation.distortion import IIDistortion
from core.simulation.scene import carm_geometry

SHAPE = (256, 256)
SPACING = 0.9


def geometry(view="ap", primary=12.0, secondary=-7.0, shape=SHAPE):
    return carm_geometry(view, primary, secondary, (0.0, 10.0, -5.0), 1000.0, 625.0, (SPACING, SPACING), shape)


def ii(shape=SHAPE, **kw):
    rows, cols = shape
    return IIDistortion.for_pose(((cols - 1) / 2, (rows - 1) / 2), 0.5 * min(shape), 12.0, -7.0, seed=5, **kw)


def points_in_beam(g, n=40, seed=1, margin_px=20):
    """World points 200-500 mm from the source whose true ideal pixels are well inside the image."""
    rng = np.random.default_rng(seed)
    rows, cols = g.shape
    uv = np.column_stack([rng.uniform(margin_px, cols - margin_px, n), rng.uniform(margin_px, rows - margin_px, n)])
    d = g.pixel_to_detector_mm(uv) - g.source_mm
    return g.source_mm + d * rng.uniform(0.2, 0.5, n)[:, None]


# --- from the simulator's truth -----------------------------------------------------------
def test_flat_panel_corners_and_source_are_the_true_detector():
    g = geometry()
    f = frustum_from_geometry(g)
    rows, cols = g.shape
    true = g.pixel_to_detector_mm(np.array([[-0.5, -0.5], [cols - 0.5, -0.5], [cols - 0.5, rows - 0.5],
                                             [-0.5, rows - 0.5]]))
    assert np.abs(f.corners_mm() - true).max() < 0.01
    assert np.abs(f.source_mm - g.source_mm).max() < 1e-9
    assert f.source_to_detector_mm == pytest.approx(1000.0, abs=1e-6)
    assert f.valid.all() and f.points_mm.shape == (17, 17, 3)
    # every vertex is its own pixel on the detector; texture coordinates span the image edge to edge
    assert np.abs(f.points_mm - g.pixel_to_detector_mm(f.uv_raw)).max() < 1e-6
    tc = f.texture_coords()
    assert tc[0, 0] == pytest.approx([0, 0]) and tc[-1, -1] == pytest.approx([1, 1])
    assert tc[0, -1] == pytest.approx([1, 0])  # first row, last column: s = 1, t = 0 (the top)


def test_image_intensifier_vertices_are_the_undistorted_rays_within_the_round_field():
    g, dist = geometry(), ii()
    f = frustum_from_geometry(g, dist)
    uv = f.uv_raw.reshape(-1, 2)
    r = np.linalg.norm(uv - dist.centre_px, axis=1)
    assert r.max() <= dist.radius_px + 1e-9                       # limited to the field
    ring = np.concatenate([f.uv_raw[0], f.uv_raw[-1], f.uv_raw[:, 0], f.uv_raw[:, -1]])
    assert np.abs(np.linalg.norm(ring - dist.centre_px, axis=1) - dist.radius_px).max() < 1e-6  # border = field edge
    expected = g.pixel_to_detector_mm(dist.raw_to_ideal(f.uv_raw))
    assert np.abs(f.points_mm - expected).max() < 0.01
    # the distortion moved the vertices: up to several pixels at the field's edge
    moved = np.linalg.norm(f.points_mm - g.pixel_to_detector_mm(f.uv_raw), axis=-1)
    assert moved.max() > 3 * SPACING


def test_a_point_seen_through_the_textured_grid_lands_on_its_raw_pixel():
    """The line source -> X meets the grid where the texture shows X's true raw pixel."""
    g, dist = geometry("lat", 20.0, 5.0), ii()
    f = frustum_from_geometry(g, dist)
    X = points_in_beam(g)
    true = dist.ideal_to_raw(g.project(X))
    inside = np.linalg.norm(true - dist.centre_px, axis=1) < dist.radius_px - 3
    got = f.pixel_at(X)
    assert inside.sum() > 20
    assert np.nanmax(np.linalg.norm(got[inside] - true[inside], axis=1)) < 0.5   # linear per 16 px triangle
    assert np.all(np.isfinite(got[inside]))
    # a point behind the source, or beside the beam, meets no part of the image
    behind = g.source_mm - (X[0] - g.source_mm)
    beside = g.source_mm + 400 * np.array([0.0, 0.0, 1.0])
    assert np.isnan(f.pixel_at(np.array([behind, beside]))).all()


def test_triangles_face_the_source_and_transforming_keeps_the_mapping():
    from core.geometry.rigid import from_euler
    g, dist = geometry(), ii()
    f = frustum_from_geometry(g, dist)
    p = f.points_mm.reshape(-1, 3)
    tris = f.triangles()
    assert len(tris) == 2 * 16 * 16
    normal = np.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]])
    area = np.linalg.norm(normal, axis=1)
    centroid = p[tris].mean(axis=1)
    live = area > 1e-9
    assert np.all(np.sum(normal[live] * (f.source_mm - centroid[live]), axis=1) > 0)
    T = from_euler("xyz", np.radians([10, -20, 35]))
    T[:3, 3] = (100.0, -50.0, 30.0)
    ft = f.transformed(T)
    X = points_in_beam(g, 10)
    Xt = X @ T[:3, :3].T + T[:3, 3]
    assert np.nanmax(np.abs(ft.pixel_at(Xt) - f.pixel_at(X))) < 1e-6
    assert ft.source_to_detector_mm == pytest.approx(f.source_to_detector_mm, abs=1e-9)
    with pytest.raises(ShotGeometryError):
        f.transformed(np.full((4, 4), np.nan))


def test_unmappable_vertices_are_dropped_with_their_triangles():
    g = geometry()

    class HalfBlind:
        """Maps raw = ideal, except the image's left half, which it cannot map (NaN)."""
        def raw_to_ideal(self, uv):
            out = np.array(uv, float)
            out[out[..., 0] < 100] = np.nan
            return out

    f = frustum_from_geometry(g, HalfBlind())
    kept = f.valid
    assert kept.any() and not kept.all()
    assert np.all(kept == (f.uv_raw[..., 0] >= 100))
    p = f.points_mm.reshape(-1, 3)
    assert np.all(np.isfinite(p[f.triangles()]))
    assert np.all(np.isfinite(f.outline_mm()))
    X = points_in_beam(g, 30)
    uv = f.pixel_at(X)
    left = g.project(X)[:, 0] < 90
    right = g.project(X)[:, 0] > 112  # the first kept grid column is u = 111.5
    assert left.any() and right.any()
    assert np.isnan(uv[left]).all() and np.isfinite(uv[right]).all()

    class Blind:
        def raw_to_ideal(self, uv):
            return np.full(np.shape(uv), np.nan)

    with pytest.raises(ShotGeometryError, match="no X-ray"):
        frustum_from_geometry(g, Blind())


def test_raw_grid_and_bad_input():
    grid = raw_grid((100, 200), 5)
    assert grid[0, 0] == pytest.approx([-0.5, -0.5]) and grid[-1, -1] == pytest.approx([199.5, 99.5])
    # a field larger than the image: the disc is clipped to the image
    disc = raw_grid((100, 100), 9, FieldCircle((49.5, 49.5), 80.0))
    assert disc[..., 0].min() == -0.5 and disc[..., 1].max() == 99.5
    for bad in ((0, 10), (10,), "big"):
        with pytest.raises(ShotGeometryError):
            raw_grid(bad)
    with pytest.raises(ShotGeometryError):
        raw_grid((10, 10), 1)
    for c, r in (((np.nan, 1.0), 5.0), ((1.0, 1.0), 0.0), ((1.0, 1.0), np.inf)):
        with pytest.raises(ShotGeometryError):
            FieldCircle(c, r)


# --- from a calibration ------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated():
    import torch
    torch.set_num_threads(2)
    from core.calibration import calibrate
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), shape=SHAPE)
    shots = {v: sim.acquire(v, 8.0 if v == "ap" else 0.0, -5.0 if v == "ap" else 4.0) for v in ("ap", "lat")}
    cal = calibrate(sim.cage, {v: s.image.pixels for v, s in shots.items()},
                    {v: s.distortion for v, s in shots.items()})
    return sim, shots, cal


@pytest.mark.parametrize("view", ["ap", "lat"])
def test_calibrated_frustum_matches_the_true_c_arm(calibrated, view):
    sim, shots, cal = calibrated
    shot = shots[view]
    field = field_from_image(shot.image.display())
    f = frustum_from_view(cal.views[view], shot.image.sid_mm, shot.image.pixel_spacing_mm, field)
    assert "SID 1000" in f.note and f.source_to_detector_mm == pytest.approx(1000.0, abs=1e-6)
    fw = f.transformed(shot.T_world_cage)
    truth = frustum_from_geometry(shot.geometry_world, shot.distortion)
    # the source: the calibrated camera centre, ~2 mm off in depth (along the beam) on 256² shots,
    # well under a millimetre across it
    off = fw.source_mm - truth.source_mm
    along = off @ truth.plane_normal
    assert abs(along) < 3.0 and np.linalg.norm(off - along * truth.plane_normal) < 0.5
    # the round field found in the image is the simulator's (0.5 px)
    assert np.linalg.norm(np.subtract(field.centre_px, shot.distortion.centre_px)) < 0.5
    assert field.radius_px == pytest.approx(shot.distortion.radius_px, abs=1.0)
    # the image lands where the true detector shows it, vertex by vertex: in the detector's plane
    # within 0.5 mm (0.55 px); the plane itself moved with the source's depth error
    gap = fw.points_mm - frustum_from_geometry(shot.geometry_world, shot.distortion, field).points_mm
    depth = gap @ truth.plane_normal
    assert np.abs(depth - along).max() < 0.2
    assert np.linalg.norm(gap - depth[..., None] * truth.plane_normal, axis=-1).max() < 0.5
    # every cage ball in the field: through the textured grid at its true raw pixel (< 1 px)
    balls = np.concatenate([p.balls_mm for p in sim.cage.planes])
    true_uv = shot.project_raw(balls)
    seen = shot.in_field(true_uv, 4)
    assert seen.sum() > 40
    world = balls @ shot.T_world_cage[:3, :3].T + shot.T_world_cage[:3, 3]
    err = np.linalg.norm(fw.pixel_at(world)[seen] - true_uv[seen], axis=1)
    assert np.all(np.isfinite(err)) and err.max() < 1.0
    # and the texture agrees with the calibration's own projection of the balls (grid interpolation)
    own = cal.views[view].project(balls, "3d2d")
    assert np.linalg.norm(f.pixel_at(balls)[seen] - own[seen], axis=1).max() < 0.5


def test_detector_distance_without_sid(calibrated):
    sim, shots, cal = calibrated
    vc = cal.views["ap"]
    # from the pixel spacing: the calibrated focal length x spacing is the true SID (within 1 %)
    f = frustum_from_view(vc, None, shots["ap"].image.pixel_spacing_mm)
    assert f.source_to_detector_mm == pytest.approx(1000.0, rel=0.01) and "pixel spacing" in f.note
    # nothing known: the documented default
    f = frustum_from_view(vc, None, None)
    assert f.source_to_detector_mm == pytest.approx(DEFAULT_SID_MM) and "default" in f.note
    for bad_sid in (0.0, -5.0, np.nan):
        assert frustum_from_view(vc, bad_sid, None).source_to_detector_mm == pytest.approx(DEFAULT_SID_MM)


def test_true_camera_focal_length_and_invalid_cameras():
    g = geometry()
    P = g.projection_matrix
    assert focal_length_px(P) * SPACING == pytest.approx(1000.0, rel=1e-9)
    planes = []
    vc = ViewCalibration("ap", g.shape, NoDistortion(), P, planes)
    f = frustum_from_view(vc, None, (SPACING, SPACING))
    assert np.abs(f.source_mm - g.source_mm).max() < 1e-6
    assert np.abs(f.points_mm - frustum_from_geometry(g).points_mm).max() < 1e-6
    for bad in (np.full((3, 4), np.nan), np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])):
        with pytest.raises(ShotGeometryError):
            frustum_from_view(ViewCalibration("ap", g.shape, NoDistortion(), bad, planes), 1000.0)


def test_field_from_image():
    rows, cols = 300, 400
    vv, uu = np.mgrid[0:rows, 0:cols]
    disc = ((uu - 210.0) ** 2 + (vv - 140.0) ** 2 <= 120.0 ** 2)
    img = np.where(disc, 2000.0 + 300 * np.sin(uu / 17.0), 0.0).astype(np.float32)
    f = field_from_image(img)
    assert np.linalg.norm(np.subtract(f.centre_px, (210.0, 140.0))) < 1.0
    assert f.radius_px == pytest.approx(120.0, abs=1.5)
    assert field_from_image(np.full((rows, cols), 1500.0) + uu) is None          # exposed everywhere
    rect = np.zeros((rows, cols), np.float32)
    rect[50:250, 20:380] = 1800.0 + vv[50:250, 20:380]
    assert field_from_image(rect) is None                                      # a collimator, not a disc
    with pytest.raises(ShotGeometryError):
        field_from_image(np.full((4, 4), np.nan))
