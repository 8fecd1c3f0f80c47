"""A virtual fixture for the hand-guided approach: admittance constrained to the planned line.

Free along the line, stiff off it: the operator's wrench (base frame, after tool-weight
compensation, robot paper eq. 16-22; torque about the flange as in ``admittance``) is
split into its component along the line and the rest.
- Along the line: the fuzzy variable admittance of ``core.robot.admittance`` (one axis,
  its dead-band and damping law), bounded to an axial range (by default the tip may not
  pass the stand-off: the insertion to depth is the insertion axis's own hold-to-run).
- Across the line: a spring-damper to the line, ``D v + K x = F_perp`` (x the tip's offset
  from the line), integrated implicitly (stable at any period); a sideways push of F
  moves the tip F/K off the line and it drifts back when released.
- Orientation: the same law on the angle between the tool axis and the line,
  ``D_r w + K_r r = tau_perp``; the spin about the tool's own axis is not commanded.
Output: the hybrid robot's task velocity ``[x', y', z' (mm/s), theta_x', theta_y' (rad/s)]``
of the tool tip (the task pose of core/robot/kinematics/hybrid5.py), speed-bounded.
Units: N, N*m, mm, rad, s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.robot.admittance import POSITION_DEFAULTS, AdmittanceAxisGroup, AdmittanceParameters, dead_band

__all__ = ["VirtualFixtureError", "FixtureParameters", "LineFixture", "FixtureState", "tool_axis"]


class VirtualFixtureError(ValueError):
    """Bad fixture parameters or input."""


@dataclass(frozen=True)
class FixtureParameters:
    """Stiffness and damping across the line (N/mm, N*s/mm) and of the orientation
    (N*m/rad, N*m*s/rad), dead-bands (table 7's 1.8 N and 0.1 N*m), speed bounds."""
    lateral_stiffness: float = 60.0
    lateral_damping: float = 6.0          # return time constant D/K = 0.1 s
    angular_stiffness: float = 100.0
    angular_damping: float = 10.0          # D_r/K_r = 0.1 s too
    force_dead_band: float = 1.8
    torque_dead_band: float = 0.1
    max_speed: float = 25.0               # mm/s at the tip, all directions together
    max_angular_speed: float = math.radians(5.0)
    axial: AdmittanceParameters = field(default_factory=lambda: POSITION_DEFAULTS)

    def __post_init__(self):
        vals = (self.lateral_stiffness, self.lateral_damping, self.angular_stiffness, self.angular_damping,
                self.max_speed, self.max_angular_speed)
        if not all(math.isfinite(v) and v > 0 for v in vals) or min(self.force_dead_band,
                                                                    self.torque_dead_band) < 0:
            raise VirtualFixtureError("fixture stiffness, damping and speed bounds must be positive, "
                                      "dead-bands >= 0")


def tool_axis(theta_x: float, theta_y: float) -> np.ndarray:
    """The tool's +z in base for the hybrid robot's task angles (hybrid5: tool +z = -z of O5,
    ``R_base_O5 = Rx(theta_x) Ry(theta_y)``)."""
    return -np.array([math.sin(theta_y), -math.sin(theta_x) * math.cos(theta_y),
                      math.cos(theta_x) * math.cos(theta_y)])


@dataclass(frozen=True)
class FixtureState:
    """Where the tool is with respect to the line, as the last step saw it."""
    along_mm: float          # tip position along the line from its point
    off_line_mm: float       # tip distance from the line
    angle_rad: float         # tool axis to line direction
    limited: tuple = ()      # what bounded the command ("speed", "turn rate", "axial range")


def _unit(v, name) -> np.ndarray:
    a = np.asarray(v, float)
    n = float(np.linalg.norm(a)) if a.shape == (3,) else 0.0
    if a.shape != (3,) or not math.isfinite(n) or n < 1e-9:
        raise VirtualFixtureError(f"{name} must be a finite non-zero 3-vector")
    return a / n


class LineFixture:
    """``step(wrench, tip, theta_x, theta_y, dt) -> task velocity`` keeping the tool on the line
    through ``point`` along ``direction`` (into the patient). ``axial_range_mm``: (lo, hi) tip
    positions along the line from ``point``; default (-inf, 0): the tip stops at ``point``
    (the stand-off) going in, and is free to back out."""

    def __init__(self, point, direction, params: FixtureParameters | None = None,
                 axial_range_mm=(-math.inf, 0.0), variable: bool = True):
        p = np.asarray(point, float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise VirtualFixtureError("the fixture's line needs a finite point in mm")
        self.point, self.direction = p, _unit(direction, "the line direction")
        self.p = params or FixtureParameters()
        lo, hi = (float(x) for x in axial_range_mm)
        if not lo < hi:
            raise VirtualFixtureError("the axial range needs lower < upper")
        self.axial_range = (lo, hi)
        self.axial = AdmittanceAxisGroup(self.p.axial, 1, variable=variable)
        self.state = FixtureState(0.0, 0.0, 0.0)

    def reset(self) -> None:
        self.axial.reset()

    def offsets(self, tip_mm, axis) -> tuple[float, np.ndarray, np.ndarray]:
        """(position along the line, lateral offset vector of the tip, rotation vector taking
        the line direction onto the tool axis)."""
        w = np.asarray(tip_mm, float) - self.point
        s = float(w @ self.direction)
        lateral = w - s * self.direction
        a = _unit(axis, "the tool axis")
        c = np.cross(self.direction, a)
        sn, cs = float(np.linalg.norm(c)), float(self.direction @ a)
        ang = math.atan2(sn, cs)
        rot = c / sn * ang if sn > 1e-12 else np.zeros(3)
        return s, lateral, rot

    def step(self, wrench_base, tip_mm, theta_x: float, theta_y: float, dt: float) -> np.ndarray:
        """One control cycle; returns ``[x', y', z', theta_x', theta_y']``."""
        w = np.asarray(wrench_base, float)
        tip = np.asarray(tip_mm, float)
        if w.shape != (6,) or not np.all(np.isfinite(w)) or tip.shape != (3,) or not np.all(np.isfinite(tip)):
            raise VirtualFixtureError("the fixture needs a finite 6-vector wrench and a finite tip position")
        if not (dt > 0 and math.isfinite(dt)) or not all(map(math.isfinite, (theta_x, theta_y))):
            raise VirtualFixtureError("the fixture needs finite angles and a period dt > 0")
        p, d = self.p, self.direction
        axis = tool_axis(theta_x, theta_y)
        s, lateral, rot = self.offsets(tip, axis)
        F, tau = w[:3], w[3:]
        f_ax = float(F @ d)
        f_lat = dead_band(F - f_ax * d, p.force_dead_band)
        # along: the admittance, then the axial range (approached no faster than the lateral
        # spring returns, so the stop is reached without overshoot)
        v_ax = float(self.axial.step(np.array([f_ax]), dt)[0])
        limited = []
        lo, hi = self.axial_range
        tau_ret = p.lateral_damping / p.lateral_stiffness
        v_hi, v_lo = (hi - s) / max(tau_ret, dt), (lo - s) / max(tau_ret, dt)
        if v_ax > v_hi or v_ax < v_lo:
            v_ax = min(max(v_ax, v_lo), v_hi)
            self.axial.v[:] = v_ax          # no wind-up against the stop
            limited.append("axial range")
        # across: D v + K x_next = F with x_next = x + v dt (implicit Euler)
        v_lat = (f_lat - p.lateral_stiffness * lateral) / (p.lateral_damping + p.lateral_stiffness * dt)
        v = v_ax * d + v_lat
        n = float(np.linalg.norm(v))
        if n > p.max_speed:
            v *= p.max_speed / n
            self.axial.v[:] = float(v @ d)
            limited.append("speed")
        # orientation: the torque across the tool axis against the tilt off the line
        t_perp = dead_band(tau - (tau @ axis) * axis, p.torque_dead_band)
        omega = (t_perp - p.angular_stiffness * rot) / (p.angular_damping + p.angular_stiffness * dt)
        rates = self._angle_rates(omega, axis, theta_x)
        # bound the axis's turn rate (the spin part of omega moves nothing)
        turn = float(np.linalg.norm(self._axis_rate(rates, axis, theta_x)))
        if turn > p.max_angular_speed:
            rates *= p.max_angular_speed / turn
            limited.append("turn rate")
        self.state = FixtureState(s, float(np.linalg.norm(lateral)), float(np.linalg.norm(rot)), tuple(limited))
        return np.r_[v, rates]

    @staticmethod
    def _rate_axes(theta_x):
        """Rotation axes (base) of theta_x' and theta_y' (hybrid5's geometric Jacobian)."""
        return np.array([1.0, 0, 0]), np.array([0.0, math.cos(theta_x), math.sin(theta_x)])

    def _axis_rate(self, rates, axis, theta_x):
        ex, ey = self._rate_axes(theta_x)
        return np.cross(rates[0] * ex + rates[1] * ey, axis)

    def _angle_rates(self, omega, axis, theta_x) -> np.ndarray:
        """theta_x', theta_y' whose axis motion best matches ``omega x axis`` (least squares;
        the two joint axes span the axis's two tilt directions away from ty = +-90 deg)."""
        ex, ey = self._rate_axes(theta_x)
        A = np.column_stack([np.cross(ex, axis), np.cross(ey, axis)])
        return np.linalg.lstsq(A, np.cross(omega, axis), rcond=None)[0]
