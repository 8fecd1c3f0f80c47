"""Steel-ball (bead) detection in a raw fluoroscopy shot, with sub-pixel centres.

The robot paper (II.C.3) detects circular control points against a strong
background. Here: log-attenuation density, background removed by a grey
opening larger than a ball, compact round blobs of the dominant size kept,
then each centre refined by background-corrected intensity weighting (a plane
fitted to an annulus around the ball is subtracted, the positive remainder
weights the centroid, iterated on a re-centred disc). The sub-pixel bias of
that estimator on clean balls is measured in tests/core/test_beads.py.
Touching pairs of balls are split by a two-ball template fit (core.calibration.bead_pairs)
when it explains the blob; otherwise merged blobs and balls cut by the field
edge are dropped, never guessed. Pixel (u, v) = (column, row), centre of pixel (0, 0) at (0, 0).

Speed: ``detect_beads`` runs the fast path: the first (size-blind) pass under each
polarity computed once and shared by the polarity score and the detection, blob
shapes from stacked boxes, the background opening by rectangles (the same pixels),
and all balls refined together by ``refine_centres``. ``_detect(..., fast=False)``
keeps the reference path (``refine_centre`` ball by ball, as before), which
tests/core/test_beads_fast.py holds the fast path to (same detections, centres
within 1e-6 px). The unexposed-surround fill (two wide Gaussian blurs, ~65 ms each
at 1024 px) and the touching-pair fits (core.calibration.bead_pairs) are unchanged and now
dominate on image-intensifier and cage shots.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


from core.calibration.bead_pairs import build_template, split_pair

__all__ = ["BeadDetectionError", "Beads", "density_of", "detect_beads", "refine_centre", "refine_centres", "field_mask"]


class BeadDetectionError(ValueError):
    """No usable balls could be found in an image."""


@dataclass(frozen=True)
class Beads:
    """Detected balls: ``centres_px`` (N, 2) raw (u, v); ``radius_px`` (N,) footprint
    radius; ``contrast`` (N,) peak log-attenuation; ``roundness`` (N,) in (0, 1];
    ``polarity`` +1 when dense = dark (MONOCHROME2), -1 when inverted."""
    centres_px: np.ndarray
    radius_px: np.ndarray
    contrast: np.ndarray
    roundness: np.ndarray
    polarity: int
    dropped_merged: int = 0
    split_pairs: int = 0

    def __len__(self):
        return len(self.centres_px)


def density_of(pixels, polarity: int = 1) -> np.ndarray:
    """Log-attenuation (float32, larger = denser) of raw pixels where larger = brighter.

    ``polarity=-1`` for an inverted image (larger = denser, MONOCHROME1).
    Beer-Lambert makes a ball's footprint additive in this domain, so a smooth
    background gradient does not skew the centroid."""
    a = np.asarray(pixels, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise BeadDetectionError(f"an image must be a non-empty 2-D array, got shape {a.shape}")
    if polarity < 0:
        a = float(a.max()) - a
    return -np.log(a + max(1.0, 1e-3 * float(a.max())))


def _background(d: np.ndarray, kernel_px: int, fast: bool = False) -> np.ndarray:
    """Grey opening with a disc of ``kernel_px`` (on a downsampled copy for speed);
    ``fast``: the opening by ``_open_disc`` (the same pixels)."""
    f = max(1, kernel_px // 15)
    small = cv2.resize(d, (d.shape[1] // f, d.shape[0] // f), interpolation=cv2.INTER_AREA) if f > 1 else d
    k = max(3, int(round(kernel_px / f)) | 1)
    if fast:
        bg = _open_disc(small, k)
    else:
        bg = cv2.morphologyEx(small, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    bg = cv2.GaussianBlur(bg, (0, 0), max(0.5, k / 8))
    if f > 1:
        bg = cv2.resize(bg, (d.shape[1], d.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.minimum(bg, d)


@lru_cache(maxsize=None)
def _disc_rectangles(k: int):
    """The OpenCV k x k ellipse as a union of centred rectangles ((rows, cols) kernels), one
    per distinct row width: the rows at least that wide form a centred band (the disc is
    convex). None if OpenCV's ellipse is not such a union (then it is used as it is)."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    c = k // 2
    half = np.array([c - int(np.flatnonzero(r)[0]) for r in se])
    rects = tuple(np.ones((2 * (c - int(np.flatnonzero(half >= a)[0])) + 1, 2 * a + 1), np.uint8)
                  for a in sorted(set(half.tolist())))
    union = np.zeros_like(se)
    for r in rects:
        union[c - r.shape[0] // 2:c + r.shape[0] // 2 + 1, c - r.shape[1] // 2:c + r.shape[1] // 2 + 1] = 1
    return rects if np.array_equal(union, se) else None


def _open_disc(img: np.ndarray, k: int) -> np.ndarray:
    """``cv2.morphologyEx(img, MORPH_OPEN, ellipse (k, k))``, the same pixels, faster for a
    large disc: a min (max) over a union of rectangles is the min (max) of the rectangles'
    erosions (dilations), each separable, and min/max round nothing."""
    rects = _disc_rectangles(k) if k >= 15 else None       # small discs: OpenCV's own is as fast
    if rects is None:
        return cv2.morphologyEx(img, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    out = cv2.erode(img, rects[0])
    for r in rects[1:]:
        np.minimum(out, cv2.erode(img, r), out=out)
    eroded, out = out, cv2.dilate(out, rects[0])
    for r in rects[1:]:
        np.maximum(out, cv2.dilate(eroded, r), out=out)
    return out


def _candidates(d: np.ndarray, kernel_px: int, min_area: int, ball_r: float = 0.0, floor: float = 0.0, th=None,
                fast: bool = False):
    """Compact components of the top-hat: (stats rows, labels, top-hat, noise sigma).

    With a ball radius known (second pass), the top-hat is first opened with a
    disc of 0.6 r: thin K-wires and edges vanish while balls survive, so balls
    touching a wire are no longer joined to it. ``th``: the top-hat when already
    computed (``d - _background(d, kernel_px)``)."""
    if th is None:
        th = d - _background(d, kernel_px, fast)
    hp = (th - cv2.blur(th, (3, 3)))[::3, ::3]     # noise from a subsample: a median is costly
    sigma = 1.4826 * float(np.median(np.abs(hp - np.median(hp)))) * 1.5 + 1e-6
    thr = max(6 * sigma, floor)
    mask = (th > thr).astype(np.uint8)
    if ball_r >= 3.0:
        k = int(0.8 * ball_r) | 1
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        core_ = (cv2.morphologyEx(th, cv2.MORPH_OPEN, se) > thr).astype(np.uint8)
        mask &= cv2.dilate(core_, se)    # restore each ball's footprint, not the wire
    n, labels, stats, cent = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, w, h, area = stats[1:].T
    keep = np.flatnonzero((area >= min_area) & (w >= 3) & (h >= 3)) + 1
    rows = [(int(i), *stats[i]) for i in keep]
    return rows, labels, th, sigma


def _shape(labels, th, row):
    i, x, y, w, h, area = row
    m = labels[y:y + h, x:x + w] == i
    vv, uu = np.nonzero(m)
    cov = np.cov(np.stack([uu, vv])) if len(uu) > 2 else np.eye(2)
    ev = np.linalg.eigvalsh(cov)
    roundness = float(np.sqrt(max(ev[0], 1e-9) / max(ev[1], 1e-9)))
    fill = area / (np.pi / 4 * w * h)
    peak = float(th[y:y + h, x:x + w][m].max())
    return roundness, fill, peak


def _shapes(labels, th, rows, stack_px: int = 24):
    """``_shape`` of every row: blobs whose box fits ``stack_px`` all at once (their boxes
    stacked: moments sum(m v^a u^c) in box coordinates, exact integer sums, from two small
    matrix products; peak under the mask), larger ones one by one (cv2.moments, minMaxLoc)."""
    if not rows:
        return []
    box = np.array([r[:6] for r in rows], np.int64)         # label, x, y, w, h, area
    cov, peak = np.empty((len(rows), 2, 2)), np.empty(len(rows))
    small = (box[:, 3] <= stack_px) & (box[:, 4] <= stack_px)
    ks = np.flatnonzero(small)
    if ks.size:
        i, x, y, w, h = box[ks, :5].T
        ry, rx = np.arange(h.max()), np.arange(w.max())
        yy, xx = y[:, None] + ry, x[:, None] + rx
        at = (np.minimum(yy, labels.shape[0] - 1)[:, :, None], np.minimum(xx, labels.shape[1] - 1)[:, None, :])
        m = (labels[at] == i[:, None, None]) & (ry < h[:, None])[:, :, None] & (rx < w[:, None])[:, None, :]
        pu = np.stack([np.ones(len(rx)), rx, rx * rx], -1).astype(np.float64)   # (W, 3)
        pv = np.stack([np.ones(len(ry)), ry, ry * ry], 0).astype(np.float64)    # (3, H)
        K = pv @ (m.astype(np.float64) @ pu)                     # K[a, c] = sum m v^a u^c
        n, su, sv = K[:, 0, 0], K[:, 0, 1], K[:, 1, 0]
        nn, dof = np.where(n > 2, n, 3.0), np.where(n > 2, n - 1.0, 1.0)
        c = np.empty((len(ks), 2, 2))
        c[:, 0, 0] = (K[:, 0, 2] - su * su / nn) / dof
        c[:, 1, 1] = (K[:, 2, 0] - sv * sv / nn) / dof
        c[:, 0, 1] = c[:, 1, 0] = (K[:, 1, 1] - su * sv / nn) / dof
        c[n <= 2] = np.eye(2)
        cov[ks] = c
        peak[ks] = np.where(m, th[at], -np.inf).max(axis=(1, 2))
    for k in np.flatnonzero(~small):
        i, x, y, w, h, area = rows[k]
        m = (labels[y:y + h, x:x + w] == i).view(np.uint8)
        mo = cv2.moments(m, True)
        n = mo["m00"]
        cov[k] = ((mo["mu20"], mo["mu11"]), (mo["mu11"], mo["mu02"])) if n > 2 else np.eye(2)
        if n > 2:
            cov[k] /= n - 1
        peak[k] = cv2.minMaxLoc(th[y:y + h, x:x + w], m)[1]
    ev = np.linalg.eigvalsh(cov)
    roundness = np.sqrt(np.maximum(ev[:, 0], 1e-9) / np.maximum(ev[:, 1], 1e-9))
    fill = [area / (np.pi / 4 * w * h) for _, _, _, w, h, area in rows]
    return [(float(r), f, float(p)) for r, f, p in zip(roundness, fill, peak)]


def _select(d, kernel_px, min_area, ball_r=0.0, floor=0.0, saturated=None, th=None, fast=False):
    """(selected balls, median radius, merged blobs [(mask, offset)], median peak, noise sigma).

    ``saturated``: where the detector clipped (no tissue in the beam): a ball there
    shows only its dense core, a smaller but still symmetric disc, so it is kept.
    ``th`` as in ``_candidates``; ``fast``: blob shapes in one pass (``_shapes``)."""
    rows, labels, th, sigma = _candidates(d, kernel_px, min_area, ball_r, floor, th, fast)
    shp = _shapes(labels, th, rows) if fast else [_shape(labels, th, r) for r in rows]
    r_eq = np.array([np.sqrt(r[5] / np.pi) for r in rows]) if rows else np.zeros(0)
    # pixel quantisation makes small discs look less round: relax below r = 4 px
    round_ = np.array([s[0] > 0.8 and 0.75 < s[1] < 1.3 if r >= 4 else s[0] > 0.6 and 0.6 < s[1] < 1.4
                       for s, r in zip(shp, r_eq)], bool)
    if round_.sum() < 3:
        return [], 0.0, [], 0.0, sigma
    med = float(np.median(r_eq[round_]))
    peaks = np.array([s[2] for s in shp])
    # a round blob far denser than a ball is two balls stacked in projection: drop it
    keep = round_ & (r_eq > 0.7 * med) & (r_eq < 1.4 * med) & (peaks < 1.5 * np.median(peaks[round_]))
    if saturated is not None:
        small = round_ & (r_eq > 0.3 * med) & (r_eq <= 0.7 * med)
        for k in np.nonzero(small)[0]:
            keep[k] = _frame_fraction(saturated, rows[k]) > 0.5
    # two touching balls: about twice the area, elongated (roundness 0.3-0.8)
    pair = ~round_ & (r_eq > 1.15 * med) & (r_eq < 1.6 * med) & np.array([0.3 < s[0] < 0.85 for s in shp])
    merged = []
    for k in np.nonzero(pair)[0]:
        i, x, y, w, h, _ = rows[k]
        merged.append((labels[y:y + h, x:x + w] == i, (x, y)))
    sel = [(rows[k], r_eq[k], shp[k]) for k in np.nonzero(keep)[0]]
    return sel, med, merged, float(np.median([s[2] for s in shp if s[0] > 0.8] or [0.0])), sigma


def _frame_fraction(mask, row):
    """Fraction of ``mask`` in a frame around a blob's box (from 2 px to half a box beyond it)."""
    _, x, y, w, h, _ = row
    pad = max(4, max(w, h) // 2 + 2)
    y0, x0 = max(y - pad, 0), max(x - pad, 0)
    box = mask[y0:y + h + pad, x0:x + w + pad]
    inner = np.zeros(box.shape, bool)
    inner[max(y - 2 - y0, 0):y + h + 2 - y0, max(x - 2 - x0, 0):x + w + 2 - x0] = True
    frame = box[~inner]
    return float(frame.mean()) if frame.size else 0.0


def _plane_background(patch, yy, xx, ring):
    """Least-squares plane through the annulus pixels, one robust re-fit."""
    x0, y0 = xx.mean(), yy.mean()
    A = np.column_stack([np.ones(ring.sum()), xx[ring] - x0, yy[ring] - y0])
    b = patch[ring]
    coef = np.linalg.solve(A.T @ A, A.T @ b)      # 3x3 normal equations (centred: well conditioned)
    res = b - A @ coef
    s = 1.4826 * np.median(np.abs(res)) + 1e-9
    ok = np.abs(res) < 3 * s
    if ok.sum() > 6:
        coef = np.linalg.solve(A[ok].T @ A[ok], A[ok].T @ b[ok])
    return coef[0] + coef[1] * (xx - x0) + coef[2] * (yy - y0)


def refine_centre(d: np.ndarray, uv0, radius_px: float, iterations: int = 4, others=None):
    """Background-corrected intensity-weighted centre of the ball near ``uv0``.

    The window disc has radius ``1.25 r + 2`` px, the background annulus the
    next 3 px (pixels outside the exposed field, NaN in ``d``, are left out of
    the annulus). ``others`` (K, 2): centres of neighbouring balls whose discs
    (radius r + 1.5 px) are left out of both the annulus and the weights.
    Returns ((u, v), peak) or (None, 0) when the disc leaves the image or the field."""
    R = 1.25 * radius_px + 2.0
    Ro = R + 3.0
    c = np.asarray(uv0, float)
    rows, cols = d.shape
    peak = 0.0
    for _ in range(iterations):
        u0, v0 = int(np.floor(c[0] - Ro)), int(np.floor(c[1] - Ro))
        u1, v1 = int(np.ceil(c[0] + Ro)) + 1, int(np.ceil(c[1] + Ro)) + 1
        if u0 < 0 or v0 < 0 or u1 > cols or v1 > rows:
            return None, 0.0
        patch = d[v0:v1, u0:u1].astype(np.float64)
        yy, xx = np.mgrid[v0:v1, u0:u1]
        r2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2
        inner, ring = r2 <= R * R, (r2 > R * R) & (r2 <= Ro * Ro)
        fin = np.isfinite(patch)
        # the ball itself must lie in the field; the window margin beyond it may not
        if not fin[r2 <= (radius_px + 1.0) ** 2].all() or fin[ring].mean() < 0.4:
            return None, 0.0
        inner &= fin
        if others is not None and len(others):
            own = np.ones_like(inner)
            for o in others:
                d2 = (xx - o[0]) ** 2 + (yy - o[1]) ** 2
                fin &= d2 > (radius_px + 1.5) ** 2      # background: off the neighbour's disc
                own &= d2 > r2                          # weights: this ball's side only
            if fin[ring].mean() < 0.3:
                return None, 0.0
            inner &= own
        patch = np.where(np.isfinite(patch), patch, 0.0)     # only NaN off-field (never weighted)
        w = np.where(inner, patch - _plane_background(patch, yy, xx, ring & fin), 0.0)
        w = np.maximum(w, 0.0)
        s = w.sum()
        if s <= 0:
            return None, 0.0
        new = np.array([(w * xx).sum() / s, (w * yy).sum() / s])
        peak = float(w.max())
        if np.linalg.norm(new - c) < 1e-3:
            c = new
            break
        c = new
    return c, peak


def refine_centres(d: np.ndarray, uv0, radius_px, iterations: int = 4, others=None):
    """``refine_centre`` for N balls at once: the same estimator, iterated on all balls
    together, each frozen when it converges (move < 1e-3 px) or fails, as the single-ball
    loop breaks. ``uv0`` (N, 2); ``radius_px`` a number or (N,); ``others``: None or a list
    of N arrays (K_i, 2) (empty: no neighbour). Returns (centres (N, 2), peaks (N,), ok (N,)):
    where ``ok`` is False ``refine_centre`` returns None (centre NaN, peak 0). Equal to
    ``refine_centre`` ball by ball within rounding (sums in another order: < 1e-9 px)."""
    c = np.array(uv0, dtype=float).reshape(-1, 2)
    n = len(c)
    r = np.broadcast_to(np.asarray(radius_px, dtype=float), (n,)).copy()
    R = 1.25 * r + 2.0
    Ro = R + 3.0
    rows, cols = d.shape
    peak, ok, active = np.zeros(n), np.ones(n, bool), np.ones(n, bool)
    nb = None
    if others is not None:
        if len(others) != n:
            raise ValueError(f"others: need one array per ball ({n}), got {len(others)}")
        k = max([len(o) for o in others] + [1])
        nb = np.full((n, k, 2), np.inf)      # padding: infinitely far, excludes nothing
        for i, o in enumerate(others):
            if len(o):
                nb[i, :len(o)] = np.asarray(o, float).reshape(-1, 2)
        has_nb = np.array([len(o) > 0 for o in others], bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        ci, Ri, Roi = c[idx], R[idx], Ro[idx]
        u0, v0 = np.floor(ci[:, 0] - Roi).astype(np.int64), np.floor(ci[:, 1] - Roi).astype(np.int64)
        u1, v1 = np.ceil(ci[:, 0] + Roi).astype(np.int64) + 1, np.ceil(ci[:, 1] + Roi).astype(np.int64) + 1
        out = (u0 < 0) | (v0 < 0) | (u1 > cols) | (v1 > rows)
        if out.any():
            _fail(idx[out], c, peak, ok, active)
            keep = ~out
            idx, ci, Ri, Roi, u0, v0, u1, v1 = (a[keep] for a in (idx, ci, Ri, Roi, u0, v0, u1, v1))
            if not idx.size:
                break
        # one common window per iteration; the pixels beyond a ball's own window lie more
        # than Ro + 1 px from its centre, so they fall in neither its disc nor its annulus
        H, W = int((v1 - v0).max()), int((u1 - u0).max())
        yy = (v0[:, None] + np.arange(H))[:, :, None]          # (N, H, 1)
        xx = (u0[:, None] + np.arange(W))[:, None, :]          # (N, 1, W)
        patch = d[np.minimum(yy, rows - 1), np.minimum(xx, cols - 1)].astype(np.float64)
        cu, cv = ci[:, 0, None, None], ci[:, 1, None, None]
        r2 = (xx - cu) ** 2 + (yy - cv) ** 2
        RR, RoRo = (Ri * Ri)[:, None, None], (Roi * Roi)[:, None, None]
        inner, ring = r2 <= RR, (r2 > RR) & (r2 <= RoRo)
        fin = np.isfinite(patch)
        disc = r2 <= ((r[idx] + 1.0) ** 2)[:, None, None]
        n_ring = np.count_nonzero(ring, axis=(1, 2))
        bad = (disc & ~fin).any(axis=(1, 2)) | (np.count_nonzero(fin & ring, axis=(1, 2)) / n_ring < 0.4)
        inner &= fin
        if nb is not None:
            o = nb[idx]                                        # (N, K, 2)
            ou, ov = o[:, :, 0, None, None], o[:, :, 1, None, None]
            d2 = (xx[:, None] - ou) ** 2 + (yy[:, None] - ov) ** 2    # (N, K, H, W)
            fin &= (d2 > ((r[idx] + 1.5) ** 2)[:, None, None, None]).all(axis=1)
            own = (d2 > r2[:, None]).all(axis=1)
            hn = has_nb[idx]
            bad |= hn & (np.count_nonzero(fin & ring, axis=(1, 2)) / n_ring < 0.3)
            inner &= own | ~hn[:, None, None]
        patch = np.where(np.isfinite(patch), patch, 0.0)
        x0 = (0.5 * (u0 + u1 - 1))[:, None, None]              # the window's mean column, exactly
        y0 = (0.5 * (v0 + v1 - 1))[:, None, None]
        # a ball already failed gets its whole annulus (a well-posed fit, its result unused)
        bg = _plane_backgrounds(patch, xx - x0, yy - y0, ring & (fin | bad[:, None, None]))
        w = np.maximum(np.where(inner, patch - bg, 0.0), 0.0)
        s = w.sum(axis=(1, 2))
        bad |= ~(s > 0)
        ss = np.where(bad, 1.0, s)
        new = np.column_stack([(w * xx).sum(axis=(1, 2)) / ss, (w * yy).sum(axis=(1, 2)) / ss])
        good = idx[~bad]
        c[good], peak[good] = new[~bad], w.max(axis=(1, 2))[~bad]
        step = new - ci
        done = np.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2) < 1e-3
        active[idx[~bad & done]] = False
        _fail(idx[bad], c, peak, ok, active)
    return c, peak, ok


def _fail(idx, c, peak, ok, active):
    c[idx], peak[idx], ok[idx], active[idx] = np.nan, 0.0, False, False


def _plane_backgrounds(patch, X, Y, ring):
    """``_plane_background`` for a stack (N, H, W): X (N, 1, W) and Y (N, H, 1) centred
    coordinates, ``ring`` the annulus pixels per ball. Normal equations per ball (their
    sums through the window's row and column sums), the same robust re-fit."""
    n = len(patch)
    coef = _solve_planes(patch, X, Y, ring)
    res = np.abs(patch - _planes(coef, X, Y)).reshape(n, -1)
    m = ring.reshape(n, -1)
    a = np.where(m, res, np.inf)
    a.sort(axis=1)
    k, j = np.count_nonzero(m, axis=1), np.arange(n)
    med = 0.5 * (a[j, np.maximum(k - 1, 0) // 2] + a[j, k // 2])   # np.median of the annulus
    ok = ring & (res < 3 * (1.4826 * med + 1e-9)[:, None]).reshape(ring.shape)
    refit = np.count_nonzero(ok, axis=(1, 2)) > 6
    if refit.any():
        coef[refit] = _solve_planes(patch[refit], X[refit], Y[refit], ok[refit])
    return _planes(coef, X, Y)


def _planes(coef, X, Y):
    return coef[:, 0, None, None] + coef[:, 1, None, None] * X + coef[:, 2, None, None] * Y


def _solve_planes(b, X, Y, m):
    """Least-squares planes (N, 3) c0 + c1 X + c2 Y fitting b (N, H, W) where m (N, H, W).
    The moments sum(m y^a x^c) come from two small matrix products per ball."""
    m = m.astype(np.float64)
    x, y = X[:, 0, :], Y[:, :, 0]
    px = np.stack([np.ones_like(x), x, x * x], -1)          # (N, W, 3)
    py = np.stack([np.ones_like(y), y, y * y], -2)          # (N, 3, H)
    K = py @ (m @ px)                                      # K[a, c] = sum m y^a x^c
    Kb = py[:, :2] @ ((m * b) @ px[:, :, :2])
    AtA = np.stack([K[:, 0, 0], K[:, 0, 1], K[:, 1, 0],
                    K[:, 0, 1], K[:, 0, 2], K[:, 1, 1],
                    K[:, 1, 0], K[:, 1, 1], K[:, 2, 0]], -1).reshape(-1, 3, 3)
    Atb = np.stack([Kb[:, 0, 0], Kb[:, 0, 1], Kb[:, 1, 0]], -1)
    return np.linalg.solve(AtA, Atb[..., None])[..., 0]


def _extend_beyond_field(d, field):
    """Fill the unexposed surround with the local background carried outwards
    (normalised convolution), so that the field edge makes no step in the top-hat."""
    f = field.astype(np.float32)
    s = max(d.shape) / 40
    num = cv2.GaussianBlur(np.where(field, d, 0).astype(np.float32), (0, 0), s)
    den = cv2.GaussianBlur(f, (0, 0), s)
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), float(np.median(d[field])))
    return np.where(field, d, fill).astype(np.float32)


def field_mask(pixels, polarity: int = 1) -> np.ndarray:
    """Exposed field: False on a large flat region at the dense extreme (the unexposed
    surround of an image intensifier's round field, or a collimator), eroded 2 px.
    ``polarity`` as in ``density_of``: the dense extreme is the minimum for +1."""
    a = np.asarray(pixels, np.float32)
    lo, hi = float(a.min()), float(a.max())
    span = max(hi - lo, 1e-6)
    flat = a <= lo + 0.01 * span if polarity > 0 else a >= hi - 0.01 * span
    if flat.mean() <= 0.02:      # a few saturated pixels in balls, not an area
        return np.ones(a.shape, bool)
    return cv2.erode((~flat).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


def _detect_polarity(pixels, polarity, kernel_px, min_area):
    field = field_mask(pixels, polarity)
    if field.mean() < 0.05:
        return None, [], 0.0, ([], 0.0)
    d = density_of(pixels, polarity)
    if not field.all():     # flatten the unexposed surround so it makes no edges
        d = _extend_beyond_field(d, field)
    sel, med, merged, peak, sigma = _select(d, kernel_px, min_area, floor=_floor(d, kernel_px, field))
    if sel:   # second pass with the ball size and contrast known: a tighter
        # background (opening 5 r wide) and a threshold at 30 % of a ball's peak
        k2 = max(9, int(5 * med) | 1)
        sel, med, merged, _, sigma = _select(d, k2, min_area, ball_r=med, floor=0.3 * peak,
                                             saturated=_saturated(pixels, polarity))
    if not field.all():
        d = d.copy()
        d[~field] = np.nan        # refine_centre rejects windows that leave the field
    return d, sel, med, (merged, sigma)


def _first_pass(pixels, polarity, kernel_px, min_area):
    """The first (size-blind) pass under one polarity hypothesis, computed once and shared by
    the polarity score and the detection: (field, density, ``_select``'s result), or None
    when the field is too small. Same numbers as ``_polarity_score`` / ``_detect_polarity``
    (the top-hat of ``_floor`` and of the first ``_candidates`` is one and the same)."""
    field = field_mask(pixels, polarity)
    if field.mean() < 0.05:
        return None
    d = density_of(pixels, polarity)
    if not field.all():
        d = _extend_beyond_field(d, field)
    th = d - _background(d, kernel_px, fast=True)
    floor = 0.25 * float(np.percentile(th[field][::7], 99.7))
    return field, d, _select(d, kernel_px, min_area, floor=floor, th=th, fast=True)


def _first_score(first):
    """``_polarity_score`` from a ``_first_pass``."""
    if first is None:
        return 0.0
    sel, _, _, _, sigma = first[2]
    return float(sum(min(s[2][2] / max(sigma, 1e-6), 1000.0) for s in sel))


def _second_pass(pixels, polarity, min_area, first):
    """``_detect_polarity`` from a ``_first_pass``."""
    if first is None:
        return None, [], 0.0, ([], 0.0)
    field, d, (sel, med, merged, peak, sigma) = first
    if sel:
        k2 = max(9, int(5 * med) | 1)
        sel, med, merged, _, sigma = _select(d, k2, min_area, ball_r=med, floor=0.3 * peak,
                                             saturated=_saturated(pixels, polarity), fast=True)
    if not field.all():
        d = d.copy()
        d[~field] = np.nan
    return d, sel, med, (merged, sigma)


def _polarity_score(pixels, polarity, kernel_px, min_area):
    """Summed contrast-to-noise of the first-pass round blobs under one polarity
    hypothesis: steel balls are the highest-contrast compact blobs."""
    field = field_mask(pixels, polarity)
    if field.mean() < 0.05:
        return 0.0
    d = density_of(pixels, polarity)
    if not field.all():
        d = _extend_beyond_field(d, field)
    sel, _, _, _, sigma = _select(d, kernel_px, min_area, floor=_floor(d, kernel_px, field))
    return float(sum(min(s[2][2] / max(sigma, 1e-6), 1000.0) for s in sel))


def _saturated(pixels, polarity):
    """Pixels clipped at the bright (least dense) extreme, or None when there are few."""
    a = np.asarray(pixels, np.float32)
    lo, hi = float(a.min()), float(a.max())
    s = a >= hi - 0.002 * (hi - lo) if polarity > 0 else a <= lo + 0.002 * (hi - lo)
    return s if s.mean() > 0.005 else None


def _floor(d, kernel_px, field):
    """First-pass threshold: a quarter of the strongest structures' top-hat (steel balls
    are the densest compact objects) so that the blurred tails of neighbours do not merge."""
    th = d - _background(d, kernel_px)
    return 0.25 * float(np.percentile(th[field][::7], 99.7))


def detect_beads(pixels, polarity: int | None = None, kernel_px: int | None = None,
                 min_area_px: int = 6) -> Beads:
    """Find the compact round balls of the dominant size in a raw image.

    ``pixels``: raw 2-D array, larger = brighter unless ``polarity=-1``; with
    ``polarity=None`` both are tried and the one whose round blobs have the
    larger summed contrast-to-noise wins (16-bit PNG/TIFF carry no photometric tag). ``kernel_px``: the
    background opening size, default 10 % of the smaller image side (must
    exceed a ball's diameter).

    CPU s, reference path -> this one (2 cores, polarity=None, simulated shots, seed 3):
    II plate 512 px 0.20 -> 0.048, 1024 px 0.54 -> 0.24; II cage AP / LAT 512 px
    0.10 / 0.12 -> 0.046 / 0.065, 1024 px 0.43 / 0.53 -> 0.25 / 0.34; flat-panel cage
    AP / LAT 512 px 0.10 / 0.11 -> 0.056 / 0.060, 1024 px 0.19 / 0.29 -> 0.12 / 0.22."""
    return _detect(pixels, polarity, kernel_px, min_area_px, fast=True)


def _detect(pixels, polarity, kernel_px, min_area_px, fast: bool) -> Beads:
    """``detect_beads``; ``fast=False`` runs the reference path (each polarity stage from
    scratch, blob shapes one by one, ``refine_centre`` ball by ball), which the fast path
    (shared first pass, ``_shapes``, ``refine_centres``) equals within rounding."""
    a = np.asarray(pixels)
    if a.ndim != 2 or min(a.shape) < 32:
        raise BeadDetectionError(f"image must be 2-D and at least 32 x 32 px, got shape {a.shape}")
    if not np.all(np.isfinite(a.astype(np.float64, copy=False))) if a.dtype.kind == "f" else False:
        raise BeadDetectionError("image has non-finite pixels")
    kernel = int(kernel_px or max(9, 0.1 * min(a.shape)))
    if fast:
        first = {}

        def first_pass(p):
            if p not in first:
                first[p] = _first_pass(a, p, kernel, min_area_px)
            return first[p]
        pol = polarity if polarity in (1, -1) else max((1, -1), key=lambda p: _first_score(first_pass(p)))
        d, sel, med, (merged, sigma) = _second_pass(a, pol, min_area_px, first_pass(pol))
    else:
        pol = polarity if polarity in (1, -1) else max((1, -1), key=lambda p: _polarity_score(a, p, kernel, min_area_px))
        d, sel, med, (merged, sigma) = _detect_polarity(a, pol, kernel, min_area_px)
    if not sel:
        raise BeadDetectionError("no round balls found in the image: check that the cage is in the beam "
                                 "and the exposure is not saturated")
    cs, rs, ks, ro = [], [], [], []
    if fast:
        uv0 = [(x + (w - 1) / 2, y + (h - 1) / 2) for (i, x, y, w, h, area), _, _ in sel]
        cen, pk, ok = refine_centres(d, uv0, np.array([r_eq for _, r_eq, _ in sel], float))
        for k in np.flatnonzero(ok):
            cs.append(cen[k]), rs.append(sel[k][1]), ks.append(float(pk[k])), ro.append(sel[k][2][0])
    else:
        for row, r_eq, shp in sel:
            i, x, y, w, h, area = row
            c, peak = refine_centre(d, (x + (w - 1) / 2, y + (h - 1) / 2), r_eq)
            if c is None:
                continue
            cs.append(c), rs.append(r_eq), ks.append(peak), ro.append(shp[0])
    if not cs:
        raise BeadDetectionError("all candidate balls touch the image edge: centre the cage in the field")
    split = _split_merged(d, merged, np.array(cs), med, float(np.median(ks)), sigma)
    cs = _deconflict(d, cs, rs, fast)
    for c in split:
        cs.append(c), rs.append(med), ks.append(float(np.median(ks))), ro.append(0.0)
    return Beads(np.array(cs), np.array(rs), np.array(ks), np.array(ro), pol,
                 len(merged) - len(split) // 2, len(split) // 2)


def _deconflict(d, cs, rs, fast=False):
    """Re-centre balls with a neighbour near their window, leaving the neighbour's disc out
    (its shadow would tilt the background plane and pull the centroid)."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    cs = [np.asarray(c) for c in cs]
    if len(cs) < 2:
        return cs
    c = np.array(cs)
    reach = 2.5 * float(np.max(rs)) + 7.0
    tree = cKDTree(c)
    if fast:
        nbs = [[j for j in nb if j != k] for k, nb in enumerate(tree.query_ball_point(c, reach))]
        out = [c[k] for k in range(len(c))]
        todo = [k for k, nb in enumerate(nbs) if nb]
        if todo:
            new, _, ok = refine_centres(d, c[todo], np.asarray(rs, float)[todo], others=[c[nbs[k]] for k in todo])
            for j, k in enumerate(todo):
                if ok[j]:
                    out[k] = new[j]
        return out
    out = []
    for k, nb in enumerate(tree.query_ball_point(c, reach)):
        nb = [j for j in nb if j != k]
        if nb:
            new, _ = refine_centre(d, c[k], rs[k], others=c[nb])
            out.append(c[k] if new is None else new)
        else:
            out.append(c[k])
    return out


def _split_merged(d, merged, centres, radius, amplitude, sigma):
    """Centres of the balls of merged pairs that a two-ball fit explains (see core.calibration.bead_pairs)."""
    if not merged:
        return []
    template = build_template(d, centres, radius)
    if template is None:
        return []
    out = []
    for mask, offset in merged:
        two = split_pair(d, mask, offset, template, amplitude, sigma)
        if two is not None:
            out.extend(two)
    return out
