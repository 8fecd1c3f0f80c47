"""Rigid transforms, rays and planes (DESIGN.md conventions).

Transforms are 4x4 numpy arrays named ``T_a_b``: they map coordinates in frame b
to frame a (``p_a = T_a_b @ p_b``); compose as ``T_a_c = T_a_b @ T_b_c``.
Millimetres and radians throughout. Rotations are built on
``scipy.spatial.transform.Rotation``, never by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "GeometryError", "make_transform", "invert", "compose", "apply",
    "rotation_part", "translation_part", "from_rotvec", "from_euler",
    "to_rotvec", "is_rigid", "rotation_angle", "Ray", "Plane",
    "closest_points_between_rays", "closest_points_between_lines", "triangulate_rays",
    "intersect_ray_plane",
    "unit",
]


class GeometryError(ValueError):
    """Bad geometric input: wrong shape, non-finite values, degenerate configuration."""


def _vec3(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.shape != (3,):
        raise GeometryError(f"{name} must be a 3-vector, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{name} has non-finite values: {a}")
    return a


def _mat4(T, name: str = "transform") -> np.ndarray:
    a = np.asarray(T, dtype=float)
    if a.shape != (4, 4):
        raise GeometryError(f"{name} must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{name} has non-finite values")
    return a


def unit(v) -> np.ndarray:
    """The unit vector along ``v`` (last axis); raises on a zero vector."""
    a = np.asarray(v, dtype=float)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise GeometryError("cannot normalise a zero-length vector")
    return a / n


def make_transform(R=None, t=None) -> np.ndarray:
    """4x4 rigid transform from a 3x3 rotation (or a ``Rotation``) and a translation in mm."""
    T = np.eye(4)
    if R is not None:
        if hasattr(R, "as_matrix"):   # a scipy Rotation
            R = R.as_matrix()
        R = np.asarray(R, dtype=float)
        if R.shape != (3, 3):
            raise GeometryError(f"rotation must be 3x3, got shape {R.shape}")
        T[:3, :3] = R
    if t is not None:
        T[:3, 3] = _vec3(t, "translation")
    return T


def from_rotvec(rotvec, t=None) -> np.ndarray:
    """Transform from an axis-angle vector (radians) and a translation (mm)."""
    from scipy.spatial.transform import Rotation  # lazy: ~0.5 s of start-up
    return make_transform(Rotation.from_rotvec(_vec3(rotvec, "rotation vector")), t)


def from_euler(seq: str, angles, t=None) -> np.ndarray:
    """Transform from Euler angles in radians (scipy sequence, e.g. ``"xyz"``)."""
    from scipy.spatial.transform import Rotation  # lazy: ~0.5 s of start-up
    return make_transform(Rotation.from_euler(seq, angles), t)


def rotation_part(T) -> np.ndarray:
    return _mat4(T)[:3, :3].copy()


def translation_part(T) -> np.ndarray:
    return _mat4(T)[:3, 3].copy()


def to_rotvec(T) -> np.ndarray:
    """Axis-angle vector (radians) of the rotation of ``T``."""
    from scipy.spatial.transform import Rotation  # lazy: ~0.5 s of start-up
    return Rotation.from_matrix(rotation_part(T)).as_rotvec()


def rotation_angle(T) -> float:
    """Angle of the rotation of ``T`` in radians, in [0, pi]."""
    return float(np.linalg.norm(to_rotvec(T)))


def is_rigid(T, tol: float = 1e-6) -> bool:
    """True when ``T`` is a proper rigid transform (orthonormal, det +1, last row 0 0 0 1)."""
    a = np.asarray(T, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return False
    R = a[:3, :3]
    return (np.allclose(R @ R.T, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1) < tol
            and np.allclose(a[3], [0, 0, 0, 1], atol=tol))


def invert(T) -> np.ndarray:
    """Inverse of a rigid transform: ``T_b_a`` from ``T_a_b`` (exact, no general inverse)."""
    T = _mat4(T)
    R, t = T[:3, :3], T[:3, 3]
    Ti = np.eye(4)
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ t
    return Ti


def compose(*Ts) -> np.ndarray:
    """``compose(T_a_b, T_b_c, ...)`` = ``T_a_b @ T_b_c @ ...``."""
    if not Ts:
        return np.eye(4)
    out = _mat4(Ts[0])
    for T in Ts[1:]:
        out = out @ _mat4(T)
    return out


def apply(T, points) -> np.ndarray:
    """Map points (3,) or (N, 3) from frame b to frame a with ``T_a_b``."""
    T = _mat4(T)
    p = np.asarray(points, dtype=float)
    if p.shape[-1] != 3:
        raise GeometryError(f"points must have 3 coordinates, got shape {p.shape}")
    return p @ T[:3, :3].T + T[:3, 3]


@dataclass(frozen=True)
class Ray:
    """A ray ``origin + s * direction`` (direction is unit length), in mm."""
    origin: np.ndarray
    direction: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "origin", _vec3(self.origin, "ray origin"))
        object.__setattr__(self, "direction", unit(_vec3(self.direction, "ray direction")))

    def at(self, s) -> np.ndarray:
        return self.origin + np.multiply.outer(np.asarray(s, float), self.direction)

    def distance_to(self, point) -> float:
        d = _vec3(point, "point") - self.origin
        return float(np.linalg.norm(d - (d @ self.direction) * self.direction))

    def transformed(self, T_a_b) -> "Ray":
        """This ray (given in frame b) expressed in frame a."""
        return Ray(apply(T_a_b, self.origin), rotation_part(T_a_b) @ self.direction)


@dataclass(frozen=True)
class Plane:
    """A plane through ``point`` with unit ``normal``."""
    point: np.ndarray
    normal: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "point", _vec3(self.point, "plane point"))
        object.__setattr__(self, "normal", unit(_vec3(self.normal, "plane normal")))

    @classmethod
    def fit(cls, points) -> tuple["Plane", float]:
        """Least-squares plane through (N>=3, 3) points; returns (plane, RMS distance in mm)."""
        p = np.asarray(points, dtype=float)
        if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
            raise GeometryError(f"plane fit needs at least 3 points of shape (N, 3), got {p.shape}")
        c = p.mean(axis=0)
        _, s, vt = np.linalg.svd(p - c)
        if s[1] < 1e-9 * max(s[0], 1.0):
            raise GeometryError("plane fit: points are collinear")
        plane = cls(c, vt[2])
        return plane, float(np.sqrt(np.mean(plane.signed_distance(p) ** 2)))

    def signed_distance(self, points) -> np.ndarray:
        return (np.asarray(points, dtype=float) - self.point) @ self.normal

    def project(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=float)
        return p - np.multiply.outer(self.signed_distance(p), self.normal)


def intersect_ray_plane(ray: Ray, plane: Plane) -> np.ndarray:
    """Point where ``ray`` (as a full line) meets ``plane``; raises when parallel."""
    denom = ray.direction @ plane.normal
    if abs(denom) < 1e-12:
        raise GeometryError("ray is parallel to the plane")
    s = ((plane.point - ray.origin) @ plane.normal) / denom
    return ray.at(s)


def closest_points_between_lines(o1, d1, o2, d2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest points of line pairs ``o1 + s d1`` and ``o2 + t d2`` (each (N, 3), unit
    directions) and their gaps (N,) in mm. Raises ``GeometryError`` when a pair is parallel
    (its closest points are not unique)."""
    o1, d1, o2, d2 = (np.atleast_2d(np.asarray(a, float)) for a in (o1, d1, o2, d2))
    w0 = o1 - o2
    c = np.sum(d1 * d2, axis=1)
    denom = 1.0 - c * c
    if np.any(denom < 1e-12):
        raise GeometryError("the two rays are parallel: the views are too close in angle")
    e, f = np.sum(d1 * w0, axis=1), np.sum(d2 * w0, axis=1)
    s = (c * f - e) / denom
    t = (f - c * e) / denom
    pa, pb = o1 + s[:, None] * d1, o2 + t[:, None] * d2
    return pa, pb, np.linalg.norm(pa - pb, axis=1)


def closest_points_between_rays(a: Ray, b: Ray) -> tuple[np.ndarray, np.ndarray, float]:
    """Closest points on two lines and the gap between them (mm).

    Returns ``(point_on_a, point_on_b, gap)``. Raises ``GeometryError`` when the
    lines are parallel (their closest points are not unique).
    """
    pa, pb, gap = closest_points_between_lines(a.origin, a.direction, b.origin, b.direction)
    return pa[0], pb[0], float(gap[0])


def triangulate_rays(a: Ray, b: Ray) -> tuple[np.ndarray, float]:
    """Midpoint of the common perpendicular of two rays and its length (the ray gap, mm)."""
    pa, pb, gap = closest_points_between_rays(a, b)
    return 0.5 * (pa + pb), gap
