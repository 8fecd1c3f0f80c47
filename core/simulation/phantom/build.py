"""``make_spine_phantom``: the procedural lumbar spine CT with its ground truth."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from core.simulation.phantom.anatomy import CANONICAL_LEVELS, LevelParams, PhantomError, draw_parameters, spine_frames
from core.simulation.phantom.landmarks import pedicle_truth, vertebra_truth
from core.simulation.phantom.parts import Grid, Part, rasterize
from core.simulation.phantom.ribs_pelvis import iliac_parts
from core.simulation.phantom.sdf import ellipse_approx, occupancy
from core.simulation.phantom.soft_tissue import HU, BodyShape, draw_body_shape, paint_soft_tissue, BACK_OFFSET_MM
from core.simulation.phantom.truth import SIDES, PedicleTruth
from core.simulation.phantom.vertebra import vertebra_parts
from core.imaging.volume import Volume

__all__ = ["SpinePhantom", "make_spine_phantom"]

CORTEX_MM = 1.2
Z_MARGIN_MM = 30.0      # soft tissue above and below the outermost bone: shots centred on T12 or S1


@dataclass(frozen=True, eq=False)
class SpinePhantom:
    """A phantom CT (``volume``, world = patient LPS, origin at L3's body centre) and its truth."""
    volume: Volume
    levels: dict                      # name -> VertebraTruth, cranial to caudal
    seed: int
    lordosis_deg: float
    axial_rotation_deg: dict          # name -> degrees about each body's superior axis
    fracture_level: str | None
    hu_cortical: float
    hu_cancellous: float
    params: dict = field(repr=False, default_factory=dict)   # name -> LevelParams (mm, rad)

    @property
    def pedicles(self) -> list[PedicleTruth]:
        """Every pedicle, cranial to caudal, left before right."""
        return [v.pedicles[s] for v in self.levels.values() for s in SIDES]

    def pedicle(self, level: str, side: str) -> PedicleTruth:
        if level not in self.levels:
            raise PhantomError(f"level {level!r} is not in this phantom (it has {', '.join(self.levels)})")
        if side not in SIDES:
            raise PhantomError(f"side must be 'left' or 'right', got {side!r}")
        return self.levels[level].pedicles[side]


def _check_args(seed, spacing_mm, levels, fracture_level, fracture_loss, lordosis_deg, shape, center_mm):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"seed must be a non-negative integer, got {seed!r}")
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    if not np.all(np.isfinite(sp)) or np.any(sp < 0.2) or np.any(sp > 10.0):
        raise PhantomError(f"spacing_mm must be between 0.2 and 10 mm, got {spacing_mm}")
    bad = [lv for lv in levels if lv not in CANONICAL_LEVELS]
    if not levels or bad:
        raise PhantomError(f"unknown level(s) {bad}: choose among {', '.join(CANONICAL_LEVELS)}")
    if fracture_level is not None and fracture_level not in levels:
        raise PhantomError(f"fracture level {fracture_level!r} is not among the levels drawn")
    if fracture_level == "S1":
        raise PhantomError("a compression fracture is modelled for T12-L5, not the sacrum")
    if not 0.05 <= fracture_loss <= 0.7:
        raise PhantomError(f"fracture_loss (anterior height lost) must be 0.05-0.7, got {fracture_loss}")
    if lordosis_deg is not None and not 0.0 <= lordosis_deg <= 75.0:
        raise PhantomError(f"lordosis_deg must be 0-75 degrees (L1-S1), got {lordosis_deg}")
    if shape is not None and (len(shape) != 3 or min(shape) < 8 or max(shape) > 1024):
        raise PhantomError(f"shape must be (nz, ny, nx) with 8-1024 voxels each, got {shape}")
    if center_mm is not None and (len(center_mm) != 3 or not np.all(np.isfinite(center_mm))):
        raise PhantomError(f"center_mm must be a finite (x, y, z) in mm, got {center_mm}")
    return sp.copy()


def _axial_rotations(rng_values, axial_rotation_deg) -> dict[str, float]:
    if axial_rotation_deg is None:
        return {n: float(v) for n, v in zip(CANONICAL_LEVELS, rng_values)}
    if isinstance(axial_rotation_deg, dict):
        bad = [k for k in axial_rotation_deg if k not in CANONICAL_LEVELS]
        if bad:
            raise PhantomError(f"axial rotation given for unknown level(s) {bad}")
        vals = {n: float(axial_rotation_deg.get(n, 0.0)) for n in CANONICAL_LEVELS}
    else:
        vals = {n: float(axial_rotation_deg) for n in CANONICAL_LEVELS}
    if any(not np.isfinite(v) or abs(v) > 30 for v in vals.values()):
        raise PhantomError("axial rotation must be within +-30 degrees per level")
    return vals


def _grid(levels_parts, shape_body: BodyShape, spine_y, spacing, shape, center_mm) -> Grid:
    lo = np.min([p.world_box(0.0)[0] for parts in levels_parts for p in parts], axis=0)
    hi = np.max([p.world_box(0.0)[1] for parts in levels_parts for p in parts], axis=0)
    zlo, zhi = lo[2] - Z_MARGIN_MM, hi[2] + Z_MARGIN_MM
    ys = spine_y(np.linspace(zlo, zhi, 64))
    box_lo = np.array([-shape_body.half_width - 4, ys.min() + BACK_OFFSET_MM - 2 * shape_body.half_depth - 4, zlo])
    box_hi = np.array([shape_body.half_width + 4, ys.max() + BACK_OFFSET_MM + 4, zhi])
    if shape is None:
        n_xyz = np.ceil((box_hi - box_lo) / spacing).astype(int) + 1
    else:
        n_xyz = np.array(shape[::-1], dtype=int)
    centre = 0.5 * (box_lo + box_hi) if center_mm is None else np.asarray(center_mm, dtype=float)
    origin = centre - 0.5 * (n_xyz - 1) * spacing
    return Grid(origin=origin, spacing=spacing, shape=tuple(int(v) for v in n_xyz[::-1]))


def _disc_part(up: LevelParams, lo: LevelParams, T_up, T_lo) -> Part:
    c = 0.5 * (T_up[:3, 3] + T_lo[:3, 3])
    z = T_up[:3, 2] + T_lo[:3, 2]
    z /= np.linalg.norm(z)
    x = T_up[:3, 0] - np.dot(T_up[:3, 0], z) * z
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = c
    W = 0.5 * (up.body_width + lo.body_width)
    D = 0.5 * (up.body_depth + lo.body_depth)
    half_h = 0.5 * np.linalg.norm(T_up[:3, 3] - T_lo[:3, 3])
    bx, by, y0 = 0.49 * W, 0.57 * D, 0.075 * D

    def sdf(x_, y_, z_):
        return np.maximum(np.maximum(ellipse_approx(x_, y_ - y0, bx, by), y_ - 0.5 * D), np.abs(z_) - half_h)
    return Part(f"disc_{up.name}_{lo.name}", T, (bx, by + y0, half_h), sdf)


def _texture(shape, spacing, rng, sd_hu: float, where: np.ndarray, cell_mm: float = 2.5) -> np.ndarray:
    """Smooth random field (SD ~sd_hu, ~cell_mm scale: trabecular texture) at the voxels ``where``."""
    n = np.maximum(2, np.ceil(np.array(shape) * spacing[::-1] / cell_mm).astype(int) + 1)
    coarse = rng.normal(0.0, sd_hu * 2.35, tuple(n)).astype(np.float32)  # trilinear upsampling: sd x ~1/2.35
    idx = np.nonzero(where)
    coords = [i * ((m - 1) / max(s - 1, 1)) for i, m, s in zip(idx, n, shape)]
    out = np.zeros(shape, np.float32)
    out[idx] = ndimage.map_coordinates(coarse, coords, order=1, mode="nearest")
    return out


def _canal_tubes(pt: "_Patient", levels, scale: float) -> list[Part]:
    """Elliptic tubes joining the canal centres of the drawn levels (cross-section x ``scale``)."""
    centres, semis = [], []
    for n in levels:
        p, T = pt.params[n], pt.frames[n]
        centres.append(T[:3, :3] @ [0.0, 0.5 * p.body_depth + 0.5 * p.canal_depth, 0.0] + T[:3, 3])
        semis.append((0.5 * p.canal_width * scale, 0.5 * p.canal_depth * scale))
    if len(levels) == 1 or levels[0] != "S1":                 # run on past the outermost levels
        T = pt.frames[levels[0]]
        centres.insert(0, centres[0] + 30.0 * T[:3, 2])
        semis.insert(0, semis[0])
    if levels[-1] != "S1":
        centres.append(centres[-1] - 30.0 * pt.frames[levels[-1]][:3, 2])
        semis.append(semis[-1])
    tubes = []
    for A, B, (a, b) in zip(centres[:-1], centres[1:], semis[1:]):
        z = (A - B) / np.linalg.norm(A - B)
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        T = np.eye(4)
        T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
        T[:3, 3] = 0.5 * (A + B)
        hl = 0.5 * np.linalg.norm(A - B) + 2.0
        tubes.append(Part("canal_tube", T, (a, b, hl),
                          lambda x_, y_, z_, a=a, b=b, hl=hl: np.maximum(ellipse_approx(x_, y_, a, b), np.abs(z_) - hl)))
    return tubes


def _paint(hu, grid: Grid, parts: list[Part], inside_hu, shell_hu=None, shell_mm=0.0, rng=None, sd_hu=0.0):
    """Composite a solid (and its cortical shell) over hu with anti-aliased partial volumes."""
    res = rasterize(parts, grid, margin=3.0)
    if res is None:
        return
    sl, d = res
    vox = float(np.mean(grid.spacing))
    occ = occupancy(d, vox)
    block = hu[sl]
    if shell_hu is None:
        block += (inside_hu - block) * occ
        return
    occ_in = occupancy(d + shell_mm, vox)
    inside = inside_hu if sd_hu <= 0 else inside_hu + _texture(d.shape, grid.spacing, rng, sd_hu, occ_in > 0)
    block *= 1.0 - occ
    block += shell_hu * (occ - occ_in) + inside * occ_in


def make_spine_phantom(seed: int = 0, spacing_mm=1.0, levels=CANONICAL_LEVELS, fracture_level: str | None = None,
                       lordosis_deg: float | None = None, axial_rotation_deg=None, shape=None,
                       fracture_loss: float = 0.4, soft_tissue: bool = True, center_mm=None,
                       trabecular_hu_sd: float = 25.0) -> SpinePhantom:
    """Procedural lumbar spine CT (HU) with per-level ground truth; see ``core.simulation.phantom``.

    ``lordosis_deg``: L1-S1 angle, None draws ~N(50, 7) from the seed.
    ``axial_rotation_deg``: None draws ~N(0, 2) per level; a number rotates every level; a dict per level.
    ``shape``: hu array shape (nz, ny, nx); None fits the trunk and the levels.
    ``center_mm``: world centre of the grid (default: the centre of the trunk around the levels);
    with ``shape`` it cuts a small field of view, e.g. one vertebra at fine spacing for tests.
    ``fracture_loss``: fraction of anterior body height lost at ``fracture_level``.
    ``trabecular_hu_sd``: smooth ~2.5 mm texture of the cancellous bone (0: uniform).
    Cached: the same arguments return the same (read-only) phantom.
    """
    if isinstance(levels, str):
        levels = (levels,)
    rot = axial_rotation_deg
    rot_key = tuple(sorted(rot.items())) if isinstance(rot, dict) else rot
    return _cached(int(seed) if isinstance(seed, (int, np.integer)) else seed,
                   tuple(np.broadcast_to(np.asarray(spacing_mm, float), (3,)).tolist()),
                   tuple(levels), fracture_level, lordosis_deg, rot_key,
                   None if shape is None else tuple(int(v) for v in shape), float(fracture_loss), bool(soft_tissue),
                   None if center_mm is None else tuple(float(v) for v in center_mm), float(trabecular_hu_sd))


@dataclass(frozen=True)
class _Patient:
    """Everything the seed decides."""
    params: dict
    lordosis_deg: float
    rotation_deg: dict
    hu_cortical: float
    hu_cancellous: float
    body: BodyShape
    frames: dict

    def spine_y(self, z):
        """Antero-posterior position of the body centres at height z (the sagittal curve)."""
        zs = np.array([self.frames[n][2, 3] for n in CANONICAL_LEVELS])[::-1]
        ys = np.array([self.frames[n][1, 3] for n in CANONICAL_LEVELS])[::-1]
        return np.interp(z, zs, ys)


def _draw_patient(seed, fracture_level, fracture_loss, lordosis_deg, rot_key) -> _Patient:
    """All random draws, always in the same order, whatever is requested afterwards."""
    rng = np.random.default_rng(seed)
    params = draw_parameters(rng, fracture_level, fracture_loss)
    lordosis = float(np.clip(rng.normal(50.0, 7.0), 30.0, 68.0)) if lordosis_deg is None else float(lordosis_deg)
    rot_draw = np.clip(rng.normal(0.0, 2.0, len(CANONICAL_LEVELS)), -5, 5)
    rot = _axial_rotations(rot_draw, dict(rot_key) if isinstance(rot_key, tuple) else rot_key)
    hu_cort = float(np.clip(rng.normal(1000.0, 60.0), 800.0, 1200.0))
    hu_canc = float(np.clip(rng.normal(230.0, 30.0), 150.0, 300.0))
    body = draw_body_shape(rng)
    frames = spine_frames(params, np.radians(lordosis), {n: np.radians(v) for n, v in rot.items()})
    return _Patient(params, lordosis, rot, hu_cort, hu_canc, body, frames)


def _level_parts(pt: _Patient, levels) -> dict:
    """name -> (parts, body part, provisional pedicles); S1 also carries the iliac wings."""
    built = {n: vertebra_parts(pt.params[n], pt.frames[n]) for n in levels}
    if "S1" in built:       # crest at the L4-L5 disc
        z_crest = 0.5 * (pt.frames["L4"][2, 3] + pt.frames["L5"][2, 3])
        parts, body, peds = built["S1"]
        i = [p.name for p in parts].index("canal")       # before the canal and the pedicles
        built["S1"] = (parts[:i] + iliac_parts(pt.params["S1"], pt.frames["S1"], z_crest) + parts[i:], body, peds)
    return built


@lru_cache(maxsize=2)   # a default phantom is ~150 MB
def _cached(seed, spacing, levels, fracture_level, lordosis_deg, rot_key, shape, fracture_loss, soft_tissue,
            center_mm, trabecular_hu_sd):
    spacing = _check_args(seed, spacing, levels, fracture_level, fracture_loss, lordosis_deg, shape, center_mm)
    if not 0.0 <= trabecular_hu_sd <= 150.0:
        raise PhantomError(f"trabecular_hu_sd must be 0-150 HU, got {trabecular_hu_sd}")
    levels = tuple(n for n in CANONICAL_LEVELS if n in levels)      # cranial to caudal
    pt = _draw_patient(seed, fracture_level, fracture_loss, lordosis_deg, rot_key)
    built = _level_parts(pt, levels)
    grid = _grid([built[n][0] for n in levels], pt.body, pt.spine_y, spacing, shape, center_mm)
    hu = np.full(grid.shape, HU["air"], dtype=np.float32)
    if soft_tissue:
        psoas_x = 0.5 * np.mean([pt.params[n].body_width for n in levels]) + 2.0
        paint_soft_tissue(hu, grid, pt.body, pt.spine_y, psoas_x)
        for tissue, scale in (("fat", 1.0), ("csf", 0.7)):       # epidural fat around the thecal sac
            _paint(hu, grid, _canal_tubes(pt, levels, scale), HU[tissue])
    for up, lo in zip(levels[:-1], levels[1:]):
        if CANONICAL_LEVELS.index(lo) - CANONICAL_LEVELS.index(up) == 1:
            disc = _disc_part(pt.params[up], pt.params[lo], pt.frames[up], pt.frames[lo])
            _paint(hu, grid, [disc], HU["disc"])
    truths = {}
    for n in levels:
        parts, body, peds = built[n]
        _paint(hu, grid, parts, pt.hu_cancellous, pt.hu_cortical, CORTEX_MM,
               np.random.default_rng([seed, CANONICAL_LEVELS.index(n)]), trabecular_hu_sd)
        peds = {s: pedicle_truth(peds[s], parts, body, CORTEX_MM) for s in SIDES}
        truths[n] = vertebra_truth(pt.params[n], pt.frames[n], peds, parts)
    hu.setflags(write=False)
    T = np.diag([*grid.spacing, 1.0])
    T[:3, 3] = grid.origin
    return SpinePhantom(volume=Volume(hu, tuple(grid.spacing), T), levels=truths, seed=seed,
                        lordosis_deg=pt.lordosis_deg, axial_rotation_deg=pt.rotation_deg,
                        fracture_level=fracture_level, hu_cortical=pt.hu_cortical,
                        hu_cancellous=pt.hu_cancellous, params=pt.params)
