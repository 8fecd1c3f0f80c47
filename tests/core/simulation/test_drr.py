"""The fast DRR against the exact Siddon reference and analytic line integrals; the torch twin; errors."""
import numpy as np
import pytest
import torch

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.drr import DrrError, MuGrid, ShearWarpRenderer, joseph_drr_torch, pose_matrix_torch, siddon_drr
from core.geometry.rigid import from_euler

MU = 0.02  # 1/mm, about water


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def grid_box(n=40, sp=2.0):
    """A grid centred on the origin, spacing ``sp`` mm, μ zero."""
    T = np.diag([sp, sp, sp, 1.0])
    T[:3, 3] = -(n - 1) / 2 * sp
    return np.zeros((n, n, n), np.float32), T


def geometry(shape=(48, 48), ps=2.4, angles_deg=(0, 0, 0), sod=500.0, sid=800.0):
    """A C-arm-like pinhole looking along +y at the origin, turned by xyz Euler angles."""
    R = from_euler("xyz", np.radians(angles_deg))[:3, :3]
    b, u, v = R @ [0, 1.0, 0], R @ [1.0, 0, 0], R @ [0, 0, -1.0]
    rows, cols = shape
    centre = (sid - sod) * b
    origin = centre - (cols - 1) / 2 * ps * u - (rows - 1) / 2 * ps * v
    return ConeBeamGeometry(-sod * b, origin, u, v, (ps, ps), shape)


def test_siddon_is_exact_for_a_voxel_aligned_cube():
    mu, T = grid_box()
    mu[10:30, 12:26, 8:33] = MU  # box faces on voxel boundaries: no partial volume
    lo = T[:3, 3] + 2.0 * (np.array([8, 12, 10]) - 0.5)
    hi = T[:3, 3] + 2.0 * (np.array([33, 26, 30]) - 0.5)
    geo = geometry(angles_deg=(10, 0, 25))
    img = siddon_drr(MuGrid(mu, T), geo)
    rows, cols = geo.shape
    vv, uu = np.mgrid[0:rows, 0:cols]
    D = geo.pixel_to_detector_mm(np.stack([uu.ravel(), vv.ravel()], 1))
    d = D - geo.source_mm
    with np.errstate(divide="ignore"):
        t1, t2 = (lo - geo.source_mm) / d, (hi - geo.source_mm) / d
    # slab method: the ray is inside the box between the largest entry and the smallest exit
    chord = np.clip(np.maximum(t1, t2).min(1) - np.minimum(t1, t2).max(1), 0, None) * np.linalg.norm(d, axis=1)
    np.testing.assert_allclose(img.ravel(), MU * chord, atol=2e-5)
    assert (chord > 0).sum() > 500


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, 0, 35), (0, -30, 60)])
def test_fast_drr_matches_analytic_sphere(angles):
    mu, T = grid_box(48, 1.5)
    c = np.array([6.0, -4.0, 3.0])
    r = 25.0
    p = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"), -1)[..., ::-1] * 1.5 + T[:3, 3]  # (k,j,i)->xyz
    mu[np.linalg.norm(p - c, axis=-1) <= r] = MU
    geo = geometry(angles_deg=angles, ps=2.0)
    img = ShearWarpRenderer(MuGrid(mu, T)).render(geo, level=0)  # the full grid (the pyramid: test_drr_speed.py)
    rows, cols = geo.shape
    vv, uu = np.mgrid[0:rows, 0:cols]
    d = geo.pixel_to_detector_mm(np.stack([uu.ravel(), vv.ravel()], 1)) - geo.source_mm
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = c - geo.source_mm
    h2 = w @ w - (d @ w) ** 2
    truth = (MU * 2 * np.sqrt(np.clip(r * r - h2, 0, None))).reshape(geo.shape)
    assert ncc(img, truth) >= 0.995
    # partial volume of the voxelised sphere: mean error < 2 % of the central line integral
    assert np.abs(img - truth).mean() < 0.02 * truth.max()
    centre_px = np.round(geo.project(c)).astype(int)
    assert img[centre_px[1], centre_px[0]] == pytest.approx(truth[centre_px[1], centre_px[0]], rel=0.02)


def _body(n=40, sp=3.0, seed=0):
    from core.simulation.block_phantom import block_phantom
    vol = block_phantom(sp, size_mm=(n * sp, 0.8 * n * sp, 0.7 * n * sp), seed=seed)
    return MuGrid.from_volume(vol)


@pytest.mark.parametrize("angles", [(0, 0, 0), (15, 0, -40), (0, 20, 90)])
def test_fast_drr_matches_siddon_on_a_body_phantom(angles):
    grid = _body()
    geo = geometry(shape=(40, 56), ps=3.0, angles_deg=angles)
    fast = ShearWarpRenderer(grid, air_mu=1e-5).render(geo)
    exact = siddon_drr(grid, geo)
    assert ncc(fast, exact) >= 0.99
    mae = np.abs(fast - exact).mean()
    assert mae < 0.03 * exact.max()  # measured: ~1 % (edges of the bone column and the body)


def test_fast_drr_matches_siddon_on_the_spine_phantom():
    phantom = pytest.importorskip("core.simulation.phantom")
    try:
        ph = phantom.make_spine_phantom(seed=1, spacing_mm=3.0)
    except TypeError:
        pytest.skip("make_spine_phantom signature differs")
    grid = MuGrid.from_volume(ph.volume)
    geo = geometry(shape=(40, 40), ps=4.0, angles_deg=(0, 0, 10))
    fast = ShearWarpRenderer(grid, air_mu=1e-5).render(geo)
    exact = siddon_drr(grid, geo)
    assert ncc(fast, exact) >= 0.99
    assert np.abs(fast - exact).mean() < 0.03 * exact.max()


def test_torch_twin_agrees_with_fast_path():
    grid = _body(seed=1)
    geo = geometry(shape=(36, 44), ps=3.0, angles_deg=(10, 5, 30))
    fast = ShearWarpRenderer(grid).render(geo)
    twin = joseph_drr_torch(torch.from_numpy(grid.mu), torch.from_numpy(grid.T_world_voxel), geo).numpy()
    assert ncc(fast, twin) >= 0.999
    assert np.abs(fast - twin).mean() < 0.005 * twin.max()


def test_torch_twin_gradient_wrt_pose_matches_finite_differences():
    from scipy.ndimage import gaussian_filter
    grid = _body(n=24, sp=5.0, seed=2)
    mu = torch.from_numpy(gaussian_filter(grid.mu, 1.0)).double()  # smooth: finite differences are meaningful
    T0 = torch.from_numpy(grid.T_world_voxel)
    geo = geometry(shape=(16, 20), ps=6.0, angles_deg=(5, 0, 20))
    weights = torch.from_numpy(np.random.default_rng(0).normal(size=geo.shape))

    def loss(p):
        return (joseph_drr_torch(mu, pose_matrix_torch(p) @ T0, geo, axis=1) * weights).sum()

    p0 = torch.tensor([0.02, -0.01, 0.03, 1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    loss(p0).backward()
    steps = [1e-4] * 3 + [1e-2] * 3
    fd = []
    for i, h in enumerate(steps):
        e = torch.zeros(6, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            fd.append(float((loss(p0 + e) - loss(p0 - e)) / (2 * h)))
    np.testing.assert_allclose(p0.grad.numpy(), fd, rtol=0.03, atol=1e-3 * np.abs(fd).max())


def test_empty_volume_and_view_away_give_zero():
    mu, T = grid_box(8, 2.0)
    geo = geometry(shape=(10, 10))
    assert not ShearWarpRenderer(MuGrid(mu, T)).render(geo).any()


def test_negative_attenuation_is_refused():
    mu, T = grid_box(8)
    mu[0, 0, 0] = -0.1
    with pytest.raises(DrrError, match="non-negative"):
        MuGrid(mu, T)


def test_flat_grid_is_refused():
    with pytest.raises(DrrError, match="3-D"):
        MuGrid(np.zeros((4, 4), np.float32), np.eye(4))


def test_singular_affine_is_refused():
    with pytest.raises(DrrError, match="invertible"):
        MuGrid(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_source_inside_the_volume_is_refused():
    mu, T = grid_box(60, 20.0)  # a 1200 mm cube around a source 500 mm from its centre
    mu[:] = MU
    with pytest.raises(DrrError, match="source lies inside"):
        ShearWarpRenderer(MuGrid(mu, T)).render(geometry())


def test_bad_oversample_is_refused():
    mu, T = grid_box(8)
    with pytest.raises(DrrError, match="oversample"):
        ShearWarpRenderer(MuGrid(mu, T), oversample=10)


def test_pose_needs_six_parameters():
    with pytest.raises(DrrError, match="6 parameters"):
        pose_matrix_torch(torch.zeros(5))


def test_renderer_picks_the_cpu_without_a_gpu():
    from core.simulation.drr import DrrRenderer
    grid = _body(n=20, sp=5.0)
    geo = geometry(shape=(20, 20), ps=6.0)
    r = DrrRenderer(grid, "auto")
    assert r.device == ("cuda" if torch.cuda.is_available() else "cpu")
    np.testing.assert_allclose(DrrRenderer(grid, "cpu").render(geo), ShearWarpRenderer(grid).render(geo))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_agrees_with_cpu_path():
    from core.simulation.drr import DrrRenderer
    grid = _body(seed=3)
    geo = geometry(shape=(40, 48), ps=3.0, angles_deg=(0, 10, 20))
    gpu, cpu = DrrRenderer(grid, "cuda").render(geo), DrrRenderer(grid, "cpu").render(geo)
    assert ncc(gpu, cpu) >= 0.999


def test_unknown_render_device_is_refused():
    from core.simulation.drr import DrrRenderer
    with pytest.raises(DrrError, match="device"):
        DrrRenderer(_body(n=8, sp=10.0), "tpu")


def test_benchmark_runs_on_a_small_volume():
    """``fluoronav bench drr`` end to end on an 80³ phantom (the full-size figures are the benchmark's)."""
    import argparse

    from app.bench import drr as bench
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = bench.run(parser.parse_args(["--size", "80", "--repeats", "1", "--poses", "2", "--exact-step", "32",
                                       "--device", "none"]))
    for key in ("ms_per_drr_512", "ms_per_drr_512_new_pose", "ms_per_drr_128_new_pose",
                "ms_per_drr_128_new_pose_level0"):
        assert out[key] > 0, key
    assert out["exact_pixels_compared"] == 256 and out["level_128"] == 1 and out["threads"] == 2
    assert out["ncc_vs_exact"] >= 0.99
    assert out["mae_vs_exact"] < 0.03 * out["mean_line_integral_exact"]
    assert out["ncc_vs_exact_512_new_poses_min"] >= 0.99
    assert out["ncc_vs_exact_128_new_poses_min_level1"] >= 0.97  # 8 mm voxels at level 1 of an 80³ phantom
    if "baseline_ms_512" in out:  # plastimatch installed: same geometry, same picture
        assert out["baseline_ncc_vs_fast"] >= 0.98
        assert out["baseline_name"].startswith("plastimatch drr -i ")
    else:
        assert "plastimatch" in out["baseline_note"]


def test_benchmark_says_so_without_plastimatch(monkeypatch, capsys):
    import argparse

    from app.bench import drr as bench
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = bench.run(parser.parse_args(["--size", "40", "--repeats", "1", "--poses", "1", "--exact-step", "64",
                                       "--device", "none"]))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "plastimatch" in ln]
    assert lines == ["plastimatch not found (apt-get install plastimatch): baseline is the torch ray marcher"]
    assert "baseline_ms_512" not in out  # --device none: no torch baseline either


def test_benchmark_refuses_zero_poses():
    import argparse

    from app.bench import drr as bench
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(SystemExit, match="at least 1"):
        bench.run(parser.parse_args(["--poses", "0"]))
