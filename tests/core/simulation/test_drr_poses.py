"""The fast DRR at C-arm poses never rendered before: against Siddon and analytic truth, pixel placement
of a bright voxel, the pyramid levels, caching and determinism, bad input."""
import numpy as np
import pytest

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import from_euler
from core.simulation.drr import DrrError, DrrRenderer, MuGrid, ShearWarpRenderer, siddon_drr

MU = 0.02  # 1/mm, about water


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def carm(rng, shape=(40, 48), ps=3.0, sod=500.0, sid=800.0, max_deg=30.0, shift_mm=15.0, lateral=False):
    """A C-arm-like pinhole at a random pose: AP (beam +y) or LAT (beam +x) turned within ±max_deg, shifted."""
    beam, u, v = ([1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]) if lateral else ([0, 1.0, 0], [1.0, 0, 0], [0, 0, -1.0])
    R = from_euler("xyz", np.radians(rng.uniform(-max_deg, max_deg, 3)))[:3, :3]
    b, u, v = R @ beam, R @ u, R @ v
    iso = rng.uniform(-shift_mm, shift_mm, 3)
    rows, cols = shape
    origin = iso + (sid - sod) * b - (cols - 1) / 2 * ps * u - (rows - 1) / 2 * ps * v
    return ConeBeamGeometry(iso - sod * b, origin, u, v, (ps, ps), shape)


def centred(n, sp):
    T = np.diag([sp, sp, sp, 1.0])
    T[:3, 3] = -(np.asarray(n[::-1], float) - 1) / 2 * sp  # (nz, ny, nx) -> xyz origin
    return T


def body(n=64, sp=2.5, seed=0):
    from core.simulation.block_phantom import block_phantom
    return MuGrid.from_volume(block_phantom(sp, size_mm=(n * sp, 0.8 * n * sp, 0.7 * n * sp), seed=seed))


@pytest.fixture(scope="module")
def body_grid():
    return body()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_new_poses_match_siddon(body_grid, seed):
    rng = np.random.default_rng(seed)
    geo = carm(rng, lateral=seed % 2 == 0)
    fast = ShearWarpRenderer(body_grid, air_mu=1e-5).render(geo)
    exact = siddon_drr(body_grid, geo)
    assert ncc(fast, exact) >= 0.99
    # line integrals where the body is thick: within 3 % each (measured ≤ ~1.5 % away from edges)
    inside = exact > 0.5 * exact.max()
    assert inside.sum() > 100
    rel = np.abs(fast[inside] - exact[inside]) / exact[inside]
    assert np.median(rel) < 0.01 and np.percentile(rel, 95) < 0.03


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_new_poses_match_analytic_sphere(seed):
    """Independent of Siddon: a voxelised sphere's chords, at random poses."""
    n, sp, r = 48, 1.5, 25.0
    rng = np.random.default_rng(seed)
    c = rng.uniform(-6, 6, 3)
    T = centred((n, n, n), sp)
    p = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)[..., ::-1] * sp + T[:3, 3]
    mu = np.where(np.linalg.norm(p - c, axis=-1) <= r, MU, 0.0).astype(np.float32)
    geo = carm(rng, shape=(48, 48), ps=2.0, shift_mm=5.0)
    img = ShearWarpRenderer(MuGrid(mu, T)).render(geo, level=0)
    vv, uu = np.mgrid[0:48, 0:48]
    d = geo.pixel_to_detector_mm(np.stack([uu.ravel(), vv.ravel()], 1)) - geo.source_mm
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = c - geo.source_mm
    truth = (MU * 2 * np.sqrt(np.clip(r * r - (w @ w - (d @ w) ** 2), 0, None))).reshape(48, 48)
    assert ncc(img, truth) >= 0.995
    assert np.abs(img - truth).mean() < 0.02 * truth.max()
    u, v = np.round(geo.project(c)).astype(int)
    assert img[v, u] == pytest.approx(truth[v, u], rel=0.02)


def _in_view(rng, geo, T, lo, hi, step=1, margin=16):
    """A random voxel index (multiple of ``step``) in [lo, hi) whose centre projects ``margin`` px inside."""
    while True:
        ijk = step * rng.integers(lo // step, hi // step, 3)
        uv = geo.project(T[:3, :3] @ (ijk + (step - 1) / 2) + T[:3, 3])
        if geo.contains(uv, margin):
            return ijk


def _centroid(img):
    vv, uu = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(img * uu).sum(), (img * vv).sum()]) / img.sum()


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_a_bright_voxel_lands_where_the_geometry_projects_it(seed):
    n, sp = 64, 2.0
    rng = np.random.default_rng(seed)
    T = centred((n, n, n), sp)
    geo = carm(rng, shape=(160, 160), ps=0.6, lateral=seed % 2 == 1)  # a 2 mm voxel covers ~5 px
    ijk = _in_view(rng, geo, T, 2, n - 2)  # anywhere in view, towards the corners where the cone is most oblique
    mu = np.zeros((n, n, n), np.float32)
    mu[ijk[2], ijk[1], ijk[0]] = 1.0
    img = ShearWarpRenderer(MuGrid(mu, T)).render(geo, level=0)
    predicted = geo.project(T[:3, :3] @ ijk + T[:3, 3])
    assert img.sum() > 0
    assert np.linalg.norm(_centroid(img) - predicted) < 0.5


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_pyramid_levels_keep_pixel_placement(seed):
    """A bright 4x4x4 block aligned with the level-2 voxels projects to its centre at levels 0, 1 and 2."""
    n, sp = 64, 1.0
    rng = np.random.default_rng(seed)
    T = centred((n, n, n), sp)
    geo = carm(rng, shape=(96, 96), ps=0.8, lateral=seed % 2 == 0)
    lo = _in_view(rng, geo, T, 8, n - 8, step=4)
    mu = np.zeros((n, n, n), np.float32)
    mu[lo[2]:lo[2] + 4, lo[1]:lo[1] + 4, lo[0]:lo[0] + 4] = MU
    predicted = geo.project(T[:3, :3] @ (lo + 1.5) + T[:3, 3])
    r = ShearWarpRenderer(MuGrid(mu, T))
    sums = []
    for level in (0, 1, 2):
        img = r.render(geo, level=level)
        assert np.linalg.norm(_centroid(img) - predicted) < 0.5, level
        sums.append(img.sum())
    # the block's attenuation is kept at every level (box mean x twice the slice spacing); a wrong
    # scale would be off by a factor 2-8, the detector's sampling of one coarse voxel by ~3 %
    np.testing.assert_allclose(sums[1:], sums[0], rtol=0.06)


def test_pyramid_level_one_matches_siddon_on_the_fine_grid(body_grid):
    """The coarse level is an approximation: NCC ≥ 0.98 against the exact DRR of the full grid."""
    geo = carm(np.random.default_rng(31), shape=(24, 28), ps=6.0)
    r = ShearWarpRenderer(body_grid, air_mu=1e-5)
    exact = siddon_drr(body_grid, geo)
    assert ncc(r.render(geo, level=1), exact) >= 0.98
    assert ncc(r.render(geo, level=0), exact) >= 0.99


def test_level_follows_the_ray_pitch():
    T = centred((64, 64, 64), 1.0)
    r = ShearWarpRenderer(MuGrid(np.zeros((64, 64, 64), np.float32), T))
    rng = np.random.default_rng(0)
    fine = carm(rng, shape=(64, 64), ps=1.0)  # rays 0.625 mm apart at the volume: finer than the voxels
    coarse = carm(rng, shape=(16, 16), ps=8.0)  # 5 mm apart: 4 mm voxels still resolve them
    assert r.level_for(fine) == 0
    assert r.level_for(coarse) == 2
    assert ShearWarpRenderer(r.grid, max_voxel_per_ray=2.0).level_for(coarse) == 3
    assert r.max_level == 4  # 64 / 2^4 = 4 voxels per side


def test_caching_does_not_leak_between_poses(body_grid):
    rng = np.random.default_rng(41)
    A, B = carm(rng), carm(rng, lateral=True)
    C = carm(rng, shape=(20, 24), ps=6.0)
    r = ShearWarpRenderer(body_grid, air_mu=1e-5)
    first = r.render(A)
    others = [r.render(B), r.render(C, level=1), r.render(B)]
    again = r.render(A)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, ShearWarpRenderer(body_grid, air_mu=1e-5).render(A))
    np.testing.assert_array_equal(others[0], others[2])
    assert ncc(first, others[0]) < 0.9  # B really is another picture


def test_the_image_does_not_depend_on_threads(body_grid):
    geo = carm(np.random.default_rng(51), shape=(200, 240), ps=0.6)  # enough work for the second thread
    one = ShearWarpRenderer(body_grid, air_mu=1e-5, threads=1).render(geo)
    two = ShearWarpRenderer(body_grid, air_mu=1e-5, threads=2)
    np.testing.assert_array_equal(one, two.render(geo))
    np.testing.assert_array_equal(one, two.render(geo))


def test_render_many_is_render_in_order(body_grid):
    rng = np.random.default_rng(61)
    geos = [carm(rng), carm(rng, lateral=True)]
    for r in (ShearWarpRenderer(body_grid), DrrRenderer(body_grid, "cpu")):
        many = r.render_many(geos, level=1)
        for g, img in zip(geos, many):
            np.testing.assert_array_equal(img, r.render(g, level=1))


def test_path_weight_matches_the_ray_lengths(body_grid):
    geo = carm(np.random.default_rng(71), shape=(30, 34), ps=5.0, max_deg=40)
    A = body_grid.T_world_voxel[:3, :3]
    vv, uu = np.mgrid[0:30, 0:34]
    d = geo.pixel_to_detector_mm(np.stack([uu, vv], -1).astype(float)) - geo.source_mm
    for axis in range(3):
        step = d @ np.linalg.inv(A)[axis]
        np.testing.assert_allclose(body_grid.path_weight(geo, axis), np.linalg.norm(d, axis=-1) / np.abs(step),
                                   rtol=1e-5)


def test_bad_render_options_are_refused(body_grid):
    r = ShearWarpRenderer(body_grid)
    geo = carm(np.random.default_rng(0))
    with pytest.raises(DrrError, match="pyramid level"):
        r.render(geo, level=r.max_level + 1)
    with pytest.raises(DrrError, match="pyramid level"):
        r.render(geo, level=-1)
    with pytest.raises(DrrError, match="threads"):
        ShearWarpRenderer(body_grid, threads=0)
    with pytest.raises(DrrError, match="max_voxel_per_ray"):
        ShearWarpRenderer(body_grid, max_voxel_per_ray=0)
