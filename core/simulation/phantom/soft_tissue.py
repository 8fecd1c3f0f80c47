"""Soft tissue around the spine: skin, subcutaneous fat, muscles, viscera with fat and bowel gas.

The trunk's cross-section (skin, fat, viscera, erector spinae) follows the
spine's sagittal curve ``spine_y(z)``, so it is drawn once as a 2-D template and
shifted per slice (linear interpolation: edges stay anti-aliased). The psoas
(growing caudally), lumps of mesenteric fat and bowel-gas pockets are 3-D
shapes drawn in their bounding boxes. HU: skin +30, fat -100, muscle +50,
viscera +35, bowel gas -950 (and, drawn with the spine: disc +80, CSF +10).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.simulation.phantom.parts import Grid
from core.simulation.phantom.sdf import ellipse_approx, ellipsoid_approx, occupancy

__all__ = ["BodyShape", "draw_body_shape", "paint_soft_tissue", "HU", "BACK_OFFSET_MM"]

HU = {"air": -1000.0, "skin": 30.0, "fat": -100.0, "muscle": 50.0, "viscera": 35.0, "gas": -950.0,
      "disc": 80.0, "csf": 10.0}

BACK_OFFSET_MM = 85.0   # skin of the back, posterior to the body centres
SKIN_MM = 2.0


@dataclass(frozen=True)
class BodyShape:
    half_width: float        # left-right semi-axis of the trunk
    half_depth: float        # antero-posterior semi-axis
    fat_mm: float            # subcutaneous fat thickness
    gas: np.ndarray          # (n, 6): x, y offset from the spine, z, semi-axes (mm)
    fat_lumps: np.ndarray    # (n, 6): same layout

    def centre_offset(self) -> float:
        """Trunk centre, posterior of the spine's body centres (negative: anterior)."""
        return BACK_OFFSET_MM - self.half_depth


def _blobs(rng, n, y_range, semi_range):
    return np.column_stack([rng.uniform(-80, 80, n), rng.uniform(*y_range, n), rng.uniform(-150, 150, n),
                            rng.uniform(*semi_range, (n, 3))])


def _gas_loops(rng, n_loops: int, per_loop: int = 4) -> np.ndarray:
    """Bowel gas: short chains of small ellipsoids along a random bend (irregular, not round)."""
    centres = _blobs(rng, n_loops, (-100, -60), (4, 9))
    rows = []
    for cx, cy, cz, a, b, c in centres:
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        bend = rng.normal(0, 0.35, 3)
        for i in range(per_loop):
            t = (i - 0.5 * (per_loop - 1)) * 1.3 * max(a, b, c)
            p = np.array([cx, cy, cz]) + t * d + 0.05 * t * t * bend
            rows.append([*p, *(np.array([a, b, c]) * rng.uniform(0.7, 1.2, 3))])
    return np.array(rows)


def draw_body_shape(rng: np.random.Generator) -> BodyShape:
    return BodyShape(half_width=float(np.clip(rng.normal(150, 10), 125, 175)),
                     half_depth=float(np.clip(rng.normal(115, 8), 100, 135)),
                     fat_mm=float(np.clip(rng.normal(18, 5), 8, 32)),
                     gas=_gas_loops(rng, 8),
                     fat_lumps=_blobs(rng, 24, (-110, -35), (10, 25)))


def _cross_section(shape: BodyShape, x, y_rel, vox) -> np.ndarray:
    """2-D HU of the trunk at y_rel = y - spine_y (no psoas, no gas)."""
    d = ellipse_approx(x, y_rel - shape.centre_offset(), shape.half_width, shape.half_depth)
    hu = np.full(d.shape, HU["air"], dtype=np.float32)
    for value, inset in ((HU["skin"], 0.0), (HU["fat"], SKIN_MM), (HU["viscera"], SKIN_MM + shape.fat_mm)):
        occ = occupancy(d + inset, vox)
        hu += (value - hu) * occ
    for sgn in (1.0, -1.0):   # erector spinae
        occ = occupancy(ellipse_approx(x - sgn * 36.0, y_rel - 50.0, 24.0, 19.0), vox)
        hu += (HU["muscle"] - hu) * occ
    return hu


def _paint_trunk(hu: np.ndarray, grid: Grid, shape: BodyShape, spine_y) -> None:
    nz, ny, nx = hu.shape
    sp = float(grid.spacing[1])
    z = grid.origin[2] + grid.spacing[2] * np.arange(nz)
    S = spine_y(z)
    s_max = S.max()
    n_extra = int(np.ceil((s_max - S.min()) / sp)) + 2
    x = (grid.origin[0] + grid.spacing[0] * np.arange(nx))[None, :]
    y_rel = (grid.origin[1] - s_max + sp * np.arange(ny + n_extra))[:, None]
    template = _cross_section(shape, x, y_rel, float(np.mean(grid.spacing)))
    u = (s_max - S) / sp
    m0 = np.floor(u).astype(int)
    f = (u - m0).astype(np.float32)
    for k in range(nz):
        a = template[m0[k]: m0[k] + ny]
        hu[k] = a + f[k] * (template[m0[k] + 1: m0[k] + 1 + ny] - a)


def _interior(grid: Grid, shape: BodyShape, spine_y, sl, vox):
    """Occupancy of the trunk's interior (inside the subcutaneous fat) over a block."""
    x, y, z = grid.coords(sl)
    yr = y - spine_y(z.ravel()).astype(np.float32)[:, None, None]
    d = ellipse_approx(x, yr - shape.centre_offset(), shape.half_width, shape.half_depth)
    return occupancy(d + SKIN_MM + shape.fat_mm, vox), x, yr, z


def _paint_blobs(hu, grid: Grid, shape: BodyShape, spine_y, blobs, value, vox, soft: float) -> None:
    """Ellipsoids placed relative to the spine; ``soft`` widens the edge (mm) for diffuse fat."""
    for cx, dy, cz, a, b, c in blobs:
        cy = float(spine_y(np.array([cz]))[0]) + dy
        sl = grid.index_box(np.array([cx - a, cy - b, cz - c]), np.array([cx + a, cy + b, cz + c]))
        if sl is None:
            continue
        inner, x, yr, z = _interior(grid, shape, spine_y, sl, vox)
        occ = occupancy(ellipsoid_approx(x - cx, yr - dy, z - cz, a, b, c), max(vox, soft)) * inner
        block = hu[sl]
        block += (value - block) * occ


def _paint_psoas(hu, grid: Grid, spine_y, muscle_x: float, vox) -> None:
    """Psoas major: absent above ~T12, radius growing caudally to ~26 mm."""
    z_all = grid.origin[2] + grid.spacing[2] * np.arange(grid.shape[0])
    sy = spine_y(z_all)
    for sgn in (1.0, -1.0):
        x0 = sgn * (muscle_x + 26.0)
        sl = grid.index_box(np.array([x0 - 27.0, sy.min() - 26.0, -1e4]), np.array([x0 + 27.0, sy.max() + 26.0, 110.0]))
        if sl is None:
            continue
        x, y, z = grid.coords(sl)
        r = np.clip(10.0 - 0.09 * z, 1e-3, 26.0).astype(np.float32)
        yr = y - spine_y(z.ravel()).astype(np.float32)[:, None, None]
        occ = occupancy(ellipse_approx(x - sgn * (muscle_x + r), yr + 2.0, r, 0.85 * r), vox) * (r > 1.0)
        block = hu[sl]
        block += (HU["muscle"] - block) * occ


def paint_soft_tissue(hu: np.ndarray, grid: Grid, shape: BodyShape, spine_y, muscle_x: float) -> None:
    """Paint the trunk into ``hu`` (every voxel is overwritten)."""
    vox = float(np.mean(grid.spacing))
    _paint_trunk(hu, grid, shape, spine_y)
    _paint_psoas(hu, grid, spine_y, muscle_x, vox)
    _paint_blobs(hu, grid, shape, spine_y, shape.fat_lumps, HU["fat"], vox, soft=8.0)
    _paint_blobs(hu, grid, shape, spine_y, shape.gas, HU["gas"], vox, soft=0.0)
