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

import numpy as np

__all__ = ["RadialTemplate", "build_template", "split_pairs", "fit_partial_ball"]


class RadialTemplate:
    """Mean background-corrected profile T(rho) of isolated balls, T(0) = 1."""

    def __init__(self, rho, value, radius_px):
        self.rho, self.value, self.radius_px = rho, value, float(radius_px)

    def __call__(self, rho):
        return np.interp(rho, self.rho, self.value, right=0.0)

    def derivative(self, rho):
        """dT/drho (piecewise linear T: the slope of its segment; 0 beyond the table)."""
        slope = np.diff(self.value) / np.diff(self.rho)
        i = np.clip(np.searchsorted(self.rho, rho, side="right") - 1, 0, len(slope) - 1)
        return np.where(rho < self.rho[-1], slope[i], 0.0)


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
    prof = np.array([np.median(val[idx == k]) if np.any(idx == k) else np.nan for k in range(len(edges) - 1)])
    mid = 0.5 * (edges[:-1] + edges[1:])
    ok = np.isfinite(prof)
    mid, prof = mid[ok], prof[ok]
    if prof[0] <= 0:
        return None
    prof = np.maximum(prof / prof[0], 0.0)
    prof[mid > R] = 0.0
    return RadialTemplate(np.concatenate([[0.0], mid]), np.concatenate([[1.0], prof]), radius_px)


def split_pairs(d, blobs, template, amplitude, noise_sigma, iterations: int = 20):
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
    pad = int(np.ceil(1.25 * r + 5))
    rows, cols = d.shape
    boxes, starts = [], []
    for mask, offset in blobs:
        v_in, u_in = np.nonzero(mask)
        u_in, v_in = u_in + offset[0], v_in + offset[1]
        box = (max(u_in.min() - pad, 0), max(v_in.min() - pad, 0),
               min(u_in.max() + pad + 1, cols), min(v_in.max() + pad + 1, rows))
        cov = np.cov(np.stack([u_in, v_in]).astype(float))
        ev, evec = np.linalg.eigh(cov)
        half = np.sqrt(max(ev[1] - r * r / 4, 0.25))      # two discs: var = s^2/4 + r^2/4
        c = np.array([u_in.mean(), v_in.mean()])
        boxes.append(box)
        starts.append((c, half * evec[:, 1]))
    H = max(b[3] - b[1] for b in boxes)
    W = max(b[2] - b[0] for b in boxes)
    u0 = np.array([b[0] for b in boxes])[:, None, None]
    v0 = np.array([b[1] for b in boxes])[:, None, None]
    xx = u0 + np.arange(W)[None, None, :] + np.zeros((1, H, 1))
    yy = v0 + np.arange(H)[None, :, None] + np.zeros((1, 1, W))
    inside = (xx < np.array([b[2] for b in boxes])[:, None, None]) & (yy < np.array([b[3] for b in boxes])[:, None, None])
    p = d[np.minimum(yy, rows - 1).astype(int), np.minimum(xx, cols - 1).astype(int)].astype(float)
    finite = np.all(np.isfinite(p) | ~inside, axis=(1, 2))
    wgt = (inside & np.isfinite(p)).astype(float)
    p = np.where(wgt > 0, p, 0.0)
    c = np.array([s[0] for s in starts])
    ax = np.array([s[1] for s in starts])
    med = np.array([np.median(p[i][wgt[i] > 0]) for i in range(k)])
    x = np.column_stack([c - ax, c + ax, np.full(k, amplitude), np.full(k, amplitude), med, np.zeros(k), np.zeros(k)])
    X, Y = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
    dT = template.derivative

    def residual_and_jacobian(x, i):
        """Residuals (n, H, W) and Jacobian (n, H, W, 9) of the blobs ``i``."""
        x, Xi, Yi, xi, yi, wi = x[i], X[i], Y[i], xx[i], yy[i], wgt[i]
        J = np.empty((len(i), H, W, 9))
        m = x[:, 6, None, None] + x[:, 7, None, None] * Xi + x[:, 8, None, None] * Yi
        for b in range(2):
            du, dv = xi - x[:, 2 * b, None, None], yi - x[:, 2 * b + 1, None, None]
            rho = np.hypot(du, dv)
            t, g = template(rho), dT(rho)
            a = x[:, 4 + b, None, None]
            m = m + a * t
            ag = -a * g / np.maximum(rho, 1e-9)       # d(a T(rho))/du = a T' (-du / rho)
            J[..., 2 * b], J[..., 2 * b + 1], J[..., 4 + b] = ag * du, ag * dv, t
        J[..., 6], J[..., 7], J[..., 8] = 1.0, Xi, Yi
        return (m - p[i]) * wi, J * wi[..., None]

    lam = np.full(k, 1e-3)
    res, J = residual_and_jacobian(x, np.arange(k))
    cost = np.sum(res ** 2, axis=(1, 2))
    eye = np.eye(9)
    active = np.ones(k, bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        Jf = J[idx].reshape(len(idx), -1, 9)
        A = np.matmul(Jf.transpose(0, 2, 1), Jf)
        g = np.matmul(Jf.transpose(0, 2, 1), res[idx].reshape(len(idx), -1, 1))[..., 0]
        diag = np.einsum("kii->ki", A)[:, :, None] * eye
        step = -np.linalg.solve(A + lam[idx, None, None] * (diag + 1e-9 * eye), g[..., None])[..., 0]
        x_new = x.copy()
        x_new[idx] += step
        res_new, J_new = residual_and_jacobian(x_new, idx)
        cost_new = np.sum(res_new ** 2, axis=(1, 2))
        better = cost_new < cost[idx]
        b = idx[better]
        x[b], res[b], J[b], cost[b] = x_new[b], res_new[better], J_new[better], cost_new[better]
        lam[idx] = np.where(better, lam[idx] * 0.3, lam[idx] * 10.0)
        # converged: a step under 1e-3 px taken, or no descent left at a very large damping
        active[idx[(better & (cost[idx] - cost_new < 1e-6 * cost_new) & (np.abs(step[:, :4]).max(axis=1) < 1e-3))
                    | (lam[idx] > 1e6)]] = False
    n = wgt.sum(axis=(1, 2))
    rms = np.sqrt(cost / np.maximum(n, 1))
    sep = np.hypot(x[:, 0] - x[:, 2], x[:, 1] - x[:, 3])
    amp_ok = np.all((x[:, 4:6] > 0.6 * amplitude) & (x[:, 4:6] < 1.6 * amplitude), axis=1)
    # the overlap is not exactly additive once the detector blurs and quantises a very dark
    # core, so the gate is loose; the cross-layer 3D-2D fit rejects a poor centre later
    ok = finite & amp_ok & (sep > 0.6 * r) & (rms < max(3 * noise_sigma, 0.08 * amplitude))
    out[ok] = x[ok, :4].reshape(-1, 2, 2)
    return out, ok


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
