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

import math
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
        self._consts_of = self._consts_cache = None

    def box(self):
        """The box the limits hold the pose in: the workspace less the margin."""
        return self.cart.box_lower + self.margin, self.cart.box_upper - self.margin

    @staticmethod
    def _outside(X, lower, upper):
        return np.maximum(lower - X, 0) + np.maximum(X - upper, 0)

    # The cycle's hot path works on 5-vectors as plain float lists: numpy's per-call cost
    # (about 1 us a ufunc, several for np.any/np.clip/norm) dominated on vectors this small.
    # Same operations in the same order as the array form they replaced.
    def _kin(self, q):
        """(pose tuple) at ``q`` (floats)."""
        r = self.robot
        return r.pose_f(q) if hasattr(r, "pose_f") else r.pose(q).tolist()

    def _pose_jacobians(self, q):
        """(pose, J rows, J^-1 rows) at ``q``, the chain solved once when the robot can."""
        r = self.robot
        if hasattr(r, "pose_and_jacobian_terms"):
            X, t = r.pose_and_jacobian_terms(q)
            return X, r._pose_jacobian_rows(t), r._inverse_pose_jacobian_rows(t)
        return (self._kin(q), *self._jacobians(q))

    def _jacobians(self, q):
        r = self.robot
        if hasattr(r, "_jacobian_terms"):
            t = r._jacobian_terms(q)
            return r._pose_jacobian_rows(t), r._inverse_pose_jacobian_rows(t)
        return r.pose_jacobian(q).tolist(), r.inverse_pose_jacobian(q).tolist()

    def _margin(self, q):
        return self.robot.singularity_margin(q)

    def _consts(self):
        """The limits as float lists, rebuilt when ``cart`` is replaced."""
        if self._consts_of is not self.cart:
            lower, upper = self.box()
            jl = self.jl
            self._consts_cache = (lower.tolist(), upper.tolist(), self._task_acc.tolist(),
                                  jl.lower.tolist(), jl.upper.tolist(), jl.velocity.tolist(),
                                  jl.acceleration.tolist())
            self._consts_of = self.cart
        return self._consts_cache

    def _safe(self, qd, starts, X_starts, J, H) -> bool:
        """Held for ``H`` and then braked, ``qd`` keeps every start inside (or no further out).
        The task velocity over the horizon is ``J qd`` with ``J`` at the reference: over the
        few mm of a horizon the Jacobian changes by a second-order amount."""
        lower, upper, ta, jlo, jhi, _, jacc = self._consts()
        qd = list(qd)
        Xd = _mv(J, qd)
        brake_X = [x * abs(x) / (2 * a) for x, a in zip(Xd, ta)]
        brake_q = [v * abs(v) / (2 * a) for v, a in zip(qd, jacc)]
        for k, (q0, X0) in enumerate(zip(starts, X_starts)):
            q_next = [a + v * H for a, v in zip(q0, qd)]
            try:
                if k == 0:
                    if hasattr(self.robot, "pose_and_margin"):   # the chain solved once
                        X, m = self.robot.pose_and_margin(q_next)
                    else:
                        m, X = self._margin(q_next), None
                    if m < self.cart.min_singularity_margin:
                        return False
                    X = self._kin(q_next) if X is None else X
                else:
                    X = self._kin(q_next)
            except KinematicsError:
                return False
            # inside the bounds is never further out than the start (whose excess is >= 0)
            for x, b, x0, lo, hi in zip(X, brake_X, X0, lower, upper):
                xb = x + b
                if not lo <= xb <= hi and _excess(xb, lo, hi) > _excess(x0, lo, hi) + 1e-9:
                    return False
            for x, b, x0, lo, hi in zip(q_next, brake_q, q0, jlo, jhi):
                xb = x + b
                if not lo <= xb <= hi and _excess(xb, lo, hi) > _excess(x0, lo, hi) + 1e-9:
                    return False
        return True

    @staticmethod
    def _box_clip(qd, J, Ji, dn, up, reasons):
        """Task velocity within the box's braking speeds (``-dn``, ``up``, per task axis)."""
        Xd = _mv(J, qd)
        Xc = [min(max(x, -d), u) for x, d, u in zip(Xd, dn, up)]
        if any([abs(c - x) > 1e-12 for c, x in zip(Xc, Xd)]):
            qd = _mv(Ji, Xc)
            reasons.append("workspace")
        return qd

    def limit(self, q, qd_prev, qd_wanted, dt: float | None = None, q_meas=None, X_meas=None):
        """``X_meas``: the pose at ``q_meas`` when the caller has it already (the loop has)."""
        q = np.asarray(q, float)
        qd_prev = np.asarray(qd_prev, float).tolist()
        qd_a = np.asarray(qd_wanted, float)
        qd = qd_a.tolist()
        if not all(map(math.isfinite, qd)):
            return np.zeros_like(qd_a), ["non-finite command"]
        dt = self.dt if dt is None else float(dt)
        H = max(self.horizon, dt)
        reasons, c = [], self.cart
        starts = [q] if q_meas is None else [q, np.asarray(q_meas, float)]
        try:
            X0, J, Ji = self._pose_jacobians(q)
            X_starts = [X0]
            if q_meas is not None:
                X_starts.append(self._kin(starts[1]) if X_meas is None else list(X_meas))
        except KinematicsError:
            return np.zeros_like(qd_a), ["stopped: no kinematics here"]
        starts = [p.tolist() for p in starts]
        if len(starts) == 1:
            q_hi = q_lo = starts[0]
            X_hi = X_lo = X_starts[0]
        else:
            (a, b), (A, B) = starts, X_starts
            q_hi, q_lo = [x if x >= y else y for x, y in zip(a, b)], [x if x <= y else y for x, y in zip(a, b)]
            X_hi, X_lo = [x if x >= y else y for x, y in zip(A, B)], [x if x <= y else y for x, y in zip(A, B)]
        lower, upper, ta, jlo, jhi, vel, acc = self._consts()
        HH = H * H                                # braking_speed, per axis, in floats
        up = [a * (-H + math.sqrt(HH + 2.0 * (d if d > 0.0 else 0.0) / a))
              for d, a in zip([u - x for u, x in zip(upper, X_hi)], ta)]
        dn = [a * (-H + math.sqrt(HH + 2.0 * (d if d > 0.0 else 0.0) / a))
              for d, a in zip([x - l for l, x in zip(lower, X_lo)], ta)]
        s = max([abs(v) / m for v, m in zip(qd, vel)])
        if s > 1:
            qd = [v / s for v in qd]
            reasons.append("joint speed")
        Xd = _mv(J, qd)
        lin = math.sqrt(Xd[0] * Xd[0] + Xd[1] * Xd[1] + Xd[2] * Xd[2])
        ang = math.sqrt(Xd[3] * Xd[3] + Xd[4] * Xd[4])
        s = max(lin / c.linear_speed, ang / c.angular_speed)
        if s > 1:
            qd = [v / s for v in qd]
            reasons.append("tool speed")
        qd = self._box_clip(qd, J, Ji, dn, up, reasons)
        hi = [a * (-H + math.sqrt(HH + 2.0 * (d if d > 0.0 else 0.0) / a))
              for d, a in zip([u - x for u, x in zip(jhi, q_hi)], acc)]
        lo = [-a * (-H + math.sqrt(HH + 2.0 * (d if d > 0.0 else 0.0) / a))
              for d, a in zip([x - l for l, x in zip(jlo, q_lo)], acc)]
        if any([v > h or v < l for v, l, h in zip(qd, lo, hi)]):
            reasons.append("joint range")
        # acceleration over the time since the previous command: towards the wanted velocity
        # along the straight line (keeps the speed limits, which are convex); then the range
        # bounds again, which never need more than one step of braking (module docstring)
        step = max([abs(v - p) / (a * dt) for v, p, a in zip(qd, qd_prev, acc)])
        if step > 1:
            qd = [p + (v - p) / step for v, p in zip(qd, qd_prev)]
            reasons.append("acceleration")
        qd = self._box_clip(qd, J, Ji, dn, up, reasons)
        qd = [min(max(v, l), h) for v, l, h in zip(qd, lo, hi)]
        for _ in range(12):                       # final guard, by halving
            if self._safe(qd, starts, X_starts, J, H):
                return np.array(qd), reasons
            qd = [v * 0.5 for v in qd]
            reasons.append("guard")
        return np.zeros_like(qd_a), reasons + ["stopped by guard"]


def _excess(x, lo, hi):
    """``_outside`` for one float."""
    return max(lo - x, 0.0) + max(x - hi, 0.0)



def _mv(M, v):
    """Matrix (rows) times vector, in floats."""
    v0, v1, v2, v3, v4 = v
    return [r[0] * v0 + r[1] * v1 + r[2] * v2 + r[3] * v3 + r[4] * v4 for r in M]
