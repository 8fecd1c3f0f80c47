"""Signed-distance primitives (negative inside, mm) for the procedural phantom.

Each takes coordinates in the primitive's own frame as broadcastable arrays.
Formulas after I. Quilez, "distance functions" (iquilezles.org): rounded box,
capsule, approximate ellipse/ellipsoid (k0*(k0-1)/k1) and the polynomial smooth
minimum. ``ellipse_exact`` is the closest point on an ellipse by the
curvature-centre iteration (Chou, 2017, "0xfaded"), converged to ~1e-6 mm in 4 iterations (checked against a 200 000-point polygon);
it is what the pedicle ground truth uses, so grading is exact.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ellipse_approx", "ellipse_exact", "ellipsoid_approx", "round_box", "capsule",
           "smin", "smax", "occupancy"]


def ellipse_approx(x, y, a, b):
    """Approximate signed distance to the ellipse (x/a)^2 + (y/b)^2 = 1 (exact on the curve)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    inner = -np.minimum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = k0 * (k0 - 1.0) / k1
    return np.where(k1 > 1e-12, d, inner)


def ellipse_exact(x, y, a, b, iterations: int = 4):
    """Signed Euclidean distance to the ellipse with semi-axes a (x) and b (y); arrays broadcast."""
    px, py = np.abs(x), np.abs(y)
    tx = np.full(np.broadcast(px, py, a, b).shape, np.sqrt(0.5))
    ty = tx.copy()
    for _ in range(iterations):
        ex = (a * a - b * b) * tx ** 3 / a
        ey = (b * b - a * a) * ty ** 3 / b
        rx, ry = a * tx - ex, b * ty - ey
        qx, qy = px - ex, py - ey
        r = np.hypot(rx, ry)
        q = np.maximum(np.hypot(qx, qy), 1e-12)
        tx = np.clip((qx * r / q + ex) / a, 0.0, 1.0)
        ty = np.clip((qy * r / q + ey) / b, 0.0, 1.0)
        t = np.maximum(np.hypot(tx, ty), 1e-12)
        tx, ty = tx / t, ty / t
    dist = np.hypot(px - a * tx, py - b * ty)
    inside = (px / a) ** 2 + (py / b) ** 2 < 1.0
    return np.where(inside, -dist, dist)


def ellipsoid_approx(x, y, z, a, b, c):
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2 + (z / (c * c)) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = k0 * (k0 - 1.0) / k1
    return np.where(k1 > 1e-12, d, -min(a, b, c))


def round_box(x, y, z, hx, hy, hz, r):
    """Box of half-sizes (hx, hy, hz) with edges rounded by r (r <= every half-size)."""
    qx, qy, qz = np.abs(x) - (hx - r), np.abs(y) - (hy - r), np.abs(z) - (hz - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    return outside + np.minimum(np.maximum(np.maximum(qx, qy), qz), 0) - r


def capsule(x, y, z, half_length, r0, r1):
    """Capsule along the local z axis from z=-half_length (radius r0) to +half_length (radius r1)."""
    t = np.clip((z + half_length) / (2 * half_length), 0.0, 1.0)
    dz = z - (t * 2 * half_length - half_length)
    return np.sqrt(x * x + y * y + dz * dz) - (r0 + (r1 - r0) * t)


def smin(a, b, k):
    """Polynomial smooth minimum (union with a fillet of size ~k mm); k=0 is the plain minimum."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a, b, k):
    """Smooth maximum (intersection / subtraction with -b)."""
    return -smin(-a, -b, k)


def occupancy(d, voxel_mm):
    """Fraction of a voxel inside the surface d=0: a box-filtered edge, so edges are anti-aliased."""
    return np.clip(0.5 - d / voxel_mm, 0.0, 1.0)
