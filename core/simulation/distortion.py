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


class DistortionError(ValueError):
    """Distortion parameters or coordinates are invalid."""


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

    def ideal_to_raw(self, uv) -> np.ndarray:
        """Raw pixel of ideal pixel coordinates (..., 2)."""
        p = np.asarray(uv, float)
        c = np.asarray(self.centre_px)
        d = p - c
        rho2 = np.sum(d * d, axis=-1, keepdims=True) / self.radius_px ** 2
        d = d * (1 + self.k1 * rho2 + self.k2 * rho2 ** 2)
        phi = self.s * rho2
        cs, sn = np.cos(phi), np.sin(phi)
        rot = np.concatenate([cs * d[..., :1] - sn * d[..., 1:], sn * d[..., :1] + cs * d[..., 1:]], -1)
        return c + rot + np.asarray(self.shift_px) * rho2

    def raw_to_ideal(self, uv, tol_px: float = 1e-6, max_iter: int = 100) -> np.ndarray:
        """Ideal pixel of raw pixel coordinates (..., 2): inverse of ``ideal_to_raw``."""
        q = np.asarray(uv, float)
        p = q.copy()
        for _ in range(max_iter):
            r = q - self.ideal_to_raw(p)
            p = p + r
            if not np.any(np.abs(r) > tol_px):
                return p
        raise DistortionError("distortion inversion did not converge: the point is far outside the field")
