"""The case's audit trail wired to the session (``core.audit``): who did what, when.

``watch_session`` subscribes to the session's own events (calibration, plan edits with
undo/redo, alignment, verification, device faults), so controllers need no calls of their
own (shots are recorded by ``Session.set_image`` / ``open_shots``, which know which it was); ``watch_robot_client`` records every command sent to the robot controller (jog,
move, path, guide, identify), STOP, Reset and faults. Roles follow the action: shots and
calibration are the technician's, planning, alignment and verification the surgeon's, the
controller's own events the robot's, the rest the system's.
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from devices.base import DeviceStatus

__all__ = ["watch_session", "watch_robot_client", "calibration_figures", "ROBOT_COMMANDS"]

log = logging.getLogger(__name__)

# the robot client's commands (method name -> audit event); heartbeats and repeats of a held
# jog are the client's own and are not commands a person gave
ROBOT_COMMANDS = {
    "step_task": "jog", "step_joint": "jog", "hold_jog_task": "jog", "hold_jog_joint": "jog",
    "release": "jog release", "set_speed": "speed", "set_drag_mode": "drag mode",
    "follow_path": "path", "hold_path": "path hold", "cancel_path": "path cancel",
    "set_deadman": "guide", "set_fixture": "guide fixture",
    "identify_tool": "identify", "rezero": "rezero", "return_to_identify_start": "return to start",
    "stop": "stop", "reset": "reset",
}
_TECHNICIAN = ("identify_tool", "rezero", "return_to_identify_start")


def calibration_figures(calibration) -> dict:
    """The figures that say how good a calibration is: per plane balls matched of expected and
    residual RMS / max (px, mm), the overall RMS, the angle between the views."""
    if calibration is None:
        return {}
    f = getattr(calibration, "figures", None) or {}
    out = {"method": getattr(calibration, "method", None), "created_utc": getattr(calibration, "created_utc", None),
           "view_angle_deg": f.get("view_angle_deg")}
    planes, all_px, all_mm = {}, [], []
    for v, vc in (getattr(calibration, "views", None) or {}).items():
        for pf in getattr(vc, "planes", ()):
            px = np.asarray(pf.residual_px, float)
            mm = np.asarray(pf.residual_mm, float)
            all_px.append(px)
            all_mm.append(mm)
            planes[pf.plane_id] = {"view": v, "matched": int(len(pf.ball_idx)), "expected": int(pf.expected),
                                   "rms_px": _rms(px), "max_px": float(px.max()) if px.size else None,
                                   "rms_mm": _rms(mm)}
    if planes:
        out["planes"] = planes
        out["rms_px"] = _rms(np.concatenate(all_px))
        out["rms_mm"] = _rms(np.concatenate(all_mm))
    return out


def _rms(x) -> float | None:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x * x))) if x.size else None


def watch_session(session) -> None:
    """Record the session's events in ``session.audit`` (Session's constructor calls this)."""
    record = session.record
    plans = session.plans

    def calibration_changed(calibration):
        reason = session.pop_reason("calibration")
        if session.resuming:
            record("calibration restored", "system", **calibration_figures(calibration))
        elif calibration is None:
            record("calibration invalidated", "system", reason=reason or "cleared")
        else:
            record("calibration accepted", "technician", note=reason, **calibration_figures(calibration))

    session.calibration_changed.connect(calibration_changed)

    history = {"count": plans.history.count(), "index": plans.history.index}

    def history_changed():
        h = plans.history
        count, index = h.count(), h.index
        before = history["count"], history["index"]
        history["count"], history["index"] = count, index
        if session.resuming:
            return
        if count == 0:
            return                                      # cleared: a new calibration or a loaded plan
        if count == before[0] and index == before[1] - 1:
            record("plan undo", "surgeon", what=h.redo_text())
        elif count == before[0] and index == before[1] + 1:
            record("plan redo", "surgeon", what=h.undo_text())
        elif (count, index) == before:
            record("plan edit", "surgeon", what=h.undo_text(), merged=True)   # a drag continued
        else:
            record("plan edit", "surgeon", what=h.undo_text())

    plans.history.changed.connect(history_changed)

    def alignment_changed(result):
        if result is None or session.resuming:   # a resumed record was audited when it was made
            return
        d = dict(result) if isinstance(result, dict) else {"summary": str(result)}
        keep = {k: d[k] for k in ("trajectory", "name", "tip_error_mm", "angle_error_deg", "inserted", "phase",
                                  "corrected", "stand_off_mm") if k in d}
        record("alignment", "surgeon", **keep)

    session.alignment_changed.connect(alignment_changed)

    def verification_changed(result):
        if result is None or session.resuming:
            return
        rec = getattr(result, "record", result)
        g = getattr(rec, "grade", None) or {}
        record("verification", "surgeon", trajectory=getattr(result, "tid", ""), name=getattr(rec, "name", ""),
               entry_deviation_mm=getattr(rec, "entry_deviation_mm", None),
               tip_deviation_mm=getattr(rec, "tip_deviation_mm", None), angle_deg=getattr(rec, "angle_deg", None),
               grade=g.get("grade") if isinstance(g, dict) else None)

    session.verification_changed.connect(verification_changed)

    def device_status_changed(device, status, message):
        if status is DeviceStatus.FAULT:
            record("fault", "robot" if device in ("robot", "force_sensor") else "system",
                   device=device, message=message)

    session.device_status_changed.connect(device_status_changed)


def watch_robot_client(session, client) -> None:
    """Record every command given to ``client`` (a ``RobotControllerClient``, or anything with
    its methods) before it is sent, and the controller's STOP acknowledgement and faults.
    Call it before the panel connects its buttons, so they call the recording methods."""
    for name, event in ROBOT_COMMANDS.items():
        method = getattr(client, name, None)
        if method is None:
            continue

        @functools.wraps(method)
        def wrapped(*args, _method=method, _name=name, _event=event, **kwargs):
            session.record(_event, "technician" if _name in _TECHNICIAN else "surgeon",
                           command=_name, **_command_details(_name, args, kwargs))
            return _method(*args, **kwargs)

        setattr(client, name, wrapped)
    stopped = getattr(client, "stopped_changed", None)
    if stopped is not None:
        stopped.connect(lambda on: session.record("stopped" if on else "reset acknowledged", "robot"))


def _command_details(name: str, args, kwargs) -> dict:
    """What a command asked for, small enough for one line (a path: its length, not its samples)."""
    if name == "follow_path":
        kind = args[0] if args else kwargs.get("kind")
        q = args[1] if len(args) > 1 else kwargs.get("q_samples")
        dt = args[2] if len(args) > 2 else kwargs.get("dt")
        try:
            n = len(q)
            first, last = list(map(float, q[0])), list(map(float, q[-1]))
        except (TypeError, IndexError, ValueError):
            n, first, last = None, None, None
        return {"kind": kind, "samples": n, "dt_s": dt, "q_start": first, "q_end": last}
    if name == "set_fixture":
        return {"point_mm": args[0] if args else kwargs.get("point"),
                "direction": args[1] if len(args) > 1 else kwargs.get("direction")}
    out = {}
    if args:
        out["args"] = list(args)
    if kwargs:
        out.update(kwargs)
    return out
