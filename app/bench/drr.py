"""``fluoronav bench drr``: the fast DRR on a 256³ spine phantom against the exact Siddon and baselines.

Conditions (printed in the output): ``--threads`` threads for OpenCV, torch and the
renderer, an AP C-arm shot (SID 1000 mm, source-isocentre 625 mm, a 230 mm field)
at 512², 256² and 128². Cached figures repeat one geometry (median of
``--repeats`` after a warm-up); new-pose figures render ``--poses`` C-arm poses
never rendered before (AP and LAT alternating, both angles uniform within ±30°,
isocentre shifts within ±20 mm; the median, and the CPU time beside the wall time
because the machine may be shared). The 128² new-pose figure is at pyramid level
``--level-128`` (default 1: 2x2x2-averaged voxels), with level 0 beside it.
``ncc_vs_exact`` compares the 512² AP DRR with the exact Siddon on every
``--exact-step``-th pixel in both directions; new poses are checked the same way.
Baselines on the same volume and geometry: plastimatch ``drr -i uniform`` and
``-i exact`` (their own reported compute time, file loading excluded; the faster is
``baseline_ms_512``); without plastimatch one line says so and the baseline is a
plain torch ``grid_sample`` ray marcher (the Joseph twin on the CPU).
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

DESCRIPTION = "fast DRR (512² and 128², cached and new poses) vs exact Siddon and plastimatch / a torch ray marcher"
SID_MM, SOD_MM, FIELD_MM = 1000.0, 625.0, 230.0


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=256, help="phantom voxels per side (default 256)")
    parser.add_argument("--repeats", type=int, default=7, help="timed renders per cached figure (median)")
    parser.add_argument("--poses", type=int, default=20, help="new C-arm poses timed per size (median)")
    parser.add_argument("--exact-step", type=int, default=8, help="Siddon on every Nth pixel (default 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--level-128", type=int, default=1, help="pyramid level of the 128² new-pose figure")
    parser.add_argument("--oversample", type=float, default=1.0,
                        help="reference-plane grid density over the voxel pitch (accuracy/speed, default 1)")
    parser.add_argument("--device", default="cpu",
                        help="time the torch twin on this device (cpu, cuda; 'none' to skip it)")


def _volume(n: int):
    try:
        from core.simulation.phantom import make_spine_phantom
        return make_spine_phantom(seed=0, spacing_mm=330.0 / n, shape=(n, n, n)).volume, "spine phantom"
    except ImportError:
        from core.simulation.block_phantom import block_phantom
        return block_phantom(300.0 / n, size_mm=(300.0,) * 3), "block phantom"


def _median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def _ncc(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _write_mha(volume, path) -> None:
    """MetaImage (int16 HU) for plastimatch; axes as ``T_world_voxel`` (world = DICOM LPS)."""
    nz, ny, nx = volume.hu.shape
    R = volume.T_world_voxel[:3, :3] / np.asarray(volume.spacing_mm)
    o = volume.T_world_voxel[:3, 3]
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"TransformMatrix = {' '.join(f'{x:.9g}' for x in R.T.ravel())}\n"
              f"Offset = {o[0]:.9g} {o[1]:.9g} {o[2]:.9g}\n"
              f"ElementSpacing = {' '.join(f'{s:.9g}' for s in volume.spacing_mm)}\n"
              f"DimSize = {nx} {ny} {nz}\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    with open(path, "wb") as f:
        f.write(header.encode())
        f.write(np.clip(volume.hu, -32768, 32767).astype("<i2").tobytes())


def _plastimatch(volume, geo, sod, sid, threads: int, repeats: int, algorithm: str = "exact"):
    """(median compute ms, image) of plastimatch drr -i ALGORITHM for an AP geometry, or None."""
    exe = shutil.which("plastimatch")
    if exe is None:
        return None
    rows, cols = geo.shape
    su, sv = geo.pixel_spacing_mm
    iso = geo.source_mm + sod * (-geo.detector_normal)
    with tempfile.TemporaryDirectory() as d:
        _write_mha(volume, os.path.join(d, "v.mha"))
        cmd = [exe, "drr", "-A", "cpu", "-i", algorithm, "-t", "raw", "-P", "preprocess",
               "--sad", f"{sod}", "--sid", f"{sid}", "-r", f"{rows} {cols}", "-z", f"{rows * sv} {cols * su}",
               "-o", " ".join(f"{x:.6f}" for x in iso), "-n", " ".join(f"{x:.9f}" for x in geo.detector_normal),
               "--vup", " ".join(f"{x:.9f}" for x in -geo.detector_v),
               "-O", os.path.join(d, "p_"), os.path.join(d, "v.mha")]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        times = []
        for _ in range(max(1, min(3, repeats))):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            m = re.search(r"Total time:\s*([0-9.eE+-]+)", r.stdout)
            if r.returncode != 0 or m is None:
                return None
            times.append(1000 * float(m.group(1)))
        img = np.fromfile(os.path.join(d, "p_0000.raw"), np.float32).reshape(rows, cols)
    return statistics.median(times), img


def _poses(n: int, size: int, seed: int = 16):
    """``n`` C-arm geometries: AP and LAT alternating, angles within ±30°, isocentre shifts within ±20 mm."""
    from core.simulation.scene import carm_geometry
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(-30, 30, 2)
        iso = rng.uniform(-20, 20, 3)
        out.append(carm_geometry(("ap", "lat")[i % 2], a, b, iso, SID_MM, SOD_MM, (FIELD_MM / size,) * 2,
                                 (size, size)))
    return out


def _new_pose_ms(render, geometries) -> tuple[float, float]:
    """Median (wall ms, CPU ms of all threads) over geometries each rendered once."""
    wall, cpu = [], []
    for g in geometries:
        c, t = time.process_time(), time.perf_counter()
        render(g)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def _grid_pixels(size: int, step: int) -> np.ndarray:
    vv, uu = np.mgrid[step // 2:size:step, step // 2:size:step]
    return np.stack([uu.ravel(), vv.ravel()], 1)


def _vs_exact(grid, image, geo, step: int) -> tuple[float, float, float]:
    """(NCC, mean |fast - exact|, mean exact) on every ``step``-th pixel."""
    from core.simulation.drr import siddon_drr
    uv = _grid_pixels(geo.shape[0], step)
    exact = siddon_drr(grid, geo, uv)
    sampled = image[uv[:, 1], uv[:, 0]]
    return _ncc(sampled, exact), float(np.abs(sampled - exact).mean()), float(exact.mean())


def _baselines(out: dict, vol, grid, geo, fast, args) -> None:
    """plastimatch -i uniform and -i exact, or the torch ray marcher; the faster becomes ``baseline_ms_512``."""
    import torch

    from core.simulation.drr import joseph_drr_torch
    runs = {}
    for alg in ("uniform", "exact"):
        plm = _plastimatch(vol, geo, SOD_MM, SID_MM, args.threads, args.repeats, alg)
        if plm is not None:
            runs[alg] = plm
            out[f"plastimatch_{alg}_ms_512"] = plm[0]
            out[f"plastimatch_{alg}_ncc_vs_fast"] = _ncc(plm[1], fast)
    if not runs and shutil.which("plastimatch") is None:
        line = "plastimatch not found (apt-get install plastimatch): baseline is the torch ray marcher"
        print(line, flush=True)
        out["baseline_note"] = line
    elif not runs:
        line = "plastimatch failed on this volume: baseline is the torch ray marcher"
        print(line, flush=True)
        out["baseline_note"] = line
    twin_ms = None
    if args.device != "none":
        mu = torch.from_numpy(grid.mu).to(args.device)
        T = torch.from_numpy(grid.T_world_voxel).to(args.device)

        def twin():
            with torch.no_grad():
                joseph_drr_torch(mu, T, geo)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()

        twin_ms = _median_ms(twin, max(1, min(args.repeats, 3)))
        out[f"torch_twin_ms_512_{args.device}"] = twin_ms
    if runs:
        alg = min(runs, key=lambda a: runs[a][0])
        out["baseline_name"] = f"plastimatch drr -i {alg} (cpu, {args.threads} threads, reported compute time)"
        out["baseline_ms_512"] = runs[alg][0]
        out["baseline_ncc_vs_fast"] = out[f"plastimatch_{alg}_ncc_vs_fast"]
    elif twin_ms is not None:
        out["baseline_name"] = f"torch grid_sample Joseph ray marcher ({args.device})"
        out["baseline_ms_512"] = twin_ms
    if "baseline_ms_512" in out:
        out["speedup_vs_baseline"] = out["baseline_ms_512"] / out["ms_per_drr_512_new_pose"]


def run(args) -> dict:
    import cv2
    import torch

    from core.simulation.drr import MuGrid, ShearWarpRenderer
    from core.simulation.scene import carm_geometry

    if args.poses < 1 or args.repeats < 1 or args.exact_step < 1:
        raise SystemExit("bench drr: --poses, --repeats and --exact-step must be at least 1")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    load_before = os.getloadavg()
    vol, what = _volume(args.size)
    grid = MuGrid.from_volume(vol)
    t = time.perf_counter()
    renderer = ShearWarpRenderer(grid, oversample=args.oversample, air_mu=1e-5, threads=args.threads)
    geo = {n: carm_geometry("ap", 0.0, 0.0, np.zeros(3), SID_MM, SOD_MM, (FIELD_MM / n,) * 2, (n, n))
           for n in (128, 256, 512)}
    renderer.render(geo[512])
    out = {"volume": f"{what} {vol.hu.shape[2]}x{vol.hu.shape[1]}x{vol.hu.shape[0]} at "
                     f"{vol.spacing_mm[0]:.2f} mm",
           "conditions": f"{args.threads} threads (OpenCV, torch, renderer); AP at SID {SID_MM:.0f} mm, "
                         f"source-isocentre {SOD_MM:.0f} mm, {FIELD_MM:.0f} mm field; new poses: {args.poses} "
                         "per size, AP/LAT, angles ±30°, shifts ±20 mm",
           "threads": args.threads, "oversample": args.oversample,
           "ms_fresh_renderer_first_512": 1000 * (time.perf_counter() - t)}
    t = time.perf_counter()
    level_128 = min(args.level_128, renderer.max_level)
    renderer.prepare(sorted({0, level_128}))
    out["ms_prepare_all_axes"] = 1000 * (time.perf_counter() - t)
    for n in (512, 256, 128):
        out[f"ms_per_drr_{n}"] = _median_ms(lambda: renderer.render(geo[n]), args.repeats)
    out["level_128"] = level_128
    out[f"ms_per_drr_128_level{level_128}"] = _median_ms(lambda: renderer.render(geo[128], level_128),
                                                         args.repeats)
    poses = {n: _poses(args.poses, n) for n in (512, 128)}
    out["ms_per_drr_512_new_pose"], out["cpu_ms_per_drr_512_new_pose"] = _new_pose_ms(renderer.render, poses[512])
    out["ms_per_drr_128_new_pose"], out["cpu_ms_per_drr_128_new_pose"] = _new_pose_ms(
        lambda g: renderer.render(g, level_128), poses[128])
    out["ms_per_drr_128_new_pose_level0"], out["cpu_ms_per_drr_128_new_pose_level0"] = _new_pose_ms(
        lambda g: renderer.render(g, 0), _poses(args.poses, 128, seed=17))
    fast = renderer.render(geo[512])
    t = time.perf_counter()
    out["ncc_vs_exact"], out["mae_vs_exact"], out["mean_line_integral_exact"] = _vs_exact(
        grid, fast, geo[512], args.exact_step)
    out["exact_pixels_compared"] = len(_grid_pixels(512, args.exact_step))
    out["exact_siddon_ms_per_ray"] = 1000 * (time.perf_counter() - t) / out["exact_pixels_compared"]
    checked = poses[512][:2]
    out["ncc_vs_exact_512_new_poses_min"] = min(
        _vs_exact(grid, renderer.render(g), g, 2 * args.exact_step)[0] for g in checked)
    for level in sorted({0, level_128}):
        out[f"ncc_vs_exact_128_new_poses_min_level{level}"] = min(
            _vs_exact(grid, renderer.render(g, level), g, max(1, args.exact_step // 2))[0] for g in poses[128][:2])
    _baselines(out, vol, grid, geo[512], fast, args)
    out["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return out
