"""The exact reference DRR: Siddon's (1985) ray tracing through constant voxel boxes.

Slow and plain on purpose: it is the truth the fast renderers are checked against.
Each ray from the source to a pixel centre is cut at every voxel boundary plane
(α parameters, Siddon eq. 4-8); each piece lies in one voxel and contributes
μ(voxel) · length.
"""
from __future__ import annotations

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.drr.volume_grid import MuGrid


def _ray_integral(mu, shape_xyz, S, D, length_mm) -> float:
    """∫μ along the segment S->D (index coordinates), ``length_mm`` its length in the world."""
    d = D - S
    alphas = [np.array([0.0, 1.0])]
    lo, hi = 0.0, 1.0
    for a in range(3):
        planes = np.arange(shape_xyz[a] + 1) - 0.5
        if abs(d[a]) < 1e-12:
            if not (planes[0] <= S[a] <= planes[-1]):
                return 0.0
            continue
        al = (planes - S[a]) / d[a]
        lo, hi = max(lo, al.min()), min(hi, al.max())
        alphas.append(al)
    if hi <= lo:
        return 0.0
    al = np.concatenate(alphas)
    al = np.unique(al[(al >= lo) & (al <= hi)])
    mid = 0.5 * (al[1:] + al[:-1])
    idx = np.floor(S[None] + mid[:, None] * d[None] + 0.5).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(shape_xyz)), axis=1)
    seg = np.diff(al)[ok] * length_mm
    i, j, k = idx[ok].T
    return float(np.sum(mu[k, j, i] * seg))


def siddon_drr(grid: MuGrid, geometry: ConeBeamGeometry, pixels_uv=None) -> np.ndarray:
    """Exact line integrals through pixel centres: the (rows, cols) image, or for ``pixels_uv`` (N, 2)."""
    rows, cols = geometry.shape
    if pixels_uv is None:
        vv, uu = np.mgrid[0:rows, 0:cols]
        uv = np.stack([uu.ravel(), vv.ravel()], 1).astype(float)
    else:
        uv = np.atleast_2d(np.asarray(pixels_uv, float))
    Tinv = np.linalg.inv(grid.T_world_voxel)
    S = (Tinv @ np.append(geometry.source_mm, 1))[:3]
    Dw = geometry.pixel_to_detector_mm(uv)
    D = Dw @ Tinv[:3, :3].T + Tinv[:3, 3]
    L = np.linalg.norm(Dw - geometry.source_mm, axis=1)
    out = np.array([_ray_integral(grid.mu, grid.shape_xyz, S, D[n], L[n]) for n in range(len(uv))],
                   np.float32)
    return out.reshape(rows, cols) if pixels_uv is None else out
