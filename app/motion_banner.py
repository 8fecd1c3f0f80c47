"""What the banner says about patient motion and the tracker's markers (issue 13's "banners
for motion and for tools out of view"): pure text from the motion monitor's state and the
latest tracker frame, for ``MainWindow.show_banner`` (None hides it).

Not yet wired to a live tracker stream: the GUI's simulated room does not move the simulated
tracker's bodies yet; ``MotionBannerFeed`` is the piece that will sit between the two.
"""
from __future__ import annotations

from core.navigation.tracking import ToolStatus, usable

__all__ = ["banner_text", "MotionBannerFeed"]

_WHAT = {ToolStatus.MISSING: "is not seen: clear the line of sight (C-arm, drapes, someone in the way)",
         ToolStatus.OUT_OF_VOLUME: "is outside the tracker's volume: move the camera",
         ToolStatus.PARTIALLY_OUT_OF_VOLUME: "is at the edge of the tracker's volume: move the camera",
         ToolStatus.DISABLED: "is not enabled on the tracker"}
_NAMES = {"robot_ref": "The robot's marker", "patient_ref": "The patient's marker"}


def banner_text(frame, now: float, motion_state=None, needed=("robot_ref", "patient_ref"),
                max_age_s: float = 0.050) -> str | None:
    """One line, or None when there is nothing to say. A tracker problem comes first (the motion
    cannot be followed without it), then a re-verification request, then a bump being followed."""
    if frame is None:
        return "Tracker: no frame yet: check that the tracker is connected and tracking"
    if not (now - frame.timestamp <= max_age_s):
        return f"Tracker: its last frame is {1000 * (now - frame.timestamp):.0f} ms old: the tracker stalled"
    if not usable(frame, needed, now, max_age_s):
        for name in needed:
            p = frame.pose(name)
            if not p.ok:
                return f"{_NAMES.get(name, name)} {_WHAT.get(p.status, p.status.value)}"
    if motion_state is not None and motion_state.message:
        return f"Patient motion — {motion_state.message}"
    return None


class MotionBannerFeed:
    """Calls ``show(text)`` only when the banner's text changes (a 60 Hz stream would otherwise
    repaint the window every frame)."""

    def __init__(self, show):
        self.show = show
        self.text: str | None = None

    def update(self, frame, now: float, motion_state=None) -> str | None:
        text = banner_text(frame, now, motion_state)
        if text != self.text:
            self.text = text
            self.show(text)
        return text
