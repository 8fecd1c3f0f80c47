"""Shapes placed in the world and combined into one signed distance; rasterised by bounding box.

A ``Part`` is a signed-distance function in its own frame (``T_world_part``,
rigid) with the half-size of a box that holds it. Parts combine in order: a
"union" is a smooth minimum with fillet ``k`` mm, a "subtract" a smooth maximum
with the negated distance. The same ``evaluate`` serves the voxel grid (only
within each part's box, so far-away voxels cost nothing) and single points (the
ground-truth entry search), so the truth and the voxels share one surface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.simulation.phantom.sdf import smax, smin

__all__ = ["Part", "Grid", "evaluate", "rasterize", "FAR_MM"]

FAR_MM = 100.0


@dataclass(frozen=True, eq=False)
class Part:
    name: str
    T_world_part: np.ndarray
    half_size: tuple[float, float, float]
    sdf: Callable
    op: str = "union"
    k: float = 1.5

    def local(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        R, t = self.T_world_part[:3, :3], self.T_world_part[:3, 3]
        q = (P - t) @ R
        return q[..., 0], q[..., 1], q[..., 2]

    def world_box(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        R, t = self.T_world_part[:3, :3], self.T_world_part[:3, 3]
        half = np.abs(R) @ (np.asarray(self.half_size) + margin)
        return t - half, t + half


@dataclass(frozen=True)
class Grid:
    """Axis-aligned voxel grid: voxel (i, j, k) centre at origin + (i, j, k) * spacing; shape (nz, ny, nx)."""
    origin: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]

    def index_box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices (k, j, i) of the voxels whose centres lie in the world box [lo, hi]."""
        a = np.ceil((lo - self.origin) / self.spacing).astype(int)
        b = np.floor((hi - self.origin) / self.spacing).astype(int) + 1
        n = np.array(self.shape[::-1])
        a, b = np.clip(a, 0, n), np.clip(b, 0, n)
        if np.any(b <= a):
            return None
        return slice(a[2], b[2]), slice(a[1], b[1]), slice(a[0], b[0])

    def coords(self, sl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable world x (1,1,n), y (1,n,1), z (n,1,1) of a slice's voxel centres."""
        o, s = self.origin, self.spacing
        z = (o[2] + s[2] * np.arange(sl[0].start, sl[0].stop)).astype(np.float32)[:, None, None]
        y = (o[1] + s[1] * np.arange(sl[1].start, sl[1].stop)).astype(np.float32)[None, :, None]
        x = (o[0] + s[0] * np.arange(sl[2].start, sl[2].stop)).astype(np.float32)[None, None, :]
        return x, y, z


def _combine(d, dp, part: Part):
    if part.op == "union":
        return smin(d, dp, part.k)
    if part.op == "subtract":
        return smax(d, -dp, part.k)
    raise ValueError(f"unknown part operation {part.op!r}")


def evaluate(parts: list[Part], points) -> np.ndarray:
    """Combined signed distance (mm) at world points (..., 3)."""
    P = np.asarray(points, dtype=float)
    d = np.full(P.shape[:-1], FAR_MM)
    for part in parts:
        d = _combine(d, part.sdf(*part.local(P)), part)
    return d


def _local_grid(part: Part, grid: Grid, sl):
    x, y, z = grid.coords(sl)
    R = part.T_world_part[:3, :3].astype(np.float32)
    t = part.T_world_part[:3, 3].astype(np.float32)
    dx, dy, dz = x - t[0], y - t[1], z - t[2]
    return tuple(dx * R[0, c] + dy * R[1, c] + dz * R[2, c] for c in range(3))


def rasterize(parts: list[Part], grid: Grid, margin: float) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(slices, distances) over the union of the parts' boxes (+ margin mm); None when off the grid."""
    boxes = [p.world_box(margin) for p in parts]
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    block = grid.index_box(lo, hi)
    if block is None:
        return None
    d = np.full(tuple(s.stop - s.start for s in block), FAR_MM, dtype=np.float32)
    for part, (plo, phi) in zip(parts, boxes):
        sl = grid.index_box(np.maximum(plo, lo), np.minimum(phi, hi))
        if sl is None:
            continue
        rel = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, block))
        dp = part.sdf(*_local_grid(part, grid, sl)).astype(np.float32)
        d[rel] = _combine(d[rel], dp, part)
    return block, d
