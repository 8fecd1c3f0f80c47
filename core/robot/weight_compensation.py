"""Tool-weight compensation of a 6-axis force/torque sensor (robot paper, eq. 16-22, table 7).

The paper removes the 30 N tool's weight from the force with a rigid-body model
(eq. 17-19) and from the torque with polynomial fits over (theta_x, theta_5)
(eq. 20-22). Here both use the rigid-body model, identified by linear least
squares from static measurements at several orientations (no hand on the tool):

    f_s = R_s_base @ (m g) + f0                  (eq. 17-18, with f0 identified)
    t_s = c_s x (R_s_base @ (m g)) + t0          (the same load's moment)

with ``g = [0, 0, -9.80665]`` m/s^2 in the base frame (base z up), centre of mass
``c_s`` in the sensor frame (mm), forces in N, torques in N*m.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["WeightCompensationError", "ToolLoad", "identify_tool_load",
           "hand_wrench", "rezero", "compensation_errors", "GRAVITY_BASE"]

GRAVITY_BASE = np.array([0.0, 0.0, -9.80665])


class WeightCompensationError(ValueError):
    """The measurements cannot identify the tool load."""


@dataclass(frozen=True)
class ToolLoad:
    """What the sensor carries beyond the hand: identified mass, centre of mass and offsets."""
    mass_kg: float
    com_sensor_mm: np.ndarray
    force_offset_N: np.ndarray
    torque_offset_Nm: np.ndarray
    force_rms_N: float = float("nan")     # fit residuals over the identification poses
    torque_rms_Nm: float = float("nan")
    n_poses: int = 0

    @property
    def weight_N(self) -> float:
        return self.mass_kg * float(np.linalg.norm(GRAVITY_BASE))

    def load_wrench(self, R_base_sensor) -> np.ndarray:  # (each control cycle: see cross3)
        """The wrench (sensor frame, [f N, t N*m]) the load alone makes at this orientation."""
        G = np.asarray(R_base_sensor, float).T @ (self.mass_kg * GRAVITY_BASE)
        return np.concatenate([G + self.force_offset_N,
                               cross3(self.com_sensor_mm / 1000.0, G) + self.torque_offset_Nm])


def cross3(a, b) -> np.ndarray:
    """``np.cross`` of two 3-vectors, the same arithmetic without its axis handling (about 10x
    cheaper; the control loop compensates the tool's weight every cycle)."""
    a0, a1, a2 = a.tolist() if isinstance(a, np.ndarray) else a
    b0, b1, b2 = b.tolist() if isinstance(b, np.ndarray) else b
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _skew(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _check_samples(R_base_sensor, wrenches):
    R = np.asarray(R_base_sensor, float)
    W = np.asarray(wrenches, float)
    if R.ndim != 3 or R.shape[1:] != (3, 3) or W.shape != (len(R), 6):
        raise WeightCompensationError(
            "need N sensor orientations (N, 3, 3) and N wrenches (N, 6) [fx fy fz tx ty tz]")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(W))):
        raise WeightCompensationError("a measurement has non-finite values: repeat the routine")
    return R, W


def identify_tool_load(R_base_sensor, wrenches, min_tilt_deg: float = 15.0) -> ToolLoad:
    """Least-squares mass, centre of mass and force/torque offsets from static poses.

    ``R_base_sensor`` (N, 3, 3): sensor orientation at each pose; ``wrenches`` (N, 6):
    the mean reading there. The gravity directions seen by the sensor must spread over
    at least ``min_tilt_deg`` in two independent directions, or mass and offsets mix.
    """
    R, W = _check_samples(R_base_sensor, wrenches)
    if len(R) < 4:
        raise WeightCompensationError(
            f"only {len(R)} poses measured: the routine needs at least 4 different orientations")
    g_s = np.einsum("nji,j->ni", R, GRAVITY_BASE)          # gravity seen in the sensor frame
    spread = np.linalg.svd(g_s - g_s.mean(0), compute_uv=False) / np.sqrt(len(R))
    if spread[1] < 9.80665 * np.sin(np.radians(min_tilt_deg)) / 2:
        raise WeightCompensationError(
            "the poses do not tilt the tool enough in two directions: tilt both joint 4 and "
            f"joint 5 by at least {min_tilt_deg:.0f} deg and repeat")
    n = len(R)
    A_f = np.zeros((3 * n, 4))
    A_f[:, 0] = g_s.ravel()
    A_f[:, 1:] = np.tile(np.eye(3), (n, 1))
    x_f, *_ = np.linalg.lstsq(A_f, W[:, :3].ravel(), rcond=None)
    A_t = np.zeros((3 * n, 6))
    for i in range(n):
        A_t[3 * i:3 * i + 3, :3] = -_skew(g_s[i])         # c x G = -G x c, unknown p = m c
        A_t[3 * i:3 * i + 3, 3:] = np.eye(3)
    x_t, *_ = np.linalg.lstsq(A_t, W[:, 3:].ravel(), rcond=None)
    m = float(x_f[0])
    if m <= 0:
        raise WeightCompensationError(
            f"identified tool mass {m:.3f} kg is not positive: check the sensor mounting "
            "(T_flange_sensor) and repeat")
    load = ToolLoad(m, 1000.0 * x_t[:3] / m, x_f[1:], x_t[3:], n_poses=n)
    res = W - np.array([load.load_wrench(r) for r in R])
    return replace(load, force_rms_N=float(np.sqrt(np.mean(res[:, :3] ** 2))),
                   torque_rms_Nm=float(np.sqrt(np.mean(res[:, 3:] ** 2))))


def hand_wrench(load: ToolLoad, R_base_sensor, wrench_sensor, in_base: bool = True) -> np.ndarray:
    """The operator's wrench: the reading minus the load (eq. 18), rotated into the base
    frame (eq. 19) when ``in_base``; torques about the sensor origin."""
    R = np.asarray(R_base_sensor, float)
    h = np.asarray(wrench_sensor, float) - load.load_wrench(R)
    if not in_base:
        return h
    return np.concatenate([R @ h[:3], R @ h[3:]])


def rezero(load: ToolLoad, R_base_sensor, wrench_sensor) -> ToolLoad:
    """Orientation-aware zeroing: new offsets such that this reading (hands off) compensates
    to zero at this pose, keeping mass and centre of mass (sensor drift correction)."""
    R = np.asarray(R_base_sensor, float)
    w = np.asarray(wrench_sensor, float)
    if R.shape != (3, 3) or w.shape != (6,) or not np.all(np.isfinite(w)):
        raise WeightCompensationError("zeroing needs one 3x3 orientation and one 6-vector reading")
    G = R.T @ (load.mass_kg * GRAVITY_BASE)
    return replace(load, force_offset_N=w[:3] - G,
                   torque_offset_Nm=w[3:] - np.cross(load.com_sensor_mm / 1000.0, G))


def compensation_errors(load: ToolLoad, R_base_sensor, wrenches) -> dict:
    """Table 7 statistics of |hand wrench| left over with hands off: per axis
    max/min/mean and the ratio above 1 N (forces) or 0.1 N*m (torques)."""
    R, W = _check_samples(R_base_sensor, wrenches)
    err = np.abs(np.array([hand_wrench(load, r, w, in_base=False) for r, w in zip(R, W)]))
    out = {}
    for i, axis in enumerate(("Fx", "Fy", "Fz", "Tx", "Ty", "Tz")):
        thr = 1.0 if i < 3 else 0.1
        e = err[:, i]
        out[axis] = {"ratio_above": float(np.mean(e > thr)), "max": float(e.max()),
                     "min": float(e.min()), "mean": float(e.mean())}
    return out
