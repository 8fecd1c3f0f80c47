"""The C-arm panel: angles go out after a pause (once), a refusal restores the held pose,
acquire buttons, last-shot angles in words."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from widgets.panels.carm_panel import POSE_DELAY_MS, CArmPanel, angle_text

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(qtbot):
    p = CArmPanel()
    qtbot.addWidget(p)
    p.show()
    return p


def test_angle_text_names_the_directions():
    assert angle_text(20, 5) == "LAO 20° · CRAN 5°"
    assert angle_text(-35.4, -12.6) == "RAO 35° · CAUD 13°"
    assert angle_text(0, 0) == "LAO 0° · CRAN 0°"


def test_typed_angles_are_sent_once_after_the_pause(panel, qtbot):
    sent = []
    panel.pose_requested.connect(lambda p, s: sent.append((p, s)))
    panel.spins["primary"].setValue(10)
    panel.spins["primary"].setValue(25)
    panel.spins["secondary"].setValue(-15)
    assert sent == []  # not while the user is still turning the knobs
    assert "→ LAO 25° · CAUD 15°" in panel.pose_label.text()
    qtbot.waitUntil(lambda: bool(sent), timeout=POSE_DELAY_MS * 5)
    qtbot.wait(POSE_DELAY_MS + 50)
    assert sent == [(25.0, -15.0)]
    panel.set_pose_confirmed(25, -15)
    assert panel.pose_label.text() == "C-arm at LAO 25° · CAUD 15°"


def test_flush_sends_a_pending_pose_now_and_nothing_twice(panel):
    sent = []
    panel.pose_requested.connect(lambda p, s: sent.append((p, s)))
    panel.set_angles(-30, 0)
    panel.flush()
    panel.flush()
    assert sent == [(-30.0, 0.0)]


def test_limits_and_refusal_restore_the_held_pose(panel):
    panel.spins["primary"].setValue(500)
    panel.spins["secondary"].setValue(-90)
    assert panel.angles() == (120.0, -60.0)  # the C-arm's orbit range
    panel.set_pose_confirmed(120, -60, "C-arm angles out of range")
    assert panel.angles() == (0.0, 0.0) and "refused: C-arm angles out of range" in panel.pose_label.text()


def test_acquire_buttons_and_last_shot(panel, qtbot):
    asked = []
    panel.acquire_requested.connect(asked.append)
    qtbot.mouseClick(panel.acquire_buttons["lat"], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.acquire_buttons["ap"], Qt.MouseButton.LeftButton)
    assert asked == ["lat", "ap"]
    assert min(b.height() for b in panel.acquire_buttons.values()) >= 44  # gloved hands
    panel.set_last_shot("ap", -20, 10, 1000)
    assert panel.last_labels["ap"].text() == "AP shot: RAO 20° · CRAN 10°, SID 1000 mm"
    panel.set_acquire_enabled(False, "the C-arm is fault")
    assert not panel.acquire_buttons["ap"].isEnabled() and "the C-arm is fault" in panel.acquire_buttons["ap"].toolTip()
    assert not panel.spins["primary"].isEnabled()
