"""Splitting two touching balls (the two layers of a part overlapping in projection).

A ball's footprint in log-attenuation is the same shape everywhere in one
shot (same diameter, about the same magnification and blur), so an empirical
radial template is built from the isolated balls of the image, and a merged
blob is fitted as the sum of two scaled templates over a background plane
(scipy least_squares). The split is kept only when the fit explains the blob
(small residual, both amplitudes ball-like, centres apart); otherwise the blob
is dropped, never guessed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["RadialTemplate", "build_template", "split_pair", "fit_partial_ball"]


class RadialTemplate:
    """Mean background-corrected profile T(rho) of isolated balls, T(0) = 1."""

    def __init__(self, rho, value, radius_px):
        self.rho, self.value, self.radius_px = rho, value, float(radius_px)

    def __call__(self, rho):
        return np.interp(rho, self.rho, self.value, right=0.0)


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


def split_pair(d, mask, offset, template, amplitude, noise_sigma):
    """Two centres (2, 2) in image pixels of a merged blob, or None.

    ``mask``: the blob's pixels in its bounding box (bool), ``offset`` (u0, v0)
    of that box; ``amplitude``: a typical isolated ball's peak (log units)."""
    r = template.radius_px
    pad = int(np.ceil(1.25 * r + 5))
    rows, cols = d.shape
    v_in, u_in = np.nonzero(mask)
    u_in, v_in = u_in + offset[0], v_in + offset[1]
    u0, v0 = max(u_in.min() - pad, 0), max(v_in.min() - pad, 0)
    u1, v1 = min(u_in.max() + pad + 1, cols), min(v_in.max() + pad + 1, rows)
    p = d[v0:v1, u0:u1].astype(float)
    if not np.all(np.isfinite(p)):
        return None
    yy, xx = np.mgrid[v0:v1, u0:u1]
    cov = np.cov(np.stack([u_in, v_in]).astype(float))
    ev, evec = np.linalg.eigh(cov)
    half = np.sqrt(max(ev[1] - r * r / 4, 0.25))      # two discs: var = s^2/4 + r^2/4
    c = np.array([u_in.mean(), v_in.mean()])
    x0 = np.concatenate([c - half * evec[:, 1], c + half * evec[:, 1], [amplitude, amplitude],
                         [np.median(p), 0.0, 0.0]])

    def model(x):
        t1 = template(np.hypot(xx - x[0], yy - x[1]))
        t2 = template(np.hypot(xx - x[2], yy - x[3]))
        return x[4] * t1 + x[5] * t2 + x[6] + x[7] * (xx - c[0]) + x[8] * (yy - c[1])
    from scipy.optimize import least_squares   # rare (merged blobs): not at start-up
    fit = least_squares(lambda x: (model(x) - p).ravel(), x0, method="lm", max_nfev=400)
    x = fit.x
    res = fit.fun.reshape(p.shape)
    rms = float(np.sqrt(np.mean(res ** 2)))
    sep = float(np.hypot(x[0] - x[2], x[1] - x[3]))
    amp_ok = all(0.6 * amplitude < a < 1.6 * amplitude for a in x[4:6])
    # the overlap is not exactly additive once the detector blurs and quantises a very dark
    # core, so the gate is loose; the cross-layer 3D-2D fit rejects a poor centre later
    if not (amp_ok and sep > 0.6 * r and rms < max(3 * noise_sigma, 0.08 * amplitude)):
        return None
    return np.array([[x[0], x[1]], [x[2], x[3]]])


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
