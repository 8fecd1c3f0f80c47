"""A serial arm from standard Denavit-Hartenberg parameters, with numerical inverse kinematics.

Example: the KUKA LBR iiwa 7 R800 of the ultrasound visual-servoing paper
(``resources/robots/iiwa7_r800.json``). Revolute joints; link i is
``Rz(theta_i + offset_i) Tz(d_i) Tx(a_i) Rx(alpha_i)``.
"""
from __future__ import annotations

import math

import numpy as np

from core.robot.kinematics.base import (JointLimits, Kinematics, KinematicsError,
                                  ReachabilityError)
from core.robot.kinematics.hybrid5 import _limits_from_doc, load_robot_file

__all__ = ["SerialDH", "load_serial_dh"]

_RAD_WEIGHT_MM = 100.0  # 1 rad of orientation error counts like 100 mm in the IK residual


class SerialDH(Kinematics):
    """Forward kinematics from DH rows, geometric Jacobian, damped numerical IK."""

    def __init__(self, dh, limits: JointLimits, T_flange_tool=None, names=None):
        dh = np.asarray(dh, float)
        if dh.ndim != 2 or dh.shape[1] != 4 or not np.all(np.isfinite(dh)):
            raise KinematicsError("DH table must be rows of [a_mm, alpha_rad, d_mm, offset_rad]")
        self.dh = dh
        self.joint_limits = limits
        self.joint_names = tuple(names or (f"A{i + 1}" for i in range(len(dh))))
        self.revolute = np.ones(len(dh), bool)
        if limits.lower.shape != (len(dh),):
            raise KinematicsError("one joint limit per DH row is needed")
        self.T_flange_tool = np.eye(4) if T_flange_tool is None else np.asarray(T_flange_tool, float)

    def frames(self, q) -> list[np.ndarray]:
        """``T_base_i`` for i = 0 (base) .. n (flange)."""
        q = self._q(q)
        T = np.eye(4)
        out = [T]
        for (a, alpha, d, off), th in zip(self.dh, q):
            ct, st = math.cos(th + off), math.sin(th + off)
            ca, sa = math.cos(alpha), math.sin(alpha)
            A = np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st],
                          [0, sa, ca, d], [0, 0, 0, 1.0]])
            T = T @ A
            out.append(T)
        return out

    def flange(self, q) -> np.ndarray:
        return self.frames(q)[-1]

    def forward(self, q) -> np.ndarray:
        return self.flange(q) @ self.T_flange_tool

    def jacobian(self, q) -> np.ndarray:
        """Geometric Jacobian: column i is [z_{i-1} x (p_tool - p_{i-1}); z_{i-1}]."""
        Ts = self.frames(q)
        p = (Ts[-1] @ self.T_flange_tool)[:3, 3]
        J = np.zeros((6, self.n_joints))
        for i in range(self.n_joints):
            z, o = Ts[i][:3, 2], Ts[i][:3, 3]
            J[:3, i] = np.cross(z, p - o)
            J[3:, i] = z
        return J

    def _residual(self, q, T_goal):
        T = self.forward(q)
        from scipy.spatial.transform import Rotation  # lazy: ~0.5 s of start-up
        rot_err = Rotation.from_matrix(T_goal[:3, :3] @ T[:3, :3].T).as_rotvec()
        return np.concatenate([T[:3, 3] - T_goal[:3, 3], -_RAD_WEIGHT_MM * rot_err])

    def _residual_jac(self, q, T_goal):
        J = self.jacobian(q)
        return np.vstack([J[:3], _RAD_WEIGHT_MM * J[3:]])

    def inverse(self, T_base_tool, q_seed=None, restarts: int = 8, seed: int = 0,
                tol_mm: float = 1e-7) -> np.ndarray:
        """Bounded least squares on position and orientation error from ``q_seed`` (or the
        middle of the joint range), then from random starts. Returns the first solution
        within ``tol_mm`` (orientation weighted 100 mm/rad)."""
        T_goal = np.asarray(T_base_tool, float)
        if T_goal.shape != (4, 4) or not np.all(np.isfinite(T_goal)):
            raise KinematicsError("T_base_tool must be a finite 4x4 transform")
        lim = self.joint_limits
        lo, hi = lim.lower + 1e-9, lim.upper - 1e-9
        rng = np.random.default_rng(seed)
        starts = [np.clip(self._q(q_seed), lo, hi) if q_seed is not None else (lo + hi) / 2]
        starts += [rng.uniform(lo, hi) for _ in range(restarts)]
        best = None
        from scipy.optimize import least_squares  # lazy: ~0.5 s of start-up
        for q0 in starts:
            r = least_squares(self._residual, q0, jac=self._residual_jac, bounds=(lo, hi),
                              args=(T_goal,), xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=200)
            err = float(np.max(np.abs(r.fun)))
            if best is None or err < best[1]:
                best = (r.x, err)
            if err < tol_mm:
                return r.x
        raise ReachabilityError(
            f"no joint solution within limits reaches this pose (closest {best[1]:.3g} mm): "
            "move the target nearer the arm or change the tool orientation")


def load_serial_dh(name: str = "iiwa7_r800.json") -> SerialDH:
    """A DH arm from ``resources/robots/NAME``."""
    from resources import path as resource_path
    doc = load_robot_file(resource_path("robots", name), "serial_dh")
    dh = [[r["a_mm"], math.radians(r["alpha_deg"]), r["d_mm"], math.radians(r["offset_deg"])]
          for r in doc["dh"]]
    return SerialDH(dh, _limits_from_doc(doc), np.array(doc.get("T_flange_tool", np.eye(4)), float),
                    [j["name"] for j in doc["joints"]])
