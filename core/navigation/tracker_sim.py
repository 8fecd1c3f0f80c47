"""The simulated tracker's measurements as the tracker vocabulary's ``TrackerFrame``
(``core.simulation`` lies below ``core.navigation`` and cannot name its types)."""
from __future__ import annotations

from core.navigation.tracking import ToolPose, ToolStatus, TrackerFrame

__all__ = ["frame_from"]


def frame_from(measurements: dict, frame_number: int, timestamp: float) -> TrackerFrame:
    """``TrackerFrame`` from ``TrackerModel.measure``'s name -> ``BodyMeasurement``."""
    tools = {n: ToolPose(n, m.T_tracker_body, m.rms_mm, ToolStatus(m.status)) for n, m in measurements.items()}
    return TrackerFrame(int(frame_number), float(timestamp), tools)
