"""The bi-planar calibration cage: its file (``fluoronav.cage/1``) and its ball planes.

After the robot paper (section II.C.1, figure 6): two parts, each two parallel
layers of steel balls; a view's X-rays cross its two planes (DESIGN.md, Files).
Every plane is validated on load: shape, finite values, coplanarity, at least
``MIN_BALLS_PER_PLANE`` balls, and no two balls closer than one diameter.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.formats.schema import read_json, validate

__all__ = ["CageFileError", "CagePlane", "Cage", "load_cage", "cage_from_dict", "blue_noise_layer",
           "MIN_BALLS_PER_PLANE", "VIEWS"]

VIEWS = ("ap", "lat")
MIN_BALLS_PER_PLANE = 6
COPLANAR_TOL_MM = 0.05


class CageFileError(ValueError):
    """A cage file is missing, malformed or describes an unusable cage."""


@dataclass(frozen=True)
class CagePlane:
    """One layer of balls: ``balls_mm`` (N, 3) in the cage frame, all in one plane.

    ``origin_mm``, ``axes`` (2, 3) and ``normal`` give 2-D in-plane coordinates
    ``xy = (p - origin) @ axes.T`` (the plane's own frame, for homographies).
    """
    id: str
    view: str
    balls_mm: np.ndarray
    origin_mm: np.ndarray
    axes: np.ndarray
    normal: np.ndarray

    @property
    def n_balls(self) -> int:
        return len(self.balls_mm)

    @property
    def balls_2d(self) -> np.ndarray:
        """(N, 2) in-plane coordinates of the balls, mm."""
        return (self.balls_mm - self.origin_mm) @ self.axes.T

    def to_3d(self, xy) -> np.ndarray:
        """Cage-frame points (N, 3) of in-plane coordinates (N, 2)."""
        return self.origin_mm + np.asarray(xy, float) @ self.axes


@dataclass(frozen=True)
class Cage:
    name: str
    ball_diameter_mm: float
    planes: tuple[CagePlane, ...]
    source: str = ""
    sha256: str = ""

    def planes_for(self, view: str) -> list[CagePlane]:
        if view not in VIEWS:
            raise CageFileError(f"view must be 'ap' or 'lat', got {view!r}")
        return [p for p in self.planes if p.view == view]

    def plane(self, plane_id: str) -> CagePlane:
        for p in self.planes:
            if p.id == plane_id:
                return p
        raise CageFileError(f"the cage has no plane {plane_id!r}")

    def balls_for(self, view: str) -> np.ndarray:
        """All ball centres (N, 3) of a view's planes, in plane order."""
        return np.concatenate([p.balls_mm for p in self.planes_for(view)])


def _plane(d, where: str) -> CagePlane:
    pid, view = d["id"], d["view"]
    b = np.asarray(d["balls_mm"], dtype=float)
    c = b.mean(axis=0)
    _, s, vt = np.linalg.svd(b - c)
    if s[1] < 1e-6 * max(s[0], 1.0):
        raise CageFileError(f"{where}: plane {pid!r} balls are collinear; a plane needs a 2-D spread")
    dist = (b - c) @ vt[2]
    if np.max(np.abs(dist)) > COPLANAR_TOL_MM:
        raise CageFileError(f"{where}: plane {pid!r} balls are not coplanar "
                            f"(max {np.max(np.abs(dist)):.2f} mm off their plane)")
    return CagePlane(pid, view, b, c, vt[:2].copy(), vt[2].copy())


def cage_from_dict(d, where: str = "cage") -> Cage:
    """Validate a parsed ``fluoronav.cage/1`` object (its schema, then the geometry) and build the ``Cage``."""
    validate(d, "cage", where, error=CageFileError)
    diam = d["ball_diameter_mm"]
    ps = tuple(_plane(p, where) for p in d["planes"])
    ids = [p.id for p in ps]
    if len(set(ids)) != len(ids):
        raise CageFileError(f"{where}: plane ids must be unique, got {ids}")
    for view in VIEWS:
        n = sum(p.view == view for p in ps)
        if n < 2:
            raise CageFileError(f"{where}: the {view} view has {n} plane(s); it needs two ball planes")
    for p in ps:
        xy = p.balls_2d
        dd = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
        if dd.min() < diam:
            raise CageFileError(f"{where}: plane {p.id!r} has balls closer than one diameter "
                                f"({dd.min():.2f} mm)")
    return Cage(str(d.get("name", "")), float(diam), ps)


def load_cage(path) -> Cage:
    """Read and validate a cage file; ``CageFileError`` with a one-line reason otherwise."""
    p = Path(path)
    d, raw = read_json(p, "cage", error=CageFileError)
    cage = cage_from_dict(d, where=p.name)
    return Cage(cage.name, cage.ball_diameter_mm, cage.planes, str(p), hashlib.sha256(raw).hexdigest())


def blue_noise_layer(rng, n: int, spacing_mm: float, half_span_mm: float, window_mm: float = 15.0,
                     avoid=None, avoid_mm: float = 6.0, tries: int = 200_000) -> np.ndarray:
    """``n`` ball positions (n, 2) in [-half, half]² mm, at least ``spacing_mm`` apart, none
    within ``window_mm`` of the centre (the target path stays visible) nor within ``avoid_mm``
    of the ``avoid`` points (another layer): dart throwing, so the layout has no symmetry a
    labelling could confuse. Rounded to 0.01 mm, as a machined cage is specified."""
    from scipy.spatial import cKDTree
    pts = []
    other = cKDTree(avoid) if avoid is not None else None
    for _ in range(tries):
        p = rng.uniform(-half_span_mm, half_span_mm, 2)
        if np.hypot(*p) < window_mm:
            continue
        if pts and np.min(np.linalg.norm(np.asarray(pts) - p, axis=1)) < spacing_mm:
            continue
        if other is not None and other.query(p)[0] < avoid_mm:
            continue
        pts.append(p)
        if len(pts) == n:
            return np.round(np.asarray(pts), 2)
    raise CageFileError(f"cannot place {n} balls {spacing_mm} mm apart in +/-{half_span_mm} mm: lower the count")
