"""What the tracker panel shows, computed without Qt: per tool its flag and RMS, the watchdog's
fault on stale data, the banner for control tools not seen, the camera's frame rate."""
import math

import numpy as np
import pytest

from app.tracker import FrameRate, link_health, tracker_view
from core.navigation.tracking import NAN_POSE, ToolPose, ToolStatus, TrackerFrame
from devices.base import DeviceStatus

CONTROL = ("robot_ref", "patient_ref")


def frame(n=100, t=10.0, **status):
    return TrackerFrame(n, t, {k: ToolPose(k, np.eye(4) if s is ToolStatus.OK else NAN_POSE, 0.21, s)
                               for k, s in status.items()})


def test_all_seen_no_banner_and_rows_in_order():
    f = frame(robot_ref=ToolStatus.OK, patient_ref=ToolStatus.OK, probe=ToolStatus.OK)
    v = tracker_view(f, ("robot_ref", "patient_ref", "probe"), CONTROL, now=10.012)
    assert v.banner is None and v.status is DeviceStatus.CONNECTED
    assert [(r[0], r[1], r[3]) for r in v.rows] == [("robot_ref", "ok", True), ("patient_ref", "ok", True),
                                                    ("probe", "ok", False)]
    assert v.rows[0][2] == pytest.approx(0.21) and v.age_ms == pytest.approx(12.0)


@pytest.mark.parametrize("status, words", [
    (ToolStatus.OUT_OF_VOLUME, "patient_ref out of the camera's volume"),
    (ToolStatus.PARTIALLY_OUT_OF_VOLUME, "patient_ref partly out of the camera's volume"),
    (ToolStatus.MISSING, "patient_ref not seen"),
    (ToolStatus.DISABLED, "patient_ref disabled")])
def test_a_control_tool_not_seen_raises_the_banner(status, words):
    v = tracker_view(frame(robot_ref=ToolStatus.OK, patient_ref=status), CONTROL, CONTROL, now=10.01)
    assert words in v.banner and "not used for control" in v.banner
    assert math.isnan(v.rows[1][2])


def test_a_tool_not_needed_for_control_raises_no_banner():
    v = tracker_view(frame(robot_ref=ToolStatus.OK, patient_ref=ToolStatus.OK, probe=ToolStatus.MISSING),
                     ("robot_ref", "patient_ref", "probe"), CONTROL, now=10.0)
    assert v.banner is None and v.rows[2][1] == "missing"


def test_stale_data_is_a_fault_and_a_banner_even_if_every_tool_was_ok():
    f = frame(robot_ref=ToolStatus.OK, patient_ref=ToolStatus.OK)
    v = tracker_view(f, CONTROL, CONTROL, now=10.120)
    assert v.status is DeviceStatus.FAULT and v.message == "tracker: no frame for 120 ms"
    assert v.banner.startswith("Tracking lost (tracker: no frame for 120 ms)")
    assert [r[1] for r in v.rows] == ["stale", "stale"] and all(math.isnan(r[2]) for r in v.rows)
    v = tracker_view(f, CONTROL, CONTROL, now=10.120, status=DeviceStatus.FAULT, message="tracker: bad CRC")
    assert v.message == "tracker: bad CRC"          # the driver's own fault is kept as it said it


def test_no_frame_lists_the_configured_tools_as_missing():
    v = tracker_view(None, CONTROL, CONTROL, now=1.0, status=DeviceStatus.DISCONNECTED, message="connecting")
    assert [r[1] for r in v.rows] == ["missing", "missing"] and v.frame_number is None
    assert v.status is DeviceStatus.DISCONNECTED and "no tracker data" in v.banner


def test_frame_rate_from_frame_numbers_and_receipt_times():
    r = FrameRate(window_s=1.0)
    for i in range(0, 61, 2):                  # polled every other camera frame at 60 Hz
        r.add(frame(n=500 + i, t=20.0 + i / 60.0))
        r.add(frame(n=500 + i, t=20.0 + i / 60.0))   # the same frame seen twice counts once
    assert r.hz() == pytest.approx(60.0, rel=1e-9)
    r.add(frame(n=3, t=21.1))                  # the tracker restarted its count
    assert math.isnan(r.hz())


def test_link_health_in_words():
    assert link_health({"bad_replies": 0, "bring_ups": 1}) == ""
    assert link_health(None) == ""
    assert link_health({"bad_replies": 3, "partial_replies": 1, "silences": 0, "error_replies": 2,
                        "bring_ups": 2}) == ("since connecting: 3 bad replies, 1 reply cut short, "
                                             "2 ERROR replies, 1 reconnection")
