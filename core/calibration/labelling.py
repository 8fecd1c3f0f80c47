"""Which detected blob is which ball: per-plane labelling by local affine hashing, then the
layout's near-symmetries.

The balls of one cage plane are coplanar, so plane -> (distortion-corrected)
image is a homography, and locally an affine map. Every ordered basis
(a, b, c) of neighbouring balls gives affine coordinates of the nearby balls
that no affine map changes (geometric hashing). Image bases vote for model
bases whose coordinates they reproduce; the hypotheses are ranked by how
tightly their local affine map predicts the detections around the basis (votes
alone do not separate interleaved layers), the best are grown (homography
refitted on widening neighbourhoods) into seeds. Each seed's homography carries
the detections into the plane's frame, where ``register_layout`` lists every
labelling that a near-symmetry of the layout allows (a coded grid shifted by a
pitch, turned, mirrored: occupancy cross-correlation). Each labelling scores its
matches minus the balls it predicts inside the field where nothing was detected
(the code and the edges in view are the evidence); the winner must beat every
different labelling by ``MIN_MARGIN`` whole balls (integers: the same decision
on every CPU) and pass a residual gate. The planes of a view are labelled the
largest first, each next among the detections the others left free, with the
handedness of parallel layers kept. A blob that fits no plane stays unmatched:
the labelling never forces a match. Works for any cage whose per-plane layouts
have no exact symmetry.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from core.calibration.models import ModelError, apply_h, fit_dlt, fit_homography, project_p
from core.geometry.pixels import in_image

__all__ = ["LabellingError", "AmbiguousLayout", "ViewNotRecognised", "plane_is_symmetric", "PlaneMatch", "label_plane", "label_view"]

K_MODEL, N_MODEL_COORDS = 6, 10
K_IMAGE, N_IMAGE_COORDS = 6, 12
HASH_TOL = 0.06
MIN_SIN = 0.35
N_GROW = 10
SOFT_TOL_PX = 3.0
N_POOL, N_LOCAL, LOCAL_TOL_PX = 1500, 13, 1.5
PEAKS_PER_MAP = 8
LOOSE_RMS_PX = 1.0
MIN_MARGIN = 2         # a winner beats every different labelling by two balls of evidence
N_SEEDS = 3


class LabellingError(ValueError):
    """The balls of a plane could not be identified."""


@dataclass(frozen=True)
class PlaneMatch:
    """``ball_idx`` (K,) balls of the plane matched to ``point_idx`` (K,) detections;
    ``H_img_plane`` maps in-plane mm to ideal pixels; ``residual_px`` (K,);
    ``expected`` the number of the plane's balls predicted inside the image;
    ``score_margin`` the winner's inliers minus the runner-up's."""
    ball_idx: np.ndarray
    point_idx: np.ndarray
    H_img_plane: np.ndarray
    residual_px: np.ndarray
    expected: int
    score_margin: int

    @property
    def n_matched(self) -> int:
        return len(self.ball_idx)

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(self.residual_px ** 2))) if len(self.residual_px) else float("nan")


def _bases(pts, k, n_coords):
    """Ordered local bases and the affine coordinates of their neighbours (vectorised).

    Returns (basis (B, 3) point indices, coords (E, 2), owner (E,) basis index,
    member (E,) point index)."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    n = len(pts)
    kk, nc = min(k + 1, n), min(n_coords + 1, n)
    _, nn = cKDTree(pts).query(pts, max(kk, nc))
    pi, pj = np.nonzero(~np.eye(kk - 1, dtype=bool))
    A = np.repeat(np.arange(n), len(pi))
    B, C = nn[:, 1 + pi].ravel(), nn[:, 1 + pj].ravel()
    e1, e2 = pts[B] - pts[A], pts[C] - pts[A]
    cr = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(cr) >= MIN_SIN * np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
    A, B, C, e1, e2, cr = A[ok], B[ok], C[ok], e1[ok], e2[ok], cr[ok]
    ring = nn[A, 1:nc]                                    # (nb, R)
    w = pts[ring] - pts[A][:, None]                       # (nb, R, 2)
    # inverse of [e1 e2] applied to w (closed-form 2x2)
    q1 = (e2[:, None, 1] * w[..., 0] - e2[:, None, 0] * w[..., 1]) / cr[:, None]
    q2 = (-e1[:, None, 1] * w[..., 0] + e1[:, None, 0] * w[..., 1]) / cr[:, None]
    keep = (ring != B[:, None]) & (ring != C[:, None]) & (np.abs(q1) < 4) & (np.abs(q2) < 4)
    owner, col = np.nonzero(keep)
    coords = np.stack([q1[keep], q2[keep]], -1)
    return np.stack([A, B, C], 1), coords, owner, ring[owner, col]


_MODEL_BASES: dict = {}


def _model_bases(model, k, n_coords):
    """``_bases`` of a layout, one per distinct neighbourhood: bases whose neighbours have the same
    affine coordinates (the interior of a grid, repeated by its shifts) vote alike, and the
    registration over the layout's near-symmetries recovers the others; cached per layout."""
    key = (model.tobytes(), model.shape, k, n_coords)
    if key not in _MODEL_BASES:
        mb, mq, mo, mm = _bases(model, k, n_coords)
        q = np.rint(mq / 0.05).astype(np.int64)
        order = np.lexsort((q[:, 1], q[:, 0], mo))
        sig = {}
        for b in range(len(mb)):
            sig.setdefault(b, [])
        for e in order:
            sig[int(mo[e])].append((int(q[e, 0]), int(q[e, 1])))
        first, keep = {}, np.zeros(len(mb), bool)
        for b in range(len(mb)):
            s = tuple(sig[b])
            if s not in first:
                first[s] = b
                keep[b] = True
        new = np.cumsum(keep) - 1
        e = keep[mo]
        if len(_MODEL_BASES) > 32:
            _MODEL_BASES.clear()
        _MODEL_BASES[key] = (mb[keep], mq[e], new[mo[e]], mm[e])
    return _MODEL_BASES[key]


def _hypotheses(model, pts, n_best, wide=False):
    """Top (model basis, image basis) pairs by votes, with their correspondences.

    ``wide``: larger neighbourhoods and two votes suffice, for when few balls are in
    view (part of the cage off the field): fewer neighbours are shared there."""
    km, cm_, ki, ci_, min_votes = ((K_MODEL + 2, N_MODEL_COORDS + 4, K_IMAGE + 3, N_IMAGE_COORDS + 6, 2) if wide
                                   else (K_MODEL, N_MODEL_COORDS, K_IMAGE, N_IMAGE_COORDS, 3))
    mb, mq, mo, mm = _model_bases(model, km, cm_)
    ib, iq, io, im = _bases(pts, ki, ci_)
    if len(mb) == 0 or len(ib) == 0:
        return []
    keys, votes = _votes(mq, mo, len(mb), iq, io, len(ib), min_votes)
    if len(keys) == 0:
        return []
    # the pool: most votes first, ties by key (a full key: the same pool on every CPU)
    top = np.lexsort((keys, -votes))[:N_POOL]
    pool, pool_votes = keys[top], votes[top]
    ibi, mbi = np.divmod(pool, len(mb))
    h, ie, me = _voters(iq, io, len(ib), ibi, mq, mo, len(mb), mbi)
    starts = np.concatenate([[0], np.cumsum(np.bincount(h, minlength=len(pool)))])
    # each hypothesis's correspondences: its basis (3 pairs), then its voters
    hyp = np.concatenate([np.repeat(np.arange(len(pool)), 3), h])
    cm_all = np.concatenate([mb[mbi].ravel(), mm[me]])
    ci_all = np.concatenate([ib[ibi].ravel(), im[ie]])
    local = _local_scores(model, pts, hyp, cm_all, ci_all, mb[mbi, 0], len(pool))
    order = np.lexsort((pool, -pool_votes, -local))
    # the best hypothesis per detection at the basis origin first, then the rest: seeds spread
    # over the image (both layers) rather than many relabellings of one patch
    seen, first, rest = set(), [], []
    for o in order.tolist():
        a = int(ib[ibi[o], 0])
        (rest if a in seen else first).append(o)
        seen.add(a)
    out = []
    for o in (first + rest)[:n_best]:
        sel = slice(starts[o], starts[o + 1])
        out.append((int(pool_votes[o]), np.concatenate([mb[mbi[o]], mm[me[sel]]]),
                    np.concatenate([ib[ibi[o]], im[ie[sel]]])))
    return out


def _votes(mq, mo, n_mb, iq, io, n_ib, min_votes):
    """The (image basis, model basis) pairs with at least ``min_votes`` votes: how many of the
    image basis's affine coordinates ``iq`` lie within ``HASH_TOL`` of one of the model basis's
    ``mq`` (each such coordinate pair one vote). A layout's coordinates repeat (a grid's
    neighbours sit at the same affine positions around most bases: a coded grid's thousands of
    coordinates take about a hundred values), so the image coordinates are paired with the
    distinct model values only and the votes are the sparse product
    (image basis x value) (value x model basis): exact integer counts, without listing the
    millions of coordinate pairs. Returns (key = image basis * n_mb + model basis, votes)."""
    from scipy import sparse
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    # equal up to rounding (1e-9 of a basis vector; the same lattice point reached through
    # different bases): one value, the first of them
    _, first, uinv = np.unique(np.rint(mq / 1e-9).astype(np.int64), axis=0, return_index=True,
                               return_inverse=True)
    uq = mq[first]
    pu = cKDTree(iq).sparse_distance_matrix(cKDTree(uq), HASH_TOL, output_type="ndarray")
    if len(pu) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    A = sparse.csr_matrix((np.ones(len(pu), np.int32), (io[pu["i"]], pu["j"])), shape=(n_ib, len(uq)))
    B = sparse.csr_matrix((np.ones(len(mq), np.int32), (uinv.ravel(), mo)), shape=(len(uq), n_mb))
    V = A @ B
    sel = np.flatnonzero(V.data >= min_votes)
    rows = np.searchsorted(V.indptr, sel, side="right") - 1
    return rows.astype(np.int64) * n_mb + V.indices[sel], V.data[sel].astype(np.int64)


def _voters(iq, io, n_ib, ibi, mq, mo, n_mb, mbi):
    """The voting coordinate pairs of the hypotheses (image basis ``ibi``, model basis ``mbi``):
    (hypothesis, image coordinate, model coordinate), by hypothesis, then image, then model
    coordinate. The coordinates of one basis are contiguous (``io``, ``mo`` ascending)."""
    i0 = np.searchsorted(io, np.arange(n_ib + 1))
    m0 = np.searchsorted(mo, np.arange(n_mb + 1))
    ni, nm = (i0[ibi + 1] - i0[ibi]), (m0[mbi + 1] - m0[mbi])
    ri, rm = max(int(ni.max()), 1), max(int(nm.max()), 1)
    a = np.arange(ri)[None, :, None]
    b = np.arange(rm)[None, None, :]
    valid = (a < ni[:, None, None]) & (b < nm[:, None, None])
    ie = np.minimum(i0[ibi][:, None, None] + a, len(iq) - 1)
    me = np.minimum(m0[mbi][:, None, None] + b, len(mq) - 1)
    d = iq[ie] - mq[me]
    close = valid & (np.hypot(d[..., 0], d[..., 1]) <= HASH_TOL)
    h, x, y = np.nonzero(close)
    return h, ie[h, x, 0], me[h, 0, y]


def _local_scores(model, pts, hyp, cm, ci, m0, n_hyp):
    """How tightly each hypothesis's affine map (least squares over its correspondences
    ``cm`` -> ``ci``, rows of hypothesis ``hyp``) predicts the detections at the model balls
    around its basis origin ``m0`` (soft count, 1.5 px scale).

    Votes alone do not separate the planes where two layers interleave into one lattice (the
    union of two square grids offset by half a pitch is a square grid again): such mixed
    hypotheses fit near the principal point only, the plane's own ones everywhere. The fits
    are solved together from their normal equations, summed per hypothesis (``bincount``,
    sequential: the same sums on every CPU), about the basis origin for conditioning."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    k = min(N_LOCAL, len(model))
    nb = cKDTree(model).query(model, k)[1]
    x = model[cm] - model[m0][hyp]                                   # (E, 2) about the origin
    X = np.column_stack([x, np.ones(len(x))])                        # (E, 3)
    Y = pts[ci]                                                      # (E, 2)
    XtX = np.stack([np.bincount(hyp, X[:, a] * X[:, b], n_hyp) for a in range(3) for b in range(3)], 1)
    XtY = np.stack([np.bincount(hyp, X[:, a] * Y[:, b], n_hyp) for a in range(3) for b in range(2)], 1)
    A = np.linalg.solve(XtX.reshape(-1, 3, 3) + 1e-9 * np.eye(3), XtY.reshape(-1, 3, 2))   # (H, 3, 2)
    xn = model[nb[m0]] - model[m0][:, None, :]                          # (H, k, 2)
    Xn = np.concatenate([xn, np.ones((n_hyp, k, 1))], axis=2)
    pred = np.einsum("hkc,hcd->hkd", Xn, A)
    d = cKDTree(pts).query(pred.reshape(-1, 2), distance_upper_bound=2 * LOCAL_TOL_PX)[0].reshape(n_hyp, k)
    return np.round(np.sum(np.maximum(0.0, 1.0 - (np.minimum(d, 1e9) / LOCAL_TOL_PX) ** 2), axis=1), 6)


def _match(pred, tree, tol):
    """Mutual-nearest matches of predicted points to detections within ``tol`` px."""
    d, idx = tree.query(pred, distance_upper_bound=tol)
    ok = np.isfinite(d)
    m_idx, p_idx = np.nonzero(ok)[0], idx[ok]
    # keep the closest prediction per detection (ties: the lower ball index)
    order = np.lexsort((m_idx, d[ok]))
    _, first = np.unique(p_idx[order], return_index=True)
    keep = order[first]
    return m_idx[keep], p_idx[keep], d[ok][keep]


def _grow(model, pts, tree, corr_m, corr_i, tol, seed):
    """Refit the homography on widening rings around ``seed``; final inlier set."""
    try:
        H = fit_homography(model[corr_m], pts[corr_i])
    except (LabellingError, ModelError):
        return None
    dist = np.linalg.norm(model - model[seed], axis=1)
    r = np.partition(dist, min(8, len(dist) - 1))[min(8, len(dist) - 1)]
    for _ in range(8):
        near = np.nonzero(dist <= r)[0]
        mi, pi, _ = _match(apply_h(H, model[near]), tree, tol)
        if len(mi) >= 4:
            try:
                H = fit_homography(model[near[mi]], pts[pi])
            except (LabellingError, ModelError):
                return None
        if r >= dist.max():
            break
        r *= 1.7
    mi, pi, d = _match(apply_h(H, model), tree, tol)
    if len(mi) < 4:
        return None
    H = fit_homography(model[mi], pts[pi])
    res = np.linalg.norm(apply_h(H, model[mi]) - pts[pi], axis=1)
    return H, mi, pi, res


class AmbiguousLayout(LabellingError):
    """Two genuinely different labellings of a plane fit equally well."""


class ViewNotRecognised(LabellingError):
    """No plane of a view could be identified (no cage, wrong cage file, swapped views...)."""


def plane_is_symmetric(model_xy, min_balls: int = 6) -> bool:
    """True when a rotation or reflection other than the identity carries the whole layout onto
    itself (every ball onto a ball, within a tenth of the pitch): its balls can be labelled two
    ways in any image. A grid coded by missing balls is not symmetric, however nearly a shift
    maps it onto itself: the code or the boundary tells the shifts apart where they are in view."""
    model = np.asarray(model_xy, float)
    if len(model) < min_balls:
        return False
    _, pitch = _self_maps(model)
    for score, bi, pi, R, t in register_layout(model, model, lambda q: np.ones(len(q), bool), 0.3 * pitch):
        if len(bi) == len(model) and np.any(bi != pi):
            if np.max(np.linalg.norm(model[pi] @ R.T + t - model[bi], axis=1)) < 0.1 * pitch:
                return True
    return False


_SELF_MAPS: dict = {}


def _self_maps(model):
    """Candidate near-symmetries of a layout and its pitch (median nearest-neighbour distance):
    the rotations that carry one dominant neighbour direction onto another, each also after a
    reflection, identity first. A layout without dominant directions gets the identity and the
    reflection. Remembered per layout (every seed of every plane asks again)."""
    model = np.asarray(model, float)
    key = (model.tobytes(), model.shape)
    if key not in _SELF_MAPS:
        if len(_SELF_MAPS) > 32:
            _SELF_MAPS.clear()
        maps, pitch = _compute_self_maps(model)
        for R in maps:
            R.setflags(write=False)
        _SELF_MAPS[key] = (tuple(maps), pitch)
    maps, pitch = _SELF_MAPS[key]
    return list(maps), pitch


def _compute_self_maps(model):
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    k = min(5, len(model))
    d, nn = cKDTree(model).query(model, k)
    pitch = float(np.median(d[:, 1]))
    near = (d[:, 1:] < 1.3 * pitch).ravel()
    v = (model[nn[:, 1:]] - model[:, None]).reshape(-1, 2)[near]
    hist = np.bincount(np.rint(np.degrees(np.arctan2(v[:, 1], v[:, 0]))).astype(int) % 360, minlength=360)
    h = hist + np.roll(hist, 1) + np.roll(hist, -1)
    peaks = [a for a in range(360) if h[a] >= max(3, 0.25 * h.max()) and h[a] >= h[a - 1] and h[a] > h[(a + 1) % 360]]
    # each peak's direction to a fraction of a degree: the mean of the vectors within 3 deg of it
    ang = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    fine = []
    for a in peaks:
        dev = (ang - a + 180.0) % 360.0 - 180.0
        fine.append(a + float(np.mean(dev[np.abs(dev) <= 3.0])))
    rots = sorted({round((a - fine[0]) % 360.0, 6) for a in fine} | {0.0})
    phi = 2 * np.radians(fine[0] if fine else 0.0)          # the mirror line along a dominant direction
    mirror = np.array([[np.cos(phi), np.sin(phi)], [np.sin(phi), -np.cos(phi)]])
    maps = []
    for F in (np.eye(2), mirror):
        for a in rots:
            c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
            maps.append(np.array([[c, -s], [s, c]]) @ F)
    return maps, pitch


def _raster(points, origin, cell, shape, dilate):
    """Occupancy image (rows, cols) of points, one cell per ``cell`` mm; dilated by one cell."""
    img = np.zeros(shape, np.float32)
    ij = np.floor((points - origin) / cell).astype(int)
    ok = np.all((ij >= 0) & (ij < np.array(shape)[::-1]), axis=1)
    img[ij[ok, 1], ij[ok, 0]] = 1.0
    return cv2.dilate(img, np.ones((3, 3), np.uint8)) if dilate else img


def register_layout(model_xy, q_xy, covered, tol, n_keep: int = 32):
    """Labellings of the points ``q_xy`` (detections carried into the layout's own frame by one
    labelling) under the layout's near-symmetries: for each rotation/reflection of
    ``_self_maps``, the translations that put most points on balls (occupancy cross-correlation
    over every offset at once, ``cv2.matchTemplate``), each then scored exactly: balls with a
    point within ``tol`` (mm), minus balls that were in view (``covered``: points of the
    ``q_xy`` frame -> bool) with nothing detected there. Returns tuples
    (score, ball_idx, point_idx, R, t), ``model[ball_idx] ~ q[point_idx] @ R.T + t``, best
    first by a full key (score, then the labels)."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    model, q = np.asarray(model_xy, float), np.asarray(q_xy, float)
    maps, pitch = _self_maps(model)
    mtree = cKDTree(model)
    cell = 0.5 * tol
    lo, hi = model.min(0), model.max(0)
    span = hi - lo + pitch
    idx = np.nonzero(np.all((q > lo - span) & (q < hi + span), axis=1))[0]
    if len(idx) < 4:
        return []
    q = q[idx]
    peaks = []
    for k, R in enumerate(maps):
        qr = q @ R.T
        qlo = qr.min(0)
        tsize = np.floor((qr.max(0) - qlo) / cell).astype(int) + 1
        ilo = lo - (tsize + 1) * cell
        isize = np.floor((hi + (tsize + 1) * cell - ilo) / cell).astype(int) + 1
        T = _raster(qr, qlo, cell, tuple(tsize[::-1]), False)
        M = _raster(model, ilo, cell, tuple(isize[::-1]), True)
        C = np.rint(cv2.matchTemplate(M, T, cv2.TM_CCORR)).astype(np.float32)   # exact small integers
        top = C == cv2.dilate(C, np.ones((3, 3), np.uint8))
        ys, xs = np.nonzero(top & (C >= 4))
        cs = C[ys, xs].astype(np.int64)
        mine = []
        for e in np.lexsort((xs, ys, -cs)).tolist():      # most overlap first, ties by position
            m = (-int(cs[e]), k, int(ys[e]), int(xs[e]))
            if all(abs(m[2] - o[2]) > 3 or abs(m[3] - o[3]) > 3 for o in mine):     # one per plateau
                mine.append(m)
                if len(mine) == PEAKS_PER_MAP:
                    break
        peaks += [m + (ilo - qlo,) for m in mine]       # every turn/mirror keeps its best offsets
    if not peaks:
        return []
    peaks.sort(key=lambda p: p[:4])
    floor = 0.5 * -peaks[0][0]
    out, seen = [], set()
    for negc, k, y, x, off in peaks:
        if -negc < floor or len(out) >= n_keep:
            break
        R = maps[k]
        qr = q @ R.T
        t = off + np.array([x, y]) * cell
        for it in range(3):         # the translation, then the turn, from the points that landed on balls
            d, j = mtree.query(qr + t, distance_upper_bound=1.5 * tol)
            ok = np.isfinite(d)
            if ok.sum() < 4:
                break
            if it == 0:
                t = t + np.median(model[j[ok]] - (qr[ok] + t), axis=0)
                continue
            R = _procrustes(q[ok], model[j[ok]], np.linalg.det(R))       # Kabsch, same handedness
            qr = q @ R.T
            t = np.mean(model[j[ok]] - qr[ok], axis=0)
        key = (k, int(np.rint(t[0] / (0.5 * pitch))), int(np.rint(t[1] / (0.5 * pitch))))
        if key in seen:
            continue
        seen.add(key)
        bi, pi, _ = _match(model, cKDTree(qr + t), tol)
        if len(bi) < 4:
            continue
        miss = np.setdiff1d(np.arange(len(model)), bi)
        n_miss = int(np.count_nonzero(covered((model[miss] - t) @ R))) if len(miss) else 0
        o = np.argsort(bi, kind="stable")
        out.append((float(len(bi) - n_miss), bi[o], idx[pi[o]], R, t))
    out.sort(key=lambda r: (-r[0], tuple(r[1].tolist()), tuple(r[2].tolist())))
    return out


def _procrustes(a, b, det_sign):
    """The orthogonal 2x2 R with det(R) = sign(det_sign) minimising |a R^T + t - b| (Kabsch)."""
    U, _, Vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    D = np.diag([1.0, np.sign(det_sign) * np.sign(np.linalg.det(U @ Vt))])
    return (U @ D @ Vt).T


def _tighten(model, pts, H, mi, pi):
    """Robust residual gate on a labelling, then the refit homography and residuals."""
    res = np.linalg.norm(apply_h(H, model[mi]) - pts[pi], axis=1)
    s = max(0.3, 1.4826 * float(np.median(res)))
    ok = res < max(1.0, 4 * s)
    if ok.sum() >= 4 and not ok.all():
        mi, pi = mi[ok], pi[ok]
        H = fit_homography(model[mi], pts[pi])
        res = np.linalg.norm(apply_h(H, model[mi]) - pts[pi], axis=1)
    return H, mi, pi, res


def _evaluate(model, pts, tree, H, tol, in_field):
    """A labelling from its homography: matches, tightened; balls in the field with no detection.
    Returns (score, n, rms, H, ball_idx, point_idx, residual_px, n_missing) or None.
    The score is a soft inlier count (MSAC: a tight fit beats a loose one with more matches)
    minus the balls predicted inside the field where nothing was detected (evidence against)."""
    mi, pi, _ = _match(apply_h(H, model), tree, tol)
    if len(mi) < 4:
        return None
    try:
        H = fit_homography(model[mi], pts[pi])
        mi, pi, _ = _match(apply_h(H, model), tree, tol)
        if len(mi) < 4:
            return None
        H = fit_homography(model[mi], pts[pi])
        H, mi, pi, res = _tighten(model, pts, H, mi, pi)
    except (LabellingError, ModelError):
        return None
    o = np.argsort(mi, kind="stable")
    mi, pi, res = mi[o], pi[o], res[o]
    pred = apply_h(H, model)
    free = np.ones(len(model), bool)
    free[mi] = False
    # a ball hidden under another detection (the other layer's shadow) is not evidence against
    d_any = tree.query(pred[free], distance_upper_bound=tol)[0] if free.any() else np.zeros(0)
    n_missing = int(np.count_nonzero(in_field(pred[free]) & ~np.isfinite(d_any)))
    soft = float(np.sum(np.maximum(0.0, 1.0 - (res / SOFT_TOL_PX) ** 2)))
    return (soft - n_missing, len(mi), float(np.sqrt(np.mean(res ** 2))), H, mi, pi, res, n_missing)


def _candidates(model, pts, max_rms_px, min_balls, in_field=None, image_shape=None, margin_px=4.0):
    """Distinct labellings of one plane, best first (full key: score, matches, labels): tuples
    (score, n, rms, H, ball_idx, point_idx, residual_px, n_missing).

    Seeds come from local affine hashing grown by homography; each seed's homography carries
    every detection into the plane's frame, where ``register_layout`` lists the labellings of
    the layout's near-symmetries (shifts of a coded grid, rotations); all are scored alike."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    if in_field is None:
        shape = image_shape if image_shape is not None else tuple(np.ceil(pts.max(0)[::-1] + 1).astype(int))
        in_field = lambda uv: in_image(uv, shape, margin_px + 0.5)   # noqa: E731
    tree = cKDTree(pts)
    nn = tree.query(pts, 2)[0][:, 1]
    tol = 0.3 * float(np.median(nn))
    seeds = []
    hyps = _hypotheses(model, pts, 8 * N_GROW)
    if len(hyps) < N_GROW:      # few balls in view: look wider
        hyps = hyps + _hypotheses(model, pts, 8 * N_GROW, wide=True)
    for votes, cm, ci in hyps:
        g = _grow(model, pts, tree, cm, ci, tol, cm[0])
        if g is None:
            continue
        try:
            H, mi, pi, res = _tighten(model, pts, *g[:3])
        except (LabellingError, ModelError):
            continue
        rms = float(np.sqrt(np.mean(res ** 2)))
        if len(mi) >= min_balls and rms <= max_rms_px:
            soft = float(np.sum(np.maximum(0.0, 1.0 - (res / SOFT_TOL_PX) ** 2)))
            seeds.append((round(soft, 6), len(seeds), H, mi, pi))
            if len(seeds) >= N_GROW and len(mi) >= 0.8 * len(model):
                break
    seeds.sort(key=lambda s: (-s[0], s[1]))
    distinct = []
    for s in seeds:     # one seed per set of detections (the registration covers its relabellings)
        if len(distinct) < N_SEEDS and not any(len(np.intersect1d(s[4], d[4])) > 0.5 * min(len(s[4]), len(d[4]))
                                               for d in distinct):
            distinct.append(s)
    seeds = [(s[0], s[2]) for s in distinct]
    _, pitch = _self_maps(model)
    results = []
    for _, H in seeds:
        try:
            Hinv = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            continue
        q = apply_h(Hinv, pts)
        q = np.where(np.isfinite(q), q, 1e9)
        for _, bi, _, R, t in register_layout(model, q, lambda x: in_field(apply_h(H, x)), 0.3 * pitch):
            # the labelling g o L as a homography: model -> q frame -> image
            A = np.eye(3)
            A[:2, :2], A[:2, 2] = R.T, -R.T @ t
            r = _evaluate(model, pts, tree, H @ A, tol, in_field)
            if r is not None and r[1] >= min_balls and r[2] <= max_rms_px:
                results.append(r)
    # integer evidence first (matched - missing: exact, the same on every CPU), then fit tightness
    results.sort(key=lambda r: (-(r[1] - r[7]), -round(r[0], 6), tuple(r[4].tolist()), tuple(r[5].tolist())))
    distinct = []
    for r in results:
        if not any(_same(r[4:6], d[4:6]) for d in distinct):
            distinct.append(r)
    return distinct


def _decide(model, cands, image_shape, margin_px, max_rms_px, min_balls) -> PlaneMatch:
    """The winner of ``_candidates``, or a typed refusal (too few, residual, ambiguous): the
    winner must beat every genuinely different labelling by ``MIN_MARGIN`` balls of evidence."""
    if not cands:
        raise LabellingError("the cage's balls were not recognised: check the cage file matches the cage "
                             "and that enough of its balls are in the beam")
    score, n, rms, H, mi, pi, res, n_missing = cands[0]
    evidence = n - n_missing                                  # integers: no decision on a last digit
    runner = cands[1][1] - cands[1][7] if len(cands) > 1 else 0
    expected = n + n_missing
    if n < min_balls:
        raise LabellingError(f"only {n} balls of a plane identified (need {min_balls}): "
                             "reposition the cage so more of its balls are in the beam")
    if rms > max_rms_px:
        raise LabellingError(f"plane fit residual {rms:.2f} px exceeds {max_rms_px} px: "
                             "check the distortion plate and the cage file")
    if n_missing > 0.5 * n:
        # most balls it predicts in the field are not there: a chance fit of another layout, or a warp
        if rms > LOOSE_RMS_PX:
            raise LabellingError(f"plane fit residual {rms:.2f} px is too high to identify the balls: "
                                 "check the distortion plate and the cage file")
        raise LabellingError("the cage's balls were not recognised: check the cage file matches the cage "
                             "and that enough of its balls are in the beam")
    if evidence - runner < MIN_MARGIN:
        if rms > 1.0:   # loose fits all round: the image is warped, not the layout symmetric
            raise LabellingError(f"plane fit residual {rms:.2f} px is too high to identify the balls: "
                                 "check the distortion plate and the cage file")
        raise AmbiguousLayout("ambiguous ball layout: two labellings fit equally well (the balls in view "
                              "repeat under a shift or turn, and the plane's code and edges are out of view)")
    return PlaneMatch(mi, pi, H, res, expected, int(evidence - runner))


def _fit_failures_as_labelling_errors(f):
    """A homography or DLT that cannot be fitted inside a labelling is a labelling failure:
    callers catch ``LabellingError`` alone, with the fit's own message."""
    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ModelError as e:
            raise LabellingError(str(e)) from None
    return wrapped


@_fit_failures_as_labelling_errors
def label_plane(model_xy, points_px, image_shape, margin_px: float = 4.0,
                max_rms_px: float = 1.5, min_balls: int = 6, in_field=None) -> PlaneMatch:
    """Identify one plane's balls among the detected centres (ideal pixels).

    ``model_xy`` (M, 2) in-plane mm; ``points_px`` (N, 2); ``in_field`` (ideal px (K, 2) ->
    bool (K,)) says where a ball would have been detected (default: inside ``image_shape``
    less ``margin_px``): a labelling that predicts balls there with nothing detected loses
    one point per such ball. Raises ``LabellingError`` when no hypothesis explains at least
    ``min_balls`` balls with RMS <= ``max_rms_px``, or ``AmbiguousLayout`` when two
    different labellings fit equally well (within ``MIN_MARGIN``)."""
    model, pts = _check(model_xy, points_px, min_balls)
    return _decide(model, _candidates(model, pts, max_rms_px, min_balls, in_field, image_shape, margin_px),
                   image_shape, margin_px, max_rms_px, min_balls)


def _check(model_xy, points_px, min_balls):
    model = np.asarray(model_xy, float)
    pts = np.asarray(points_px, float)
    if model.ndim != 2 or model.shape[1] != 2 or len(model) < min_balls:
        raise LabellingError(f"a plane needs at least {min_balls} balls in the cage file")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise LabellingError(f"detections must have shape (N, 2), got {pts.shape}")
    if len(pts) < min_balls:
        raise LabellingError(f"only {len(pts)} balls detected: reposition the cage so its balls are in the beam")
    return model, pts


def _same(a, b):
    """Two (ball_idx, point_idx) labellings sharing most correspondences."""
    sa = set(zip(a[0].tolist(), a[1].tolist()))
    sb = set(zip(b[0].tolist(), b[1].tolist()))
    return len(sa & sb) >= 0.5 * min(len(sa), len(sb))


@_fit_failures_as_labelling_errors
def label_view(planes_xy, points_px, image_shape, planes_mm=None, names=None, **kw) -> list[PlaneMatch]:
    """Label every plane of one view; a detection claimed by two planes goes to the
    plane where it fits better and is dropped from the other (then refitted). A plane
    that loses most of its balls that way (e.g. twin layers with the same layout) is
    labelled again among the detections the other planes left free. With ``planes_mm``
    (each plane's balls in 3-D) a plane whose own layout is ambiguous is resolved by
    the 3D-2D model across the view's planes (the layers are rigidly linked). Raises
    ``ViewNotRecognised`` when no plane is identified, else a message naming the plane
    (``names``) that was not."""
    pts = np.asarray(points_px, float)
    names = list(names) if names is not None else [f"#{k + 1}" for k in range(len(planes_xy))]
    matches = _label_planes(planes_xy, pts, image_shape, planes_mm, names, kw)
    owner = {}
    for k, m in enumerate(matches):
        for p, r in zip(m.point_idx, m.residual_px):
            if p not in owner or r < owner[p][1]:
                owner[p] = (k, r)
    out = []
    for k, (m, model) in enumerate(zip(matches, planes_xy)):
        keep = np.array([owner[p][0] == k for p in m.point_idx], bool)
        if keep.all():
            out.append(m)
        elif keep.sum() >= max(6, 0.5 * len(keep)):
            out.append(_refit(m, np.asarray(model, float), pts, keep))
        else:
            out.append(_label_among_free(model, pts, image_shape, owner, k, kw))
    return out


N_JOINT = 6


def _label_planes(planes_xy, pts, image_shape, planes_mm, names, kw):
    """Each plane on its own; ambiguous planes jointly by 3D-2D consistency."""
    kw = {"margin_px": 4.0, "max_rms_px": 1.5, "min_balls": 6, **kw}
    in_field = kw.pop("in_field", None)
    cands, matches, errors = [None] * len(planes_xy), [None] * len(planes_xy), [None] * len(planes_xy)
    claimed = np.zeros(len(pts), bool)
    hand = _plane_orientations(planes_xy, planes_mm)
    # the plane with most balls first; each next one among the detections the decided planes left
    # free (interleaved layers: a plane's layout also fits the other layer's balls), else among all
    order = sorted(range(len(planes_xy)), key=lambda k: (-len(planes_xy[k]), k))
    # a plane refused while nothing was claimed gets a second try once the others are decided
    for k in order + order:
        if matches[k] is not None or (errors[k] is not None and not claimed.any()):
            continue
        model, _ = _check(planes_xy[k], pts, kw["min_balls"])
        retry = errors[k] is not None           # all detections were tried already
        for free in ([np.nonzero(~claimed)[0]] if claimed.any() else []) + ([] if retry else [np.arange(len(pts))]):
            if len(free) < kw["min_balls"]:
                continue
            c = _candidates(model, pts[free], kw["max_rms_px"], kw["min_balls"], in_field, image_shape,
                            kw["margin_px"])
            c = [r[:5] + (free[r[5]],) + r[6:] for r in c]
            if hand is not None and any(hand[j] * _handedness(m.H_img_plane, planes_xy[j]) != 0
                                        for j, m in enumerate(matches) if m is not None):
                # parallel layers are seen from the same side: the mirror labellings are impossible
                want = next(hand[j] * _handedness(m.H_img_plane, planes_xy[j])
                            for j, m in enumerate(matches) if m is not None)
                c = [r for r in c if hand[k] * _handedness(r[3], planes_xy[k]) == want]
            cands[k] = c
            try:
                matches[k], errors[k] = _decide(model, c, image_shape, **kw), None
                break
            except LabellingError as e:
                matches[k], errors[k] = None, e
        if matches[k] is not None:
            claimed[matches[k].point_idx] = True
    if all(e is None for e in errors):
        return matches
    amb = [e for e in errors if isinstance(e, AmbiguousLayout)]
    if amb and planes_mm is not None and len(amb) == sum(e is not None for e in errors):
        try:
            return _resolve_jointly(planes_xy, planes_mm, pts, image_shape, cands, matches, kw, amb[0])
        except (LabellingError, ModelError):
            pass
    if all(m is None or m.rms_px > LOOSE_RMS_PX for m in matches):
        # nothing identified, or only loose fits beside a failed plane: not this view's cage
        first = next(e for e in errors if e is not None)
        raise ViewNotRecognised(str(first))
    k = next(k for k, m in enumerate(matches) if m is None)
    n = max((r[1] for r in cands[k] if r[2] <= kw["max_rms_px"]), default=0)
    if isinstance(errors[k], AmbiguousLayout) and planes_mm is not None:
        # another layer is identified, yet no labelling of this one fits the 3D-2D model with it
        ok = next(names[j] for j, m in enumerate(matches) if m is not None)
        raise LabellingError(f"fewer than {kw['min_balls']} balls of plane {names[k]} identified in view "
                             f"(none consistent with plane {ok}): reposition the cage so more of its balls "
                             "are in the beam")
    if n >= kw["min_balls"] or "residual" in str(errors[k]):
        raise type(errors[k])(f"plane {names[k]}: {errors[k]}")
    raise LabellingError(f"only {n} balls of plane {names[k]} identified in view (need {kw['min_balls']}): "
                         "reposition the cage so more of its balls are in the beam")


def _plane_orientations(planes_xy, planes_mm):
    """Per plane +1/-1: whether its 2-D frame turns like the first plane's about the first
    plane's normal (so that the image handedness of parallel layers can be compared), or None
    without 3-D positions or when the layers are not parallel."""
    if planes_mm is None:
        return None
    out, ref = [], None
    for xy, X in zip(planes_xy, planes_mm):
        xy, X = np.asarray(xy, float), np.asarray(X, float)
        axes = np.linalg.lstsq(xy - xy.mean(0), X - X.mean(0), rcond=None)[0]      # (2, 3)
        n = np.cross(axes[0], axes[1])
        n /= np.linalg.norm(n)
        if ref is None:
            ref = n
        if abs(n @ ref) < 0.95:
            return None
        out.append(1 if n @ ref > 0 else -1)
    return out


def _handedness(H, model_xy):
    """+1/-1: the sign of the plane -> image Jacobian's determinant at the layout's centre."""
    c = np.asarray(model_xy, float).mean(0)
    p = apply_h(H, np.array([c, c + [1.0, 0.0], c + [0.0, 1.0]]))
    e1, e2 = p[1] - p[0], p[2] - p[0]
    return 1 if e1[0] * e2[1] - e1[1] * e2[0] > 0 else -1


def _resolve_jointly(planes_xy, planes_mm, pts, image_shape, cands, matches, kw, err):
    """Try the combinations of the ambiguous planes' best labellings with the determined
    planes' winners; the 3D-2D fit over all of them (normalised DLT) must single one out."""
    opts = []
    for m, c in zip(matches, cands):
        if m is not None:
            opts.append([(m.ball_idx, m.point_idx, 0)])
        else:
            opts.append([(r[4], r[5], r[7]) for r in c[:N_JOINT]
                         if r[1] >= kw["min_balls"] and r[2] <= kw["max_rms_px"]])
    scored = []
    for n_combo, combo in enumerate(itertools.product(*opts)):
        pi = np.concatenate([c[1] for c in combo])
        if len(np.unique(pi)) < len(pi):
            continue                                  # one detection claimed by two planes
        X = np.concatenate([np.asarray(mm, float)[c[0]] for mm, c in zip(planes_mm, combo)])
        try:
            r = np.linalg.norm(project_p(fit_dlt(X, pts[pi]), X) - pts[pi], axis=1)
        except ModelError:
            continue                                  # coplanar: this combination cannot be scored
        score = float(np.sum(np.maximum(0.0, 1.0 - (r / SOFT_TOL_PX) ** 2))) - sum(c[2] for c in combo)
        scored.append((round(score, 6), float(np.sqrt(np.mean(r ** 2))), n_combo, combo))
    if not scored:
        raise err
    scored.sort(key=lambda t: (-t[0], t[2]))
    best = scored[0]
    amb = [k for k, m in enumerate(matches) if m is None]
    runner = max((t[0] for t in scored[1:]
                  if any(not _same(t[3][k], best[3][k]) for k in amb)), default=0.0)
    if best[1] > kw["max_rms_px"] or best[0] - runner < MIN_MARGIN:
        raise err
    out = list(matches)
    for k in amb:
        model = np.asarray(planes_xy[k], float)
        bi, pi, _ = best[3][k]
        H = fit_homography(model[bi], pts[pi])
        res = np.linalg.norm(apply_h(H, model[bi]) - pts[pi], axis=1)
        expected = int(in_image(apply_h(H, model), image_shape, kw["margin_px"] + 0.5).sum())
        out[k] = PlaneMatch(bi, pi, H, res, expected, int(round(best[0] - runner)))
    return out


def _refit(m, model, pts, keep):
    bi, pi = m.ball_idx[keep], m.point_idx[keep]
    H = fit_homography(model[bi], pts[pi])
    res = np.linalg.norm(apply_h(H, model[bi]) - pts[pi], axis=1)
    return PlaneMatch(bi, pi, H, res, m.expected, m.score_margin)


def _label_among_free(model, pts, image_shape, owner, k, kw):
    free = np.array([p not in owner or owner[p][0] == k for p in range(len(pts))], bool)
    idx = np.nonzero(free)[0]
    m = label_plane(model, pts[idx], image_shape, **kw)
    return PlaneMatch(m.ball_idx, idx[m.point_idx], m.H_img_plane, m.residual_px, m.expected, m.score_margin)
