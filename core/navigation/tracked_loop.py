"""Closed-loop positioning of the tool from the optical tracker (robot paper II.C.5, eq. 24).

The tracker sees the robot's marker and the patient's marker; with the tool calibrated in the
robot marker's frame (``T_robotref_tool``, ``tracked_hand_eye``) the real tool in the patient
marker's frame is

    T_tool_real^mark_patient = inv(T_tracker_patientref) . T_tracker_robotref . T_robotref_tool

and the path is fixed in the same frame (``T_path^mark_patient``: the plan moves with the
patient). Eq. 24 corrects the command by the pose error in the tool's own frame,

    T_path_compensation = T_path^base . inv(T_tool_real^mark_patient) . T_path^mark_patient,

an error that does not depend on the frame both poses are measured in, so the command in base
is corrected without knowing where base lies in the tracker's frame. The unseen spin of a 5-DoF
robot is handled as in ``closed_loop.correct_command``: the path's spin is the real tool's spin
carried onto the path axis, and the command is re-expressed in the robot's spin convention.

Only frames that ``tracking.usable`` accepts are used (fresh, every needed tool OK); a
measurement without enough of them is a ``TrackerNotSeeing`` refusal that names the tool and
its status. The plan is brought into the patient marker's frame once, through the tool seen in
one image pair and by the tracker at the same time (``register_plan_by_tool``). Millimetres,
radians; degrees in thresholds' names and messages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.geometry.rigid import invert
from core.navigation.closed_loop import (ClosedLoopError, LineResidual, _angle, _shortest_rotation, tool_frame)
from core.navigation.tracked_hand_eye import average_pose
from core.navigation.tracking import ToolStatus, usable

__all__ = ["TrackerNotSeeing", "TRACKED_THRESHOLD_MM", "TRACKED_THRESHOLD_DEG", "tool_in_patient",
           "measure_tool", "tracked_correction", "pose_residual", "TrackedStep", "TrackedLoop",
           "register_plan_by_tool", "NEEDED"]

TRACKED_THRESHOLD_MM = 0.2
TRACKED_THRESHOLD_DEG = 0.2
NEEDED = ("robot_ref", "patient_ref")


class TrackerNotSeeing(ClosedLoopError):
    """The tracker does not deliver what the loop needs (a tool missing, out of volume, or the
    frames stale): nothing is commanded. ``tool`` and ``status`` say which and how."""

    def __init__(self, message: str, tool: str | None = None, status: str | None = None):
        super().__init__(message)
        self.tool, self.status = tool, status


def tool_in_patient(frame, T_robotref_tool) -> np.ndarray:
    """``T_patientref_tool`` from one frame (eq. 24's ``T_tool_real^mark_patient``)."""
    P, R = frame.pose("patient_ref").T_tracker_tool, frame.pose("robot_ref").T_tracker_tool
    return invert(P) @ R @ np.asarray(T_robotref_tool, float)


def _why_not(frames, now_of, max_age_s) -> TrackerNotSeeing:
    """The most common reason the frames were refused, as one line a technician can act on."""
    if not frames:
        return TrackerNotSeeing("no tracker frame arrived: check the tracker's cable and that it is tracking",
                                None, "none")
    last = frames[-1]
    if not (now_of(last) - last.timestamp <= max_age_s):
        return TrackerNotSeeing(f"the tracker's frames are {1000 * (now_of(last) - last.timestamp):.0f} ms old "
                                f"(allowed {1000 * max_age_s:.0f} ms): the tracker stalled; check its link",
                                None, "stale")
    for name in NEEDED:
        bad = [f.pose(name).status for f in frames if not f.pose(name).ok]
        if bad:
            st = max(set(bad), key=bad.count)
            what = {ToolStatus.MISSING: "is not seen (line of sight blocked: the C-arm or someone in the way?)",
                    ToolStatus.OUT_OF_VOLUME: "is outside the tracker's measurement volume: move the camera",
                    ToolStatus.PARTIALLY_OUT_OF_VOLUME: "is at the edge of the tracker's volume: move the camera",
                    ToolStatus.DISABLED: "is not enabled on the tracker"}.get(st, f"reports {st.value}")
            return TrackerNotSeeing(f"the tracker's {name} {what}; {len(bad)} of {len(frames)} frames unusable",
                                    name, st.value)
    return TrackerNotSeeing("too few usable tracker frames", None, "few")


def measure_tool(frames, T_robotref_tool, now_of=None, min_frames: int = 10, max_age_s: float = 0.050) -> np.ndarray:
    """The averaged ``T_patientref_tool`` over the frames ``tracking.usable`` accepts (each judged
    at ``now_of(frame)``, when it was used; default: its own timestamp); ``TrackerNotSeeing``
    when fewer than ``min_frames`` are."""
    frames = list(frames)
    now_of = now_of or (lambda f: f.timestamp)
    ok = [f for f in frames if usable(f, NEEDED, now_of(f), max_age_s)]
    if len(ok) < int(min_frames):
        raise _why_not(frames, now_of, max_age_s)
    return average_pose([tool_in_patient(f, T_robotref_tool) for f in ok])


def _path_with_real_spin(T_real, T_path) -> np.ndarray:
    """The path pose with the real tool's spin carried onto the path's axis (5-DoF path)."""
    out = np.eye(4)
    out[:3, :3] = _shortest_rotation(T_real[:3, 2], T_path[:3, 2] / np.linalg.norm(T_path[:3, 2])) @ T_real[:3, :3]
    out[:3, 3] = T_path[:3, 3]
    return out


def pose_residual(T_real, T_path) -> LineResidual:
    """Tip distance (its parts across and along the path axis) and axis angle, real vs path."""
    d = T_path[:3, 2] / np.linalg.norm(T_path[:3, 2])
    w = T_real[:3, 3] - T_path[:3, 3]
    return LineResidual(float(np.linalg.norm(w)), float(np.linalg.norm(w - (w @ d) * d)), float(w @ d),
                        _angle(T_real[:3, 2], d))


def tracked_correction(T_cmd, T_real_p, T_path_p) -> np.ndarray:
    """Eq. 24: ``T_cmd . inv(T_real) . T_path`` (real tool and path in the patient marker's
    frame, the command in base), re-expressed in the robot's spin convention."""
    T_cmd = np.asarray(T_cmd, float)
    if T_cmd.shape != (4, 4) or not np.all(np.isfinite(T_cmd)):
        raise ClosedLoopError("the commanded pose must be a finite 4x4 T_base_tool")
    T_real_p = np.asarray(T_real_p, float)
    if T_real_p.shape != (4, 4) or not np.all(np.isfinite(T_real_p)):
        raise ClosedLoopError("the measured tool pose must be a finite 4x4 (a tracker frame that was not OK?)")
    dT = invert(T_real_p) @ _path_with_real_spin(T_real_p, np.asarray(T_path_p, float))
    T_new = T_cmd @ dT
    return tool_frame(T_new[:3, 3], T_new[:3, 2])


@dataclass(frozen=True)
class TrackedStep:
    """One measurement of the tracked loop: the command, the measured tool (patient frame), the
    residual, the next command (None once stopped) and the frames averaged."""
    step: int
    commanded: np.ndarray
    measured: np.ndarray
    residual: LineResidual
    next_command: np.ndarray | None
    frames: int
    stop_reason: str = ""


@dataclass
class TrackedLoop:
    """Eq. 24 iterated: ``update(frames, T_cmd)`` after each motion returns a ``TrackedStep``;
    stops when the residual is under ``threshold_mm`` and ``threshold_deg`` (``converged``), after
    ``max_steps``, or refuses (``ClosedLoopError``) a step beyond ``max_step_mm``/``max_step_deg``
    and (``TrackerNotSeeing``) frames that do not show what it needs."""
    T_patient_path: np.ndarray
    T_robotref_tool: np.ndarray
    threshold_mm: float = TRACKED_THRESHOLD_MM
    threshold_deg: float = TRACKED_THRESHOLD_DEG
    max_steps: int = 8
    min_frames: int = 10
    max_step_mm: float = 5.0
    max_step_deg: float = 3.0
    max_age_s: float = 0.050
    history: list = field(default_factory=list)
    done: bool = False
    converged: bool = False
    stop_reason: str = ""

    def __post_init__(self):
        self.T_patient_path = np.asarray(self.T_patient_path, float)
        self.T_robotref_tool = np.asarray(self.T_robotref_tool, float)
        for name in ("T_patient_path", "T_robotref_tool"):
            T = getattr(self, name)
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise ClosedLoopError(f"{name} must be a finite 4x4 transform")
        if not (self.threshold_mm > 0 and self.threshold_deg > 0 and int(self.max_steps) >= 1
                and int(self.min_frames) >= 1 and self.max_step_mm > 0 and self.max_step_deg > 0):
            raise ClosedLoopError("thresholds, step bounds and frame counts must be positive")

    def update(self, frames, T_cmd, now_of=None) -> TrackedStep:
        if self.done:
            raise ClosedLoopError(f"the tracked loop has stopped ({self.stop_reason}): start a new one")
        T_cmd = np.asarray(T_cmd, float)
        frames = list(frames)
        T_real = measure_tool(frames, self.T_robotref_tool, now_of, self.min_frames, self.max_age_s)
        n = len(self.history) + 1
        r = pose_residual(T_real, self.T_patient_path)
        fig = f"{r.distance_mm:.2f} mm, {r.angle_deg:.2f}°"
        if r.distance_mm < self.threshold_mm and r.angle_deg < self.threshold_deg:
            return self._stop(TrackedStep(n, T_cmd, T_real, r, None, len(frames)), True,
                              f"converged after {n} tracker measurement(s): residual {fig}, under "
                              f"{self.threshold_mm} mm and {self.threshold_deg}°")
        if n >= self.max_steps:
            return self._stop(TrackedStep(n, T_cmd, T_real, r, None, len(frames)), False,
                              f"stopped after {n} corrections (the maximum) with the residual at {fig}")
        T_new = tracked_correction(T_cmd, T_real, self.T_patient_path)
        dmm = float(np.linalg.norm(T_new[:3, 3] - T_cmd[:3, 3]))
        ddeg = math.degrees(_angle(T_new[:3, 2], T_cmd[:3, 2]))
        if dmm > self.max_step_mm or ddeg > self.max_step_deg:
            self._stop(TrackedStep(n, T_cmd, T_real, r, None, len(frames)), False,
                       f"refused: the tracked correction ({dmm:.1f} mm, {ddeg:.1f}°) exceeds {self.max_step_mm} mm / "
                       f"{self.max_step_deg}°: the patient marker may have moved on the patient, or the robot "
                       "marker on the flange; check both and register again")
            raise ClosedLoopError(self.stop_reason)
        step = TrackedStep(n, T_cmd, T_real, r, T_new, len(frames))
        self.history.append(step)
        return step

    def _stop(self, step: TrackedStep, converged: bool, reason: str) -> TrackedStep:
        step = TrackedStep(step.step, step.commanded, step.measured, step.residual, None, step.frames, reason)
        self.history.append(step)
        self.done, self.converged, self.stop_reason = True, converged, reason
        return step

    def summary(self) -> dict:
        return {"steps": len(self.history), "converged": self.converged, "stop_reason": self.stop_reason,
                "iterations": [{"step": s.step, "residual_mm": s.residual.distance_mm,
                                "residual_deg": s.residual.angle_deg, "frames": s.frames} for s in self.history]}


def register_plan_by_tool(T_patient_cage_guess, tool_tip_cage, tool_dir_cage, T_patient_tool) -> np.ndarray:
    """``T_patientref_cage`` corrected so that the tool seen in the images (tip and direction in
    the calibration's cage frame) lands on the tool the tracker sees at the same time
    (``T_patient_tool``): the least rotation of the image tool's axis onto the tracked one about
    its tip, then the tip's offset. The spin about the tool axis is not observed and stays the
    guess's (a rotation about the tool line barely moves a plan that lies along it)."""
    G = np.asarray(T_patient_cage_guess, float)
    tip_c, dir_c = np.asarray(tool_tip_cage, float), np.asarray(tool_dir_cage, float)
    T = np.asarray(T_patient_tool, float)
    for name, a, shape in (("guess", G, (4, 4)), ("tool tip", tip_c, (3,)), ("tool direction", dir_c, (3,)),
                           ("tracked tool", T, (4, 4))):
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise ClosedLoopError(f"registering the plan to the patient marker: the {name} must be finite {shape}")
    tip_g = G[:3, :3] @ tip_c + G[:3, 3]
    dir_g = G[:3, :3] @ (dir_c / np.linalg.norm(dir_c))
    R = _shortest_rotation(dir_g, T[:3, 2])
    D = np.eye(4)
    D[:3, :3] = R
    D[:3, 3] = T[:3, 3] - R @ tip_g
    return D @ G
