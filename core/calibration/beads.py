"""Steel-ball (bead) detection in a raw fluoroscopy shot, with sub-pixel centres.

The robot paper (II.C.3) detects circular control points against a strong
background. Here:

1. The exposed field (``field_mask``) by its shape and its connectivity to the image
   border, not by a pixel value alone: the dark surround (an image intensifier's
   unexposed corners, a collimator's shadow, the vendor's padding) is the dark region
   connected to the border, and the field is the convex hull of what is left (round
   II field and collimated rectangle alike are convex). A ball core or an instrument
   as dark as the surround lies inside the hull and stays in the field; a rod reaching
   the field edge only dents the exposed region, and the hull fills the dent.
2. Log-attenuation density (Beer-Lambert makes a ball's footprint additive), the
   surround filled with the local background carried outwards (no edge at the field
   border), background removed by a grey opening larger than a ball; compact round
   blobs of the dominant size kept (first pass size-blind, second pass with the ball
   size known: a tighter opening and a threshold from the balls' own contrast).
3. Every centre refined by background-corrected intensity weighting (``refine_centres``:
   a plane fitted to an annulus around the ball is subtracted, the positive remainder
   weights the centroid, iterated on a re-centred disc), balls near another ball
   re-centred with the neighbour's disc left out.
4. Two touching balls (one blob about twice a ball's area, elongated) split by a
   two-ball template fit (``core.calibration.bead_pairs.split_pairs``) when it explains
   the blob. Balls joined to metal (or in a pair the fit does not explain): candidates
   where the shot's ball template correlates with the blob, then circles whose rim shows
   (gradient Hough transform), each centred by a robust template fit
   (``fit_partial_ball``) and kept when the fit explains a ball and no dense matter
   continues on opposite sides of it (a point on a rod). Balls cut by the field edge are
   dropped, never guessed (the calibration pipeline fits those against the ball template
   where the model predicts a ball).

Pixel (u, v) = (column, row), centre of pixel (0, 0) at (0, 0).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from core.calibration.bead_pairs import build_template, fit_partial_ball, split_pairs

__all__ = ["BeadDetectionError", "Beads", "density_of", "detect_beads", "refine_centre", "refine_centres",
           "field_mask", "whole_ball_field"]


class BeadDetectionError(ValueError):
    """No usable balls could be found in an image."""


@dataclass(frozen=True)
class Beads:
    """Detected balls: ``centres_px`` (N, 2) raw (u, v); ``radius_px`` (N,) footprint
    radius; ``contrast`` (N,) peak log-attenuation; ``roundness`` (N,) in (0, 1];
    ``polarity`` +1 when dense = dark (MONOCHROME2), -1 when inverted; ``field_fraction``:
    the share of the image inside the exposed field."""
    centres_px: np.ndarray
    radius_px: np.ndarray
    contrast: np.ndarray
    roundness: np.ndarray
    polarity: int
    dropped_merged: int = 0
    split_pairs: int = 0
    field_fraction: float = 1.0

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


# --- the exposed field ---------------------------------------------------------

SURROUND_LEVEL = 0.08      # surround: darker than 8 % of the way from the darkest to the bright field
MIN_SURROUND_FRACTION = 0.01
MIN_EDGE_STEP = 0.25       # the field's edge: a step of a quarter of the field's level over the surround
MIN_FLAT_EDGE_STEP = 0.05  # ... or of 5 % over a flat surround, at least this many times its noise:
FLAT_EDGE_NOISE_RATIO = 20.0
FLOOR_EDGE_PX = 4          # without a ball over the first pass's floor, it is taken this far inside the field's edge


def field_mask(pixels, polarity: int = 1, margin_px: int = 2) -> np.ndarray:
    """The exposed field (bool, image shape), ``margin_px`` inside its edge (``_field``)."""
    return _field(pixels, polarity, margin_px)[0]


def whole_ball_field(pixels, polarity: int, radius_px: float) -> np.ndarray:
    """Where a ball of ``radius_px`` centred there lies wholly inside the exposed field: the
    field eroded by the ball's disc (bool, image shape). A ball predicted there and not
    detected is missing; one predicted nearer the edge may be cut by it."""
    f = field_mask(pixels, polarity).astype(np.uint8)
    r = int(np.ceil(radius_px)) + 1
    return cv2.erode(f, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)


def round_field(pixels, polarity: int = 1):
    """((u, v), r) in px of an image intensifier's round field fitted to its sharp edge
    (``_round_field``), or None when the field is not round or the whole image is exposed."""
    return _field(pixels, polarity, 0)[2]


_FIELDS: dict = {}


def _field(pixels, polarity: int = 1, margin_px: int = 2):
    """``_find_field``, remembered for the last few images by their content: detection (both
    polarities), the ball field and the template of one shot all ask for it (~40 ms at 1024²
    each); hashing the pixels costs ~1 ms. The masks come back read-only."""
    a = np.ascontiguousarray(pixels)
    key = (hashlib.blake2b(a.view(np.uint8).ravel(), digest_size=16).digest(), a.shape, a.dtype.str,
           int(polarity), int(margin_px))
    if key not in _FIELDS:
        field, dark, disc = _find_field(a, polarity, margin_px)
        field.setflags(write=False)
        if len(_FIELDS) >= 8:
            _FIELDS.pop(next(iter(_FIELDS)))
        _FIELDS[key] = (field, dark, disc)
    return _FIELDS[key]


def _find_field(pixels, polarity: int = 1, margin_px: int = 2):
    """(the exposed field, the surround's level in ``polarity``-corrected pixels or None
    when there is no surround, the round field's ((u, v), r) or None).

    The surround is the dark region (below ``SURROUND_LEVEL`` of the way from the darkest
    pixel to the bright quarter of the image, on a copy averaged to ~256 px against noise)
    connected to the image border, bounded by a sharp edge: ~4-8 px inside the field the
    image is brighter than ~4-8 px outside by ``MIN_EDGE_STEP`` of that way (dark anatomy at
    the border fades in, a collimator blade or an II's edge steps). Without such a
    surround covering ``MIN_SURROUND_FRACTION`` of the image, the whole image is the field.
    Otherwise the field is the convex hull of the largest region brighter than half that
    step (the edge of a blurred step, sharp or not, to ~0.3 px): balls and instruments as
    dark as the surround inside the field, and dents where a ball or a rod meets the edge,
    belong to it. ``polarity`` as in ``density_of`` (the dark extreme is the minimum for +1)."""
    a = np.asarray(pixels, np.float32)
    if a.ndim != 2 or a.size == 0:
        raise BeadDetectionError(f"an image must be a non-empty 2-D array, got shape {a.shape}")
    everything = np.ones(a.shape, bool), None, None
    if polarity < 0:
        a = float(a.max()) - a
    rows, cols = a.shape
    # the surround and the levels on each side of its edge on a copy ~256 px wide (the area
    # average is the noise filter); the edge itself at full resolution
    f = max(1, min(rows, cols) // 256)
    small = cv2.resize(a, (cols // f, rows // f), interpolation=cv2.INTER_AREA) if f > 1 else cv2.blur(a, (5, 5))
    lo, ref = float(small.min()), float(np.percentile(small, 75))
    if not ref > lo:
        return everything
    dark = (small <= lo + SURROUND_LEVEL * (ref - lo)).astype(np.uint8)
    n, lab = cv2.connectedComponents(dark, connectivity=8)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    edge = edge[edge > 0]
    if not edge.size:
        return everything
    surround = np.isin(lab, edge).astype(np.uint8)
    if surround.mean() < MIN_SURROUND_FRACTION:
        return everything
    b = max(2, int(round(4 / f)))                 # the bands: b to 2 b small px from the edge
    near, far = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)) for k in (b, 2 * b))
    exposed = 1 - surround
    inner = (cv2.dilate(surround, far) > cv2.dilate(surround, near)) & (exposed > 0)
    outer = (cv2.dilate(exposed, far) > cv2.dilate(exposed, near)) & (surround > 0)
    if not inner.any() or not outer.any():
        return everything
    level_in, level_out = float(np.median(small[inner])), float(np.median(small[outer]))
    step = level_in - level_out
    o = small[outer]
    noise_out = 1.4826 * float(np.median(np.abs(o - np.median(o))))
    # a step smaller than a quarter of the field's level is still the field's edge when the
    # surround beside it is flat (an unexposed II surround: a lateral shot's body darkens the
    # whole field edge to a few % of the bright air); dark anatomy at a border has texture
    if step < MIN_EDGE_STEP * (ref - lo) and not (step >= MIN_FLAT_EDGE_STEP * (ref - lo)
                                                 and step >= FLAT_EDGE_NOISE_RATIO * noise_out):
        return everything
    # the edge itself: where the (symmetrically) blurred step crosses half its height
    s = cv2.blur(a, (5, 5), borderType=cv2.BORDER_REPLICATE)
    contours, _ = cv2.findContours((s > 0.5 * (level_in + level_out)).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(a.shape, bool), level_out, None
    areas = [cv2.contourArea(c) for c in contours]
    outline = contours[int(np.argmax(areas))]
    field = np.zeros(a.shape, np.uint8)
    cv2.fillPoly(field, [cv2.convexHull(outline)], 1)
    disc = _round_field(s, outline[:, 0, :].astype(np.float64), level_in - level_out)
    if disc is None:
        disc = _round_field_through_dark(s, small[outer], level_in, level_out)
    if disc is not None:                     # dark anatomy at a round field's edge is inside it
        (cu, cv), r = disc                   # pixel centres within r: the hull's convention
        vv, uu = np.ogrid[:rows, :cols]
        field[(uu - cu) ** 2 + (vv - cv) ** 2 <= r * r] = 1
    if margin_px > 0:
        k = 2 * margin_px + 1
        field = cv2.erode(field, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return field.astype(bool), level_out, disc


def _round_field_through_dark(s, surround_band, level_in, level_out):
    """``_round_field`` on the contour just above the surround's level, for a round field whose
    edge runs through dark anatomy over half its circumference or more (a lateral shot: the
    body dark, the back in air). There the half-step contour runs round the anatomy, and the
    field's edge is a step from the surround to the dark anatomy only, small against the whole
    field's step but sharp and many times the surround's noise: the contour at the surround's
    level plus ``max(6 noise, 0.5 % of the step)`` runs along the true edge all round, and its
    points whose step exceeds twice that are the edge. The circle test (RMS, arc) is the same."""
    noise = float(np.std(surround_band)) if surround_band.size else 0.0
    rise = max(6.0 * noise, 0.005 * (level_in - level_out))
    if not rise > 0:
        return None
    contours, _ = cv2.findContours((s > level_out + rise).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    outline = contours[int(np.argmax([cv2.contourArea(c) for c in contours]))]
    return _round_field(s, outline[:, 0, :].astype(np.float64), 2.0 * rise)


ROUND_FIELD_RMS_PX = 1.0      # a round field: the sharp edge lies on one circle to ~1 px
ROUND_FIELD_MIN_ARC = 0.5     # ... over at least half of its circumference


def _round_field(s, pts, step):
    """((u, v), r) of an image intensifier's round field, or None (a collimated or any other
    field). The threshold contour of the field also runs round dark anatomy that reaches the
    edge, where it is a gentle slope, not the field's sharp step: only contour points whose
    step across ~4 px on either side (along the blurred image's gradient) is at least half
    the field's step are the edge. A circle fitted to them by least squares (Kasa), refitted
    on the points within 2 px of it, is the field when they lie on it to
    ``ROUND_FIELD_RMS_PX`` and cover ``ROUND_FIELD_MIN_ARC`` of its circumference. Points
    off the outline's convex hull (where it runs in along a wire that meets the edge) and on
    the image border are not the edge either."""
    if len(pts) < 24 or not step > 0:
        return None
    gy, gx = np.gradient(s)
    iu = np.clip(np.rint(pts[:, 0]).astype(int), 0, s.shape[1] - 1)
    iv = np.clip(np.rint(pts[:, 1]).astype(int), 0, s.shape[0] - 1)
    g = np.column_stack([gx[iv, iu], gy[iv, iu]])
    n = np.linalg.norm(g, axis=1)
    ok = n > 0
    pts, g = pts[ok], g[ok] / n[ok, None]
    inside = cv2.remap(s.astype(np.float32), (pts[:, 0] + 4 * g[:, 0]).astype(np.float32)[None],
                       (pts[:, 1] + 4 * g[:, 1]).astype(np.float32)[None], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)[0]
    outside = cv2.remap(s.astype(np.float32), (pts[:, 0] - 4 * g[:, 0]).astype(np.float32)[None],
                        (pts[:, 1] - 4 * g[:, 1]).astype(np.float32)[None], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)[0]
    rows, cols = s.shape
    on_border = (pts[:, 0] <= 1) | (pts[:, 1] <= 1) | (pts[:, 0] >= cols - 2) | (pts[:, 1] >= rows - 2)
    # on the outline's convex hull: not where it runs in along a wire or a rod that meets the edge
    on_hull = _distance_to_polygon(pts, cv2.convexHull(pts.astype(np.float32))[:, 0, :]) <= 1.5
    good = (inside - outside >= 0.5 * step) & ~on_border & on_hull
    if good.sum() < 24:
        return None
    # each edge point where the blurred step crosses half its own height, to a fraction of a
    # pixel along the gradient (the contour runs through the pixel centres just inside)
    p, n = pts[good], g[good]
    t = np.linspace(-3.0, 3.0, 25)
    prof = cv2.remap(s.astype(np.float32), (p[:, None, 0] + t * n[:, None, 0]).astype(np.float32),
                     (p[:, None, 1] + t * n[:, None, 1]).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    half = 0.5 * (inside[good] + outside[good])[:, None]
    above = prof >= half
    k = np.argmax(above, axis=1)                   # first sample at or above half height
    k = np.clip(k, 1, len(t) - 1)
    rows_ = np.arange(len(p))
    lo, hi = prof[rows_, k - 1], prof[rows_, k]
    frac = np.clip((half[:, 0] - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    sharp = p + (t[k - 1] + frac * (t[1] - t[0]))[:, None] * n
    keep = np.ones(len(sharp), bool)
    for _ in range(3):
        q = sharp[keep]
        A = np.column_stack([q, np.ones(len(q))])
        sol, *_ = np.linalg.lstsq(A, (q ** 2).sum(1), rcond=None)
        c = 0.5 * sol[:2]
        r2 = sol[2] + c @ c
        if not r2 > 0:
            return None
        r = float(np.sqrt(r2))
        res = np.linalg.norm(sharp - c, axis=1) - r
        keep = np.abs(res) <= 2.0
        if keep.sum() < 24:
            return None
    rms = float(np.sqrt(np.mean(res[keep] ** 2)))
    ang = np.arctan2(sharp[keep, 1] - c[1], sharp[keep, 0] - c[0])
    covered = np.unique(np.floor((ang + np.pi) / (2 * np.pi) * 72).astype(int) % 72).size / 72
    if rms > ROUND_FIELD_RMS_PX or covered < ROUND_FIELD_MIN_ARC:
        return None
    return (float(c[0]), float(c[1])), r


def _distance_to_polygon(pts, poly):
    """Distance (px) of each point (N, 2) to the closed polygon's edges (M, 2)."""
    a, b = poly.astype(np.float64), np.roll(poly, -1, axis=0).astype(np.float64)
    ab = b - a
    t = np.clip(((pts[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(pts[:, None] - (a + t[..., None] * ab), axis=-1).min(axis=1)


def _extend_beyond_field(d, field):
    """Fill the unexposed surround with the local background carried outwards
    (normalised convolution at 1/8 scale: the fill only feeds the smooth background
    estimate), so that the field edge makes no step in the top-hat."""
    rows, cols = d.shape
    f = max(1, min(rows, cols) // 128)
    small_d = cv2.resize(np.where(field, d, 0).astype(np.float32), (cols // f, rows // f), interpolation=cv2.INTER_AREA)
    small_f = cv2.resize(field.astype(np.float32), (cols // f, rows // f), interpolation=cv2.INTER_AREA)
    s = max(rows, cols) / 40 / f
    num = cv2.GaussianBlur(small_d, (0, 0), s)
    den = cv2.GaussianBlur(small_f, (0, 0), s)
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), float(np.median(d[field])))
    fill = cv2.resize(fill.astype(np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR)
    return np.where(field, d, fill).astype(np.float32)


# --- background and candidate blobs ----------------------------------------------

def _background(d: np.ndarray, kernel_px: int) -> np.ndarray:
    """Grey opening with a disc of ``kernel_px`` (on a downsampled copy for speed), smoothed."""
    f = max(1, kernel_px // 15)
    small = cv2.resize(d, (d.shape[1] // f, d.shape[0] // f), interpolation=cv2.INTER_AREA) if f > 1 else d
    k = max(3, int(round(kernel_px / f)) | 1)
    bg = cv2.GaussianBlur(_open_disc(small, k), (0, 0), max(0.5, k / 8))
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


def _candidates(d: np.ndarray, kernel_px: int, min_area: int, ball_r: float = 0.0, floor: float = 0.0, th=None):
    """Compact components of the top-hat: (stats rows, labels, top-hat, noise sigma).

    With a ball radius known (second pass), the top-hat is first opened with a
    disc of 0.8 r: thin K-wires and edges vanish while balls survive, so balls
    touching a wire are no longer joined to it. ``th``: the top-hat when already
    computed (``d - _background(d, kernel_px)``)."""
    if th is None:
        th = d - _background(d, kernel_px)
    hp = (th - cv2.blur(th, (3, 3)))[::4, ::4]     # noise from a subsample: a median is costly
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
    rows = [(int(i), *(int(s) for s in stats[i])) for i in keep]
    return rows, labels, th, sigma


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


def _select(d, kernel_px, min_area, ball_r=0.0, floor=0.0, saturated=None, th=None):
    """(selected balls, median radius, (merged pairs, clutter) blobs [(mask, offset)], median peak,
    noise sigma). Clutter: larger blobs neither a ball nor a pair (balls joined to metal).

    ``saturated``: where the detector clipped (no tissue in the beam): a ball there
    shows only its dense core, a smaller but still symmetric disc, so it is kept.
    ``th`` as in ``_candidates``."""
    rows, labels, th, sigma = _candidates(d, kernel_px, min_area, ball_r, floor, th)
    shp = _shapes(labels, th, rows)
    r_eq = np.array([np.sqrt(r[5] / np.pi) for r in rows]) if rows else np.zeros(0)
    # pixel quantisation makes small discs look less round: relax below r = 4 px
    round_ = np.array([s[0] > 0.8 and 0.75 < s[1] < 1.3 if r >= 4 else s[0] > 0.6 and 0.6 < s[1] < 1.4
                       for s, r in zip(shp, r_eq)], bool)
    if round_.sum() < 3:
        return [], 0.0, ([], []), 0.0, sigma
    med = float(np.median(r_eq[round_]))
    peaks = np.array([s[2] for s in shp])
    # a round blob far denser than a ball is two balls stacked in projection: drop it
    keep = round_ & (r_eq > 0.7 * med) & (r_eq < 1.4 * med) & (peaks < 1.5 * np.median(peaks[round_]))
    if saturated is not None:
        small = round_ & (r_eq > 0.3 * med) & (r_eq <= 0.7 * med)
        for k in np.flatnonzero(small):
            keep[k] = _frame_fraction(saturated, rows[k]) > 0.5
    # two touching balls: about twice the area, elongated (roundness 0.3-0.85)
    pair = ~round_ & (r_eq > 1.15 * med) & (r_eq < 1.6 * med) & np.array([0.3 < s[0] < 0.85 for s in shp])
    merged, clutter = [], []
    for k in np.flatnonzero(~keep & (r_eq > 1.15 * med)):
        i, x, y, w, h, _ = rows[k]
        (merged if pair[k] else clutter).append((labels[y:y + h, x:x + w] == i, (x, y)))
    sel = [(rows[k], r_eq[k], shp[k]) for k in np.flatnonzero(keep)]
    return sel, med, (merged, clutter), float(np.median([s[2] for s in shp if s[0] > 0.8] or [0.0])), sigma


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


def _saturated(pixels, polarity):
    """Pixels clipped at the bright (least dense) extreme, or None when there are few."""
    a = np.asarray(pixels, np.float32)
    lo, hi = float(a.min()), float(a.max())
    s = a >= hi - 0.002 * (hi - lo) if polarity > 0 else a <= lo + 0.002 * (hi - lo)
    return s if s.mean() > 0.005 else None


def _first_pass(pixels, polarity, kernel_px, min_area):
    """The first (size-blind) pass under one polarity hypothesis: (field, density, ``_select``'s
    result), or None when the field is too small. Its threshold is a quarter of the strongest
    structures' top-hat (steel balls are the densest compact objects), so that the blurred
    tails of neighbours do not merge."""
    field, dark, _ = _field(pixels, polarity)
    if field.mean() < 0.05:
        return None
    a = np.asarray(pixels, np.float32)
    if polarity < 0:
        a = float(a.max()) - a
    if dark is not None:
        # the unexposed surround shows the detector's zero signal: measured from it, the log
        # attenuation holds with an offset in the pixels (a rescale intercept, a dark level)
        a = np.maximum(a - dark, 0.0)
    d = density_of(a, 1)
    if not field.all():     # flatten the unexposed surround so it makes no edges
        d = _extend_beyond_field(d, field)
    th = d - _background(d, kernel_px)
    floor = 0.25 * float(np.percentile(th[::3, ::3][field[::3, ::3]], 99.7))
    sel = _select(d, kernel_px, min_area, floor=floor, th=th)
    if not sel[0] and not field.all():
        # no ball over that floor: at the field's edge the blurred unexposed surround beside a
        # lateral shot's saturated air reads as a density far above any ball's; the strongest
        # structures ``FLOOR_EDGE_PX`` inside the edge set the floor instead
        k = 2 * FLOOR_EDGE_PX + 1
        inner = cv2.erode(field.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        if inner[::3, ::3].sum() >= 100:
            floor = 0.25 * float(np.percentile(th[::3, ::3][inner[::3, ::3]], 99.7))
            sel = _select(d, kernel_px, min_area, floor=floor, th=th)
    return field, d, sel


def _first_score(first):
    """Summed contrast-to-noise of the first-pass round blobs under one polarity hypothesis:
    steel balls are the highest-contrast compact blobs."""
    if first is None:
        return 0.0
    sel, _, _, _, sigma = first[2]
    return float(sum(min(s[2][2] / max(sigma, 1e-6), 1000.0) for s in sel))


def _second_pass(pixels, polarity, min_area, first):
    """With the ball size and contrast known: a tighter background (opening 5 r wide) and a
    threshold at 30 % of a ball's peak. Returns (density NaN off the field, selected balls,
    median radius, merged blobs, noise sigma, field)."""
    if first is None:
        return None, [], 0.0, ([], []), 0.0, None
    field, d, (sel, med, merged, peak, sigma) = first
    if sel:
        k2 = max(9, int(5 * med) | 1)
        sel, med, merged, _, sigma = _select(d, k2, min_area, ball_r=med, floor=0.3 * peak,
                                             saturated=_saturated(pixels, polarity))
    if not field.all():
        d = d.copy()
        d[~field] = np.nan        # refine_centres rejects windows whose ball leaves the field
    return d, sel, med, merged, sigma, field


def detect_beads(pixels, polarity: int | None = None, kernel_px: int | None = None,
                 min_area_px: int = 6) -> Beads:
    """Find the compact round balls of the dominant size in a raw image.

    ``pixels``: raw 2-D array, larger = brighter unless ``polarity=-1``; with
    ``polarity=None`` both are tried and the one whose round blobs have the
    larger summed contrast-to-noise wins (16-bit PNG/TIFF carry no photometric tag). ``kernel_px``: the
    background opening size, default 10 % of the smaller image side (must
    exceed a ball's diameter). Deterministic: no decision depends on an unstable order.

    Raises ``BeadDetectionError`` (one line) for a malformed image or one without balls."""
    a = np.asarray(pixels)
    if a.ndim != 2 or min(a.shape) < 32:
        raise BeadDetectionError(f"image must be 2-D and at least 32 x 32 px, got shape {a.shape}")
    if a.dtype.kind not in "uif" or (a.dtype.kind == "f" and not np.all(np.isfinite(a))):
        raise BeadDetectionError("image has non-finite or non-numeric pixels")
    kernel = int(kernel_px or max(9, 0.1 * min(a.shape)))
    first = {}

    def first_pass(p):
        if p not in first:
            first[p] = _first_pass(a, p, kernel, min_area_px)
        return first[p]
    pol = polarity if polarity in (1, -1) else max((1, -1), key=lambda p: _first_score(first_pass(p)))
    d, sel, med, blobs, sigma, field = _second_pass(a, pol, min_area_px, first_pass(pol))
    if not sel:
        raise BeadDetectionError("no round balls found in the image: check that the cage is in the beam "
                                 "and the exposure is not saturated")
    uv0 = [(x + (w - 1) / 2, y + (h - 1) / 2) for (i, x, y, w, h, area), _, _ in sel]
    r_sel = np.array([r_eq for _, r_eq, _ in sel], float)
    cen, pk, ok = refine_centres(d, uv0, r_sel)
    if not ok.any():
        raise BeadDetectionError("all candidate balls touch the image edge: centre the cage in the field")
    cs, rs, ks = cen[ok], r_sel[ok], pk[ok]
    ro = np.array([s[2][0] for s in sel], float)[ok]
    merged, clutter = blobs
    amp = float(np.median(ks))
    template = build_template(d, cs, med)
    split, failed = _split_merged(d, merged, template, amp, sigma)
    cs = _deconflict(d, cs, rs)
    extra = _balls_in_clutter(d, clutter + failed, template, amp, sigma, np.vstack([cs, split]))
    for more in (split, extra):
        if len(more):
            cs = np.vstack([cs, more])
            rs = np.append(rs, np.full(len(more), med))
            ks = np.append(ks, np.full(len(more), amp))
            ro = np.append(ro, np.zeros(len(more)))
    fraction = 1.0 if field is None else float(field.mean())
    return Beads(cs, rs, ks, ro, pol, len(failed), len(split) // 2, fraction)


def _deconflict(d, cs, rs):
    """Re-centre balls with a neighbour near their window, leaving the neighbour's disc out
    (its shadow would tilt the background plane and pull the centroid)."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    c = np.asarray(cs, float)
    if len(c) < 2:
        return c
    reach = 2.5 * float(np.max(rs)) + 7.0
    # sorted neighbour lists: the query's order is an implementation detail
    nbs = [sorted(j for j in nb if j != k) for k, nb in enumerate(cKDTree(c).query_ball_point(c, reach))]
    out = c.copy()
    todo = [k for k, nb in enumerate(nbs) if nb]
    if todo:
        new, _, ok = refine_centres(d, c[todo], np.asarray(rs, float)[todo], others=[c[nbs[k]] for k in todo])
        out[np.asarray(todo)[ok]] = new[ok]
    return out


def _split_merged(d, merged, template, amplitude, sigma):
    """Centres (2 K, 2) of the balls of merged pairs that a two-ball fit explains
    (``core.calibration.bead_pairs.split_pairs``), and the blobs it does not."""
    if not merged or template is None:
        return np.zeros((0, 2)), list(merged)
    two, ok = split_pairs(d, merged, template, amplitude, sigma)
    return two[ok].reshape(-1, 2), [b for b, o in zip(merged, ok) if not o]


MATCH_MIN_NCC = 0.75


def _circles(crop, r):
    """Centres (crop px) of circles of radius 0.75-1.3 r whose rim shows in ``crop`` (OpenCV's
    gradient Hough transform, its refined variant: a ball half behind a rod still votes), in
    the transform's order of strength."""
    img = cv2.normalize(crop, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    found = cv2.HoughCircles(img, cv2.HOUGH_GRADIENT_ALT, 1.5, 1.5 * r, param1=150, param2=0.7,
                             minRadius=max(2, int(0.75 * r)), maxRadius=int(np.ceil(1.3 * r)))
    return [] if found is None else [np.array(f[:2], float) for f in found[0]]


def mask_in_crop(mask, du, dv, shape):
    """``mask`` (a blob's box) placed at offset (du, dv) in an array of ``shape``."""
    out = np.zeros(shape, bool)
    out[dv:dv + mask.shape[0], du:du + mask.shape[1]] = mask
    return out


def _on_a_bar(crop, off_blob, c, r, amplitude, sectors: int = 16):
    """Whether dense matter continues on two opposite sides of a ring around ``c`` (radii
    r + 2 to 2 r + 2): a point on a rod or wire, not a ball beside one (whose neighbour
    fills one side only). Dense: above the local background (median off the blob) by half
    a ball's amplitude; a sector is dense when half of its pixels are."""
    H, W = crop.shape
    yy, xx = np.mgrid[0:H, 0:W]
    rho = np.hypot(xx - c[0], yy - c[1])
    ring = (rho >= r + 2) & (rho <= 2 * r + 2) & np.isfinite(crop)
    bg = float(np.median(crop[off_blob & np.isfinite(crop)])) if (off_blob & np.isfinite(crop)).any() else 0.0
    sec = (np.floor((np.arctan2(yy - c[1], xx - c[0]) + np.pi) / (2 * np.pi) * sectors).astype(int)) % sectors
    dense = np.zeros(sectors, bool)
    for k in range(sectors):
        m = ring & (sec == k)
        dense[k] = m.any() and float(np.mean(crop[m] - bg > 0.5 * amplitude)) > 0.5
    opposite = dense & (np.roll(dense, sectors // 2) | np.roll(dense, sectors // 2 + 1) | np.roll(dense, sectors // 2 - 1))
    return bool(opposite.any())


def _balls_in_clutter(d, blobs, template, amplitude, sigma, known):
    """Balls joined to something else in the top-hat (a rod, a plate, an unsplit pair):
    candidates where the shot's ball template correlates (normalised, > ``MATCH_MIN_NCC``)
    with the density inside the blob, strongest first, then circles whose rim shows
    (``_circles``), one per ball reach; each centred by the robust template fit
    (``fit_partial_ball``: metal in the window down-weighted) and kept when that fit
    explains a ball not on a bar (``_on_a_bar``). ``known``: centres already detected."""
    if not blobs or template is None:
        return np.zeros((0, 2))
    r = template.radius_px
    R = int(np.ceil(1.25 * r + 2))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    tpl = template(np.hypot(xx, yy)).astype(np.float32)
    rows, cols = d.shape
    found = [np.asarray(k, float) for k in known]
    for mask, (x0, y0) in blobs:
        h, w = mask.shape
        u0, v0, u1, v1 = max(x0 - R, 0), max(y0 - R, 0), min(x0 + w + R, cols), min(y0 + h + R, rows)
        crop = d[v0:v1, u0:u1]
        if crop.shape[0] <= 2 * R + 1 or crop.shape[1] <= 2 * R + 1:
            continue
        fin = np.isfinite(crop)
        c = np.where(fin, crop, np.nanmedian(crop) if fin.any() else 0.0).astype(np.float32)
        ncc = cv2.matchTemplate(c, tpl, cv2.TM_CCOEFF_NORMED)          # (H - 2R, W - 2R), centred at +R
        inblob = np.zeros(ncc.shape, bool)
        mv, mu = np.nonzero(mask)
        iv, iu = mv + y0 - v0 - R, mu + x0 - u0 - R
        okp = (iv >= 0) & (iv < ncc.shape[0]) & (iu >= 0) & (iu < ncc.shape[1])
        inblob[iv[okp], iu[okp]] = True
        peak = (ncc >= cv2.dilate(ncc, np.ones((3, 3), np.uint8))) & inblob & (ncc > MATCH_MIN_NCC)
        pv, pu = np.nonzero(peak)
        order = np.lexsort((pu, pv, -ncc[pv, pu]))       # strongest first, ties by position
        starts = [np.array([pu[j] + u0 + R, pv[j] + v0 + R], float) for j in order]
        starts += [q + (u0, v0) for q in _circles(c, r)]  # then circles whose rim shows (half a ball hidden)
        for q in starts:
            if found and np.min(np.linalg.norm(np.asarray(found) - q, axis=1)) < 1.6 * r:
                continue
            cen = fit_partial_ball(d, q, template, amplitude, sigma, min_visible=0.6)
            if cen is None or (found and np.min(np.linalg.norm(np.asarray(found) - cen, axis=1)) < 1.6 * r):
                continue
            if _on_a_bar(c, ~mask_in_crop(mask, x0 - u0, y0 - v0, c.shape), cen - (u0, v0), r, amplitude):
                continue
            found.append(np.asarray(cen, float))
    new = found[len(known):]
    return np.array(new).reshape(-1, 2)


def refine_centre(d: np.ndarray, uv0, radius_px: float, iterations: int = 4, others=None):
    """One ball's ``refine_centres``: ((u, v), peak), or (None, 0.0) where it fails.
    ``others`` (K, 2): the centres of its neighbours (or None)."""
    nb = None if others is None else [np.asarray(others, float).reshape(-1, 2)]
    c, p, ok = refine_centres(d, np.asarray(uv0, float).reshape(1, 2), float(radius_px), iterations, nb)
    return (c[0], float(p[0])) if ok[0] else (None, 0.0)


def refine_centres(d: np.ndarray, uv0, radius_px, iterations: int = 4, others=None):
    """Background-corrected intensity-weighted centres of N balls near ``uv0`` (N, 2).

    Per ball: the window disc has radius ``1.25 r + 2`` px, the background annulus the
    next 3 px; a plane fitted to the annulus (one robust re-fit) is subtracted and the
    positive remainder inside the disc weights the centroid, iterated on the re-centred
    disc until it moves < 1e-3 px (``iterations`` at most). Pixels off the exposed field
    (NaN in ``d``) are left out of the annulus; a ball whose disc (r + 1 px) reaches them,
    whose window leaves the image, or whose annulus is under 40 % finite fails.
    ``radius_px`` a number or (N,); ``others``: None or a list of N arrays (K_i, 2) of
    neighbouring centres (empty: none), whose discs (r + 1.5 px) are left out of the
    annulus, and whose side of the bisector is left out of the weights.
    Returns (centres (N, 2), peaks (N,), ok (N,)); where ``ok`` is False the centre is
    NaN and the peak 0."""
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


