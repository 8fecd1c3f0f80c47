"""core.geometry.rigid: transforms, rays, planes (property-based where it pays)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from core.geometry import rigid as g

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(finite, finite, finite).map(np.array)
angle = st.floats(-np.pi, np.pi, allow_nan=False)
rotvec = st.tuples(angle, angle, angle).map(lambda a: np.array(a) / np.sqrt(3))


@st.composite
def transforms(draw):
    return g.from_rotvec(draw(rotvec), draw(vec3))


@settings(max_examples=200, deadline=None)
@given(transforms(), vec3)
def test_inverse_undoes_transform(T, p):
    q = g.apply(g.invert(T), g.apply(T, p))
    assert np.allclose(q, p, atol=1e-8)
    assert np.allclose(g.compose(T, g.invert(T)), np.eye(4), atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(transforms(), transforms(), vec3)
def test_composition_is_matrix_product_and_maps_frames(T_a_b, T_b_c, p_c):
    T_a_c = g.compose(T_a_b, T_b_c)
    assert np.allclose(g.apply(T_a_c, p_c), g.apply(T_a_b, g.apply(T_b_c, p_c)), atol=1e-8)
    assert g.is_rigid(T_a_c)


@settings(max_examples=100, deadline=None)
@given(transforms(), vec3, vec3)
def test_rigid_transforms_preserve_distances(T, p, q):
    d0 = np.linalg.norm(p - q)
    d1 = np.linalg.norm(g.apply(T, p) - g.apply(T, q))
    assert abs(d0 - d1) < 1e-8 * max(1.0, d0)


def test_rotation_helpers_agree_with_scipy():
    T = g.from_euler("xyz", [0.1, -0.4, 1.2], [1, 2, 3])
    assert np.allclose(g.rotation_part(T), Rotation.from_euler("xyz", [0.1, -0.4, 1.2]).as_matrix())
    assert np.allclose(g.translation_part(T), [1, 2, 3])
    assert g.rotation_angle(g.from_rotvec([0, 0, 0.7])) == pytest.approx(0.7)
    assert np.allclose(g.to_rotvec(g.from_rotvec([0.3, -0.2, 0.1])), [0.3, -0.2, 0.1])


def test_apply_maps_point_batches():
    T = g.make_transform(np.eye(3), [10, 0, 0])
    assert np.allclose(g.apply(T, [[0, 0, 0], [1, 2, 3]]), [[10, 0, 0], [11, 2, 3]])


@pytest.mark.parametrize("bad", [np.eye(3), np.full((4, 4), np.nan), np.zeros((4, 5))])
def test_bad_transforms_are_rejected(bad):
    with pytest.raises(g.GeometryError):
        g.invert(bad)


def test_is_rigid_rejects_scaling_and_reflection():
    assert not g.is_rigid(np.diag([2.0, 1, 1, 1]))
    assert not g.is_rigid(np.diag([-1.0, 1, 1, 1]))
    assert g.is_rigid(np.eye(4))


@settings(max_examples=200, deadline=None)
@given(vec3, vec3, rotvec, st.floats(1.0, 100.0), st.floats(-50, 50), st.floats(-50, 50))
def test_closest_points_recover_constructed_gap(p, d1, rv, gap, s, t):
    """Two lines built to pass at a known distance along their common normal."""
    if np.linalg.norm(d1) < 1e-3:
        d1 = np.array([1.0, 0, 0])
    d1 = d1 / np.linalg.norm(d1)
    d2 = Rotation.from_rotvec(rv).apply(d1)
    n = np.cross(d1, d2)
    if np.linalg.norm(n) < 1e-2:
        return  # near-parallel: covered by the error test
    n /= np.linalg.norm(n)
    a = g.Ray(p - s * d1, d1)
    b = g.Ray(p + gap * n - t * d2, d2)
    pa, pb, got = g.closest_points_between_rays(a, b)
    assert got == pytest.approx(gap, abs=1e-6 * max(1.0, np.abs(p).max()))
    assert np.allclose(pa, p, atol=1e-6 * max(1.0, np.abs(p).max()))
    mid, gap2 = g.triangulate_rays(a, b)
    assert np.allclose(mid, p + 0.5 * gap * n, atol=1e-6 * max(1.0, np.abs(p).max()))


def test_parallel_rays_raise():
    with pytest.raises(g.GeometryError, match="parallel"):
        g.closest_points_between_rays(g.Ray([0, 0, 0], [1, 0, 0]), g.Ray([0, 1, 0], [2, 0, 0]))


def test_ray_rejects_zero_direction():
    with pytest.raises(g.GeometryError):
        g.Ray([0, 0, 0], [0, 0, 0])


def test_plane_fit_and_ray_intersection():
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-50, 50, 40), rng.uniform(-50, 50, 40), np.zeros(40)])
    T = g.from_rotvec([0.3, 0.2, -0.1], [5, 6, 7])
    plane, rms = g.Plane.fit(g.apply(T, pts))
    assert rms < 1e-9
    assert abs(abs(plane.normal @ g.rotation_part(T)[:, 2]) - 1) < 1e-12
    hit = g.intersect_ray_plane(g.Ray([0, 0, 100], [0.1, 0.05, -1]), plane)
    assert abs(plane.signed_distance(hit)) < 1e-9
    with pytest.raises(g.GeometryError, match="collinear"):
        g.Plane.fit([[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    with pytest.raises(g.GeometryError, match="parallel"):
        g.intersect_ray_plane(g.Ray([0, 0, 1], [1, 0, 0]), g.Plane([0, 0, 0], [0, 0, 1]))


def test_ray_transform_and_distance():
    r = g.Ray([0, 0, 0], [0, 0, 1])
    T = g.from_rotvec([np.pi / 2, 0, 0], [1, 2, 3])
    rt = r.transformed(T)
    assert np.allclose(rt.origin, [1, 2, 3]) and np.allclose(rt.direction, [0, -1, 0])
    assert r.distance_to([3, 4, 10]) == pytest.approx(5.0)


def test_closest_points_between_lines_many_at_once_match_the_single_ray_version():
    import numpy as np
    from core.geometry.rigid import GeometryError, Ray, closest_points_between_lines, closest_points_between_rays
    rng = np.random.default_rng(3)
    o1, o2 = rng.normal(0, 50, (20, 3)), rng.normal(0, 50, (20, 3))
    d1, d2 = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 /= np.linalg.norm(d2, axis=1, keepdims=True)
    pa, pb, gap = closest_points_between_lines(o1, d1, o2, d2)
    for k in range(20):
        a, b, g = closest_points_between_rays(Ray(o1[k], d1[k]), Ray(o2[k], d2[k]))
        assert np.allclose(pa[k], a) and np.allclose(pb[k], b) and abs(gap[k] - g) < 1e-9
        # the connecting segment is perpendicular to both lines
        assert abs((pb[k] - pa[k]) @ d1[k]) < 1e-9 and abs((pb[k] - pa[k]) @ d2[k]) < 1e-9
    # two lines crossing at (1, 2, 3): gap 0 at the crossing
    pa, pb, gap = closest_points_between_lines([[1.0, 2, -7]], [[0, 0, 1.0]], [[-4.0, 2, 3]], [[1.0, 0, 0]])
    assert np.allclose(pa, [[1, 2, 3]]) and gap[0] < 1e-12
    with pytest.raises(GeometryError, match="parallel"):
        closest_points_between_lines(o1[:2], d1[:2], o2[:2], d1[:2])
