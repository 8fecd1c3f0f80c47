"""``CageCalibration``: raw pixels of the AP and LAT shots <-> rays in the cage frame.

Per view it holds the distortion correction and both models (2D-2D plane
homographies and the 3D-2D camera); ``method`` picks the one that ``ray``,
``locate`` and ``project`` use. Saved as ``fluoronav.calib/1`` JSON, written
atomically, validated on load.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.calibration.models import apply_h, p_rays, project_p
from core.formats.files import write_json_atomic
from core.formats.schema import load_json
from core.calibration.distortion import distortion_from_dict, DistortionError
from core.geometry.rigid import GeometryError, Ray, closest_points_between_lines

__all__ = ["CalibrationError", "CalibrationFileError", "PlaneFit", "ViewCalibration", "CageCalibration",
           "METHODS", "FORMAT"]

FORMAT = "fluoronav.calib/1"
METHODS = ("2d2d", "3d2d")
VIEWS = ("ap", "lat")


class CalibrationError(ValueError):
    """A calibration could not be computed or fails a quality gate."""


class CalibrationFileError(ValueError):
    """A calibration file is missing, malformed or of another format."""


@dataclass
class PlaneFit:
    """One ball plane of a view: its frame, homography and matched balls."""
    plane_id: str
    origin_mm: np.ndarray          # (3,)
    axes: np.ndarray               # (2, 3) in-plane unit axes
    H_img_plane: np.ndarray        # plane mm (2D) -> ideal px
    ball_idx: np.ndarray           # (K,) indices into the plane's balls
    uv_raw: np.ndarray             # (K, 2) detected raw px
    residual_px: np.ndarray        # (K,) of the selected method
    residual_mm: np.ndarray        # (K,)
    expected: int = 0

    def to_3d(self, xy):
        return self.origin_mm + np.asarray(xy, float) @ self.axes

    def to_dict(self):
        return {"plane_id": self.plane_id, "origin_mm": self.origin_mm.tolist(), "axes": self.axes.tolist(),
                "H_img_plane": self.H_img_plane.tolist(), "ball_idx": self.ball_idx.tolist(),
                "uv_raw": self.uv_raw.tolist(), "residual_px": self.residual_px.tolist(),
                "residual_mm": self.residual_mm.tolist(), "expected": self.expected}

    @classmethod
    def from_dict(cls, d):
        f = cls(str(d["plane_id"]), _arr(d["origin_mm"], (3,)), _arr(d["axes"], (2, 3)),
                _arr(d["H_img_plane"], (3, 3)), np.asarray(d["ball_idx"], int),
                _arr(d["uv_raw"], (-1, 2)), np.asarray(d["residual_px"], float),
                np.asarray(d["residual_mm"], float), int(d.get("expected", 0)))
        return f


def _arr(x, shape):
    a = np.asarray(x, float)
    if a.ndim != len(shape) or any(s not in (-1, t) for s, t in zip(shape, a.shape)):
        raise CalibrationFileError(f"calibration file: an array has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise CalibrationFileError("calibration file: an array has non-finite values")
    return a


@dataclass
class ViewCalibration:
    view: str
    image_shape: tuple
    distortion: object
    P: np.ndarray                  # 3x4, cage mm -> ideal px
    planes: list                   # [PlaneFit]
    figures: dict = field(default_factory=dict)

    def rays(self, uv_raw, method) -> tuple[np.ndarray, np.ndarray]:
        """(origins, unit directions) (N, 3) of raw pixels (N, 2), source -> detector."""
        return self.rays_ideal(self.distortion.raw_to_ideal(np.atleast_2d(np.asarray(uv_raw, float))), method)

    def rays_ideal(self, ideal, method) -> tuple[np.ndarray, np.ndarray]:
        """Rays of distortion-corrected pixels: the 3D-2D camera's, or (2D-2D, paper
        figure 9) the line through the pixel's points on the view's ball planes."""
        centre = np.mean([p.origin_mm for p in self.planes], axis=0)
        if method == "3d2d":
            return p_rays(self.P, ideal, centre)
        pts = np.stack([p.to_3d(apply_h(np.linalg.inv(p.H_img_plane), ideal)) for p in self.planes], 1)
        o = pts.mean(axis=1)
        if pts.shape[1] == 2:
            d = pts[:, 1] - pts[:, 0]
        else:   # more than two planes: least-squares line through the plane points
            d = np.stack([np.linalg.svd(q - q.mean(0))[2][0] for q in pts])
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        _, dref = p_rays(self.P, ideal, centre)
        d *= np.sign(np.sum(d * dref, axis=1))[:, None]
        return o, d

    def project(self, X, method) -> np.ndarray:
        """Raw pixels (N, 2) of cage points (N, 3); NaN for points at or behind the source."""
        ideal = project_p(self.P, X)
        centre = np.mean([p.origin_mm for p in self.planes], axis=0)
        depth = (X @ self.P[2, :3] + self.P[2, 3]) / (centre @ self.P[2, :3] + self.P[2, 3])
        ideal[depth < 0.05] = np.nan      # a point behind the source would project mirrored
        if method == "2d2d":
            ideal = self._solve_2d2d(X, ideal)
        return self.distortion.ideal_to_raw(ideal)

    def _solve_2d2d(self, X, uv0, iterations=8):
        """The ideal pixel whose 2D-2D line passes through X: Gauss-Newton on the
        perpendicular offset (numeric Jacobian), started from the 3D-2D projection."""
        uv = uv0.copy()
        h = 1e-3
        for _ in range(iterations):
            r0 = self._offset(X, uv)
            J = np.stack([(self._offset(X, uv + e) - r0) / h for e in (np.array([h, 0]), np.array([0, h]))], -1)
            step = np.linalg.solve(J, r0[..., None])[..., 0]
            uv = uv - step
            if np.max(np.abs(step), initial=0) < 1e-6:
                break
        return uv

    def _offset(self, X, uv):
        """Offset (N, 2) of X from the 2D-2D ray of ideal pixel uv, in a basis across the ray."""
        o, d = self.rays_ideal(uv, "2d2d")
        w = X - o
        perp = w - np.sum(w * d, axis=1, keepdims=True) * d
        e1 = np.cross(d, self.P[2, :3])
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(d, e1)
        return np.stack([np.sum(perp * e1, 1), np.sum(perp * e2, 1)], -1)

    def to_dict(self):
        return {"image_shape": list(self.image_shape), "distortion": self.distortion.to_dict(),
                "P": self.P.tolist(), "planes": [p.to_dict() for p in self.planes], "figures": self.figures}

    @classmethod
    def from_dict(cls, view, d):
        shape = tuple(int(x) for x in d["image_shape"])
        if len(shape) != 2 or min(shape) < 1:
            raise CalibrationFileError(f"calibration file: bad image_shape for {view}")
        planes = [PlaneFit.from_dict(p) for p in d["planes"]]
        if len(planes) < 2:
            raise CalibrationFileError(f"calibration file: the {view} view needs two planes")
        return cls(view, shape, distortion_from_dict(d["distortion"]), _arr(d["P"], (3, 4)), planes,
                   dict(d.get("figures", {})))


@dataclass
class CageCalibration:
    """Both views' calibration in the cage frame, and its quality figures."""
    method: str
    views: dict                    # view -> ViewCalibration
    cage: dict = field(default_factory=dict)      # name, file, sha256
    created_utc: str = ""
    figures: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {METHODS}, got {self.method!r}")
        if set(self.views) != set(VIEWS):
            raise CalibrationError("a calibration needs both the AP and the LAT view")

    def with_method(self, method) -> "CageCalibration":
        return CageCalibration(method, self.views, self.cage, self.created_utc, self.figures)

    # --- mapping ----------------------------------------------------------------
    def ray(self, view: str, uv_raw) -> Ray:
        """The X-ray through raw pixel (u, v) of ``view``, in the cage frame."""
        q = _uv(uv_raw, single=True)
        o, d = self._view(view).rays(q, self.method)
        return Ray(o[0], d[0])

    def locate_many(self, uv_ap, uv_lat) -> tuple[np.ndarray, np.ndarray]:
        """Closest points between AP and LAT rays (N, 3) and their gaps (N,) in mm."""
        a, b = _uv(uv_ap), _uv(uv_lat)
        if len(a) != len(b):
            raise CalibrationError(f"AP and LAT pixel lists differ in length ({len(a)} vs {len(b)})")
        o1, d1 = self.views["ap"].rays(a, self.method)
        o2, d2 = self.views["lat"].rays(b, self.method)
        try:
            pa, pb, gap = closest_points_between_lines(o1, d1, o2, d2)
        except GeometryError:
            raise CalibrationError("the AP and LAT rays are parallel: the views are too close in angle") from None
        return 0.5 * (pa + pb), gap

    def locate(self, uv_ap, uv_lat) -> tuple[np.ndarray, float]:
        p, g = self.locate_many(_uv(uv_ap, True), _uv(uv_lat, True))
        return p[0], float(g[0])

    def project(self, points_mm) -> dict:
        """Raw pixels {"ap": (N, 2), "lat": (N, 2)} of cage-frame points (N, 3) or (3,)."""
        X = np.asarray(points_mm, float)
        single = X.ndim == 1
        X = np.atleast_2d(X)
        if X.shape[1] != 3 or not np.all(np.isfinite(X)):
            raise CalibrationError(f"points must be finite (N, 3) in mm, got shape {X.shape}")
        out = {v: self.views[v].project(X, self.method) for v in VIEWS}
        return {v: (uv[0] if single else uv) for v, uv in out.items()}

    def _view(self, view):
        if view not in self.views:
            raise CalibrationError(f"view must be 'ap' or 'lat', got {view!r}")
        return self.views[view]

    # --- files ------------------------------------------------------------------
    def to_dict(self):
        return {"format": FORMAT, "method": self.method, "created_utc": self.created_utc,
                "cage": self.cage, "figures": self.figures,
                "views": {v: self.views[v].to_dict() for v in VIEWS}}

    def save(self, path) -> Path:
        """Write atomically (temp file in the same folder, then os.replace)."""
        return write_json_atomic(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path) -> "CageCalibration":
        """Read a ``fluoronav.calib/1`` file: its schema, then that each view maps pixels to rays
        (an invertible camera and plane homographies); ``CalibrationFileError``, one line, otherwise."""
        p = Path(path)
        d, _ = load_json(p, "calib", hint=_RERUN, error=CalibrationFileError)
        try:
            views = {v: ViewCalibration.from_dict(v, d["views"][v]) for v in VIEWS}
        except (ValueError, DistortionError) as e:
            raise CalibrationFileError(f"{p.name}: $.views: {e}: {_RERUN}") from None
        for v, view in views.items():
            _check_usable(p.name, v, view)
        return cls(d["method"], views, dict(d.get("cage", {})), str(d.get("created_utc", "")),
                   dict(d.get("figures", {})))


_RERUN = "re-run fluoronav calibrate"


def _check_usable(file: str, v: str, view: ViewCalibration) -> None:
    """What the schema cannot say: the camera and homographies are invertible, the plane records
    are consistent, and the image centre maps to a finite ray with either method."""
    def bad(where, what):
        return CalibrationFileError(f"{file}: $.views.{v}.{where}: {what}: {_RERUN}")
    if np.linalg.cond(view.P[:, :3]) > 1e12:
        raise bad("P", "is singular (a camera needs rank 3)")
    for i, plane in enumerate(view.planes):
        if np.linalg.cond(plane.H_img_plane) > 1e12:
            raise bad(f"planes[{i}].H_img_plane", "is singular")
        if np.max(np.abs(plane.axes @ plane.axes.T - np.eye(2))) > 1e-3:
            raise bad(f"planes[{i}].axes", "are not two orthogonal unit vectors")
        n = len(plane.ball_idx)
        for name in ("uv_raw", "residual_px", "residual_mm"):
            if len(getattr(plane, name)) != n:
                raise bad(f"planes[{i}].{name}", f"has {len(getattr(plane, name))} entries for {n} balls")
    centre = np.array([[(view.image_shape[1] - 1) / 2, (view.image_shape[0] - 1) / 2]])
    try:
        with np.errstate(all="ignore"):
            rays = [view.rays(centre, m) for m in METHODS]
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
        raise bad("distortion", f"does not map the image centre ({type(e).__name__})") from None
    if not all(np.all(np.isfinite(o)) and np.all(np.isfinite(dv)) for o, dv in rays):
        raise bad("P", "gives no finite ray through the image centre")


def _uv(x, single=False) -> np.ndarray:
    a = np.asarray(x, float)
    if single:
        if a.shape != (2,):
            raise CalibrationError(f"a pixel must be (u, v), got shape {a.shape}")
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 2:
        raise CalibrationError(f"pixels must have shape (N, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CalibrationError("pixel coordinates must be finite")
    return a
