"""``fluoronav bench drr``: the fast DRR on a 256³ spine phantom against the exact Siddon and a baseline.

Timings are the median of several renders after a warm-up, with 2 threads
(torch and OpenCV), an AP C-arm shot (SID 1000 mm, source-isocentre 625 mm, a
230 mm field). ``ncc_vs_exact`` compares the 512² DRR with the exact Siddon on
every ``--exact-step``-th pixel in both directions. The baseline, on the same
volume and geometry: plastimatch's ``drr -i exact`` when installed (its own
reported compute time, file loading excluded), else a plain torch ``grid_sample``
ray marcher (the Joseph twin on the CPU).
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

DESCRIPTION = "fast DRR (512² of a 256³ phantom) vs exact Siddon and plastimatch / a torch ray marcher"


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=256, help="phantom voxels per side (default 256)")
    parser.add_argument("--repeats", type=int, default=7, help="timed renders per figure (median)")
    parser.add_argument("--exact-step", type=int, default=8, help="Siddon on every Nth pixel (default 8)")
    parser.add_argument("--threads", type=int, default=2)
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


def _plastimatch(volume, geo, sod, sid, threads: int, repeats: int):
    """(median compute ms, image) of plastimatch drr -i exact for an AP geometry, or None."""
    exe = shutil.which("plastimatch")
    if exe is None:
        return None
    rows, cols = geo.shape
    su, sv = geo.pixel_spacing_mm
    iso = geo.source_mm + sod * (-geo.detector_normal)
    with tempfile.TemporaryDirectory() as d:
        _write_mha(volume, os.path.join(d, "v.mha"))
        cmd = [exe, "drr", "-A", "cpu", "-i", "exact", "-t", "raw", "-P", "preprocess",
               "--sad", f"{sod}", "--sid", f"{sid}", "-r", f"{rows} {cols}", "-z", f"{rows * sv} {cols * su}",
               "-o", " ".join(f"{x:.6f}" for x in iso), "-n", " ".join(f"{x:.9f}" for x in geo.detector_normal),
               "--vup", " ".join(f"{x:.9f}" for x in -geo.detector_v),
               "-O", os.path.join(d, "p_"), os.path.join(d, "v.mha")]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        times = []
        for _ in range(max(3, repeats // 2)):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            m = re.search(r"Total time:\s*([0-9.eE+-]+)", r.stdout)
            if r.returncode != 0 or m is None:
                return None
            times.append(1000 * float(m.group(1)))
        img = np.fromfile(os.path.join(d, "p_0000.raw"), np.float32).reshape(rows, cols)
    return statistics.median(times), img


def run(args) -> dict:
    import cv2
    import torch

    from core.simulation.drr import MuGrid, ShearWarpRenderer, joseph_drr_torch, siddon_drr
    from core.simulation.scene import carm_geometry

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    vol, what = _volume(args.size)
    grid = MuGrid.from_volume(vol)
    renderer = ShearWarpRenderer(grid, oversample=args.oversample, air_mu=1e-5)
    iso, sid, sod, field = np.zeros(3), 1000.0, 625.0, 230.0
    geo = {n: carm_geometry("ap", 0.0, 0.0, iso, sid, sod, (field / n, field / n), (n, n)) for n in (256, 512)}
    out = {"volume": f"{what} {vol.hu.shape[2]}x{vol.hu.shape[1]}x{vol.hu.shape[0]} at "
                     f"{vol.spacing_mm[0]:.2f} mm", "threads": args.threads,
           "oversample": args.oversample}
    out["ms_per_drr_256"] = _median_ms(lambda: renderer.render(geo[256]), args.repeats)
    out["ms_per_drr_512"] = _median_ms(lambda: renderer.render(geo[512]), args.repeats)
    fast = renderer.render(geo[512])
    step = args.exact_step
    vv, uu = np.mgrid[step // 2:512:step, step // 2:512:step]
    uv = np.stack([uu.ravel(), vv.ravel()], 1)
    t = time.perf_counter()
    exact = siddon_drr(grid, geo[512], uv)
    out["exact_siddon_ms_per_ray"] = 1000 * (time.perf_counter() - t) / len(uv)
    sampled = fast[uv[:, 1], uv[:, 0]]
    out["ncc_vs_exact"] = _ncc(sampled, exact)
    out["mae_vs_exact"] = float(np.abs(sampled - exact).mean())
    out["mean_line_integral_exact"] = float(exact.mean())
    out["exact_pixels_compared"] = int(len(uv))
    plm = _plastimatch(vol, geo[512], sod, sid, args.threads, args.repeats)
    twin_ms = None
    if args.device != "none":
        mu = torch.from_numpy(grid.mu).to(args.device)
        T = torch.from_numpy(grid.T_world_voxel).to(args.device)

        def twin():
            with torch.no_grad():
                joseph_drr_torch(mu, T, geo[512])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()

        twin_ms = _median_ms(twin, max(1, min(args.repeats, 3)))
        out[f"torch_twin_ms_512_{args.device}"] = twin_ms
    if plm is not None:
        out["baseline_name"] = "plastimatch drr -i exact (cpu, reported compute time)"
        out["baseline_ms_512"] = plm[0]
        out["baseline_ncc_vs_fast"] = _ncc(plm[1], fast)
    elif twin_ms is not None:
        out["baseline_name"] = f"torch grid_sample Joseph ray marcher ({args.device})"
        out["baseline_ms_512"] = twin_ms
    else:
        return out
    out["speedup_vs_baseline"] = out["baseline_ms_512"] / out["ms_per_drr_512"]
    return out
