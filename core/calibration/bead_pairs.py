"""Splitting two touching balls (the two layers of a part overlapping in projection).

A ball's footprint in log-attenuation is the same shape everywhere in one
shot (same diameter, about the same magnification and blur), so an empirical
radial template is built from the isolated balls of the image, and a merged
blob is fitted as the sum of two scaled templates over a background plane
(damped Gauss-Newton, all pairs of a shot together). The split is kept only when the fit explains the blob
(small residual, both amplitudes ball-like, centres apart); otherwise the blob
is dropped, never guessed.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["RadialTemplate", "build_template", "split_pairs", "fit_partial_ball"]


class RadialTemplate:
    """Mean background-corrected profile T(rho) of isolated balls, T(0) = 1."""

    def __init__(self, rho, value, radius_px):
        self.rho, self.value, self.radius_px = rho, value, float(radius_px)

    def __call__(self, rho):
        return np.interp(rho, self.rho, self.value, right=0.0)

    def value_and_slope(self, rho, step: float = 0.05):
        """T(rho) and dT/drho, T linear between samples every ``step`` px of the profile (a
        table lookup, for fits that evaluate it many times); 0 beyond the table."""
        if getattr(self, "_lut_step", None) != step:
            grid = np.arange(0.0, self.rho[-1] + 2 * step, step)
            self._lut = np.append(np.interp(grid, self.rho, self.value, right=0.0), 0.0)
            self._lut_step = step
        # a diverged fit (NaN or huge distances) reads as beyond the table, never as an index
        x = np.nan_to_num(rho / step, nan=len(self._lut) - 1.0, posinf=len(self._lut) - 1.0, neginf=0.0)
        x = np.clip(x, 0.0, len(self._lut) - 1.0)
        i = np.minimum(x.astype(np.int64), len(self._lut) - 2)
        lo, hi = self._lut[i], self._lut[i + 1]
        slope = (hi - lo) / step
        return lo + (x - i) * (hi - lo), slope


def build_template(d, centres, radius_px, max_balls=40):
    """Template from up to ``max_balls`` isolated balls (``d``: log density, NaN off-field)."""
    R = 1.25 * radius_px + 2.0
    Ro = R + 3.0
    rows, cols = d.shape
    rho_all, val_all = [], []
    for c in centres[:max_balls]:
        u0, v0 = int(c[0] - Ro), int(c[1] - Ro)
        u1, v1 = int(c[0] + Ro) + 2, int(c[1] + Ro) + 2
        if u0 < 0 or v0 < 0 or u1 > cols or v1 > rows:
            continue
        p = d[v0:v1, u0:u1].astype(float)
        if not np.all(np.isfinite(p)):
            continue
        yy, xx = np.mgrid[v0:v1, u0:u1]
        rho = np.hypot(xx - c[0], yy - c[1])
        ring = (rho > R) & (rho <= Ro)
        A = np.column_stack([np.ones(ring.sum()), xx[ring], yy[ring]])
        coef = np.linalg.lstsq(A, p[ring], rcond=None)[0]
        rho_all.append(rho.ravel())
        val_all.append((p - coef[0] - coef[1] * xx - coef[2] * yy).ravel())
    if len(rho_all) < 3:
        return None
    rho, val = np.concatenate(rho_all), np.concatenate(val_all)
    edges = np.arange(0, Ro + 0.25, 0.25)
    idx = np.digitize(rho, edges) - 1
    order = np.argsort(idx, kind="stable")
    idx, val = idx[order], val[order]
    cuts = np.searchsorted(idx, np.arange(len(edges)))       # bin k: val[cuts[k]:cuts[k + 1]]
    prof = np.array([np.median(val[cuts[k]:cuts[k + 1]]) if cuts[k + 1] > cuts[k] else np.nan
                     for k in range(len(edges) - 1)])
    mid = 0.5 * (edges[:-1] + edges[1:])
    ok = np.isfinite(prof)
    mid, prof = mid[ok], prof[ok]
    if prof[0] <= 0:
        return None
    prof = np.maximum(prof / prof[0], 0.0)
    prof[mid > R] = 0.0
    return RadialTemplate(np.concatenate([[0.0], mid]), np.concatenate([[1.0], prof]), radius_px)


def split_pairs(d, blobs, template, amplitude, noise_sigma, iterations: int = 10):
    """Two centres per merged blob, all blobs fitted together: ((K, 2, 2) centres in image
    pixels, (K,) ok).

    ``blobs``: a list of (mask, offset): a blob's pixels in its bounding box (bool) and that
    box's (u0, v0); ``amplitude``: a typical isolated ball's peak (log units). Each window
    (the blob's box, padded by a ball's reach) is fitted as a1 T(|q - c1|) + a2 T(|q - c2|)
    over a background plane, by damped Gauss-Newton (Levenberg-Marquardt) with the
    template's analytic derivative, started on the blob's principal axis. A split is
    kept when the fit explains the blob (small residual, both amplitudes ball-like,
    centres apart) and its window lies in the field (no NaN); otherwise not ok (NaN)."""
    k = len(blobs)
    out, ok = np.full((k, 2, 2), np.nan), np.zeros(k, bool)
    if k == 0:
        return out, ok
    r = template.radius_px
    rows, cols = d.shape
    spans, starts = [], []
    for mask, offset in blobs:
        v_in, u_in = np.nonzero(mask)
        u_in, v_in = u_in + offset[0], v_in + offset[1]
        spans.append((u_in.min(), v_in.min(), u_in.max(), v_in.max()))
        cov = np.cov(np.stack([u_in, v_in]).astype(float))
        ev, evec = np.linalg.eigh(cov)
        half = np.sqrt(max(ev[1] - r * r / 4, 0.25))      # two discs: var = s^2/4 + r^2/4
        starts.append((np.array([u_in.mean(), v_in.mean()]), half * evec[:, 1]))
    c = np.array([s[0] for s in starts])
    ax = np.array([s[1] for s in starts])
    # the fit on windows reaching a little past the template (the blob's edge is ~r from a
    # centre, the template reaches 1.25 r + 2), then a few steps and the gate on windows
    # padded by a ball's reach and more: the residual measured over the same background
    near = _PairWindows(d, spans, int(np.ceil(0.25 * r + 5)), c)
    wide = _PairWindows(d, spans, int(np.ceil(1.25 * r + 5)), c)
    with warnings.catch_warnings():             # an all-NaN window's median: NaN, handled next
        warnings.simplefilter("ignore", RuntimeWarning)
        bg = near.median()
    bg = np.where(np.isfinite(bg), bg, 0.0)     # a window all off-field: fitted to nothing, gated out below
    x = np.column_stack([c - ax, c + ax, np.full(k, amplitude), np.full(k, amplitude), bg,
                         np.zeros(k), np.zeros(k)])
    x, _ = _lm(x, near, template, iterations)
    x, cost = _lm(x, wide, template, 2)
    rms = np.sqrt(cost / np.maximum(wide.w.sum(axis=(1, 2)), 1))
    sep = np.hypot(x[:, 0] - x[:, 2], x[:, 1] - x[:, 3])
    amp_ok = np.all((x[:, 4:6] > 0.6 * amplitude) & (x[:, 4:6] < 1.6 * amplitude), axis=1)
    # the overlap is not exactly additive once the detector blurs and quantises a very dark
    # core, so the gate is loose; the cross-layer 3D-2D fit rejects a poor centre later
    ok = (wide.finite & np.all(np.isfinite(x), axis=1) & amp_ok & (sep > 0.6 * r)
          & (rms < max(3 * noise_sigma, 0.08 * amplitude)))
    out[ok] = x[ok, :4].reshape(-1, 2, 2)
    return out, ok


class _PairWindows:
    """The pixels of K windows (the blobs' spans padded by ``pad``) stacked in (K, H, W) float32
    arrays (centres to ~1e-4 px, half the memory traffic of float64): coordinates ``xx``,
    ``yy``, the same about each blob's centre ``X``, ``Y`` (for the plane), density ``p``,
    weight ``w`` (1 inside the window and the field), ``finite`` (K,): no NaN in the window."""

    def __init__(self, d, spans, pad, centres):
        rows, cols = d.shape
        boxes = [(max(a - pad, 0), max(b - pad, 0), min(c + pad + 1, cols), min(e + pad + 1, rows))
                 for a, b, c, e in spans]
        H = max(b[3] - b[1] for b in boxes)
        W = max(b[2] - b[0] for b in boxes)
        u0 = np.array([b[0] for b in boxes])[:, None, None]
        v0 = np.array([b[1] for b in boxes])[:, None, None]
        self.xx = (u0 + np.arange(W)[None, None, :] + np.zeros((1, H, 1))).astype(np.float32)
        self.yy = (v0 + np.arange(H)[None, :, None] + np.zeros((1, 1, W))).astype(np.float32)
        inside = ((self.xx < np.array([b[2] for b in boxes])[:, None, None])
                  & (self.yy < np.array([b[3] for b in boxes])[:, None, None]))
        p = d[np.minimum(self.yy, rows - 1).astype(int), np.minimum(self.xx, cols - 1).astype(int)]
        p = p.astype(np.float32)
        self.finite = np.all(np.isfinite(p) | ~inside, axis=(1, 2))
        self.w = (inside & np.isfinite(p)).astype(np.float32)
        self.p = np.where(self.w > 0, p, 0.0).astype(np.float32)
        c = np.asarray(centres, np.float32)
        self.X, self.Y = self.xx - c[:, 0, None, None], self.yy - c[:, 1, None, None]

    def median(self):
        return np.array([np.median(self.p[i][self.w[i] > 0]) for i in range(len(self.p))])

    def residual_and_jacobian(self, x, i, template):
        """Residuals (n, H, W) and Jacobian (n, H, W, 9) of windows ``i`` at parameters ``x``
        (u1, v1, u2, v2, a1, a2, plane b0, b1, b2)."""
        x = x[i].astype(np.float32)
        X, Y, xx, yy, w = self.X[i], self.Y[i], self.xx[i], self.yy[i], self.w[i]
        J = np.empty(X.shape + (9,), np.float32)
        m = x[:, 6, None, None] + x[:, 7, None, None] * X + x[:, 8, None, None] * Y
        for b in range(2):
            du, dv = xx - x[:, 2 * b, None, None], yy - x[:, 2 * b + 1, None, None]
            rho = np.hypot(du, dv)
            t, g = template.value_and_slope(rho)
            a = x[:, 4 + b, None, None]
            m = m + a * t
            ag = -a * g / np.maximum(rho, 1e-9)       # d(a T(rho))/du = a T' (-du / rho)
            J[..., 2 * b], J[..., 2 * b + 1], J[..., 4 + b] = ag * du, ag * dv, t
        J[..., 6], J[..., 7], J[..., 8] = 1.0, X, Y
        return (m - self.p[i]) * w, J * w[..., None]


def _lm(x, win, template, iterations):
    """Levenberg-Marquardt on all windows at once, each stopped when converged: (x, cost (K,)).

    Written here rather than scipy's ``least_squares``: that solves one problem per call, and a
    shot has tens to hundreds of 9-parameter windows; one batched 9x9 solve per iteration for
    all of them costs about what a single scipy call's overhead does."""
    k = len(x)
    x = x.copy()
    lam = np.full(k, 1e-3)
    res, J = win.residual_and_jacobian(x, np.arange(k), template)
    cost = np.sum(res.astype(np.float64) ** 2, axis=(1, 2))
    eye = np.eye(9)
    active = np.ones(k, bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        Jf = J[idx].reshape(len(idx), -1, 9)
        A = np.matmul(Jf.transpose(0, 2, 1), Jf).astype(np.float64)
        g = np.matmul(Jf.transpose(0, 2, 1), res[idx].reshape(len(idx), -1, 1))[..., 0].astype(np.float64)
        diag = np.einsum("kii->ki", A)[:, :, None] * eye
        step = -np.linalg.solve(A + lam[idx, None, None] * (diag + 1e-9 * eye), g[..., None])[..., 0]
        x_new = x.copy()
        x_new[idx] += step
        res_new, J_new = win.residual_and_jacobian(x_new, idx, template)
        cost_new = np.sum(res_new.astype(np.float64) ** 2, axis=(1, 2))
        better = cost_new < cost[idx]
        b = idx[better]
        x[b], res[b], J[b], cost[b] = x_new[b], res_new[better], J_new[better], cost_new[better]
        lam[idx] = np.where(better, lam[idx] * 0.3, lam[idx] * 10.0)
        # converged: a step under 2e-3 px that gained < 1e-4 of the cost, or no descent left
        # at a very large damping
        active[idx[(better & (cost[idx] - cost_new < 1e-4 * cost_new) & (np.abs(step[:, :4]).max(axis=1) < 2e-3))
                    | (lam[idx] > 1e6)]] = False
    return x, cost


def fit_partial_ball(d, uv0, template, amplitude, noise_sigma, scale=1.0, min_visible=0.4):
    """Centre (2,) of a ball whose disc is partly cut (field border, NaN in ``d``) or
    beside metal, or None: the template over a background plane fitted to the finite
    pixels only, robustly (soft-L1: a metal edge in the window is down-weighted).
    ``scale``: this ball's shadow size relative to the template's (its magnification over the
    typical one; with half a disc the size cannot be told from the centre). Kept when at
    least ``min_visible`` of the disc is in the field, the amplitude is ball-like and the
    fit explains the window."""
    r = template.radius_px * scale
    R = 1.25 * r + 4.0
    rows, cols = d.shape
    if not (np.all(np.isfinite(uv0)) and 0 <= uv0[0] <= cols - 1 and 0 <= uv0[1] <= rows - 1
            and np.isfinite(r) and r > 0):
        return None
    u0, v0 = max(int(uv0[0] - R), 0), max(int(uv0[1] - R), 0)
    u1, v1 = min(int(uv0[0] + R) + 2, cols), min(int(uv0[1] + R) + 2, rows)
    p = d[v0:v1, u0:u1].astype(float)
    yy, xx = np.mgrid[v0:v1, u0:u1]
    fin = np.isfinite(p)
    disc = np.hypot(xx - uv0[0], yy - uv0[1]) <= r
    if disc.sum() == 0 or (fin & disc).sum() < min_visible * disc.sum() or fin.sum() < 20:
        return None
    px, xf, yf = p[fin], xx[fin], yy[fin]
    x0 = np.array([uv0[0], uv0[1], amplitude, np.median(px)])

    def res(x):     # a constant background: a plane's slope trades off with the centre of a cut disc
        return x[2] * template(np.hypot(xf - x[0], yf - x[1]) / scale) + x[3] - px
    from scipy.optimize import least_squares   # only for the few balls left after labelling
    fit = least_squares(res, x0, loss="soft_l1", f_scale=max(3 * noise_sigma, 0.02 * amplitude), max_nfev=200)
    x = fit.x
    rms = float(np.sqrt(np.median(fit.fun ** 2)))
    if not (0.6 * amplitude < x[2] < 1.6 * amplitude and rms < max(3 * noise_sigma, 0.08 * amplitude)
            and np.hypot(x[0] - uv0[0], x[1] - uv0[1]) < 0.5 * r):
        return None
    return x[:2]
