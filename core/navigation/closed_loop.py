"""Closed-loop positioning of the tool from new AP and LAT shots (robot paper II.C.5, eq. 24).

Open loop, the tool lands where the robot's model says, and misses by its absolute
accuracy. Eq. 24 corrects the command by the measured pose error:
``T_path_compensation = T_path^base . (T_tool_real)^-1 . T_path``, the real tool's pose
and the path both in one measured frame. Here that frame is the robot base itself
(the two views are calibrated in base, ``frames.BaseFrameCalibration``), the real tool
is the guide or tool line found in both shots, and the command being corrected is the
one that put it there, so one step is

    T_cmd' = T_cmd . T_real^-1 . T_path

which removes in one step an error that is a fixed rigid motion of the tool in base
(``T_real = F T_cmd``) or in the tool frame (``T_real = T_cmd E``), up to a second-order
remainder from the unseen spin (about 1e-4 mm for 0.4 mm and 0.3 deg), and converges
for pose-dependent errors (joint offsets, compliance) as the correction shrinks.

A line has 5 degrees of freedom: the measured tool's spin about its axis is unseen;
it is taken as the commanded spin carried by the shortest rotation onto the measured
axis, and the commands are re-expressed in the hybrid robot's own spin convention
(``Hybrid5.pose_for_axis``). Without a visible tip the error along the axis is unseen
and left uncorrected. Millimetres, radians (degrees in messages and thresholds' names).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert
from core.robot.kinematics.hybrid5 import Hybrid5

__all__ = ["ClosedLoopError", "ToolLine", "LineResidual", "CorrectionStep", "ClosedLoopCorrection",
           "tool_frame", "line_residual", "correct_command", "THRESHOLD_MM", "THRESHOLD_DEG", "MAX_SHOTS"]

THRESHOLD_MM = 0.3
THRESHOLD_DEG = 0.3
MAX_SHOTS = 4


class ClosedLoopError(ValueError):
    """Bad input, or a correction too large to be a positioning error (misdetection, moved C-arm)."""


def _vec(x, name) -> np.ndarray:
    a = np.asarray(x, float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ClosedLoopError(f"{name} must be a finite 3-vector")
    return a


def _unit(x, name) -> np.ndarray:
    a = _vec(x, name)
    n = float(np.linalg.norm(a))
    if n < 1e-9:
        raise ClosedLoopError(f"{name} must be non-zero")
    return a / n


def _angle(a, b) -> float:
    return math.atan2(float(np.linalg.norm(np.cross(a, b))), float(a @ b))


def _shortest_rotation(a, b) -> np.ndarray:
    """The rotation matrix of least angle taking unit ``a`` onto unit ``b``."""
    c = np.cross(a, b)
    s = float(np.linalg.norm(c))
    ang = math.atan2(s, float(a @ b))
    if s < 1e-15:
        if ang < 1.0:
            return np.eye(3)
        raise ClosedLoopError("the measured tool points the opposite way to the command: check the "
                              "detected line's direction (into the patient)")
    return Rotation.from_rotvec(c / s * ang).as_matrix()


def tool_frame(tip_mm, direction) -> np.ndarray:
    """``T_base_tool`` with the tip at ``tip_mm`` and +z along ``direction``, with the hybrid
    robot's spin (``R = Rx(theta_x) Ry(theta_y) Rx(pi)``, core/robot/kinematics/hybrid5.py)."""
    tip, d = _vec(tip_mm, "tool tip"), _unit(direction, "tool direction")
    _, _, _, tx, ty = Hybrid5.pose_for_axis(tip, d)
    cx, sx, cy, sy = math.cos(tx), math.sin(tx), math.cos(ty), math.sin(ty)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    T = np.eye(4)
    T[:3, :3] = Rx @ Ry @ np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = tip
    return T


@dataclass(frozen=True)
class ToolLine:
    """A tool or guide line measured in base: a point on it, its direction (into the patient),
    and its tip when the images show it (None: only the line is known)."""
    point: np.ndarray
    direction: np.ndarray
    tip: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "point", _vec(self.point, "the measured line's point"))
        object.__setattr__(self, "direction", _unit(self.direction, "the measured line's direction"))
        if self.tip is not None:
            object.__setattr__(self, "tip", _vec(self.tip, "the measured tip"))

    def foot(self, p) -> np.ndarray:
        """The point of the line nearest ``p``."""
        w = np.asarray(p, float) - self.point
        return self.point + (w @ self.direction) * self.direction

    def tip_or_foot(self, p) -> np.ndarray:
        return self.foot(self.tip) if self.tip is not None else self.foot(p)


@dataclass(frozen=True)
class LineResidual:
    """How far a measured tool is from the desired one: tip distance (mm; across the line only
    when no tip was seen), its parts across and along the desired line, and the angle (rad)."""
    distance_mm: float
    lateral_mm: float
    axial_mm: float | None
    angle_rad: float

    @property
    def angle_deg(self) -> float:
        return math.degrees(self.angle_rad)


def line_residual(desired_tip, desired_direction, measured: ToolLine) -> LineResidual:
    """Residual of a measured tool line against the desired tip and direction."""
    t, d = _vec(desired_tip, "desired tip"), _unit(desired_direction, "desired direction")
    ang = _angle(measured.direction, d)
    lateral = float(np.linalg.norm(t - measured.foot(t)))
    if measured.tip is None:
        return LineResidual(lateral, lateral, None, ang)
    w = measured.tip - t
    return LineResidual(float(np.linalg.norm(w)), float(np.linalg.norm(w - (w @ d) * d)), float(w @ d), ang)


def correct_command(T_cmd, measured: ToolLine, desired_tip, desired_direction, gain: float = 1.0) -> np.ndarray:
    """One correction, eq. 24 in base: ``T_cmd' = T_cmd T_real^-1 T_path`` (module docstring),
    ``gain`` in (0, 1] scaling the correction; returned in the robot's spin convention."""
    T_cmd = np.asarray(T_cmd, float)
    if T_cmd.shape != (4, 4) or not np.all(np.isfinite(T_cmd)):
        raise ClosedLoopError("the commanded pose must be a finite 4x4 T_base_tool")
    if not (0 < gain <= 1):
        raise ClosedLoopError(f"the correction gain must be in (0, 1], got {gain!r}")
    t_d, a_d = _vec(desired_tip, "desired tip"), _unit(desired_direction, "desired direction")
    R_c, t_c = T_cmd[:3, :3], T_cmd[:3, 3]
    a_c = R_c[:, 2]
    T_real = np.eye(4)
    T_real[:3, :3] = _shortest_rotation(a_c, measured.direction) @ R_c
    T_real[:3, 3] = measured.tip_or_foot(t_c)
    T_path = np.eye(4)
    T_path[:3, :3] = _shortest_rotation(a_c, a_d) @ R_c
    T_path[:3, 3] = t_d
    G_inv = T_cmd @ invert(T_real)          # the base-frame motion that undoes the error
    if gain != 1.0:
        rv = Rotation.from_matrix(G_inv[:3, :3]).as_rotvec() * gain
        # scale the screw about the real tip, not about the base origin (far away)
        c = T_real[:3, 3]
        R = Rotation.from_rotvec(rv).as_matrix()
        shift = (G_inv[:3, :3] @ c + G_inv[:3, 3]) - c
        G_inv = np.eye(4)
        G_inv[:3, :3] = R
        G_inv[:3, 3] = c + gain * shift - R @ c
    T_new = G_inv @ T_path
    return tool_frame(T_new[:3, 3], T_new[:3, 2])


@dataclass(frozen=True)
class CorrectionStep:
    """One shot pair of the loop: what was commanded, what was measured, the residual, and the
    next command (None once the loop stopped)."""
    shot: int
    commanded: np.ndarray
    measured: ToolLine
    residual: LineResidual
    next_command: np.ndarray | None
    correction_mm: float = 0.0
    correction_deg: float = 0.0
    stop_reason: str = ""


@dataclass
class ClosedLoopCorrection:
    """Bookkeeping of the closed loop: ``update(measured, commanded)`` after each pair of shots
    returns a ``CorrectionStep``; the loop stops when the residual is under both thresholds
    (``converged``), after ``max_shots`` pairs, or when a correction exceeds the step bounds
    (``ClosedLoopError``, nothing commanded). ``stop_reason`` says which, in one line."""
    desired_tip: np.ndarray
    desired_direction: np.ndarray
    threshold_mm: float = THRESHOLD_MM
    threshold_deg: float = THRESHOLD_DEG
    max_shots: int = MAX_SHOTS
    max_step_mm: float = 3.0
    max_step_deg: float = 2.0
    gain: float = 1.0
    history: list = field(default_factory=list)
    done: bool = False
    converged: bool = False
    stop_reason: str = ""

    def __post_init__(self):
        self.desired_tip = _vec(self.desired_tip, "desired tip")
        self.desired_direction = _unit(self.desired_direction, "desired direction")
        if not (self.threshold_mm > 0 and self.threshold_deg > 0 and int(self.max_shots) >= 1
                and self.max_step_mm > 0 and self.max_step_deg > 0):
            raise ClosedLoopError("thresholds and step bounds must be positive, at least one shot")
        self.max_shots = int(self.max_shots)

    def initial_command(self) -> np.ndarray:
        """The open-loop command: the desired pose itself."""
        return tool_frame(self.desired_tip, self.desired_direction)

    def update(self, measured: ToolLine, commanded) -> CorrectionStep:
        if self.done:
            raise ClosedLoopError(f"the closed loop has stopped ({self.stop_reason}): start a new one")
        if not isinstance(measured, ToolLine):
            raise ClosedLoopError("the measured tool must be a ToolLine (point, direction, tip)")
        T_cmd = np.asarray(commanded, float)
        shot = len(self.history) + 1
        r = line_residual(self.desired_tip, self.desired_direction, measured)
        seen = "" if measured.tip is not None else " (tip not seen: across the line only)"
        fig = f"{r.distance_mm:.2f} mm{seen}, {r.angle_deg:.2f}°"
        if r.distance_mm < self.threshold_mm and r.angle_deg < self.threshold_deg:
            return self._stop(CorrectionStep(shot, T_cmd, measured, r, None), True,
                              f"converged after {shot} shot pair(s): residual {fig}, under "
                              f"{self.threshold_mm} mm and {self.threshold_deg}°")
        if shot >= self.max_shots:
            return self._stop(CorrectionStep(shot, T_cmd, measured, r, None), False,
                              f"stopped after {shot} shot pairs (the maximum) with the residual at {fig}, above "
                              f"{self.threshold_mm} mm / {self.threshold_deg}°: verify, or re-align")
        T_new = correct_command(T_cmd, measured, self.desired_tip, self.desired_direction, self.gain)
        dmm = float(np.linalg.norm(T_new[:3, 3] - T_cmd[:3, 3]))
        ddeg = math.degrees(_angle(T_new[:3, 2], T_cmd[:3, 2]))
        if dmm > self.max_step_mm or ddeg > self.max_step_deg:
            self._stop(CorrectionStep(shot, T_cmd, measured, r, None, dmm, ddeg), False,
                       f"refused: the correction ({dmm:.1f} mm, {ddeg:.1f}°) exceeds {self.max_step_mm} mm / "
                       f"{self.max_step_deg}°, far more than the robot's error: the tool was probably misdetected "
                       "or the C-arm moved; check both shots")
            raise ClosedLoopError(self.stop_reason)
        step = CorrectionStep(shot, T_cmd, measured, r, T_new, dmm, ddeg)
        self.history.append(step)
        return step

    def _stop(self, step: CorrectionStep, converged: bool, reason: str) -> CorrectionStep:
        step = CorrectionStep(step.shot, step.commanded, step.measured, step.residual, None,
                              step.correction_mm, step.correction_deg, reason)
        self.history.append(step)
        self.done, self.converged, self.stop_reason = True, converged, reason
        return step

    def summary(self) -> dict:
        """Per shot pair: residual (mm, deg) and the correction commanded after it; why it stopped."""
        return {"shots": len(self.history), "converged": self.converged, "stop_reason": self.stop_reason,
                "iterations": [{"shot": s.shot, "residual_mm": s.residual.distance_mm,
                                "lateral_mm": s.residual.lateral_mm, "residual_deg": s.residual.angle_deg,
                                "correction_mm": s.correction_mm, "correction_deg": s.correction_deg}
                               for s in self.history]}
