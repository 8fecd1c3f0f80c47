"""Motion limits the control loop enforces on every command, below any UI.

Order per cycle (hybrid robot, task pose X = [x, y, z, theta_x, theta_y]):
1. joint speed, 2. Cartesian tool speed (linear and angular), both by uniform scaling
(the direction is kept); 3. the workspace box and orientation range, per task axis,
with a braking-distance bound; 4. joint position range with the same bound;
5. joint acceleration, along the line from the previous command (convex, so speed limits
stay met); then the joint range bound, which needs at most one step of braking;
6. a final guard: the next pose must close the chain, stay away from singularities
and inside the box, else the command is scaled down (to zero if need be).

The braking bound ``v <= a (-dt + sqrt(dt^2 + 2 d / a))`` keeps ``v dt + v^2/(2a) <= d``,
an invariant that braking at ``a`` preserves, so a limit is never crossed.
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
    """``limit(q, qd_prev, qd_wanted) -> (qd_command, reasons)``, all in joint space."""

    def __init__(self, robot: Hybrid5, cart: CartesianLimits, dt: float):
        if dt <= 0:
            raise ValueError("control period must be positive")
        self.robot, self.cart, self.dt = robot, cart, float(dt)
        self.jl = robot.joint_limits
        self._task_acc = np.array([cart.linear_accel] * 3 + [cart.angular_accel] * 2)

    def _safe(self, q_next, X_now) -> bool:
        r, c = self.robot, self.cart
        try:
            X = r.pose(q_next)
            if r.singularity_margin(q_next) < c.min_singularity_margin:
                return False
        except KinematicsError:
            return False
        out_now = np.maximum(c.box_lower - X_now, 0) + np.maximum(X_now - c.box_upper, 0)
        out_next = np.maximum(c.box_lower - X, 0) + np.maximum(X - c.box_upper, 0)
        inside_joints = np.all(q_next >= self.jl.lower - 1e-9) and np.all(q_next <= self.jl.upper + 1e-9)
        return bool(np.all(out_next <= out_now + 1e-9) and inside_joints)

    def limit(self, q, qd_prev, qd_wanted):
        q, qd_prev = np.asarray(q, float), np.asarray(qd_prev, float)
        qd = np.asarray(qd_wanted, float).copy()
        if not np.all(np.isfinite(qd)):
            return np.zeros_like(qd), ["non-finite command"]
        reasons, dt, jl, c, r = [], self.dt, self.jl, self.cart, self.robot
        s = np.max(np.abs(qd) / jl.velocity)
        if s > 1:
            qd /= s
            reasons.append("joint speed")
        J = r.pose_jacobian(q)
        Xd = J @ qd
        lin, ang = np.linalg.norm(Xd[:3]), np.linalg.norm(Xd[3:])
        s = max(lin / c.linear_speed, ang / c.angular_speed)
        if s > 1:
            qd /= s
            Xd /= s
            reasons.append("tool speed")
        X = r.pose(q)
        up = braking_speed(c.box_upper - X, self._task_acc, dt)
        dn = braking_speed(X - c.box_lower, self._task_acc, dt)
        Xc = np.clip(Xd, -dn, up)
        if np.any(np.abs(Xc - Xd) > 1e-12):
            qd = r.inverse_pose_jacobian(q) @ Xc
            reasons.append("workspace")
        hi = braking_speed(jl.upper - q, jl.acceleration, dt)
        lo = -braking_speed(q - jl.lower, jl.acceleration, dt)
        if np.any(qd > hi) or np.any(qd < lo):
            reasons.append("joint range")
        # acceleration: move towards the wanted velocity along the straight line (keeps the
        # speed limits, which are convex); then the range bound, which never needs more
        # than one step of braking (see the module docstring)
        step = np.abs(qd - qd_prev) / (jl.acceleration * dt)
        if np.max(step) > 1:
            qd = qd_prev + (qd - qd_prev) / np.max(step)
            reasons.append("acceleration")
        qd = np.clip(qd, lo, hi)
        for _ in range(12):                       # final guard, by halving
            if self._safe(q + qd * dt, X):
                return qd, reasons
            qd = qd * 0.5
            reasons.append("guard")
        return np.zeros_like(qd), reasons + ["stopped by guard"]
