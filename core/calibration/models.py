"""The two calibration models of one view, fitted to labelled balls (robot paper II.C.4).

- 2D-2D (paper, figure 9): a homography from the ideal image to each ball plane;
  a pixel becomes the line through its plane points.
- 3D-2D: a projective (pinhole) camera, normalised DLT (Hartley & Zisserman,
  alg. 7.1) over all balls of the view's planes, then nonlinear refinement of
  the reprojection error (Levenberg-Marquardt, analytic Jacobian).
All pixel coordinates here are ideal (distortion-corrected).
"""
from __future__ import annotations

import numpy as np

from core.calibration.labelling import fit_homography

__all__ = ["ModelError", "apply_h", "fit_dlt", "refine_projection", "fit_projection", "project_p",
           "camera_centre", "p_rays", "loo_homography_px", "loo_dlt_px"]


class ModelError(ValueError):
    """A calibration model could not be fitted."""


def apply_h(H, xy) -> np.ndarray:
    p = np.asarray(xy, float) @ H[:, :2].T + H[:, 2]
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
    h = np.asarray(X, float) @ P[:, :3].T + P[:, 3]
    return h[:, :2] / h[:, 2:3]


def refine_projection(P0, X, uv, max_iter: int = 50) -> np.ndarray:
    """Minimise the reprojection error (px) over P's 12 entries, scale gauge ``p . p0 = 1``
    (Levenberg-Marquardt with Marquardt's diagonal scaling, H&Z A6.2; analytic Jacobian)."""
    X, uv = np.asarray(X, float), np.asarray(uv, float)
    p0 = P0.ravel() / np.linalg.norm(P0)
    Xh = np.column_stack([X, np.ones(len(X))])

    def res_jac(p):
        h = Xh @ p.reshape(3, 4).T
        u, v = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2]
        r = np.concatenate([np.column_stack([u, v]).ravel() - uv.ravel(), [p @ p0 - 1.0]])
        J = np.zeros((2 * len(X) + 1, 12))
        w = Xh / h[:, 2:3]
        J[0:-1:2, 0:4], J[0:-1:2, 8:12] = w, -u[:, None] * w
        J[1:-1:2, 4:8], J[1:-1:2, 8:12] = w, -v[:, None] * w
        J[-1] = p0
        return r, J

    p, lam = p0.copy(), 1e-3
    r, J = res_jac(p)
    cost = r @ r
    for _ in range(max_iter):
        A, g = J.T @ J, J.T @ r
        try:
            step = np.linalg.solve(A + lam * np.diag(np.diag(A)), -g)
        except np.linalg.LinAlgError:
            break
        r1, J1 = res_jac(p + step)
        c1 = r1 @ r1
        if np.isfinite(c1) and c1 < cost:
            done = cost - c1 <= 1e-12 * cost + 1e-20
            p, r, J, cost, lam = p + step, r1, J1, c1, max(lam / 10, 1e-12)
            if done:
                break
        else:
            lam *= 10
            if lam > 1e8:
                break
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


def loo_homography_px(model_xy, uv) -> np.ndarray:
    """Leave-one-out error (px) of each ball predicted by the homography of the others."""
    n = len(uv)
    out = np.full(n, np.nan)
    if n < 6:
        return out
    for k in range(n):
        m = np.arange(n) != k
        H = fit_homography(model_xy[m], uv[m])
        out[k] = np.linalg.norm(apply_h(H, model_xy[k:k + 1])[0] - uv[k])
    return out


def loo_dlt_px(X, uv) -> np.ndarray:
    """Leave-one-out reprojection error (px) of each ball under the DLT of the others."""
    n = len(uv)
    out = np.full(n, np.nan)
    if n < 8:
        return out
    for k in range(n):
        m = np.arange(n) != k
        P = fit_dlt(X[m], uv[m])
        out[k] = np.linalg.norm(project_p(P, X[k:k + 1])[0] - uv[k])
    return out
