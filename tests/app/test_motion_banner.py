"""The motion / tools-out-of-view banner's text: tracker problems first, then re-verification,
then a bump being followed; nothing for a still or breathing patient; only changes are shown."""
import numpy as np

from app.motion_banner import MotionBannerFeed, banner_text
from core.navigation.patient_motion import MotionState
from core.navigation.tracking import NAN_POSE, ToolPose, ToolStatus, TrackerFrame


def _frame(t, **status):
    tools = {n: ToolPose(n, np.eye(4) if status.get(n, ToolStatus.OK) is ToolStatus.OK else NAN_POSE, 0.1,
                         status.get(n, ToolStatus.OK)) for n in ("robot_ref", "patient_ref")}
    return TrackerFrame(1, t, tools)


def test_banner_texts():
    breathing = MotionState(1.0, "breathing", 1.0, 1.0, 0.1, False, "")
    assert banner_text(_frame(1.0), 1.01, breathing) is None
    assert "no frame yet" in banner_text(None, 1.0)
    assert "80 ms old" in banner_text(_frame(1.0), 1.08)
    t = banner_text(_frame(1.0, patient_ref=ToolStatus.MISSING), 1.0)
    assert t.startswith("The patient's marker is not seen")
    assert "edge of the tracker's volume" in banner_text(_frame(1.0, robot_ref=ToolStatus.PARTIALLY_OUT_OF_VOLUME), 1.0)
    bump = MotionState(5.0, "bump", 9.0, 9.0, 1.0, False, "patient motion: 9.0 mm; the guide follows")
    assert banner_text(_frame(5.0), 5.0, bump) == "Patient motion — patient motion: 9.0 mm; the guide follows"
    # a tracker problem outranks the motion
    assert banner_text(_frame(5.0, robot_ref=ToolStatus.MISSING), 5.0, bump).startswith("The robot's marker")


def test_feed_shows_only_changes():
    shown = []
    feed = MotionBannerFeed(shown.append)
    for k in range(5):
        feed.update(_frame(k / 60), k / 60)
    feed.update(_frame(0.1, patient_ref=ToolStatus.MISSING), 0.1)
    feed.update(_frame(0.12, patient_ref=ToolStatus.MISSING), 0.12)
    feed.update(_frame(0.2), 0.2)
    # nothing to say at first (no call), the marker lost (one call though two frames), then clear
    assert shown == ["The patient's marker is not seen: clear the line of sight (C-arm, drapes, someone in the way)",
                     None]
