"""The patient's motion in the simulated room: breathing and a bump, as a rigid motion of the
patient (and of the marker clamped to their spine) in the world frame.

Breathing: a sinusoid of 1-3 mm amplitude (peak) at 0.2-0.3 Hz, mostly along the world's up axis
(prone patient: the back rises and falls), a little along the table. A bump: at ``bump_at_s`` the
patient is displaced by ``bump_mm`` (5-20 mm) in a horizontal direction, with a small turn about
the site, over ``bump_ramp_s`` (a smooth step), and stays there. Times in seconds, millimetres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["PatientMotion", "sample_motion", "still"]


def still(t: float) -> np.ndarray:
    return np.eye(4)


@dataclass(frozen=True)
class PatientMotion:
    """``motion(t) -> M`` (4x4, world -> world): where the patient is at ``t`` relative to the start.

    ``centre_mm``: the point the bump's turn is about (the site); ``breath_dir`` and ``bump_dir``
    unit vectors (world); ``bump_at_s`` None: no bump."""
    centre_mm: tuple = (0.0, 0.0, 0.0)
    breath_mm: float = 2.0
    breath_hz: float = 0.25
    breath_dir: tuple = (0.0, 1.0, 0.0)
    breath_phase: float = 0.0
    bump_at_s: float | None = None
    bump_mm: float = 10.0
    bump_dir: tuple = (1.0, 0.0, 0.0)
    bump_deg: float = 1.0
    bump_axis: tuple = (0.0, 1.0, 0.0)
    bump_ramp_s: float = 0.2

    def __post_init__(self):
        if not (self.breath_mm >= 0 and self.breath_hz > 0 and self.bump_mm >= 0 and self.bump_ramp_s > 0):
            raise ValueError("breathing amplitude >= 0, frequency > 0, bump >= 0 and its ramp > 0")

    def breathing(self, t: float) -> np.ndarray:
        """The breathing displacement (mm, world) at ``t``."""
        d = np.asarray(self.breath_dir, float)
        return self.breath_mm * math.sin(2 * math.pi * self.breath_hz * t + self.breath_phase) * d / np.linalg.norm(d)

    def bump_fraction(self, t: float) -> float:
        """0 before the bump, 1 after it, a smooth (cosine) step during its ramp."""
        if self.bump_at_s is None or t <= self.bump_at_s:
            return 0.0
        x = min(1.0, (t - self.bump_at_s) / self.bump_ramp_s)
        return 0.5 - 0.5 * math.cos(math.pi * x)

    def __call__(self, t: float) -> np.ndarray:
        f = self.bump_fraction(t)
        c = np.asarray(self.centre_mm, float)
        M = np.eye(4)
        if f > 0:
            axis = np.asarray(self.bump_axis, float)
            R = Rotation.from_rotvec(axis / np.linalg.norm(axis) * math.radians(self.bump_deg) * f).as_matrix()
            d = np.asarray(self.bump_dir, float)
            M[:3, :3] = R
            M[:3, 3] = c - R @ c + f * self.bump_mm * d / np.linalg.norm(d)
        M[:3, 3] += self.breathing(t)
        return M


def sample_motion(seed: int, centre_mm, up, along, bump_at_s: float | None = 3.0,
                  bump_mm: float | None = None) -> PatientMotion:
    """Seeded breathing (1-3 mm at 0.2-0.3 Hz, along ``up`` with up to a fifth along ``along``) and
    a bump (5-20 mm unless ``bump_mm``, horizontal, a turn of 0.5-2 deg about ``up``)."""
    rng = np.random.default_rng([int(seed), 29])
    up, along = np.asarray(up, float), np.asarray(along, float)
    up, along = up / np.linalg.norm(up), along / np.linalg.norm(along)
    across = np.cross(up, along)
    breath_dir = up + rng.uniform(-0.2, 0.2) * along
    phi = rng.uniform(0, 2 * math.pi)
    bump_dir = math.cos(phi) * along + math.sin(phi) * across
    return PatientMotion(tuple(np.asarray(centre_mm, float)), float(rng.uniform(1.0, 3.0)),
                         float(rng.uniform(0.2, 0.3)), tuple(breath_dir), float(rng.uniform(0, 2 * math.pi)),
                         bump_at_s, float(rng.uniform(5.0, 20.0) if bump_mm is None else bump_mm), tuple(bump_dir),
                         float(rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])), tuple(up), 0.2)
