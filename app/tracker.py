"""The tracker panel's controller: on the GUI thread, a 30 Hz timer reads the driver's newest
frame (``Tracker.latest()`` never blocks: the driver's own thread fills it) and shows which
tools are seen, their flags and RMS, the frame rate and age, the status and a banner when a
tool the tracked loop needs is not seen.

``tracker_view`` is the logic, Qt-free, that a script or test calls the same way; the
monitor only carries its result to the panel.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QObject, QTimer

from core.navigation.tracking import MAX_FRAME_AGE_S, TrackerFrame, frame_age_fault
from devices.base import DeviceStatus

__all__ = ["TrackerView", "tracker_view", "FrameRate", "TrackerMonitor", "install_tracker_panel",
           "link_health", "REFRESH_HZ"]

REFRESH_HZ = 30.0
_WHY = {"missing": "not seen", "out_of_volume": "out of the camera's volume",
        "partially_out_of_volume": "partly out of the camera's volume", "disabled": "disabled on the tracker"}


@dataclass(frozen=True)
class TrackerView:
    status: DeviceStatus
    message: str
    banner: str | None
    rows: tuple[tuple[str, str, float, bool], ...]     # name, status value ("stale": old data), rms_mm, needed
    frame_number: int | None
    age_ms: float | None
    stale: bool = False


def tracker_view(frame: TrackerFrame | None, tools, control_tools, now: float,
                 status: DeviceStatus = DeviceStatus.CONNECTED, message: str = "",
                 max_age_s: float = MAX_FRAME_AGE_S) -> TrackerView:
    """What the panel shows: per tool its status and RMS; the watchdog's fault when the
    frame is stale (then every tool counts as not seen); a banner naming each control tool
    that is not seen, and why."""
    tools = list(tools) + [t for t in control_tools if t not in tools]
    stale = frame_age_fault(frame, now, max_age_s) if frame is not None else None
    if frame is None:
        rows = tuple((t, "missing", math.nan, t in control_tools) for t in tools)
    elif stale:     # the last flags are history: the panel must not say "seen" from them
        rows = tuple((t, "stale", math.nan, t in control_tools) for t in tools)
    else:
        rows = tuple((t, frame.pose(t).status.value, frame.pose(t).rms_mm, t in control_tools) for t in tools)
    if stale and status in (DeviceStatus.CONNECTED, DeviceStatus.SIMULATED):   # between the driver's reports
        status, message = DeviceStatus.FAULT, stale
    banner = None
    if control_tools:
        if frame is None or stale:
            why = stale or "no tracker data"
            banner = f"Tracking lost ({why}): tracker data is not used for control"
        else:
            lost = [f"{name} {_WHY.get(s, s)}" for name, s, _, needed in rows if needed and s != "ok"]
            if lost:
                banner = "Not tracked: " + "; ".join(lost) + " — tracker data is not used for control"
    return TrackerView(status, message, banner, rows, None if frame is None else frame.frame_number,
                       None if frame is None else (now - frame.timestamp) * 1000.0, bool(stale))


_HEALTH = (("bad_replies", "bad reply", "bad replies"), ("partial_replies", "reply cut short", "replies cut short"),
           ("silences", "unanswered request", "unanswered requests"), ("error_replies", "ERROR reply", "ERROR replies"))


def link_health(counts) -> str:
    """The driver's link counters in words ("" when all is well): a flaky cable shows here
    before it becomes a fault."""
    if not isinstance(counts, dict):
        return ""
    parts = [f"{counts[k]} {one if counts[k] == 1 else many}" for k, one, many in _HEALTH if counts.get(k)]
    reconnects = max(0, int(counts.get("bring_ups", 0)) - 1)
    if reconnects:
        parts.append(f"{reconnects} reconnection{'s' if reconnects > 1 else ''}")
    return ("since connecting: " + ", ".join(parts)) if parts else ""


class FrameRate:
    """The camera's frame rate from frame numbers and receipt times over the last ``window_s``."""

    def __init__(self, window_s: float = 1.0):
        self.window_s = window_s
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, frame: TrackerFrame | None) -> None:
        if frame is None or (self._seen and self._seen[-1][1] == frame.frame_number):
            return
        if self._seen and frame.frame_number < self._seen[-1][1]:
            self._seen.clear()              # the tracker restarted its count
        self._seen.append((frame.timestamp, frame.frame_number))
        while len(self._seen) > 2 and frame.timestamp - self._seen[0][0] > self.window_s:
            self._seen.popleft()     # (two kept: a GUI thread held up still gets a rate)

    def hz(self) -> float:
        if len(self._seen) < 2:
            return math.nan
        (t0, n0), (t1, n1) = self._seen[0], self._seen[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else math.nan


class TrackerMonitor(QObject):
    """Polls ``source()`` (the running driver, or None) at ``REFRESH_HZ`` and feeds ``panel``."""

    def __init__(self, panel, source: Callable[[], object | None], tools, control_tools,
                 device_status: Callable[[], tuple[DeviceStatus, str]] | None = None,
                 clock=time.monotonic, parent=None):
        super().__init__(parent)
        self.panel, self.source = panel, source
        self.tools, self.control_tools = tuple(tools), tuple(control_tools)
        self.device_status = device_status
        self.clock = clock
        self.rate = FrameRate()
        self.view: TrackerView | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / REFRESH_HZ))
        self.timer.timeout.connect(self.refresh)

    def start(self) -> None:
        self.refresh()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def refresh(self) -> TrackerView:
        tracker = self.source()
        frame = None
        if tracker is not None:
            try:
                frame = tracker.latest()
            except Exception as e:   # a driver bug must show in the panel, not stop the timer
                frame, status, message = None, DeviceStatus.FAULT, f"tracker driver failed: {e}"
            else:
                status, message = self._status(tracker)
        else:
            status, message = self.device_status() if self.device_status else (DeviceStatus.DISCONNECTED,
                                                                                 "not running")
        self.rate.add(frame)
        view = tracker_view(frame, tools=self.tools or tuple(getattr(tracker, "tools", ())),
                            control_tools=self.control_tools, now=self.clock(), status=status, message=message)
        self.view = view
        self.panel.set_status(view.status, view.message)
        self.panel.set_banner(view.banner)
        self.panel.set_tools(view.rows)
        self.panel.set_frame(view.frame_number, math.nan if view.stale else self.rate.hz(), view.age_ms)
        self.panel.set_link_health(link_health(getattr(tracker, "counts", None)))
        return view

    def _status(self, tracker) -> tuple[DeviceStatus, str]:
        try:
            status = tracker.status() if callable(tracker.status) else tracker.status
            message = getattr(tracker, "last_message", "")
        except Exception as e:
            return DeviceStatus.FAULT, f"status query failed: {e}"
        if not isinstance(status, DeviceStatus):
            return DeviceStatus.FAULT, f"driver returned status {status!r}"
        return status, message if isinstance(message, str) else ""


def install_tracker_panel(station) -> TrackerMonitor | None:
    """Dock the Tracker panel beside the others when a tracker is configured."""
    config = station.config
    if config.tracker.kind == "none":
        return None
    from widgets.panels.tracker_panel import TrackerPanel
    panel = TrackerPanel()
    station.window.add_dock("Tracker", panel, "right")
    devices = station.devices

    def source():
        worker = devices.workers.get("tracker")
        return None if worker is None else worker.driver

    monitor = TrackerMonitor(panel, source, config.tracker.tool_names, config.tracker.control_tools,
                             device_status=lambda: station.session.device_status("tracker"), parent=panel)
    monitor.start()
    return monitor
