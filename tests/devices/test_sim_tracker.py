"""The simulated tracker driver: its thread delivers fresh frames at about 60 Hz, the status
and message, an occluded truth gives MISSING frames that ``usable`` refuses, a truth that raises
is a missing frame with a message (the thread lives on), and the app's driver table finds it."""
import time

import numpy as np
import pytest

from core.navigation.tracking import ToolStatus, usable
from core.simulation.tracker import Occluder
from devices.base import DeviceStatus
from devices.sim_tracker import SimulatedTracker, still_room
from devices.tracker import Tracker, TrackerError
from tests.waiting import until


def test_thread_delivers_fresh_frames_and_stops():
    tr = SimulatedTracker(seed=1)
    assert isinstance(tr, Tracker) and tr.latest() is None and tr.status() is DeviceStatus.DISCONNECTED
    tr.connect()
    try:
        assert until(lambda: tr.latest() is not None and tr.latest().frame_number >= 10)
        assert tr.status() is DeviceStatus.SIMULATED
        f = tr.latest()
        # fresh: its timestamp is the monotonic clock of the reading (wide margin for a loaded machine)
        assert usable(f, ("robot_ref", "patient_ref"), time.monotonic(), max_age_s=1.0)
        assert "robot_ref" in tr.last_message
    finally:
        tr.disconnect()
    n = tr.latest().frame_number
    time.sleep(0.1)
    assert tr.latest().frame_number == n and tr.status() is DeviceStatus.DISCONNECTED


def test_rate_is_about_60_hz_on_a_simulated_clock():
    """measure_now stamps frames with the driver's clock; the thread paces by period_s."""
    t = [0.0]
    tr = SimulatedTracker(seed=2, clock=lambda: t[0])
    assert tr.period_s == pytest.approx(1 / 60)
    stamps = []
    for k in range(5):
        t[0] = k * tr.period_s
        stamps.append(tr.measure_now().timestamp)
    assert np.allclose(np.diff(stamps), 1 / 60) and tr.latest().frame_number == 5
    with pytest.raises(TrackerError, match="positive"):
        SimulatedTracker(rate_hz=0)


def test_occluded_truth_is_missing_and_never_usable():
    poses, _ = still_room()
    wall = [Occluder(np.array([-2000.0, -2000.0, 700.0]), np.array([2000.0, 2000.0, 700.0]), 900.0, "drape")]
    tr = SimulatedTracker(seed=3, truth=lambda: (poses, wall))
    f = tr.measure_now()
    assert f.pose("robot_ref").status is ToolStatus.MISSING and np.isnan(f.pose("robot_ref").T_tracker_tool).all()
    assert not usable(f, ("robot_ref",), f.timestamp)
    assert tr.last_message == "no tool seen"


def test_a_failing_truth_is_a_missing_frame_with_its_reason():
    def broken():
        raise RuntimeError("scene not built\nyet")
    tr = SimulatedTracker(seed=4, truth=broken)
    f = tr.measure_now()
    assert all(not p.ok for p in f.tools.values())
    assert tr.last_message == "simulated room gave no truth: scene not built yet"
    tr.set_truth(still_room)
    assert tr.measure_now().pose("patient_ref").ok
    with pytest.raises(TrackerError, match="callable"):
        tr.set_truth(42)


def test_driver_table_builds_the_simulated_tracker():
    from app.config import load_defaults
    from app.devices_controller import driver_factory
    factory, why = driver_factory("tracker", load_defaults())
    assert why == "" and isinstance(factory(), SimulatedTracker)
