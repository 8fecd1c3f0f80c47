"""Cone-beam (C-arm) imaging geometry: a point source and a flat detector.

The ground-truth camera of the simulated operating room and the model that
calibration estimates. Coordinates in mm in a 3D frame of the caller's choice
(the cage frame for a calibration, the room frame in the simulator). Pixel
coordinates ``(u, v)`` = (column, row) of the raw image; the centre of the
top-left pixel is ``(0, 0)`` (DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.geometry.pixels import in_image
from core.geometry.rigid import GeometryError, Ray, apply, unit

__all__ = ["ConeBeamGeometry"]


@dataclass(frozen=True)
class ConeBeamGeometry:
    """A pinhole projection: ``source_mm`` and a detector plane.

    ``detector_origin_mm`` is the centre of pixel (0, 0); ``detector_u`` and
    ``detector_v`` are the unit directions of increasing column and row;
    ``pixel_spacing_mm`` is (column spacing, row spacing); ``shape`` is
    (rows, cols). The detector normal ``u x v`` need not point at the source.
    """
    source_mm: np.ndarray
    detector_origin_mm: np.ndarray
    detector_u: np.ndarray
    detector_v: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    shape: tuple[int, int]
    _P: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        s = np.asarray(self.source_mm, float)
        o = np.asarray(self.detector_origin_mm, float)
        u = unit(np.asarray(self.detector_u, float))
        v = np.asarray(self.detector_v, float)
        v = unit(v - (v @ u) * u)  # make exactly orthogonal
        for name, a in (("source_mm", s), ("detector_origin_mm", o)):
            if a.shape != (3,) or not np.all(np.isfinite(a)):
                raise GeometryError(f"{name} must be a finite 3-vector")
        su, sv = (float(x) for x in self.pixel_spacing_mm)
        if not (su > 0 and sv > 0):
            raise GeometryError(f"pixel spacing must be positive, got {self.pixel_spacing_mm}")
        rows, cols = (int(x) for x in self.shape)
        if rows < 1 or cols < 1:
            raise GeometryError(f"detector shape must be positive, got {self.shape}")
        n = np.cross(u, v)
        if abs((s - o) @ n) < 1e-6:
            raise GeometryError("the source lies in the detector plane")
        object.__setattr__(self, "source_mm", s)
        object.__setattr__(self, "detector_origin_mm", o)
        object.__setattr__(self, "detector_u", u)
        object.__setattr__(self, "detector_v", v)
        object.__setattr__(self, "pixel_spacing_mm", (su, sv))
        object.__setattr__(self, "shape", (rows, cols))
        object.__setattr__(self, "_P", self._projection_matrix())

    # --- derived quantities -------------------------------------------------
    @property
    def detector_normal(self) -> np.ndarray:
        """Unit normal of the detector, pointing from the detector towards the source."""
        n = np.cross(self.detector_u, self.detector_v)
        return n if (self.source_mm - self.detector_origin_mm) @ n > 0 else -n

    @property
    def source_to_detector_mm(self) -> float:
        """Perpendicular distance from the source to the detector plane (SID)."""
        return float(abs((self.source_mm - self.detector_origin_mm) @ self.detector_normal))

    @property
    def principal_point_px(self) -> np.ndarray:
        """Pixel (u, v) of the foot of the perpendicular from the source to the detector."""
        d = self.source_mm - self.detector_origin_mm
        return np.array([d @ self.detector_u / self.pixel_spacing_mm[0],
                         d @ self.detector_v / self.pixel_spacing_mm[1]])

    @property
    def projection_matrix(self) -> np.ndarray:
        """3x4 matrix P with ``[u v 1] ~ P @ [x y z 1]`` (copy)."""
        return self._P.copy()

    def _projection_matrix(self) -> np.ndarray:
        su, sv = self.pixel_spacing_mm
        # Write x - o = a u + b v + mu w with w = s - o (solve with M = [u v w]).
        # The line from s through x meets the detector plane (w-coefficient 0)
        # at o + (a u + b v) / (1 - mu): homogeneous pixel [a/su, b/sv, 1 - mu].
        M = np.column_stack([self.detector_u, self.detector_v, self.source_mm - self.detector_origin_mm])
        A = np.diag([1 / su, 1 / sv, 1.0]) @ np.linalg.inv(M)
        P = np.zeros((3, 4))
        P[:2, :3] = A[:2]
        P[:2, 3] = -A[:2] @ self.detector_origin_mm
        P[2, :3] = -A[2]
        P[2, 3] = 1 + A[2] @ self.detector_origin_mm
        return P

    # --- mapping ------------------------------------------------------------
    def project(self, points_mm) -> np.ndarray:
        """Pixel (u, v) of 3D points (N, 3) or (3,). Points at the source give inf."""
        p = np.asarray(points_mm, float)
        single = p.ndim == 1
        p = np.atleast_2d(p)
        if p.shape[1] != 3:
            raise GeometryError(f"points must have shape (N, 3), got {p.shape}")
        h = p @ self._P[:, :3].T + self._P[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = h[:, :2] / h[:, 2:3]
        return uv[0] if single else uv

    def pixel_to_detector_mm(self, uv) -> np.ndarray:
        """3D position on the detector plane of pixel coordinates (N, 2) or (2,)."""
        q = np.asarray(uv, float)
        return (self.detector_origin_mm + np.multiply.outer(q[..., 0] * self.pixel_spacing_mm[0], self.detector_u)
                + np.multiply.outer(q[..., 1] * self.pixel_spacing_mm[1], self.detector_v))

    def ray(self, uv) -> Ray:
        """The X-ray from the source through pixel (u, v)."""
        d = self.pixel_to_detector_mm(np.asarray(uv, float).reshape(2))
        return Ray(self.source_mm, d - self.source_mm)

    def contains(self, uv, margin_px: float = 0.0) -> np.ndarray:
        """True where pixel coordinates lie on the detector (at least ``margin_px`` inside)."""
        return in_image(uv, self.shape, margin_px)

    def transformed(self, T_a_b) -> "ConeBeamGeometry":
        """This geometry (given in frame b) expressed in frame a."""
        R = np.asarray(T_a_b, float)[:3, :3]
        return ConeBeamGeometry(apply(T_a_b, self.source_mm), apply(T_a_b, self.detector_origin_mm),
                                R @ self.detector_u, R @ self.detector_v, self.pixel_spacing_mm, self.shape)
