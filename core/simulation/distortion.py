"""Image-intensifier distortion: radial pincushion plus the earth field's S-distortion.

The forward model maps an ideal (pinhole) pixel to the raw pixel where the II
shows it. With ρ = |p - c| / R (R: the field's radius in px, c: its centre):
- pincushion (curved input phosphor): the radius grows by (1 + k1 ρ² + k2 ρ⁴);
- S-distortion (the earth's magnetic field bends the electrons, more so at the
  edge): a rotation by φ(ρ) = s ρ² about c, plus a sideways shift (sx, sy) ρ²
  along the field's direction in the image.
The field seen by the II depends on how the C-arm is oriented, so ``for_pose``
makes the S-terms vary with the primary/secondary angles (a smooth, seeded law).
``raw_to_ideal`` inverts the model by fixed-point iteration to 1e-6 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.calibration.distortion import DistortionError  # one error for every distortion law

__all__ = ["DistortionError", "IIDistortion"]


@dataclass(frozen=True)
class IIDistortion:
    """Distortion of one image-intensifier pose; pixel coordinates (u, v) of the raw image."""
    centre_px: tuple[float, float]
    radius_px: float
    k1: float = 0.06
    k2: float = 0.01
    s: float = 0.02
    shift_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if not (self.radius_px > 0):
            raise DistortionError(f"field radius must be positive, got {self.radius_px}")
        if not (-0.3 < self.k1 < 0.3 and -0.3 < self.k2 < 0.3 and abs(self.s) < 0.2):
            raise DistortionError("distortion coefficients out of the physical range (|k| < 0.3, |s| < 0.2)")

    @classmethod
    def for_pose(cls, centre_px, radius_px, primary_deg=0.0, secondary_deg=0.0, seed: int = 0,
                 k1: float = 0.06, k2: float = 0.01) -> "IIDistortion":
        """Distortion at a C-arm pose: the earth field's projection on the II changes with the angles."""
        rng = np.random.default_rng(seed)
        a0, b0, s0 = rng.uniform(-np.pi, np.pi), rng.uniform(-np.pi, np.pi), rng.uniform(0.01, 0.03)
        p, q = math.radians(primary_deg), math.radians(secondary_deg)
        s = s0 * math.cos(p + a0) + 0.4 * s0 * math.sin(q + b0)
        mag = 0.004 * radius_px
        shift = (mag * math.sin(p + b0), mag * math.cos(q - a0))
        return cls(tuple(map(float, centre_px)), float(radius_px), k1, k2, float(s), shift)

    def _forward(self, u, v):
        cu, cv = self.centre_px
        du, dv = u - cu, v - cv
        rho2 = (du * du + dv * dv) * (1.0 / self.radius_px ** 2)
        g = 1 + self.k1 * rho2 + self.k2 * rho2 * rho2
        phi = self.s * rho2
        cs, sn = np.cos(phi) * g, np.sin(phi) * g
        return (cu + cs * du - sn * dv + self.shift_px[0] * rho2,
                cv + sn * du + cs * dv + self.shift_px[1] * rho2)

    def ideal_to_raw(self, uv) -> np.ndarray:
        """Raw pixel of ideal pixel coordinates (..., 2)."""
        p = np.asarray(uv, float)
        return np.stack(self._forward(p[..., 0], p[..., 1]), -1)

    def raw_to_ideal(self, uv, tol_px: float = 1e-7, max_iter: int = 30, initial=None) -> np.ndarray:
        """Ideal pixel of raw pixel coordinates (..., 2): Newton's method on ``ideal_to_raw``.

        ``initial``: an optional first guess (..., 2), e.g. interpolated from a cached grid.
        """
        q = np.asarray(uv, float)
        qu, qv = q[..., 0], q[..., 1]
        p0 = q if initial is None else np.where(np.isfinite(initial), initial, q)
        u, v = p0[..., 0].copy(), p0[..., 1].copy()
        h = 1e-3
        for _ in range(max_iter):
            fu, fv = self._forward(u, v)
            ru, rv = qu - fu, qv - fv
            if not (np.any(np.abs(ru) > tol_px) or np.any(np.abs(rv) > tol_px)):
                return np.stack([u, v], -1)
            a, c = self._forward(u + h, v)
            b, d = self._forward(u, v + h)
            a, c, b, d = (a - fu) / h, (c - fv) / h, (b - fu) / h, (d - fv) / h  # Jacobian [[a b] [c d]]
            det = a * d - b * c
            u, v = u + (d * ru - b * rv) / det, v + (a * rv - c * ru) / det
        raise DistortionError("distortion inversion did not converge: the point is far outside the field")
