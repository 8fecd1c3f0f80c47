"""The two calibration models of one view, fitted to labelled balls (robot paper II.C.4).

- 2D-2D (paper, figure 9): a homography from the ideal image to each ball plane;
  a pixel becomes the line through its plane points.
- 3D-2D: a projective (pinhole) camera, normalised DLT (Hartley & Zisserman,
  alg. 7.1) over all balls of the view's planes, then nonlinear refinement of
  the reprojection error (Levenberg-Marquardt, scipy, analytic Jacobian).
All pixel coordinates here are ideal (distortion-corrected).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ModelError", "fit_homography", "apply_h", "fit_dlt", "refine_projection", "fit_projection", "project_p",
           "camera_centre", "p_rays", "loo_homography_px", "loo_dlt_px"]


class ModelError(ValueError):
    """A calibration model could not be fitted."""


def fit_homography(src, dst) -> np.ndarray:
    """Least-squares homography ``dst ~ H src`` (normalised DLT, OpenCV), (N >= 4, 2) each."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if len(src) < 4 or src.shape != dst.shape:
        raise ModelError("a homography needs at least 4 matched balls")
    H, _ = cv2.findHomography(src, dst, 0)
    if H is None or not np.all(np.isfinite(H)):
        raise ModelError("degenerate ball layout: the matched balls are collinear")
    return H


def apply_h(H, xy) -> np.ndarray:
    """Points (N, 2) through the homography ``H``; NaN/inf where they map to infinity."""
    p = np.asarray(xy, float) @ H[:, :2].T + H[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def _normaliser(x):
    c = x.mean(axis=0)
    s = np.sqrt(x.shape[1]) / max(np.mean(np.linalg.norm(x - c, axis=1)), 1e-12)
    T = np.eye(x.shape[1] + 1)
    T[:-1, :-1] *= s
    T[:-1, -1] = -s * c
    return T


def fit_dlt(X, uv) -> np.ndarray:
    """Normalised DLT: 3x4 P with ``uv ~ P [X 1]`` from N >= 6 non-coplanar points."""
    X, uv = np.asarray(X, float), np.asarray(uv, float)
    if len(X) < 6 or X.shape != (len(uv), 3):
        raise ModelError("the 3D-2D model needs at least 6 matched balls on two planes")
    T3, T2 = _normaliser(X), _normaliser(uv)
    Xn = np.column_stack([X, np.ones(len(X))]) @ T3.T
    un = np.column_stack([uv, np.ones(len(uv))]) @ T2.T
    z = np.zeros_like(Xn)
    A = np.vstack([np.hstack([Xn, z, -un[:, :1] * Xn]), np.hstack([z, Xn, -un[:, 1:2] * Xn])])
    w, V = np.linalg.eigh(A.T @ A)       # = right singular vectors of A, cheaper
    if w[1] < 1e-12 * w[-1]:
        raise ModelError("degenerate ball layout for the 3D-2D model: the balls are coplanar")
    P = np.linalg.inv(T2) @ V[:, 0].reshape(3, 4) @ T3
    return P / np.linalg.norm(P)


def project_p(P, X) -> np.ndarray:
    """Ideal pixels (N, 2) of points (N, 3) under the 3x4 camera ``P``."""
    h = np.asarray(X, float) @ P[:, :3].T + P[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[:, :2] / h[:, 2:3]


def refine_projection(P0, X, uv, max_iter: int = 50) -> np.ndarray:
    """Minimise the reprojection error (px) over P's 12 entries, scale gauge ``p . p0 = 1``
    (Levenberg-Marquardt, H&Z A6.2, through scipy's MINPACK wrapper; analytic Jacobian).
    ``max_iter`` bounds the Jacobian evaluations."""
    from scipy.optimize import least_squares   # lazy: ~0.3 s of start-up
    X, uv = np.asarray(X, float), np.asarray(uv, float)
    p0 = P0.ravel() / np.linalg.norm(P0)
    Xh = np.column_stack([X, np.ones(len(X))])

    def residual(p):
        h = Xh @ p.reshape(3, 4).T
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (h[:, :2] / h[:, 2:3]).ravel() - uv.ravel()
        return np.append(r, p @ p0 - 1.0)

    def jacobian(p):
        h = Xh @ p.reshape(3, 4).T
        u, v = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2]
        J = np.zeros((2 * len(X) + 1, 12))
        w = Xh / h[:, 2:3]
        J[0:-1:2, 0:4], J[0:-1:2, 8:12] = w, -u[:, None] * w
        J[1:-1:2, 4:8], J[1:-1:2, 8:12] = w, -v[:, None] * w
        J[-1] = p0
        return J

    if not np.all(np.isfinite(residual(p0))):
        return P0 / np.linalg.norm(P0)     # a ball on the source plane: nothing to refine from
    fit = least_squares(residual, p0, jac=jacobian, method="lm", xtol=1e-12, ftol=1e-12, gtol=1e-12,
                        max_nfev=12 * max_iter)
    p = fit.x if np.all(np.isfinite(fit.x)) else p0
    P = p.reshape(3, 4)
    return P / np.linalg.norm(P)


def fit_projection(X, uv) -> np.ndarray:
    return refine_projection(fit_dlt(X, uv), X, uv)


def camera_centre(P) -> np.ndarray:
    """The X-ray source: the right null vector of P."""
    c = np.linalg.svd(P)[2][-1]
    if abs(c[3]) < 1e-12:
        raise ModelError("the fitted camera has its source at infinity")
    return c[:3] / c[3]


def p_rays(P, uv, towards) -> tuple[np.ndarray, np.ndarray]:
    """Origins (the source) and unit directions (N, 3) of the rays of ideal pixels,
    pointing from the source towards the point ``towards`` (e.g. the cage)."""
    C = camera_centre(P)
    d = np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(P[:, :3]).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d *= np.sign(d @ (np.asarray(towards) - C))[:, None]
    return np.broadcast_to(C, d.shape).copy(), d


def _leave_one_out(fit, predict, model, uv, min_n) -> np.ndarray:
    """Error (px) of each ball predicted by ``fit`` of the others; NaN below ``min_n`` balls."""
    n = len(uv)
    out = np.full(n, np.nan)
    if n < min_n:
        return out
    for k in range(n):
        m = np.arange(n) != k
        out[k] = np.linalg.norm(predict(fit(model[m], uv[m]), model[k:k + 1])[0] - uv[k])
    return out


def loo_homography_px(model_xy, uv) -> np.ndarray:
    """Leave-one-out error (px) of each ball predicted by the homography of the others."""
    return _leave_one_out(fit_homography, apply_h, np.asarray(model_xy, float), np.asarray(uv, float), 6)


def loo_dlt_px(X, uv) -> np.ndarray:
    """Leave-one-out reprojection error (px) of each ball under the DLT of the others."""
    return _leave_one_out(fit_dlt, project_p, np.asarray(X, float), np.asarray(uv, float), 8)
