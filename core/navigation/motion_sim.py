"""Following the patient in the simulated tracked room, tick by tick, against the truth.

Each control tick (``rate_hz``) the follower gets the tracker frame measured one tick earlier
(the tracker's and the link's latency), commands the robot (nominal inverse kinematics; the true
robot executes), and the truth says how far the guide is from the moved plan: the planned tool
pose ``T_world_goal0`` carried by the patient's motion ``M(t)``. Figures: the breathing-following
error before the bump, the time from the bump's onset until the guide is back within
``recovered_mm`` and stays there for ``hold_s``, the error after recovery, and what the motion
monitor concluded. Seconds, millimetres.
"""
from __future__ import annotations

import math

import numpy as np

from core.navigation.patient_motion import MotionFollower, MotionMonitor
from core.navigation.tracked_loop import pose_residual
from core.robot.kinematics.base import KinematicsError

__all__ = ["follow_in_room", "recovery_time"]


def recovery_time(times, errors, t_bump, recovered_mm: float = 0.5, hold_s: float = 0.5) -> float:
    """Seconds from ``t_bump`` until the error is under ``recovered_mm`` and stays so for
    ``hold_s`` (NaN if it never is)."""
    times, errors = np.asarray(times, float), np.asarray(errors, float)
    after = times >= t_bump
    idx = np.nonzero(after)[0]
    for i in idx:
        if errors[i] >= recovered_mm:
            continue
        window = (times >= times[i]) & (times <= times[i] + hold_s)
        if times[-1] >= times[i] + hold_s and np.all(errors[window] < recovered_mm):
            return float(times[i] - t_bump)
    return float("nan")


def follow_in_room(room, kinematics, q_start, follower: MotionFollower, T_world_goal0, duration_s: float,
                   t0: float = 0.0, rate_hz: float = 60.0, deadman=lambda t: True, monitor: MotionMonitor | None = None,
                   t_bump: float | None = None, settle_s: float = 1.0, recovered_mm: float = 0.5) -> dict:
    """Run the follower for ``duration_s`` from ``t0`` (module docstring). Returns the series
    (``t``, true ``tip_mm`` and ``angle_deg`` vs the moved plan, ``moved``), the figures
    (``breathing_error_mm`` {"rms", "p95", "max"}, ``recovery_s``, ``after_recovery_mm``,
    ``detected_after_s``, ``reverify``) and the last command and joints."""
    dt = 1.0 / rate_hz
    truth = room.truth
    q = np.asarray(q_start, float)
    truth.move(q)
    T_cmd = kinematics.forward(q)
    prev = room.frame(t0)
    ts, tips, angs, moved, kinds = [], [], [], [], []
    holds = {}
    n = int(round(duration_s * rate_hz))
    for k in range(1, n + 1):
        t = t0 + k * dt
        step = follower.step(prev, t, T_cmd, bool(deadman(t)))
        if step.held_because:
            holds[step.held_because] = holds.get(step.held_because, 0) + 1
        if step.moved:
            try:
                q_new = kinematics.inverse(step.command, ignore_spin=True)
            except KinematicsError as e:
                holds[f"unreachable: {e}"] = holds.get(f"unreachable: {e}", 0) + 1
            else:
                q, T_cmd = q_new, step.command
                truth.move(q)
        prev = room.frame(t)
        if monitor is not None and prev.pose("patient_ref").ok:
            kinds.append((t, monitor.update(t, prev.pose("patient_ref").T_tracker_tool)))
        goal = room.patient_motion(t) @ np.asarray(T_world_goal0, float)
        r = pose_residual(room.T_world_base @ truth.forward(q), goal)
        ts.append(t)
        tips.append(r.distance_mm)
        angs.append(r.angle_deg)
        moved.append(step.moved)
    ts, tips = np.array(ts), np.array(tips)
    out = {"t": ts, "tip_mm": tips, "angle_deg": np.array(angs), "moved": np.array(moved), "holds": holds,
           "q": q, "T_cmd": T_cmd}
    pre = (ts >= t0 + settle_s) & ((ts < t_bump) if t_bump is not None else True)
    e = tips[pre]
    out["breathing_error_mm"] = ({"rms": float(np.sqrt(np.mean(e ** 2))), "p95": float(np.percentile(e, 95)),
                                  "max": float(e.max())} if e.size else
                                 {"rms": math.nan, "p95": math.nan, "max": math.nan})
    if t_bump is not None:
        rec = recovery_time(ts, tips, t_bump, recovered_mm)
        out["recovery_s"] = rec
        last = ts >= ts[-1] - 1.0
        out["after_recovery_mm"] = {"mean": float(tips[last].mean()), "max": float(tips[last].max())}
        out["peak_mm"] = float(tips[ts >= t_bump].max())
        if monitor is not None:
            det = [s.t for _, s in kinds if s.kind == "bump" and s.t >= t_bump]
            out["detected_after_s"] = float(det[0] - t_bump) if det else math.nan
    if monitor is not None:
        out["reverify"] = bool(monitor.reverify)
        out["motion_kinds"] = sorted({s.kind for _, s in kinds})
    return out
