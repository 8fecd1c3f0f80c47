"""Motion limits the control loop enforces on every command, below any UI.

Order per cycle (hybrid robot, task pose X = [x, y, z, theta_x, theta_y]):
1. joint speed, 2. Cartesian tool speed (linear and angular), both by uniform scaling
(the direction is kept); 3. the workspace box and orientation range, per task axis,
with a braking-distance bound; 4. joint position range with the same bound;
5. joint acceleration over the time since the previous command, along the line from
that command (convex, so speed limits stay met); then the box and joint range bounds
again, which need at most one step of braking; 6. a final guard: held for the whole
horizon and then braked, the command must keep the chain closed, away from
singularities and inside the box and the joint ranges, else it is scaled down (to zero
if need be).

Where the robot is: ``limit`` takes the commanded reference (the integral of the
commands over the true elapsed time) and, optionally, the measured joints; every bound
is taken from whichever of the two is nearer that limit, so a servo that lags stays
behind a bounded reference and a robot pushed ahead of it is bounded where it is.

Late cycles: a command is held until the next one, at most ``horizon_s`` later (a later
cycle is a fault, and the drive's own watchdog brakes by then). The braking bound
``v <= a (-H + sqrt(H^2 + 2 d / a))`` keeps ``v H + v^2/(2a) <= d`` with ``H`` the horizon;
braking by ``a * dt`` after an interval ``dt <= H`` keeps it (``a dt (dt/2 - H) <= 0``),
so whatever the timing up to the horizon, the reference never crosses a limit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import Hybrid5

__all__ = ["CartesianLimits", "MotionLimiter", "braking_speed"]


def braking_speed(distance, accel, dt):
    """Largest speed from which braking at ``accel`` stops within ``distance`` (>= 0)."""
    d = np.maximum(np.asarray(distance, float), 0.0)
    return accel * (-dt + np.sqrt(dt * dt + 2.0 * d / accel))


@dataclass(frozen=True)
class CartesianLimits:
    """Workspace box (mm), orientation range (rad), speed and braking limits."""
    box_lower: np.ndarray      # [x, y, z, theta_x, theta_y]
    box_upper: np.ndarray
    linear_speed: float        # mm/s at the tool tip
    angular_speed: float       # rad/s
    linear_accel: float        # mm/s^2, used for braking at the box
    angular_accel: float       # rad/s^2
    min_singularity_margin: float = 0.1


def cartesian_limits_from_doc(doc) -> CartesianLimits:
    """From the robot file's ``workspace_mm``, ``orientation_limits_deg``, ``cartesian_limits``."""
    ws = np.array(doc["workspace_mm"], float)
    ori = np.radians(np.array(doc["orientation_limits_deg"], float))
    c = doc["cartesian_limits"]
    return CartesianLimits(np.r_[ws[:, 0], ori[:, 0]], np.r_[ws[:, 1], ori[:, 1]],
                           c["linear_mm_s"], np.radians(c["angular_deg_s"]),
                           c["linear_mm_s2"], np.radians(c["angular_deg_s2"]))


class MotionLimiter:
    """``limit(q, qd_prev, qd_wanted, dt, q_meas) -> (qd_command, reasons)``, in joint space.

    ``dt`` is the period (and the default time since the previous command); ``horizon_s``
    the longest a command may stay in force (the late-cycle bound, ``dt`` by default)."""

    def __init__(self, robot: Hybrid5, cart: CartesianLimits, dt: float,
                 horizon_s: float | None = None, margin=None):
        if dt <= 0 or (horizon_s is not None and horizon_s < dt):
            raise ValueError("control period must be positive and the horizon at least one period")
        self.robot, self.cart, self.dt = robot, cart, float(dt)
        self.horizon = float(horizon_s if horizon_s is not None else dt)
        self.jl = robot.joint_limits
        # how far inside the box the measured pose is held: the measurement's uncertainty
        # (encoder noise) and the servo's overshoot of its reference, per task axis
        self.margin = np.zeros(5) if margin is None else np.broadcast_to(
            np.asarray(margin, float), (5,)).copy()
        self._task_acc = np.array([cart.linear_accel] * 3 + [cart.angular_accel] * 2)

    def box(self):
        """The box the limits hold the pose in: the workspace less the margin."""
        return self.cart.box_lower + self.margin, self.cart.box_upper - self.margin

    @staticmethod
    def _outside(X, lower, upper):
        return np.maximum(lower - X, 0) + np.maximum(X - upper, 0)

    def _safe(self, qd, starts, X_starts, J, H) -> bool:
        """Held for ``H`` and then braked, ``qd`` keeps every start inside (or no further out).
        The task velocity over the horizon is ``J qd`` with ``J`` at the reference: over the
        few mm of a horizon the Jacobian changes by a second-order amount."""
        r, c, jl = self.robot, self.cart, self.jl
        lower, upper = self.box()
        Xd = J @ qd
        brake_X = Xd * np.abs(Xd) / (2 * self._task_acc)
        brake_q = qd * np.abs(qd) / (2 * jl.acceleration)
        for k, (q0, X0) in enumerate(zip(starts, X_starts)):
            q_next = q0 + qd * H
            try:
                if k == 0 and r.singularity_margin(q_next) < c.min_singularity_margin:
                    return False
                X = r.pose(q_next)
            except KinematicsError:
                return False
            if np.any(self._outside(X + brake_X, lower, upper)
                      > self._outside(X0, lower, upper) + 1e-9):
                return False
            if np.any(self._outside(q_next + brake_q, jl.lower, jl.upper)
                      > self._outside(q0, jl.lower, jl.upper) + 1e-9):
                return False
        return True

    def _box_clip(self, qd, J, Ji, X_hi, X_lo, H, reasons):
        lower, upper = self.box()
        up = braking_speed(upper - X_hi, self._task_acc, H)
        dn = braking_speed(X_lo - lower, self._task_acc, H)
        Xd = J @ qd
        Xc = np.minimum(np.maximum(Xd, -dn), up)
        if np.any(np.abs(Xc - Xd) > 1e-12):
            qd = Ji @ Xc
            reasons.append("workspace")
        return qd

    def limit(self, q, qd_prev, qd_wanted, dt: float | None = None, q_meas=None):
        q, qd_prev = np.asarray(q, float), np.asarray(qd_prev, float)
        qd = np.asarray(qd_wanted, float).copy()
        if not np.all(np.isfinite(qd)):
            return np.zeros_like(qd), ["non-finite command"]
        dt = self.dt if dt is None else float(dt)
        H = max(self.horizon, dt)
        reasons, jl, c, r = [], self.jl, self.cart, self.robot
        starts = [q] if q_meas is None else [q, np.asarray(q_meas, float)]
        try:
            X_starts = [r.pose(p) for p in starts]
            J, Ji = r.pose_jacobian(q), r.inverse_pose_jacobian(q)
        except KinematicsError:
            return np.zeros_like(qd), ["stopped: no kinematics here"]
        q_hi, q_lo = np.maximum.reduce(starts), np.minimum.reduce(starts)
        X_hi, X_lo = np.maximum.reduce(X_starts), np.minimum.reduce(X_starts)
        s = np.max(np.abs(qd) / jl.velocity)
        if s > 1:
            qd /= s
            reasons.append("joint speed")
        Xd = J @ qd
        lin, ang = np.linalg.norm(Xd[:3]), np.linalg.norm(Xd[3:])
        s = max(lin / c.linear_speed, ang / c.angular_speed)
        if s > 1:
            qd /= s
            reasons.append("tool speed")
        qd = self._box_clip(qd, J, Ji, X_hi, X_lo, H, reasons)
        hi = braking_speed(jl.upper - q_hi, jl.acceleration, H)
        lo = -braking_speed(q_lo - jl.lower, jl.acceleration, H)
        if np.any(qd > hi) or np.any(qd < lo):
            reasons.append("joint range")
        # acceleration over the time since the previous command: towards the wanted velocity
        # along the straight line (keeps the speed limits, which are convex); then the range
        # bounds again, which never need more than one step of braking (module docstring)
        step = np.abs(qd - qd_prev) / (jl.acceleration * dt)
        if np.max(step) > 1:
            qd = qd_prev + (qd - qd_prev) / np.max(step)
            reasons.append("acceleration")
        qd = self._box_clip(qd, J, Ji, X_hi, X_lo, H, reasons)
        qd = np.minimum(np.maximum(qd, lo), hi)
        for _ in range(12):                       # final guard, by halving
            if self._safe(qd, starts, X_starts, J, H):
                return qd, reasons
            qd = qd * 0.5
            reasons.append("guard")
        return np.zeros_like(qd), reasons + ["stopped by guard"]
