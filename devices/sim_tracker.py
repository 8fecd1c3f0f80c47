"""The simulated optical tracker as a driver (``devices.tracker.Tracker``): its own thread
measures the simulated room's truth at ``rate_hz`` (60 Hz, a Polaris Vega's default) with
``core.simulation.tracker.TrackerModel`` and keeps the newest ``TrackerFrame``.

The truth is a callable ``truth() -> (poses, occluders)``: ``poses`` maps body name to
``T_tracker_body`` (4x4, mm), ``occluders`` lists ``Occluder``s in the tracker frame. The
simulated room sets it (``set_truth``); without one, a still room (the robot and patient
references 1.5 m in front of the camera) so that the status bar and the panel have frames.
A truth callable that raises makes that frame's bodies MISSING and the message says why: the
reading thread never dies of it.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from core.navigation.tracker_sim import frame_from
from core.navigation.tracking import TrackerFrame
from core.simulation.tracker import PATIENT_REF, ROBOT_REF, TrackerModel
from devices.base import DeviceStatus
from devices.tracker import Tracker, TrackerError

__all__ = ["SimulatedTracker", "still_room"]


def still_room():
    """Both references in front of the camera, nothing in the way."""
    T_r, T_p = np.eye(4), np.eye(4)
    T_r[:3, 3] = (-120.0, 40.0, 1500.0)
    T_p[:3, 3] = (100.0, 0.0, 1550.0)
    return {ROBOT_REF.name: T_r, PATIENT_REF.name: T_p}, []


class SimulatedTracker(Tracker):
    """A tracker driven by the simulator; ``latest()`` never blocks."""

    def __init__(self, seed: int = 0, rate_hz: float = 60.0, truth=None, model: TrackerModel | None = None,
                 clock=time.monotonic):
        if not (rate_hz > 0):
            raise TrackerError(f"the simulated tracker's rate must be positive, got {rate_hz}")
        self.model = model or TrackerModel(seed=int(seed))
        self.tools = tuple(sorted(self.model.bodies))
        self.period_s = 1.0 / float(rate_hz)
        self._truth = truth or still_room
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: TrackerFrame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame_number = 0
        self.last_message = ""

    def set_truth(self, truth) -> None:
        """Where the bodies are from now on (a callable, see the module docstring)."""
        if not callable(truth):
            raise TrackerError("the simulated tracker's truth must be a callable returning (poses, occluders)")
        with self._lock:
            self._truth = truth

    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="simulated-tracker", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=1.0)

    close = disconnect

    def status(self) -> DeviceStatus:
        return DeviceStatus.SIMULATED if self._thread is not None and self._thread.is_alive() else \
            DeviceStatus.DISCONNECTED

    def latest(self) -> TrackerFrame | None:
        with self._lock:
            return self._latest

    def measure_now(self) -> TrackerFrame:
        """One frame measured now (the reading thread's step; also callable directly in tests)."""
        with self._lock:
            truth = self._truth
        try:
            poses, occluders = truth()
            message = ""
        except Exception as e:               # noqa: BLE001 - the simulation's fault is a missing frame
            poses, occluders = {}, []
            message = f"simulated room gave no truth: {' '.join(str(e).split())}"
        self._frame_number += 1
        frame = frame_from(self.model.measure(poses, occluders), self._frame_number, self._clock())
        seen = [n for n in self.tools if frame.pose(n).ok]
        with self._lock:
            self._latest = frame
            self.last_message = message or (f"seen: {', '.join(seen)}" if seen else "no tool seen")
        return frame

    def _run(self) -> None:
        next_t = self._clock()
        while not self._stop.is_set():
            self.measure_now()
            next_t += self.period_s
            delay = next_t - self._clock()
            if delay < -self.period_s:          # fell behind (a loaded machine): no burst to catch up
                next_t = self._clock()
                delay = 0.0
            self._stop.wait(max(0.0, delay))
