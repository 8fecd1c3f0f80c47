"""The Navigate panel with the Align/Verify controller: hold-to-run buttons and held keys drive
the dead-man, a refusal and the verification's numbers are shown, in the panel, both viewers
and the 3D view (a workstation without its device panels: cheap)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from app.config import load_defaults
from app.main import Workstation
from app.navigation import NavigationController, VerificationResult
from app.navigation_gui import NavigationView, workflow_hint
from core.geometry.rigid import apply, invert
from core.navigation.verification import verify
from devices.base import DeviceStatus
from tests.app.test_navigation import FakeCalibration, FakeClient, base_line, home_q, kin, put
from widgets.panels.navigation_panel import NavigationPanel

pytestmark = pytest.mark.gui


@pytest.fixture
def rig(qtbot, tmp_path):
    st = Workstation(load_defaults(), settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     panels=False)
    st.session._root = tmp_path / "sessions"
    s = st.session
    s.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")
    s.set_robot_state({"q": home_q().tolist()})
    client = FakeClient()
    nav = NavigationController(s, kin(), client)
    nav.calibration_changed(FakeCalibration())
    panel = NavigationPanel()
    st.window.add_dock("Navigate", panel, "right")
    view = NavigationView(st, nav, panel, parent=panel)
    st.navigation = nav
    panel.move_held.connect(nav.hold_to_move)
    panel.insert_held.connect(nav.hold_to_insert)
    nav.preview_changed.connect(view.show_preview)
    nav.phase_changed.connect(panel.set_phase)
    s.verification_changed.connect(view.show_verification)
    qtbot.addWidget(st.window)
    st.window.show()
    qtbot.waitExposed(st.window)
    st.window.docks["Navigate"].raise_()
    yield SimpleNamespace(st=st, s=s, nav=nav, client=client, panel=panel, view=view)
    st.shutdown()
    st.window.close()


def plan(rig):
    e, t, d = base_line()
    T = invert(kin().cage(home_q()))
    return put(rig.s, entry=apply(T, e), target=apply(T, t)), (e, t, d)


def test_the_hold_button_and_the_space_bar_hold_the_deadman_only_while_held(rig, qtbot):
    plan(rig)
    p, c = rig.panel, rig.client
    QTest.mousePress(p.move_button, Qt.MouseButton.LeftButton)
    assert [x[1] for x in c.sent("follow_path")] == ["approach"] and c.calls[-1] == ("set_deadman", True)
    QTest.mouseRelease(p.move_button, Qt.MouseButton.LeftButton)
    assert c.calls[-1] == ("set_deadman", False)
    assert "guide 20 mm above the entry" in p.preview_label.text()
    assert rig.view.actors.preview_parts and rig.st.window.scene_view.actor("alignment_preview") is not None
    # the held key: press, auto-repeats (ignored), release
    p.set_keys_active(True)
    QTest.keyPress(rig.st.window, Qt.Key.Key_Space)
    assert c.calls[-1] == ("set_deadman", True) and p.move_button.isDown()
    n = len(c.calls)
    QTest.keyRelease(rig.st.window, Qt.Key.Key_Space)
    assert c.calls[n:] == [("set_deadman", False)] and not p.move_button.isDown()
    assert len(c.sent("follow_path")) == 1
    # inactive outside Align/Verify: the space bar is nobody's dead-man
    p.set_keys_active(False)
    n = len(c.calls)
    QTest.keyPress(rig.st.window, Qt.Key.Key_Space)
    QTest.keyRelease(rig.st.window, Qt.Key.Key_Space)
    assert len(c.calls) == n


def test_insert_is_its_own_hold_and_opens_only_on_the_line(rig, qtbot):
    plan(rig)
    p, c, nav = rig.panel, rig.client, rig.nav
    assert not p.insert_button.isEnabled()
    nav.hold_to_move(True)
    rig.s.set_robot_state({"q": nav.preview.plan.q_goal.tolist(),
                           "follow": {"kind": "approach", "progress": 1.0, "arrived": True, "paused": False,
                                      "reason": ""}})
    assert p.insert_button.isEnabled() and not p.move_button.isEnabled() and p.verify_button.isEnabled()
    p.set_keys_active(True)
    QTest.keyPress(rig.st.window, Qt.Key.Key_I)
    assert c.sent("follow_path")[-1][1] == "insert" and c.calls[-1] == ("set_deadman", True)
    QTest.keyRelease(rig.st.window, Qt.Key.Key_I)
    assert c.calls[-1] == ("set_deadman", False)


def test_a_refusal_is_shown_in_the_panel_and_the_workflow_bar(rig, qtbot):
    e = np.array([625.0, 475.0, -135.0]) + [900.0, 0, 0]
    T = invert(kin().cage(home_q()))
    put(rig.s, entry=apply(T, e), target=apply(T, e + [0, 0, 40.0]))
    rig.s.step = "align"
    assert rig.nav.plan_align() is None
    text = rig.panel.refusal_label.text()
    assert rig.panel.refusal_label.isVisible() and text.startswith("Refused: L4 left: the tool at the stand-off")
    assert "outside the workspace" in text and rig.panel.preview_label.text() == ""
    hint, blocked = workflow_hint(rig.s, rig.nav)
    assert blocked and hint.startswith("Align refused: L4 left: the tool at the stand-off")
    rig.st._update_actions()
    assert rig.st.window.workflow_bar.hint.text() == hint


def test_the_verification_numbers_are_shown_in_the_panel_both_viewers_and_3d(rig, qtbot):
    tid, (e, t, d) = plan(rig)
    # a measured wire 1.0 mm off the entry, 2 deg off the axis, ending 1.5 mm deep
    perp = np.cross(d, [0, 0, 1.0]); perp /= np.linalg.norm(perp)
    th = math.radians(2.0)
    axis = math.cos(th) * d + math.sin(th) * np.cross(d, perp)
    entry = e + 1.0 * perp
    tip = entry + (45.0 + 1.5) * axis
    rec = verify(e, t, (tip, axis), name="L4 left")
    det = SimpleNamespace(samples_raw=np.array([[100.0, 100.0], [140.0, 160.0]]), tip_raw=np.array([140.0, 160.0]))
    res = VerificationResult(tid, rec, {"ap": det, "lat": det}, None,
                             {"ap": np.array([[101.0, 99.0], [141.0, 158.0]]), "lat": np.array([[99.0, 101.0],
                                                                                                 [139.0, 161.0]])})
    rig.s.set_verification(res)
    text = rig.panel.result_label.text()
    assert rec.entry_deviation_mm == pytest.approx(1.0, abs=1e-9) and rec.angle_deg == pytest.approx(2.0, abs=1e-9)
    assert "entry deviation 1.00 mm" in text and "angle 2.00°" in text
    assert f"tip deviation {rec.tip_deviation_mm:.2f} mm" in text
    for v in ("ap", "lat"):
        o = rig.view.overlays[v]
        assert o.visible and o.text.startswith("entry 1.00 mm\ntip ") and "2.00°" in o.text
    sv = rig.st.window.scene_view
    assert sv.actor("verified_tool") is not None and sv.actor("verified_tool:entry_label").GetInput() == \
        "entry 1.00 mm"
    rig.s.set_verification(None)
    assert not rig.view.overlays["ap"].visible and sv.actor("verified_tool") is None


def test_the_closed_loop_button_opens_on_the_line_and_each_pair_is_listed(rig, qtbot):
    plan(rig)
    p, nav = rig.panel, rig.nav
    assert not p.correct_button.isEnabled()
    nav.hold_to_move(True)
    rig.s.set_robot_state({"q": nav.preview.plan.q_goal.tolist(),
                           "follow": {"kind": "approach", "progress": 1.0, "arrived": True, "paused": False,
                                      "reason": ""}})
    assert p.correct_button.isEnabled()
    rig.s.step_blocker = lambda step: None      # the hint alone: the step's own blockers are tested elsewhere
    rig.s.step = "align"
    text, blocked = workflow_hint(rig.s, nav)
    assert "Correct from shots" in text and not blocked
    p.set_phase("correction")                   # a correction measured: Move applies it, Correct waits
    assert p.move_button.isEnabled() and not p.correct_button.isEnabled() and not p.insert_button.isEnabled()
    p.show_correction({"shots": 2, "converged": True, "stop_reason": "converged after 2 shot pair(s)",
                       "iterations": [{"shot": 1, "residual_mm": 3.35, "lateral_mm": 1.9, "residual_deg": 0.34,
                                       "correction_mm": 3.4, "correction_deg": 0.3},
                                      {"shot": 2, "residual_mm": 0.02, "lateral_mm": 0.02, "residual_deg": 0.01,
                                       "correction_mm": 0.0, "correction_deg": 0.0}]},
                      [{"tip_mm": 3.06, "angle_deg": 0.32}, {"tip_mm": 0.34, "angle_deg": 0.03}])
    shown = p.loop_label.text()
    assert "pair 1: residual 3.35 mm, 0.34° → correction 3.40 mm, 0.30°" in shown
    assert "pair 2: residual 0.02 mm, 0.01°" in shown and "truth 0.34 mm" in shown and "converged" in shown
    p.show_correction(None)
    assert p.loop_label.text() == ""
