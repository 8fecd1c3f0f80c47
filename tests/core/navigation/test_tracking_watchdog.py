"""The tracker watchdog: data older than 50 ms is a fault, and a tool whose status is not
OK is never usable for control, whatever its pose holds."""
import math

import numpy as np
import pytest

from core.navigation.tracking import (MAX_FRAME_AGE_S, NAN_POSE, ToolPose, ToolStatus, TrackerFrame,
                                      frame_age_fault, usable)

T = np.eye(4)
T[:3, 3] = [1.0, 2.0, 3.0]


def frame(t=10.0, **status):
    tools = {name: ToolPose(name, T, 0.2, s) for name, s in status.items()}
    return TrackerFrame(7, t, tools)


@pytest.mark.parametrize("age_ms, fault", [(0, None), (49, None), (51, "51"), (250, "250")])
def test_frame_older_than_50_ms_is_a_fault(age_ms, fault):
    f = frame(robot_ref=ToolStatus.OK)
    msg = frame_age_fault(f, 10.0 + age_ms / 1000.0)
    if fault is None:
        assert msg is None and usable(f, ["robot_ref"], 10.0 + age_ms / 1000.0)
    else:
        assert msg == f"tracker: no frame for {fault} ms"
        assert not usable(f, ["robot_ref"], 10.0 + age_ms / 1000.0)
    assert MAX_FRAME_AGE_S == 0.050


def test_before_the_first_frame_the_age_counts_from_the_start_of_tracking():
    assert frame_age_fault(None, 5.0) == "tracker: no frame yet"
    assert frame_age_fault(None, 5.02, since=5.0) is None
    assert frame_age_fault(None, 5.3, since=5.0) == "tracker: no frame for 300 ms"
    assert frame_age_fault(frame(t=math.nan), 5.0) is not None      # a broken clock is never fresh


@pytest.mark.parametrize("status", [s for s in ToolStatus if s is not ToolStatus.OK])
def test_any_status_but_ok_is_never_used_even_with_a_pose(status):
    p = ToolPose("patient_ref", T, 0.2, status)          # a driver that filled in a pose anyway
    assert np.isnan(p.T_tracker_tool).all() and math.isnan(p.rms_mm) and not p.ok
    f = TrackerFrame(1, 10.0, {"patient_ref": p, "robot_ref": ToolPose("robot_ref", T, 0.2, ToolStatus.OK)})
    assert not usable(f, ["robot_ref", "patient_ref"], 10.0)
    assert usable(f, ["robot_ref"], 10.0)


def test_an_unlisted_tool_is_missing_and_no_frame_is_never_usable():
    f = frame(robot_ref=ToolStatus.OK)
    assert f.pose("tool").status is ToolStatus.MISSING
    assert not usable(f, ["robot_ref", "tool"], 10.0)
    assert not usable(None, ["robot_ref"], 10.0)
    assert ToolPose("x", NAN_POSE, 0.1, ToolStatus.OK).ok is False       # NaN pose marked OK
