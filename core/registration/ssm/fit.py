"""Fit the level's shape model to two calibrated shots: clicks first, then the images' edges.

1. Clicks: the body centre and both pedicles (isthmus) in each view. Each is
   triangulated (ray gap checked: clicks inconsistent between the views are
   refused); the model's mean points are aligned to them (Kabsch), then pose and
   shape are solved by regularised least squares on the clicks' reprojection
   (sigma = the click noise) with a Gaussian prior on the shape coefficients
   (Spine-DART section 4.2: landmarks initialise the pose; here the surgeon's).
2. Images: the mesh's occluding contours (edges between faces turned towards
   and away from the source) are projected into both shots and pulled onto the
   image edges (Canny on the log image, the cage's balls masked) by a
   truncated chamfer cost, with the click and shape terms kept, minimised by
   CMA-ES over pose and shape (Spine-DART section 4.3 minimises an image loss
   over the same 6 + k parameters; its learned loss and splatting renderer are
   replaced by this edge distance).

The result holds the mesh and both trajectories in the cage frame, and its
quality figures; ``AutoPlanError`` when the clicks do not fit a vertebra.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from core.calibration.models import camera_centre
from core.registration.ssm.model import ShapeModel

__all__ = ["AutoPlanError", "AutoPlanResult", "autoplan", "fit_clicks", "edge_distance_map", "Trajectory"]

VIEWS = ("ap", "lat")
CLICK_POINTS = ("body_centre", "isthmus_left", "isthmus_right")
MAX_RAY_GAP_MM = 6.0      # mm; a pedicle is ~15 mm high: farther apart, the two clicks are not on the same one
MAX_CLICK_RMS_SIGMAS = 4.0        # clicks the fitted model stays farther from: refused
CHAMFER_CAP_PX = 6.0
_SCALE = np.array([np.radians(2.0)] * 3 + [1.5] * 3)      # CMA-ES steps: rotation (rad), translation (mm)


class AutoPlanError(ValueError):
    """The model cannot be fitted to these clicks or shots (the message says what to redo)."""


@dataclass(frozen=True)
class Trajectory:
    side: str
    entry_mm: np.ndarray
    target_mm: np.ndarray


@dataclass(frozen=True, eq=False)
class AutoPlanResult:
    """Fitted vertebra (cage frame): pose, shape, mesh, trajectories, quality figures."""
    level: str
    T_cage_model: np.ndarray
    b: np.ndarray
    vertices_mm: np.ndarray
    faces: np.ndarray
    trajectories: dict                 # side -> Trajectory (cage frame)
    quality: dict = field(default_factory=dict)


def _check_clicks(clicks) -> dict:
    out = {}
    if not isinstance(clicks, dict) or set(clicks) != set(VIEWS):
        raise AutoPlanError("clicks must give the AP and the LAT view: body centre, left pedicle, right pedicle")
    for v in VIEWS:
        a = np.asarray(clicks[v], float)
        if a.shape != (3, 2) or not np.all(np.isfinite(a)):
            raise AutoPlanError(f"{v.upper()} clicks must be 3 finite (u, v) pixels: body centre, left pedicle, "
                                f"right pedicle; got shape {a.shape}")
        out[v] = a
    return out


def _pose_matrix(x, T0) -> np.ndarray:
    """T0 moved by rotation vector x[:3] about the model origin and translation x[3:6] (cage frame)."""
    T = T0.copy()
    T[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix() @ T0[:3, :3]
    T[:3, 3] = T0[:3, 3] + x[3:6]
    return T


def _kabsch(A, B) -> np.ndarray:
    """Rigid T with T @ A ~ B (rows are points)."""
    ca, cb = A.mean(0), B.mean(0)
    U, _, Vt = np.linalg.svd((A - ca).T @ (B - cb))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, cb - R @ ca
    return T


def _project(cal, X) -> dict:
    return {v: cal.views[v].project(X, "3d2d") for v in VIEWS}


def _triangulate(cal, clicks) -> tuple[np.ndarray, np.ndarray]:
    pts, gaps = cal.locate_many(clicks["ap"], clicks["lat"])
    names = ("body centre", "left pedicle", "right pedicle")
    bad = [f"{n} {g:.1f} mm" for n, g in zip(names, gaps) if not g <= MAX_RAY_GAP_MM]
    if bad:
        raise AutoPlanError(f"the AP and LAT clicks do not meet in 3D ({', '.join(bad)} apart, at most "
                            f"{MAX_RAY_GAP_MM:.0f}): click the same points in both views")
    return pts, gaps


def _check_anatomy(model: ShapeModel, P) -> None:
    """The triangulated points must look like this level: pedicle spacing and body-centre offset."""
    m = model.points()
    ref_w = np.linalg.norm(m["isthmus_left"] - m["isthmus_right"])
    ref_d = np.linalg.norm(0.5 * (m["isthmus_left"] + m["isthmus_right"]) - m["body_centre"])
    w = np.linalg.norm(P[1] - P[2])
    d = np.linalg.norm(0.5 * (P[1] + P[2]) - P[0])
    if not 0.6 * ref_w <= w <= 1.5 * ref_w or not 0.5 * ref_d <= d <= 1.6 * ref_d:
        raise AutoPlanError(f"the clicked pedicles are {w:.0f} mm apart and {d:.0f} mm behind the body centre; "
                            f"a {model.level} has about {ref_w:.0f} and {ref_d:.0f} mm: check the level and the clicks")


def fit_clicks(model: ShapeModel, cal, clicks, click_sigma_px: float = 3.0, n_modes: int | None = None):
    """(T_cage_model, b, click reprojection RMS px, ray gaps mm) from the six clicks (module docstring, step 1)."""
    clicks = _check_clicks(clicks)
    P, gaps = _triangulate(cal, clicks)
    _check_anatomy(model, P)
    k = model.n_modes if n_modes is None else int(n_modes)
    mean_pts = np.array([model.points()[n] for n in CLICK_POINTS])
    T0 = _kabsch(mean_pts, P)
    idx = [list(model.points()).index(n) for n in CLICK_POINTS]

    def residuals(x):
        T = _pose_matrix(x, T0)
        b = x[6:]
        pts = (model.points_mean + np.tensordot(b * model.sd[:k], model.points_modes[:k], axes=1))[idx]
        X = pts @ T[:3, :3].T + T[:3, 3]
        uv = _project(cal, X)
        r = [(uv[v] - clicks[v]).ravel() / click_sigma_px for v in VIEWS]
        return np.concatenate(r + [b])
    sol = least_squares(residuals, np.zeros(6 + k), method="lm", x_scale=np.concatenate([_SCALE, np.ones(k)]))
    r = sol.fun[:12] * click_sigma_px
    rms = float(np.sqrt(np.mean(r ** 2) * 2))
    if rms > MAX_CLICK_RMS_SIGMAS * click_sigma_px:
        raise AutoPlanError(f"the {model.level} model cannot meet the clicks (they stay {rms:.1f} px away): "
                            "check the level and that each click is on the right landmark")
    return _pose_matrix(sol.x, T0), sol.x[6:], rms, gaps


def edge_distance_map(pixels, cal_view=None, sigma_px: float = 1.5) -> np.ndarray:
    """Distance (px, float32) of every pixel to the nearest edge of the log image (Canny), with the cage's
    detected balls masked (their rims are no bone edges)."""
    img = np.asarray(pixels, np.float64)
    lo = np.percentile(img, 0.5)
    log = -np.log(np.maximum(img - lo + 1.0, 1.0))
    log = cv2.GaussianBlur(log, (0, 0), sigma_px)
    gx, gy = cv2.Sobel(log, cv2.CV_64F, 1, 0), cv2.Sobel(log, cv2.CV_64F, 0, 1)
    mag = np.hypot(gx, gy)
    edges = _canny(log, np.percentile(mag, 90.0))        # strong edges: the top tenth of the gradients
    if cal_view is not None:
        r = float(np.median(cal_view.figures.get("ball_radius_px", [6.0]))) + 3.0
        for plane in cal_view.planes:
            for u, v in plane.uv_raw:
                cv2.circle(edges, (int(round(u)), int(round(v))), int(np.ceil(r)), 0, -1)
    return cv2.distanceTransform(np.where(edges > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)


def _canny(log, hi) -> np.ndarray:
    """Canny on the log image scaled to 16 bits (OpenCV takes 8-bit, or 16-bit Sobel derivatives)."""
    dx = cv2.Sobel(log, cv2.CV_64F, 1, 0)
    dy = cv2.Sobel(log, cv2.CV_64F, 0, 1)
    s = 1000.0 / max(hi, 1e-12)
    dx16 = np.clip(dx * s, -32767, 32767).astype(np.int16)
    dy16 = np.clip(dy * s, -32767, 32767).astype(np.int16)
    return cv2.Canny(dx16, dy16, 400.0, 1000.0, L2gradient=True)


class _Contours:
    """Occluding contours of the model mesh seen from each view's source."""

    def __init__(self, model: ShapeModel, cal):
        f = model.faces
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        face_of = np.tile(np.arange(len(f)), 3)
        key = np.sort(e, axis=1)
        order = np.lexsort((key[:, 1], key[:, 0]))
        ks = key[order]
        same = np.all(ks[1:] == ks[:-1], axis=1)
        i = np.flatnonzero(same)                     # manifold: each edge twice
        self.edges = ks[i]
        self.f0, self.f1 = face_of[order][i], face_of[order][i + 1]
        self.faces = f
        self.sources = {v: camera_centre(cal.views[v].P) for v in VIEWS}

    def points(self, V, view) -> np.ndarray:
        a, b, c = V[self.faces[:, 0]], V[self.faces[:, 1]], V[self.faces[:, 2]]
        n = np.cross(b - a, c - a)
        facing = np.einsum("ij,ij->i", n, a - self.sources[view]) > 0
        rim = facing[self.f0] != facing[self.f1]
        e = self.edges[rim]
        return 0.5 * (V[e[:, 0]] + V[e[:, 1]])


def _sample(dmap, uv) -> np.ndarray:
    h, w = dmap.shape
    u = np.clip(uv[:, 0], 0, w - 1.001)
    v = np.clip(uv[:, 1], 0, h - 1.001)
    u0, v0 = u.astype(int), v.astype(int)
    fu, fv = u - u0, v - v0
    d = (dmap[v0, u0] * (1 - fu) * (1 - fv) + dmap[v0, u0 + 1] * fu * (1 - fv)
         + dmap[v0 + 1, u0] * (1 - fu) * fv + dmap[v0 + 1, u0 + 1] * fu * fv)
    outside = ~np.isfinite(uv).all(1) | (uv[:, 0] < 0) | (uv[:, 1] < 0) | (uv[:, 0] > w - 1) | (uv[:, 1] > h - 1)
    return np.where(outside, CHAMFER_CAP_PX, d)


def _image_cost(model, cal, dmaps, contours, clicks, T0, k, click_sigma_px):
    idx = [list(model.points()).index(n) for n in CLICK_POINTS]

    def cost(x):
        T = _pose_matrix(x[:6] * _SCALE, T0)
        b = x[6:]
        V = model.mean + np.tensordot(b * model.sd[:k], model.modes[:k], axes=1)
        V = V @ T[:3, :3].T + T[:3, 3]
        c = 0.0
        for v in VIEWS:
            rim = contours.points(V, v)
            uv = cal.views[v].project(rim, "3d2d")
            d = np.minimum(_sample(dmaps[v], uv), CHAMFER_CAP_PX)
            c += float(np.mean(d ** 2)) / CHAMFER_CAP_PX ** 2
        pts = (model.points_mean + np.tensordot(b * model.sd[:k], model.points_modes[:k], axes=1))[idx]
        uvp = _project(cal, pts @ T[:3, :3].T + T[:3, 3])
        cr = sum(float(np.sum((uvp[v] - clicks[v]) ** 2)) for v in VIEWS) / click_sigma_px ** 2
        return c + 0.02 * (cr + float(b @ b))
    return cost


def refine_images(model, cal, images, clicks, T_init, b_init, click_sigma_px=3.0, generations=40,
                  seed: int = 0):
    """CMA-ES over pose and shape on the edge cost (module docstring, step 2); (T, b, figures)."""
    from cmaes import CMA
    k = len(b_init)
    dmaps = {v: edge_distance_map(images[v], cal.views[v]) for v in VIEWS}
    contours = _Contours(model, cal)
    cost = _image_cost(model, cal, dmaps, contours, clicks, T_init, k, click_sigma_px)
    x0 = np.concatenate([np.zeros(6), b_init])
    c0 = cost(x0)
    opt = CMA(mean=x0, sigma=0.6, population_size=10, seed=seed)
    best_x, best_c = x0, c0
    for _ in range(generations):
        sols = []
        for _ in range(opt.population_size):
            x = opt.ask()
            c = cost(x)
            sols.append((x, c))
            if c < best_c:
                best_x, best_c = x, c
        opt.tell(sols)
    T = _pose_matrix(best_x[:6] * _SCALE, T_init)
    return T, best_x[6:], {"edge_cost_initial": c0, "edge_cost": best_c}


def autoplan(model: ShapeModel, cal, clicks, images=None, click_sigma_px: float = 3.0,
             generations: int = 40, seed: int = 0) -> AutoPlanResult:
    """The fitted vertebra and its two trajectories (module docstring); ``images`` None: clicks only."""
    t0 = time.perf_counter()
    T, b, click_rms, gaps = fit_clicks(model, cal, clicks, click_sigma_px)
    q = {"click_rms_px": click_rms, "ray_gap_mm": [float(g) for g in gaps], "stage": "clicks"}
    if images is not None:
        if set(images) != set(VIEWS):
            raise AutoPlanError("images must hold the AP and the LAT shot's raw pixels")
        T, b, fig = refine_images(model, cal, images, _check_clicks(clicks), T, b, click_sigma_px, generations, seed)
        q.update(fig, stage="images")
    V = model.vertices(b) @ T[:3, :3].T + T[:3, 3]
    pts = {n: T[:3, :3] @ p + T[:3, 3] for n, p in model.points(b).items()}
    traj = {s: Trajectory(s, pts[f"entry_{s}"], pts[f"target_{s}"]) for s in ("left", "right")}
    q["shape_mahalanobis"] = float(np.linalg.norm(b))
    q["seconds"] = time.perf_counter() - t0
    return AutoPlanResult(model.level, T, b, V, model.faces, traj, q)
