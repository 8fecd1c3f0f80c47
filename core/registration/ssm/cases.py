"""Auto-plan test cases: a held-out vertebra between two neighbours in a soft-tissue trunk, shot AP
and LAT by the simulated C-arm (flat panel, the cage in view), calibrated from the cage's balls,
and the surgeon's clicks (body centre, left and right pedicle in each view) with seeded noise.

The vertebra to plan is drawn by ``samples.heldout_vertebra`` (outside the model's family); its
neighbours are family members of the adjacent levels, stacked across a disc space. The C-arm
orbit, the vertebra's pose and the isocentre vary per case.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from core.imaging.volume import Volume
from core.registration.ssm.samples import (HELDOUT_KINDS, LUMBAR_LEVELS, Vertebra, build_vertebra,
                                           family_params, heldout_vertebra)
from core.simulation.phantom.parts import Grid, rasterize
from core.simulation.phantom.sdf import ellipse_approx, occupancy

__all__ = ["AutoplanCase", "make_case", "CLICK_NAMES", "paint_vertebrae"]

CLICK_NAMES = ("body_centre", "pedicle_left", "pedicle_right")
HU_CORTICAL, HU_CANCELLOUS, HU_SOFT, HU_DISC = 1000.0, 230.0, 40.0, 80.0
CORTEX_MM = 1.2
_NEIGHBOUR = {"L1": ("L1", "L2"), "L2": ("L1", "L3"), "L3": ("L2", "L4"), "L4": ("L3", "L5"), "L5": ("L4", "L5")}


@dataclass(frozen=True, eq=False)
class AutoplanCase:
    """One case: the truth (world), the shots, a calibration (cage frame) and the clicks (raw px)."""
    level: str
    kind: str
    seed: int
    vertebra: Vertebra                 # world frame
    shots: dict                        # view -> SimulatedShot
    calibration: object                # CageCalibration from the cage's balls
    T_world_cage: np.ndarray
    clicks: dict                       # view -> (3, 2) raw px in CLICK_NAMES order
    click_truth_px: dict               # the same without noise


def _pose(rng, centre, deg) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * np.asarray(deg), degrees=True).as_matrix()
    T[:3, 3] = centre
    return T


def paint_vertebrae(hu: np.ndarray, grid: Grid, vertebrae) -> None:
    """Cortical shell (CORTEX_MM) and cancellous inside of each vertebra, anti-aliased, into ``hu``."""
    vox = float(np.mean(grid.spacing))
    for v in vertebrae:
        res = rasterize(v.parts, grid, margin=3.0)
        if res is None:
            continue
        sl, d = res
        occ, occ_in = occupancy(d, vox), occupancy(d + CORTEX_MM, vox)
        block = hu[sl]
        block *= 1.0 - occ
        block += HU_CORTICAL * (occ - occ_in) + HU_CANCELLOUS * occ_in


def _build_room(level: str, kind: str, rng, spacing_mm: float):
    T_v = _pose(rng, rng.uniform(-4, 4, 3), (8.0, 4.0, 6.0))            # sagittal, coronal, axial tilt
    target = heldout_vertebra(level, kind, rng, T_v)
    p = target.params
    above, below = _NEIGHBOUR[level]
    vs = [target]
    for name, sgn in ((above, 1.0), (below, -1.0)):
        q = family_params(name, rng)
        gap = 0.5 * max(p.height_anterior, p.height_posterior) + p.disc_below + 0.5 * q.height_posterior
        T_n = T_v @ _pose(rng, [0.0, 0.0, sgn * (gap + 1.0)], (4.0, 2.0, 3.0))
        vs.append(build_vertebra(q, T_n, kind="neighbour"))
    lo, hi = np.array([-110.0, -120.0, -80.0]), np.array([110.0, 105.0, 80.0])
    n_xyz = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    grid = Grid(origin=lo, spacing=np.full(3, spacing_mm), shape=tuple(int(v) for v in n_xyz[::-1]))
    x, y, z = grid.coords((slice(0, grid.shape[0]), slice(0, grid.shape[1]), slice(0, grid.shape[2])))
    trunk = ellipse_approx(x, y + 25.0, 150.0, 110.0) + 0.0 * z          # back skin ~85 mm behind the bodies
    hu = np.full(grid.shape, -1000.0, np.float32)
    hu += (HU_SOFT + 1000.0) * occupancy(np.broadcast_to(trunk, grid.shape), spacing_mm)
    paint_vertebrae(hu, grid, vs)
    T = np.diag([spacing_mm] * 3 + [1.0])
    T[:3, 3] = lo
    return target, Volume(hu, (spacing_mm,) * 3, T)


def make_case(level: str, kind: str | None = None, seed: int = 0, image_px: int = 512,
              click_px: float = 3.0, spacing_mm: float = 1.25) -> AutoplanCase:
    """A seeded case (module docstring); ``kind`` None draws one of ``HELDOUT_KINDS``."""
    from core.calibration import calibrate
    from core.geometry.rigid import invert
    from core.simulation.fluoro import DetectorModel
    from core.simulation.scene import SimulatedOR
    if level not in LUMBAR_LEVELS:
        raise ValueError(f"auto-plan cases cover {', '.join(LUMBAR_LEVELS)}, not {level!r}")
    rng = np.random.default_rng([seed, 1616, LUMBAR_LEVELS.index(level)])
    if kind is None:
        kind = HELDOUT_KINDS[int(rng.integers(len(HELDOUT_KINDS)))]
    target, volume = _build_room(level, kind, rng, spacing_mm)
    iso = target.T_world_vertebra[:3, 3] + rng.uniform(-10, 10, 3)
    sim = SimulatedOR(seed=seed, phantom=volume, detector="flat_panel", shape=(image_px, image_px),
                      isocentre_mm=iso, render_device="cpu", detector_model=DetectorModel(kind="flat_panel"))
    angles = {"ap": tuple(rng.uniform(-10, 10, 2)), "lat": tuple(rng.uniform(-8, 8, 2))}
    shots = {v: sim.acquire(v, *angles[v], seed=seed * 7 + i) for i, v in enumerate(("ap", "lat"))}
    cal = calibrate(sim.cage, {v: s.image.pixels for v, s in shots.items()})
    T_cage_world = invert(sim.T_world_cage)
    pts_w = np.array([target.T_world_vertebra[:3, 3], target.pedicles["left"].isthmus_mm,
                      target.pedicles["right"].isthmus_mm])
    pts_c = pts_w @ T_cage_world[:3, :3].T + T_cage_world[:3, 3]
    truth_px = {v: shots[v].project_raw(pts_c) for v in shots}
    clicks = {v: truth_px[v] + rng.normal(0.0, click_px, (3, 2)) for v in shots}
    return AutoplanCase(level, kind, seed, target, shots, cal, sim.T_world_cage.copy(), clicks, truth_px)
