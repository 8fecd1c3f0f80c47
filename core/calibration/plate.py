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
from core.calibration.labelling import LabellingError, fit_homography
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
    ij = (b - b[0]) / pitch
    if np.max(np.abs(ij - np.rint(ij))) > 0.05:
        raise PlateError(f"{where}: the balls are not on a regular square grid")
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
    seed = int(np.argmin(np.linalg.norm(pts - np.median(pts, axis=0), axis=1) + 1e3 * (d[:, 4] > 1.3 * spacing)))
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


_D4 = [np.array(m) for m in ([[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
                             [[1, 0], [0, -1]], [[0, 1], [1, 0]], [[-1, 0], [0, 1]], [[0, -1], [-1, 0]])]


def label_plate(plate: Plate, pts) -> tuple[np.ndarray, np.ndarray]:
    """(detection indices, plate ball indices) of the grid, orientation from the mark."""
    idx, ij = _walk_grid(np.asarray(pts, float))
    lat, _ = plate.lattice()
    lo = lat.min(0) - 1
    occ = np.zeros(tuple(lat.max(0) - lo + 2), np.int64) - 1
    occ[tuple((lat - lo).T)] = np.arange(len(lat))
    # cells the walk surrounds but found empty: the image's own holes
    holes_img = np.array(_image_holes(ij) or np.zeros((0, 2)), int)
    ball, hole = (occ >= 0).astype(float), (occ < 0).astype(float)
    scores = []
    for k, D in enumerate(_D4):
        m, mh = ij @ D.T, holes_img.reshape(-1, 2) @ D.T
        base = np.vstack([m, mh]).min(axis=0)
        shape = tuple(np.vstack([m, mh]).max(axis=0) - base + 1)
        G, Gh = np.zeros(shape), np.zeros(shape)
        G[tuple((m - base).T)] = 1
        if len(mh):
            Gh[tuple((mh - base).T)] = 1
        # score(offset): nodes on plate balls - 5 x nodes on plate holes (impossible)
        # - image holes on plate balls (misses); correlations over every offset at once
        sc = _xcorr_full(ball, G) - 5 * _xcorr_full(hole, G) - _xcorr_full(ball, Gh)
        off = np.array(shape) - 1
        for flat in np.argsort(sc, axis=None)[-2:]:
            i, j = np.unravel_index(flat, sc.shape)
            scores.append((sc[i, j], k, np.array([i, j]) - off + 0, base, m))
    scores.sort(key=lambda r: -r[0])
    best, second = scores[0], scores[1]
    if best[0] <= second[0] or best[0] < 0.8 * len(idx):
        raise PlateError("the plate's orientation mark was not found: centre the plate and re-acquire")
    _, _, s_off, base, m = best
    g = m - base + s_off
    ok = np.all((g >= 0) & (g < occ.shape), axis=1)
    hit = np.full(len(g), -1)
    hit[ok] = occ[g[ok, 0], g[ok, 1]]
    best = [(best[0], hit)]
    hit = best[0][1]
    keep = hit >= 0
    return idx[keep], hit[keep]


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
    except LabellingError as e:
        raise PlateError(f"plate shot: {e}") from None
    p = xy @ H[:, :2].T + H[:, 2]
    ideal = p[:, :2] / p[:, 2:3]
    dist, figs = fit_distortion(raw, ideal, model)
    figs = {f"heldout_rms_px_{k}": v for k, v in figs.items()}
    figs.update({"plate_balls_matched": int(len(raw)),
                 "model": f"local_{dist.method}" if dist.kind == "local" else dist.kind,
                 "max_correction_px": float(np.max(np.linalg.norm(ideal - raw, axis=1)))})
    return dist, figs


def _xcorr_full(a, b):
    """Full 2-D cross-correlation (``scipy.signal.correlate2d(a, b, "full")`` without importing
    scipy.signal, 0.6 s of start-up): every offset of ``b`` over ``a``."""
    bh, bw = b.shape
    padded = np.pad(a, ((bh - 1, bh - 1), (bw - 1, bw - 1)))
    return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(padded, b.shape), b)
