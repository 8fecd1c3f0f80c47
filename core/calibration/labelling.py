"""Which detected blob is which ball: per-plane labelling by local affine hashing.

The balls of one cage plane are coplanar, so plane -> (distortion-corrected)
image is a homography, and locally an affine map. Every ordered basis
(a, b, c) of neighbouring balls gives affine coordinates of the nearby balls
that no affine map changes (geometric hashing). Image bases vote for model
bases whose coordinates they reproduce; the best-voted hypotheses are grown
(homography refitted on widening neighbourhoods) and scored by inliers; the
winner must beat the runner-up clearly and pass a residual gate. A blob that
fits no plane stays unmatched: the labelling never forces a match.
Works for any cage whose per-plane layouts have no symmetry.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["LabellingError", "AmbiguousLayout", "ViewNotRecognised", "plane_is_symmetric", "PlaneMatch", "label_plane", "label_view", "fit_homography"]

K_MODEL, N_MODEL_COORDS = 6, 10
K_IMAGE, N_IMAGE_COORDS = 6, 12
HASH_TOL = 0.06
MIN_SIN = 0.35
N_GROW = 10
SOFT_TOL_PX = 3.0


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


def fit_homography(src, dst) -> np.ndarray:
    """Least-squares homography ``dst ~ H src`` (normalised DLT, OpenCV), (N >= 4, 2) each."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if len(src) < 4 or src.shape != dst.shape:
        raise LabellingError("a homography needs at least 4 matched balls")
    H, _ = cv2.findHomography(src, dst, 0)
    if H is None or not np.all(np.isfinite(H)):
        raise LabellingError("degenerate ball layout: the matched balls are collinear")
    return H


def _apply_h(H, xy):
    p = np.asarray(xy, float) @ H[:, :2].T + H[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


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


def _hypotheses(model, pts, n_best, wide=False):
    """Top (model basis, image basis) pairs by votes, with their correspondences.

    ``wide``: larger neighbourhoods and two votes suffice, for when few balls are in
    view (part of the cage off the field): fewer neighbours are shared there."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    km, cm_, ki, ci_, min_votes = ((K_MODEL + 2, N_MODEL_COORDS + 4, K_IMAGE + 3, N_IMAGE_COORDS + 6, 2) if wide
                                   else (K_MODEL, N_MODEL_COORDS, K_IMAGE, N_IMAGE_COORDS, 3))
    mb, mq, mo, mm = _bases(model, km, cm_)
    ib, iq, io, im = _bases(pts, ki, ci_)
    if len(mb) == 0 or len(ib) == 0:
        return []
    pairs = cKDTree(iq).sparse_distance_matrix(cKDTree(mq), HASH_TOL, output_type="ndarray")
    if len(pairs) == 0:
        return []
    i, j = pairs["i"], pairs["j"]
    key = io[i].astype(np.int64) * len(mb) + mo[j]
    uk, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    order = np.argsort(-counts)[: n_best]
    out = []
    for o in order:
        if counts[o] < min_votes:
            break
        sel = inv == o
        ibi, mbi = divmod(int(uk[o]), len(mb))
        corr_m = np.concatenate([mb[mbi], mm[j[sel]]])
        corr_i = np.concatenate([ib[ibi], im[i[sel]]])
        out.append((int(counts[o]), corr_m, corr_i))
    return out


def _match(pred, tree, tol):
    """Mutual-nearest matches of predicted points to detections within ``tol`` px."""
    d, idx = tree.query(pred, distance_upper_bound=tol)
    ok = np.isfinite(d)
    m_idx, p_idx = np.nonzero(ok)[0], idx[ok]
    # keep the closest prediction per detection
    order = np.argsort(d[ok])
    _, first = np.unique(p_idx[order], return_index=True)
    keep = order[first]
    return m_idx[keep], p_idx[keep], d[ok][keep]


def _grow(model, pts, tree, corr_m, corr_i, tol, seed):
    """Refit the homography on widening rings around ``seed``; final inlier set."""
    try:
        H = fit_homography(model[corr_m], pts[corr_i])
    except LabellingError:
        return None
    dist = np.linalg.norm(model - model[seed], axis=1)
    r = np.partition(dist, min(8, len(dist) - 1))[min(8, len(dist) - 1)]
    for _ in range(8):
        near = np.nonzero(dist <= r)[0]
        mi, pi, _ = _match(_apply_h(H, model[near]), tree, tol)
        if len(mi) >= 4:
            try:
                H = fit_homography(model[near[mi]], pts[pi])
            except LabellingError:
                return None
        if r >= dist.max():
            break
        r *= 1.7
    mi, pi, d = _match(_apply_h(H, model), tree, tol)
    if len(mi) < 4:
        return None
    H = fit_homography(model[mi], pts[pi])
    res = np.linalg.norm(_apply_h(H, model[mi]) - pts[pi], axis=1)
    return H, mi, pi, res


def _inside(uv, shape, margin):
    rows, cols = shape
    return ((uv[:, 0] > margin) & (uv[:, 0] < cols - 1 - margin)
            & (uv[:, 1] > margin) & (uv[:, 1] < rows - 1 - margin))


class AmbiguousLayout(LabellingError):
    """Two genuinely different labellings of a plane fit equally well."""


class ViewNotRecognised(LabellingError):
    """No plane of a view could be identified (no cage, wrong cage file, swapped views...)."""


def plane_is_symmetric(model_xy, min_balls: int = 6) -> bool:
    """True when a plane's layout maps onto itself by a non-identity projective map
    (its balls can be labelled two ways in any image): the layout itself, as the image."""
    model = np.asarray(model_xy, float)
    if len(model) < min_balls:
        return False
    pts = (model - model.mean(0)) * 3.0 + 256.0
    cands = _candidates(model, pts, 1.5, min_balls)
    return (len(cands) > 1 and cands[1][0] >= 0.8 * cands[0][0]
            and cands[1][1] >= 0.8 * len(model) and cands[1][2] < 0.5)


def _candidates(model, pts, max_rms_px, min_balls):
    """Distinct labellings of one plane, best (soft inlier score) first:
    tuples (score, n, rms, H, ball_idx, point_idx, residual_px)."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    tree = cKDTree(pts)
    nn = tree.query(pts, 2)[0][:, 1]
    tol = 0.3 * float(np.median(nn))
    results = []
    hyps = _hypotheses(model, pts, 4 * N_GROW)
    if len(hyps) < N_GROW:      # few balls in view: look wider
        hyps = hyps + _hypotheses(model, pts, 8 * N_GROW, wide=True)
    for votes, cm, ci in hyps:
        g = _grow(model, pts, tree, cm, ci, tol, cm[0])
        if g is None:
            continue
        H, mi, pi, res = g
        # tighten: robust residual gate, then refit
        s = max(0.3, 1.4826 * float(np.median(res)))
        ok = res < max(1.0, 4 * s)
        if ok.sum() >= 4:
            H = fit_homography(model[mi[ok]], pts[pi[ok]])
            mi, pi = mi[ok], pi[ok]
            res = np.linalg.norm(_apply_h(H, model[mi]) - pts[pi], axis=1)
        # soft inlier count (MSAC): a labelling that fits tightly beats a loose one with more
        # matches (with few balls in view a wrong hypothesis can collect loose ones)
        score = float(np.sum(np.maximum(0.0, 1.0 - (res / SOFT_TOL_PX) ** 2)))
        results.append((score, len(mi), float(np.sqrt(np.mean(res ** 2))), H, mi, pi, res))
        if len(results) >= N_GROW and results[-1][1] >= 0.8 * len(model):
            break
    results.sort(key=lambda r: r[0], reverse=True)
    distinct = []
    for r in results:
        if not any(_same(r[4:6], d[4:6]) for d in distinct):
            distinct.append(r)
    return distinct


def _decide(model, cands, image_shape, margin_px, max_rms_px, min_balls) -> PlaneMatch:
    """The winner of ``_candidates``, or a typed refusal (too few, residual, ambiguous)."""
    if not cands:
        raise LabellingError("the cage's balls were not recognised: check the cage file matches the cage "
                             "and that enough of its balls are in the beam")
    score, n, rms, H, mi, pi, res = cands[0]
    runner = cands[1][0] if len(cands) > 1 else 0.0
    expected = int(_inside(_apply_h(H, model), image_shape, margin_px).sum())
    if n < min_balls:
        raise LabellingError(f"only {n} balls of a plane identified (need {min_balls}): "
                             "reposition the cage so more of its balls are in the beam")
    if rms > max_rms_px:
        raise LabellingError(f"plane fit residual {rms:.2f} px exceeds {max_rms_px} px: "
                             "check the distortion plate and the cage file")
    if runner >= 0.8 * score:
        if rms > 1.0:   # loose fits all round: the image is warped, not the layout symmetric
            raise LabellingError(f"plane fit residual {rms:.2f} px is too high to identify the balls: "
                                 "check the distortion plate and the cage file")
        raise AmbiguousLayout("ambiguous ball layout: two labellings fit equally well; "
                              "the cage file's plane may be symmetric")
    return PlaneMatch(mi, pi, H, res, expected, int(round(score - runner)))


def label_plane(model_xy, points_px, image_shape, margin_px: float = 4.0,
                max_rms_px: float = 1.5, min_balls: int = 6) -> PlaneMatch:
    """Identify one plane's balls among the detected centres (ideal pixels).

    ``model_xy`` (M, 2) in-plane mm; ``points_px`` (N, 2). Raises
    ``LabellingError`` when no hypothesis explains at least ``min_balls`` balls
    with RMS <= ``max_rms_px``, or ``AmbiguousLayout`` when two different
    labellings fit equally well."""
    model, pts = _check(model_xy, points_px, min_balls)
    return _decide(model, _candidates(model, pts, max_rms_px, min_balls), image_shape,
                   margin_px, max_rms_px, min_balls)


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
    cands, matches, errors = [], [], []
    for model_xy in planes_xy:
        model, p = _check(model_xy, pts, kw["min_balls"])
        c = _candidates(model, p, kw["max_rms_px"], kw["min_balls"])
        cands.append(c)
        try:
            matches.append(_decide(model, c, image_shape, **kw))
            errors.append(None)
        except LabellingError as e:
            matches.append(None)
            errors.append(e)
    if all(e is None for e in errors):
        return matches
    amb = [e for e in errors if isinstance(e, AmbiguousLayout)]
    if amb and planes_mm is not None and len(amb) == sum(e is not None for e in errors):
        try:
            return _resolve_jointly(planes_xy, planes_mm, pts, image_shape, cands, matches, kw, amb[0])
        except LabellingError:
            pass
    if all(m is None for m in matches):
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


def _resolve_jointly(planes_xy, planes_mm, pts, image_shape, cands, matches, kw, err):
    """Try the combinations of the ambiguous planes' best labellings with the determined
    planes' winners; the 3D-2D fit over all of them (normalised DLT) must single one out."""
    opts = []
    for m, c in zip(matches, cands):
        if m is not None:
            opts.append([(m.ball_idx, m.point_idx)])
        else:
            opts.append([(r[4], r[5]) for r in c[:N_JOINT]
                         if r[1] >= kw["min_balls"] and r[2] <= kw["max_rms_px"]])
    scored = []
    for combo in itertools.product(*opts):
        pi = np.concatenate([c[1] for c in combo])
        if len(np.unique(pi)) < len(pi):
            continue                                  # one detection claimed by two planes
        X = np.concatenate([np.asarray(mm, float)[c[0]] for mm, c in zip(planes_mm, combo)])
        r = np.linalg.norm(_dlt_project(_dlt(X, pts[pi]), X) - pts[pi], axis=1)
        score = float(np.sum(np.maximum(0.0, 1.0 - (r / SOFT_TOL_PX) ** 2)))
        scored.append((score, float(np.sqrt(np.mean(r ** 2))), combo))
    if not scored:
        raise err
    scored.sort(key=lambda t: t[0], reverse=True)
    best = scored[0]
    amb = [k for k, m in enumerate(matches) if m is None]
    runner = max((t[0] for t in scored[1:]
                  if any(not _same(t[2][k], best[2][k]) for k in amb)), default=0.0)
    if best[1] > kw["max_rms_px"] or runner >= 0.8 * best[0]:
        raise err
    out = list(matches)
    for k in amb:
        model = np.asarray(planes_xy[k], float)
        bi, pi = best[2][k]
        H = fit_homography(model[bi], pts[pi])
        res = np.linalg.norm(_apply_h(H, model[bi]) - pts[pi], axis=1)
        expected = int(_inside(_apply_h(H, model), image_shape, kw["margin_px"]).sum())
        out[k] = PlaneMatch(bi, pi, H, res, expected, int(round(best[0] - runner)))
    return out


def _dlt(X, uv):
    """3x4 projection matrix from >= 6 non-coplanar 3D-2D pairs (normalised DLT, Hartley-Zisserman 7.1)."""
    if len(X) < 6:
        raise LabellingError("a 3D-2D fit needs at least 6 balls")
    mx, sx = X.mean(0), np.sqrt(3) / (np.linalg.norm(X - X.mean(0), axis=1).mean() + 1e-12)
    mu, su = uv.mean(0), np.sqrt(2) / (np.linalg.norm(uv - uv.mean(0), axis=1).mean() + 1e-12)
    Xn, un = (X - mx) * sx, (uv - mu) * su
    n = len(X)
    Xh = np.hstack([Xn, np.ones((n, 1))])
    A = np.zeros((2 * n, 12))
    A[0::2, 0:4], A[0::2, 8:12] = Xh, -un[:, :1] * Xh
    A[1::2, 4:8], A[1::2, 8:12] = Xh, -un[:, 1:] * Xh
    Pn = np.linalg.svd(A)[2][-1].reshape(3, 4)
    Tu = np.array([[su, 0, -su * mu[0]], [0, su, -su * mu[1]], [0, 0, 1]])
    Tx = np.diag([sx, sx, sx, 1.0])
    Tx[:3, 3] = -sx * mx
    return np.linalg.inv(Tu) @ Pn @ Tx


def _dlt_project(P, X):
    p = np.hstack([X, np.ones((len(X), 1))]) @ P.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def _refit(m, model, pts, keep):
    bi, pi = m.ball_idx[keep], m.point_idx[keep]
    H = fit_homography(model[bi], pts[pi])
    res = np.linalg.norm(_apply_h(H, model[bi]) - pts[pi], axis=1)
    return PlaneMatch(bi, pi, H, res, m.expected, m.score_margin)


def _label_among_free(model, pts, image_shape, owner, k, kw):
    free = np.array([p not in owner or owner[p][0] == k for p in range(len(pts))], bool)
    idx = np.nonzero(free)[0]
    m = label_plane(model, pts[idx], image_shape, **kw)
    return PlaneMatch(m.ball_idx, idx[m.point_idx], m.H_img_plane, m.residual_px, m.expected, m.score_margin)
