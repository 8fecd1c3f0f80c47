"""What an optical tracker reports, frame by frame: the shared vocabulary of the tracker
drivers (``devices/``), the simulated tracker and the tracked closed loop.

A pose that is not ``OK`` is all NaN, never an exception, and is never used for control
(robot paper II.C.5: the tracked correction of eq. 24 only takes measured poses).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ToolStatus", "ToolPose", "TrackerFrame", "NAN_POSE", "usable", "frame_age_fault", "MAX_FRAME_AGE_S"]

NAN_POSE = np.full((4, 4), np.nan)
NAN_POSE.setflags(write=False)


class ToolStatus(enum.Enum):
    """Per tool and frame, as NDI's Combined API reports it (BX/TX port status and handle
    status), and as the simulated tracker reproduces it."""
    OK = "ok"
    MISSING = "missing"                          # not seen: line of sight lost, or not enabled
    OUT_OF_VOLUME = "out_of_volume"              # seen, outside the characterised volume
    PARTIALLY_OUT_OF_VOLUME = "partially_out_of_volume"  # some markers outside it
    DISABLED = "disabled"                        # the port/handle is not enabled


@dataclass(frozen=True)
class ToolPose:
    """One tool in one frame: ``T_tracker_tool`` (4x4, mm), the marker fit's RMS (mm) and
    the status. Anything but ``OK`` carries a NaN pose and NaN RMS."""
    name: str
    T_tracker_tool: np.ndarray
    rms_mm: float
    status: ToolStatus

    def __post_init__(self):
        T = np.asarray(self.T_tracker_tool, dtype=float)
        if T.shape != (4, 4):
            raise ValueError(f"tool {self.name!r}: a pose is a 4x4 matrix, got shape {T.shape}")
        if self.status is not ToolStatus.OK:
            T, rms = NAN_POSE, float("nan")
        else:
            rms = float(self.rms_mm)
        T = T.copy() if T is not NAN_POSE else T
        T.setflags(write=False)
        object.__setattr__(self, "T_tracker_tool", T)
        object.__setattr__(self, "rms_mm", rms)

    @property
    def ok(self) -> bool:
        return self.status is ToolStatus.OK and bool(np.isfinite(self.T_tracker_tool).all())


@dataclass(frozen=True)
class TrackerFrame:
    """One measurement of all tools. ``frame_number`` is the tracker's own counter;
    ``timestamp`` is this host's monotonic clock (s) when the frame was received, which is
    what the 50 ms staleness watchdog compares against."""
    frame_number: int
    timestamp: float
    tools: dict[str, ToolPose] = field(default_factory=dict)

    def pose(self, name: str) -> ToolPose:
        """The tool's pose; a tool the frame does not list is MISSING (never a KeyError)."""
        p = self.tools.get(name)
        return p if p is not None else ToolPose(name, NAN_POSE, float("nan"), ToolStatus.MISSING)


def usable(frame: "TrackerFrame | None", names, now: float, max_age_s: float = 0.050) -> bool:
    """True only if the frame is fresh (age <= ``max_age_s``) and every named tool is OK:
    the one test the control code applies before it uses tracker data."""
    if frame is None or not (now - frame.timestamp <= max_age_s):
        return False
    return all(frame.pose(n).ok for n in names)


MAX_FRAME_AGE_S = 0.050     # the watchdog: older tracker data is a fault, never used for control


def frame_age_fault(frame: "TrackerFrame | None", now: float, max_age_s: float = MAX_FRAME_AGE_S,
                    since: float | None = None) -> str | None:
    """The watchdog's verdict: ``"tracker: no frame for N ms"`` when the newest frame (or,
    before the first, the start of tracking ``since``) is older than ``max_age_s``; None
    while the data is fresh. The same bound as ``usable``."""
    t = frame.timestamp if frame is not None else since
    if t is None:
        return "tracker: no frame yet"
    age = now - t
    if age <= max_age_s:
        return None
    return f"tracker: no frame for {age * 1000:.0f} ms"
