"""The distortion plate: its file (``fluoronav.plate/1``), grid labelling and control points.

Robot paper II.C.2: the real control points are the plate's balls detected in
the raw shot; the ideal control points come from the central region, where the
distortion is smallest (here: a homography plate -> image fitted to the balls
near the centre of the field). The grid is walked from the centre with local
lattice vectors (they change slowly with the distortion), then the plate's
orientation mark (a pattern of missing balls) fixes which ball is which.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.calibration.beads import BeadDetectionError, density_of, detect_beads, refine_centre
from core.calibration.distortion import fit_distortion
from core.calibration.models import ModelError, apply_h, fit_homography
from core.formats.schema import read_json, validate

__all__ = ["PlateError", "Plate", "load_plate", "plate_from_dict", "label_plate", "plate_distortion"]

CENTRAL_FRACTION = 0.35


class PlateError(ValueError):
    """A plate file or plate shot is unusable."""


@dataclass(frozen=True)
class Plate:
    balls_mm: np.ndarray        # (N, 2)
    ball_diameter_mm: float
    pitch_mm: float
    name: str = ""

    def lattice(self):
        """Integer grid indices (N, 2) of the balls and the grid origin (mm)."""
        o = self.balls_mm[np.argmin(np.linalg.norm(self.balls_mm - self.balls_mm.mean(0), axis=1))]
        ij = (self.balls_mm - o) / self.pitch_mm
        return np.rint(ij).astype(int), o


def plate_from_dict(d, where="plate") -> Plate:
    """Validate a parsed ``fluoronav.plate/1`` object (its schema, then the grid) and build the ``Plate``."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    validate(d, "plate", where, error=PlateError)
    diam = d["ball_diameter_mm"]
    b = np.asarray(d["balls_mm"], float)
    nn = cKDTree(b).query(b, 2)[0][:, 1]
    pitch = float(np.median(nn))
    return Plate(b, float(diam), pitch, str(d.get("name", "")))


def load_plate(path) -> Plate:
    p = Path(path)
    d, _ = read_json(p, "plate", error=PlateError)
    return plate_from_dict(d, p.name)


def _walk_grid(pts):
    """Integer lattice coordinates of detections by breadth-first walk from the centre."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    tree = cKDTree(pts)
    d, nn = tree.query(pts, 5)
    spacing = float(np.median(d[:, 1]))
    # the seed: near the centre, with four neighbours at one pitch (not beside an off-grid mark)
    irregular = (d[:, 4] > 1.3 * spacing) | (d[:, 1] < 0.8 * spacing)
    seed = int(np.argmin(np.linalg.norm(pts - np.median(pts, axis=0), axis=1) + 1e3 * irregular))
    vec = pts[nn[seed, 1:5]] - pts[seed]
    g1 = vec[0]
    g2 = next((v for v in vec[1:] if abs(g1[0] * v[1] - g1[1] * v[0]) > 0.7 * np.linalg.norm(g1) * np.linalg.norm(v)), None)
    if g2 is None:
        raise PlateError("the plate grid was not recognised: check the plate shot")
    ij = {seed: (0, 0)}
    steps = {seed: (g1, g2)}
    q = deque([seed])
    tol = 0.3 * spacing
    while q:
        a = q.popleft()
        ga, gb = steps[a]
        for di, dj, v in ((1, 0, ga), (-1, 0, -ga), (0, 1, gb), (0, -1, -gb)):
            dist, b = tree.query(pts[a] + v, distance_upper_bound=tol)
            if not np.isfinite(dist) or b in ij:
                continue
            ij[b] = (ij[a][0] + di, ij[a][1] + dj)
            step = pts[b] - pts[a]
            steps[b] = (step * di, gb) if di else (ga, step * dj)
            q.append(b)
    idx = np.array(sorted(ij))
    return idx, np.array([ij[i] for i in idx])


def label_plate(plate: Plate, pts) -> tuple[np.ndarray, np.ndarray]:
    """(detection indices, plate ball indices) of a plate shot, from the plate file's own layout.

    The detections are walked from the centre of the field with local lattice vectors
    (``_walk_grid``: they follow the distortion), which carries each walked ball into lattice
    coordinates; the lattice vectors take the plate's pitch and the angle between the file's
    neighbour directions (square, hexagonal...). Balls off the walked lattice (orientation
    marks half a pitch aside) follow by a local affine map from their walked neighbours. The
    file's layout is then registered on these points over its near-symmetries
    (``labelling.register_layout``): the missing balls and the off-grid marks in view, and
    the balls the file lists where nothing was found, decide; the winner must beat every other
    registration by ``labelling.MIN_MARGIN`` balls."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    from core.calibration.labelling import MIN_MARGIN, _self_maps, register_layout
    pts = np.asarray(pts, float)
    idx, ij = _walk_grid(pts)
    if len(idx) < 16:
        raise PlateError("the plate grid was not recognised: check the plate shot")
    maps, pitch = _self_maps(plate.balls_mm)
    A = np.linalg.lstsq(np.column_stack([ij, np.ones(len(ij))]), pts[idx], rcond=None)[0]
    g1, g2 = A[0], A[1]
    ang = np.degrees(np.arccos(np.clip(g1 @ g2 / (np.linalg.norm(g1) * np.linalg.norm(g2)), -1, 1)))
    # the file's angle between neighbour directions nearest the image's (90 square, 60/120 hexagonal)
    turns = [np.degrees(np.arctan2(M[1, 0], M[0, 0])) % 180.0 for M in maps[:len(maps) // 2]]
    turns = [t for t in turns if 20.0 < t < 160.0] or [90.0]
    theta = np.radians(min(turns, key=lambda t: (abs(t - ang), t)))
    B = pitch * np.array([[1.0, 0.0], [np.cos(theta), np.sin(theta)]])
    q = np.full((len(pts), 2), np.nan)
    q[idx] = ij @ B
    walked = np.zeros(len(pts), bool)
    walked[idx] = True
    spacing = float(np.median(cKDTree(pts[idx]).query(pts[idx], 2)[0][:, 1]))
    wtree = cKDTree(pts[idx])
    for k in np.nonzero(~walked)[0]:        # off-lattice detections (marks): local affine from neighbours
        d, nb = wtree.query(pts[k], 6)
        if d[0] > 1.5 * spacing:
            continue
        X = np.column_stack([pts[idx[nb]], np.ones(len(nb))])
        q[k] = np.append(pts[k], 1.0) @ np.linalg.lstsq(X, q[idx[nb]], rcond=None)[0]
    have = np.nonzero(np.all(np.isfinite(q), axis=1))[0]
    qtree = cKDTree(q[idx])

    def covered(x):
        # inside the walked region: at least three walked balls within one pitch and a bit
        return np.array([len(n) >= 3 for n in qtree.query_ball_point(np.asarray(x, float), 1.1 * pitch)], bool)

    regs = register_layout(plate.balls_mm, q[have], covered, 0.3 * pitch)
    if not regs:
        raise PlateError("the plate grid was not recognised: check the plate file matches the plate")
    best = regs[0]
    runner = max((r[0] for r in regs[1:] if not _same_correction(plate.balls_mm, best, r, pitch)), default=-np.inf)
    if best[0] - runner < MIN_MARGIN or len(best[1]) < 0.8 * len(have):
        raise PlateError("the plate's orientation mark was not found: centre the plate and re-acquire")
    det = have[best[2]]
    o = np.argsort(det, kind="stable")
    return det[o], best[1][o]


def _same_correction(model, a, b, pitch):
    """Two registrations (score, ball_idx, point_idx, ...) whose labels differ by a rigid map of the
    plate that carries every commonly detected ball onto a ball (a symmetry of the part in view, e.g.
    a mirror through the mark, or any shift of a plain grid): they give the same correction, since
    the ideal frame is fixed by a homography fitted to the central balls anyway."""
    from core.calibration.labelling import _procrustes
    pa = dict(zip(a[2].tolist(), a[1].tolist()))
    common = [(pa[p], m) for p, m in zip(b[2].tolist(), b[1].tolist()) if p in pa]
    if len(common) < 0.5 * min(len(a[1]), len(b[1])):
        return False
    x, y = model[[c[0] for c in common]], model[[c[1] for c in common]]
    for det in (1.0, -1.0):
        R = _procrustes(x, y, det)
        t = np.mean(y - x @ R.T, axis=0)
        if np.max(np.linalg.norm(x @ R.T + t - y, axis=1)) < 0.1 * pitch:
            return True
    return False


def _image_holes(ij):
    """Lattice cells with at least three walked neighbours that the walk found empty."""
    walked = set(map(tuple, ij))
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    cand = {(i + a, j + b) for i, j in walked for a, b in steps} - walked
    return [c for c in cand if sum((c[0] + a, c[1] + b) in walked for a, b in steps) >= 3]


def _recover_missed(pixels, beads):
    """Detections plus balls found by a second look at lattice holes (a ball the detector
    missed next to the orientation mark would make the mark ambiguous); a hole keeps
    empty unless a ball-like peak is found right where the lattice predicts."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    pts = beads.centres_px
    try:
        idx, ij = _walk_grid(pts)
    except PlateError:
        return pts
    where = {tuple(c): pts[i] for i, c in zip(idx, ij)}
    d = density_of(pixels, beads.polarity)
    r = float(np.median(beads.radius_px))
    spacing = float(np.median(cKDTree(pts).query(pts, 2)[0][:, 1]))
    floor = 0.5 * float(np.median(beads.contrast))
    extra = []
    for i, j in _image_holes(ij):
        pairs = [(where.get((i - 1, j)), where.get((i + 1, j))), (where.get((i, j - 1)), where.get((i, j + 1)))]
        guess = [0.5 * (a + b) for a, b in pairs if a is not None and b is not None]
        for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1)):     # one-sided: extrapolate a row
            n1, n2 = where.get((i + a, j + b)), where.get((i + 2 * a, j + 2 * b))
            if n1 is not None and n2 is not None:
                guess.append(2 * n1 - n2)
        if not guess:
            continue
        c, peak = refine_centre(d, np.mean(guess, axis=0), r)
        if c is not None and peak > floor and np.linalg.norm(c - np.mean(guess, axis=0)) < 0.25 * spacing:
            extra.append(c)
    return np.vstack([pts, extra]) if extra else pts


def plate_distortion(plate: Plate, pixels, polarity=None, model: str | None = None):
    """Fit the correction of one view from its plate shot: (distortion, figures).

    ``model``: force one of ``core.calibration.distortion.MODELS``; default the best held-out."""
    try:
        beads = detect_beads(pixels, polarity)
    except BeadDetectionError as e:
        raise PlateError(f"plate shot: {e}") from None
    pts = _recover_missed(pixels, beads)
    det_idx, ball_idx = label_plate(plate, pts)
    raw = pts[det_idx]
    xy = plate.balls_mm[ball_idx]
    c = raw.mean(axis=0)
    r = np.linalg.norm(raw - c, axis=1)
    central = r <= CENTRAL_FRACTION * r.max()
    if central.sum() < 8:
        raise PlateError("too few plate balls in the centre of the field: re-acquire the plate shot")
    try:
        H = fit_homography(xy[central], raw[central])
    except ModelError as e:
        raise PlateError(f"plate shot: {e}") from None
    ideal = apply_h(H, xy)
    dist, figs = fit_distortion(raw, ideal, model)
    figs = {f"heldout_rms_px_{k}": v for k, v in figs.items()}
    figs.update({"plate_balls_matched": int(len(raw)),
                 "model": f"local_{dist.method}" if dist.kind == "local" else dist.kind,
                 "max_correction_px": float(np.max(np.linalg.norm(ideal - raw, axis=1)))})
    return dist, figs
