"""Reconstruction figures of a fitted mesh against the true bone: DICE and HD95 on a voxel grid,
and the best the model can do (its fit to the true 3D surface), the floor of any 2D fit.

Both masks are sampled on one grid (``spacing_mm``, 0.75 mm by default): the truth where its
signed distance is negative, the mesh by ray parity along z (a watertight mesh crosses each
voxel column an even number of times). HD95 is the 95th percentile of the symmetric distances
between the two masks' surface voxels (Euclidean distance transforms), as in the medical
segmentation literature and Spine-DART's table (HD-95).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from core.simulation.phantom.parts import FAR_MM, Grid, rasterize

__all__ = ["voxelize_mesh", "dice_hd95", "best_3d_fit"]


def voxelize_mesh(verts, faces, origin, spacing: float, shape) -> np.ndarray:
    """Boolean (nz, ny, nx) inside mask of a closed mesh: parity of crossings along +z per column."""
    nz, ny, nx = shape
    V = (np.asarray(verts, float) - origin) / spacing + 1e-4 * np.array([0.37, 0.61, 0.0])   # off the grid lines
    a, b, c = V[faces[:, 0]], V[faces[:, 1]], V[faces[:, 2]]
    lo = np.floor(np.minimum(np.minimum(a, b), c)[:, :2]).astype(int) + 1
    hi = np.floor(np.maximum(np.maximum(a, b), c)[:, :2]).astype(int)
    counts = np.zeros((nz + 1, ny, nx), np.int32)
    span = np.maximum(hi - lo + 1, 0)
    m = int(span.max(initial=0))
    for di in range(m):
        for dj in range(m):
            ix, iy = lo[:, 0] + di, lo[:, 1] + dj
            ok = (di < span[:, 0]) & (dj < span[:, 1]) & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
            if not ok.any():
                continue
            A, B, C = a[ok], b[ok], c[ok]
            px, py = ix[ok].astype(float), iy[ok].astype(float)
            det = (B[:, 0] - A[:, 0]) * (C[:, 1] - A[:, 1]) - (C[:, 0] - A[:, 0]) * (B[:, 1] - A[:, 1])
            with np.errstate(divide="ignore", invalid="ignore"):
                w1 = ((px - A[:, 0]) * (C[:, 1] - A[:, 1]) - (C[:, 0] - A[:, 0]) * (py - A[:, 1])) / det
                w2 = ((B[:, 0] - A[:, 0]) * (py - A[:, 1]) - (px - A[:, 0]) * (B[:, 1] - A[:, 1])) / det
                hit = (det != 0) & (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
            z = A[hit, 2] + w1[hit] * (B[hit, 2] - A[hit, 2]) + w2[hit] * (C[hit, 2] - A[hit, 2])
            k = np.clip(np.ceil(z).astype(int), 0, nz)
            np.add.at(counts, (k, iy[ok][hit], ix[ok][hit]), 1)
    return (np.cumsum(counts, axis=0)[:nz] % 2) == 1


def _grid_for(points_list, spacing, margin=3.0):
    lo = np.min([p.min(0) for p in points_list], axis=0) - margin
    hi = np.max([p.max(0) for p in points_list], axis=0) + margin
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    return lo, (int(n[2]), int(n[1]), int(n[0]))


def _surface(mask):
    return mask & ~ndimage.binary_erosion(mask)


def _truth_mask(sdf, origin, spacing_mm, shape) -> np.ndarray:
    """Inside mask of the truth: a list of phantom parts (rasterised box by box) or a callable sdf."""
    if isinstance(sdf, (list, tuple)):
        grid = Grid(origin=np.asarray(origin, float), spacing=np.full(3, spacing_mm), shape=tuple(shape))
        d = np.full(shape, FAR_MM, np.float32)
        res = rasterize(list(sdf), grid, margin=2.0)
        if res is not None:
            d[res[0]] = res[1]
        return d < 0
    nz, ny, nx = shape
    z, y, x = (origin[i] + spacing_mm * np.arange(n) for i, n in ((2, nz), (1, ny), (0, nx)))
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    return sdf(np.stack([X, Y, Z], -1)) < 0


def dice_hd95(verts, faces, sdf, spacing_mm: float = 0.75, truth_points=None) -> tuple[float, float]:
    """(DICE, HD95 mm) of the mesh against the bone ``sdf``: world points (..., 3) -> mm (< 0 inside),
    or the bone's phantom parts (faster: each part only within its box).

    ``truth_points``: points spanning the true bone (its box corners) so that the grid holds both.
    """
    pts = [np.asarray(verts, float)] + ([np.asarray(truth_points, float)] if truth_points is not None else [])
    origin, shape = _grid_for(pts, spacing_mm)
    truth = _truth_mask(sdf, origin, spacing_mm, shape)
    fit = voxelize_mesh(verts, faces, origin, spacing_mm, shape)
    inter = np.logical_and(truth, fit).sum()
    dice = 2.0 * inter / max(truth.sum() + fit.sum(), 1)
    st, sf = _surface(truth), _surface(fit)
    if not st.any() or not sf.any():
        return float(dice), float("inf")
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing_mm)
    dt_f = ndimage.distance_transform_edt(~sf, sampling=spacing_mm)
    d = np.concatenate([dt_t[sf], dt_f[st]])
    return float(dice), float(np.percentile(d, 95))


def best_3d_fit(model, sdf, T_world_model0, n_points: int = 1500, prior: float = 0.05, seed: int = 0):
    """(T_world_model, b): pose and shape minimising the true signed distance at the model's vertices
    (a subsample), with a weak shape prior; the floor of what fitting the images can reach."""
    from core.registration.ssm.fit import _pose_matrix
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(len(model.mean), size=min(n_points, len(model.mean)), replace=False))
    mean, modes, k = model.mean[sub], model.modes[:, sub], model.n_modes

    def residuals(x):
        T = _pose_matrix(x, T_world_model0)
        V = mean + np.tensordot(x[6:] * model.sd, modes, axes=1)
        d = sdf(V @ T[:3, :3].T + T[:3, 3])
        return np.concatenate([d / np.sqrt(len(d)), prior * x[6:]])
    sol = least_squares(residuals, np.zeros(6 + k), x_scale=np.concatenate([[0.03] * 3, [1.0] * 3, [1.0] * k]))
    return _pose_matrix(sol.x, T_world_model0), sol.x[6:]
