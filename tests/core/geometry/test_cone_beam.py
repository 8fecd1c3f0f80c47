"""core.geometry.cone_beam: the pinhole C-arm model used as ground truth and by calibration."""
import numpy as np
import pytest

from core.geometry import rigid as g
from core.geometry.cone_beam import ConeBeamGeometry


def make_carm(tilt=(0.2, -0.1, 0.05)):
    """A C-arm with SID 1000 mm, 0.4 mm pixels, 512x600 detector, tilted."""
    R = g.rotation_part(g.from_rotvec(tilt))
    u, v, n = R[:, 0], R[:, 1], R[:, 2]
    centre = np.array([5.0, -3.0, 400.0])
    rows, cols, s = 512, 600, 0.4
    origin = centre - u * s * (cols - 1) / 2 - v * s * (rows - 1) / 2
    return ConeBeamGeometry(centre - 1000 * n + 7 * u, origin, u, v, (s, s), (rows, cols))


def test_projection_matches_ray_plane_intersection():
    cam = make_carm()
    rng = np.random.default_rng(1)
    pts = cam.source_mm + rng.uniform(500, 900, (50, 1)) * g.unit(
        np.array([0, 0, 1.0]) + rng.normal(0, 0.08, (50, 3)))
    uv = cam.project(pts)
    plane = g.Plane(cam.detector_origin_mm, cam.detector_normal)
    for p, q in zip(pts, uv):
        hit = g.intersect_ray_plane(g.Ray(cam.source_mm, p - cam.source_mm), plane)
        assert np.allclose(cam.pixel_to_detector_mm(q), hit, atol=1e-9)


def test_ray_through_projection_contains_point():
    cam = make_carm()
    p = np.array([10.0, 20.0, -150.0])
    assert cam.ray(cam.project(p)).distance_to(p) < 1e-9


def test_sid_and_principal_point():
    cam = make_carm(tilt=(0, 0, 0))
    assert cam.source_to_detector_mm == pytest.approx(1000.0)
    assert np.allclose(cam.principal_point_px, [299.5 + 7 / 0.4, 255.5])


def test_transformed_geometry_projects_the_same():
    cam = make_carm()
    T_cage_world = g.from_rotvec([0.5, 0.1, -0.3], [30, -40, 50])
    cam_c = cam.transformed(T_cage_world)
    p_world = np.array([[0.0, 0, 0], [40, -20, 60]])
    assert np.allclose(cam_c.project(g.apply(T_cage_world, p_world)), cam.project(p_world), atol=1e-9)


def test_contains_marks_detector_edges():
    cam = make_carm()
    inside = cam.contains([[0, 0], [-0.6, 0], [599.4, 511.4], [599.6, 100]])
    assert inside.tolist() == [True, False, True, False]


def test_bad_geometry_is_rejected():
    with pytest.raises(g.GeometryError, match="pixel spacing"):
        ConeBeamGeometry([0, 0, -1000], [0, 0, 0], [1, 0, 0], [0, 1, 0], (0, 0.4), (10, 10))
    with pytest.raises(g.GeometryError, match="detector plane"):
        ConeBeamGeometry([5, 5, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], (0.4, 0.4), (10, 10))
    with pytest.raises(g.GeometryError, match="shape"):
        ConeBeamGeometry([0, 0, -1000], [0, 0, 0], [1, 0, 0], [0, 1, 0], (0.4, 0.4), (0, 10))
