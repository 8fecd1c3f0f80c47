"""Fuzzy variable admittance for hand guiding (robot paper II.B.2, figure 5; Mao et al. [35]).

Per task axis ``M a + D v = F`` with the operator's wrench after tool-weight
compensation. The damping ``D`` is chosen each cycle by a zero-order Sugeno fuzzy
system from the force magnitude |F| and its rate d|F|/dt (a large, growing push
means "go": low damping; a small or fading push means "place it": high damping),
between a floor and a maximum that both follow the operator's arm stiffness,
estimated by recursive least squares (a stiff arm destabilises a lightly damped
admittance, Dimeas & Aspragathos [57]). Dead-bands 1.8 N and 0.1 N*m (table 7).

Two modes (the paper's button near the sensor): position drag (force in the base
frame -> tool-tip velocity, orientation fixed) and orientation drag (torque about the
joint-4 and joint-5 axes -> theta_x, theta_y rates, pivoting about the flange).
Units: N, N*m, mm, rad, s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AdmittanceError", "AdmittanceParameters", "FuzzyDamping", "ArmStiffnessRLS",
           "AdmittanceAxisGroup", "FuzzyAdmittance", "POSITION", "ORIENTATION", "dead_band"]

POSITION, ORIENTATION = "position", "orientation"


class AdmittanceError(ValueError):
    """Bad admittance parameters or input."""


def dead_band(v, width: float) -> np.ndarray:
    """Shrink the vector's magnitude by ``width`` (zero inside): no jump at the edge."""
    v = np.asarray(v, float)
    n = float(np.linalg.norm(v))
    return v * (max(0.0, n - width) / n) if n > 0 else v * 0.0


def _tri(x, a, b, c):
    """Triangular membership with feet a, c and peak b (shoulders open at the ends)."""
    if x <= a:
        return 1.0 if a == b else 0.0
    if x >= c:
        return 1.0 if b == c else 0.0
    return (x - a) / (b - a) if x < b else (c - x) / (c - b)


class FuzzyDamping:
    """Rule table (rows |F| small/medium/large, columns rate falling/steady/rising) giving a
    damping level in [0, 1] (0 = the floor, 1 = the maximum); weighted-average output."""

    LEVELS = np.array([[1.0, 0.8, 0.5],
                       [0.8, 0.5, 0.2],
                       [0.5, 0.2, 0.0]])

    def __init__(self, force_ref: float, rate_ref: float):
        if force_ref <= 0 or rate_ref <= 0:
            raise AdmittanceError("fuzzy damping needs positive force and rate scales")
        self.force_ref, self.rate_ref = float(force_ref), float(rate_ref)

    def level(self, magnitude: float, rate: float) -> float:
        f = magnitude / self.force_ref
        r = rate / self.rate_ref
        mf = (_tri(f, 0.0, 0.0, 0.5), _tri(f, 0.0, 0.5, 1.0), _tri(f, 0.5, 1.0, 1.0))
        mr = (_tri(r, -1.0, -1.0, 0.0), _tri(r, -1.0, 0.0, 1.0), _tri(r, 0.0, 1.0, 1.0))
        w = np.outer(mf, mr)
        s = w.sum()
        return float((w * self.LEVELS).sum() / s) if s > 0 else 1.0


class ArmStiffnessRLS:
    """Operator arm stiffness k (N/mm or N*m/rad) from dF = -k dx + b dv, recursive least
    squares with forgetting (Mao et al. [35]); bounded to [k_min, k_max]."""

    def __init__(self, k0: float, k_min: float, k_max: float, forgetting: float = 0.995):
        self.k_min, self.k_max, self.lam = float(k_min), float(k_max), float(forgetting)
        self.theta = np.array([float(k0), 0.0])
        self.P = np.eye(2) * 1e3

    @property
    def stiffness(self) -> float:
        return float(np.clip(self.theta[0], self.k_min, self.k_max))

    def update(self, dF: float, dx: float, dv: float) -> float:
        phi = np.array([-dx, dv])
        if abs(dx) < 1e-9 and abs(dv) < 1e-9:
            return self.stiffness          # no excitation: keep the estimate
        Pphi = self.P @ phi
        gain = Pphi / (self.lam + phi @ Pphi)
        self.theta = self.theta + gain * (dF - phi @ self.theta)
        self.P = (self.P - np.outer(gain, Pphi)) / self.lam
        if not np.all(np.isfinite(self.P)) or np.trace(self.P) > 1e6:
            self.P = np.eye(2) * 1e3            # forgetting without excitation: bound the covariance
        if not np.all(np.isfinite(self.theta)):
            self.theta = np.array([self.k_min, 0.0])
        return self.stiffness


@dataclass(frozen=True)
class AdmittanceParameters:
    """One axis group: virtual mass M, damping bounds, and scales. Units per group:
    position N, mm/s, N/(mm/s), N s^2/mm; orientation N*m, rad/s, N*m*s/rad, N*m*s^2/rad."""
    mass: float
    damping_floor: float        # lowest damping, any arm
    damping_max: float          # highest damping with a relaxed arm
    damping_per_stiffness: float  # extra damping per unit of arm stiffness (max and floor)
    dead_band: float
    force_ref: float            # "large" push for the fuzzy system
    rate_ref: float             # "fast-changing" push
    stiffness0: float
    stiffness_min: float
    stiffness_max: float

    def __post_init__(self):
        if min(self.mass, self.damping_floor, self.force_ref, self.rate_ref) <= 0 or \
                self.damping_max <= self.damping_floor or self.dead_band < 0:
            raise AdmittanceError("admittance needs mass, damping floor < max, scales > 0")


POSITION_DEFAULTS = AdmittanceParameters(
    mass=0.004, damping_floor=0.2, damping_max=1.0, damping_per_stiffness=0.3, dead_band=1.8,
    force_ref=15.0, rate_ref=60.0, stiffness0=0.3, stiffness_min=0.0, stiffness_max=2.0)
ORIENTATION_DEFAULTS = AdmittanceParameters(
    mass=0.05, damping_floor=3.0, damping_max=15.0, damping_per_stiffness=0.05, dead_band=0.1,
    force_ref=2.0, rate_ref=8.0, stiffness0=20.0, stiffness_min=0.0, stiffness_max=100.0)


class AdmittanceAxisGroup:
    """Admittance of a group of axes sharing one damping (vector form keeps the direction)."""

    def __init__(self, params: AdmittanceParameters, n_axes: int, rate_filter_s: float = 0.02,
                 variable: bool = True):
        self.p = params
        self.fuzzy = FuzzyDamping(params.force_ref, params.rate_ref)
        self.rls = ArmStiffnessRLS(params.stiffness0, params.stiffness_min, params.stiffness_max)
        self.v = np.zeros(n_axes)
        self.variable = variable
        self.tau = rate_filter_s
        self._mag = 0.0
        self._rate = 0.0
        self._prev_F = None
        self._prev_speed = 0.0
        self.damping = params.damping_max

    def reset(self) -> None:
        self.v[:] = 0.0
        self._mag, self._rate, self._prev_F, self._prev_speed = 0.0, 0.0, None, 0.0

    def damping_bounds(self) -> tuple[float, float]:
        k = self.rls.stiffness
        p = self.p
        extra = p.damping_per_stiffness * k
        floor = max(p.damping_floor + extra, 2 * 0.7 * math.sqrt(p.mass * k))
        return floor, max(p.damping_max + extra, floor * 1.01)

    def step(self, F, dt: float) -> np.ndarray:
        """One cycle: implicit Euler of M dv/dt + D v = F_dead-banded; returns v."""
        F = dead_band(F, self.p.dead_band)
        mag = float(np.linalg.norm(F))
        a = dt / (self.tau + dt)
        self._rate += a * ((mag - self._mag) / dt - self._rate)
        speed = float(np.linalg.norm(self.v))
        if self.variable and self._prev_F is not None and mag > 0:
            # the hand follows the tool: force change against the tool's displacement and
            # speed change along the push (Mao et al. [35])
            self.rls.update(mag - self._prev_F, speed * dt, speed - self._prev_speed)
        self._prev_F, self._mag, self._prev_speed = mag, mag, speed
        lo, hi = self.damping_bounds()
        level = self.fuzzy.level(mag, self._rate) if self.variable else 1.0
        self.damping = lo + level * (hi - lo)
        M = self.p.mass
        self.v = (M / dt * self.v + F) / (M / dt + self.damping)
        return self.v


class FuzzyAdmittance:
    """Hand-wrench (base frame, torque about the flange) to task velocity
    ``[x', y', z' (mm/s), theta_x', theta_y' (rad/s)]`` in the selected drag mode."""

    def __init__(self, position: AdmittanceParameters = POSITION_DEFAULTS,
                 orientation: AdmittanceParameters = ORIENTATION_DEFAULTS, variable: bool = True):
        self.pos = AdmittanceAxisGroup(position, 3, variable=variable)
        self.rot = AdmittanceAxisGroup(orientation, 2, variable=variable)
        self.mode = POSITION

    def set_mode(self, mode: str) -> None:
        if mode not in (POSITION, ORIENTATION):
            raise AdmittanceError(f"drag mode must be '{POSITION}' or '{ORIENTATION}', not {mode!r}")
        if mode != self.mode:
            self.reset()
        self.mode = mode

    def reset(self) -> None:
        self.pos.reset()
        self.rot.reset()

    def step(self, wrench_base, theta_x: float, dt: float) -> np.ndarray:
        w = np.asarray(wrench_base, float)
        if w.shape != (6,) or not np.all(np.isfinite(w)) or dt <= 0:
            raise AdmittanceError("admittance needs a finite 6-vector wrench and dt > 0")
        out = np.zeros(5)
        if self.mode == POSITION:
            out[:3] = self.pos.step(w[:3], dt)
        else:
            # torque about the joint-4 axis (base x) and the joint-5 axis (Rx(theta_x) y)
            axes = np.array([[1.0, 0, 0], [0, math.cos(theta_x), math.sin(theta_x)]])
            out[3:] = self.rot.step(axes @ w[3:], dt)
        return out
