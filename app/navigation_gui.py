"""Align and Verify in the window: the Navigate dock, the preview and the verified wire in 3D and
in both viewers, the workflow bar's "what next", a stopped robot in the status bar.

``install_navigation(station)`` wires an ``app.navigation.NavigationController`` to the
workstation's window, session, robot client, devices and simulated room, and returns it;
``workflow_hint(session, controller)`` is the one line the workflow bar shows.
"""
from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QObject

from app.navigation import NavigationController
from app.qt_connect import connect_while_alive

__all__ = ["install_navigation", "workflow_hint", "NavigationView"]

log = logging.getLogger(__name__)


def workflow_hint(session, nav=None) -> tuple[str, bool]:
    """(what to do next, whether something blocks it) for the session's current step."""
    step = session.step
    nxt = {"calibrate": "plan", "plan": "align", "align": "verify"}.get(step or "", None)
    if step is None or step == "calibrate":
        if session.calibration is None:
            return "Calibrate: acquire AP (F5) and LAT (F6) with the cage in view, then calibrate", False
        return "Next: Plan", False
    if step == "plan":
        why = session.step_blocker("align")
        if why is not None:
            return f"Plan: N for a new trajectory, then entry and target in both views · Align: {why}", True
        return "Next: Align the robot to the selected trajectory", False
    if step == "align":
        why = session.step_blocker("align")
        if why is not None:
            return f"Align blocked: {why}", True
        phase = getattr(nav, "phase", "idle")
        if nav is not None and nav.refusal:
            return f"Align refused: {nav.refusal}", True
        if phase in ("idle", "approach"):
            return "Align: check the preview, then hold MOVE (space bar) until the guide is on the line", False
        if phase == "correcting":
            return "Align: closed loop — acquiring AP + LAT with the wire in the guide and measuring it…", False
        if phase == "correction":
            return "Align: hold MOVE (space bar) to apply the correction measured from the shots", False
        if phase == "aligned" and (nav.loop is None or not nav.loop.done):
            return ("Align: Correct from shots (closed loop), or hold INSERT (I) to the planned depth, or "
                    "go on to Verify"), False
        if phase in ("aligned", "insert"):
            return "Align: hold INSERT (I) to the planned depth, or go on to Verify", False
        return "Next: Verify (AP + LAT with the wire in place)", False
    if step == "verify":
        why = session.step_blocker("verify")
        if why is not None:
            return f"Verify blocked: {why}", True
        v = session.verification
        if v is None:
            return "Verify: press Verify to acquire AP and LAT with the wire in place", False
        return f"Verified · {v.summary()}" if hasattr(v, "summary") else "Verified", False
    return (f"Next: {nxt}", False) if nxt else ("", False)


class NavigationView(QObject):
    """Renders the controller and the session into the panel, the 3D view and the viewers."""

    def __init__(self, station, nav: NavigationController, panel, parent=None):
        super().__init__(parent)
        from widgets.scene.alignment import AlignmentActors
        from widgets.viewers.trajectory_overlays import VerifiedToolOverlay
        self.station, self.nav, self.panel = station, nav, panel
        w = station.window
        self.actors = AlignmentActors(w.scene_view)
        self.overlays = {v: VerifiedToolOverlay(w.viewers[v].overlay("verification")) for v in ("ap", "lat")}
        self.T_scene_cage0 = np.eye(4)

    def calibrated(self, calibration) -> None:
        room = self.station.room
        if calibration is not None:
            T = None if room is None else room.T_world_cage_calibrated
            self.T_scene_cage0 = np.eye(4) if T is None else np.array(T, float)

    def show_preview(self, preview) -> None:
        if preview is None:
            self.actors.clear_preview()
            self.panel.show_preview(None)
            self.panel.show_refusal(self.nav.refusal and f"Refused: {self.nav.refusal}")
        else:
            T_scene_base = self.T_scene_cage0 @ self.nav.frames.T_cage0_base
            self.actors.show_preview(T_scene_base, preview.tip_path_mm, preview.T_base_tool, preview.insertion_end_mm)
            self.panel.show_preview(preview.summary)
        self.station._update_actions()

    def show_verification(self, result) -> None:
        if result is None:
            self.actors.clear_verified()
            for o in self.overlays.values():
                o.clear()
            self.panel.show_verification([], None)
            return
        r = result.record
        grade = result.grade
        lines = [f"entry deviation {r.entry_deviation_mm:.2f} mm", f"tip deviation {r.tip_deviation_mm:.2f} mm",
                 f"angle {r.angle_deg:.2f}°", f"depth {r.depth_error_mm:+.2f} mm (+ deeper)"]
        if result.truth:
            t = result.truth
            lines.append(f"simulation truth: entry {t['entry_deviation_mm']:.2f} mm, tip {t['tip_deviation_mm']:.2f} "
                         f"mm, {t['angle_deg']:.2f}°")
        if r.grade is not None and not r.grade.get("grade"):
            lines.append(f"no grade: {r.grade.get('reason')}")
        self.panel.show_verification(lines, grade)
        colour = {"A": "#7ee08a", "B": "#c8e07e"}.get(grade or "", "#f0c674")
        text = (f"entry {r.entry_deviation_mm:.2f} mm\ntip {r.tip_deviation_mm:.2f} mm\n{r.angle_deg:.2f}°"
                + (f"\nGR {grade}" if grade else ""))
        for v, o in self.overlays.items():
            if result.detections is None:      # restored from the case folder: its figures, no wire drawn
                o.clear()
                continue
            det = result.detections[v]
            o.show(det.samples_raw, det.tip_raw, result.plan_uv[v], text, colour)
        T = result.T_world_cage if result.T_world_cage is not None else self.T_scene_cage0
        back = r.tip_mm - 70.0 * r.direction
        self.actors.show_verified(T, back, r.tip_mm, r.plan_entry_mm, r.plan_target_mm, r.entry_on_line_mm,
                                  f"entry {r.entry_deviation_mm:.2f} mm",
                                  f"tip {r.tip_deviation_mm:.2f} mm · {r.angle_deg:.1f}°" + (f" · {grade}" if grade
                                                                                              else ""), grade)

    def show_correction(self, summary) -> None:
        self.panel.show_correction(summary, self.nav.loop_truth)
        self.update_hint()

    def update_hint(self) -> None:
        self.panel.set_next(*workflow_hint(self.station.session, self.nav))

    def step(self, step: str) -> None:
        active = step in ("align", "verify")
        self.panel.set_keys_active(active)
        if active:
            dock = self.station.window.docks.get("Navigate")
            if dock is not None:
                dock.raise_()
        if step == "align" and self.nav.preview is None:
            self.nav.plan_align()


def install_navigation(station) -> NavigationController:
    """The Navigate dock and everything it draws; returns the controller (``station.navigation``)."""
    from widgets.panels.navigation_panel import NavigationPanel

    w, s = station.window, station.session
    client = station.robot
    kin = client.kinematics if client is not None else None
    nav = NavigationController(s, kin, client, station.devices, station.room)
    if station.config.carm.kind == "simulated":
        nav.sid_mm = float(getattr(station.config.carm, "sid_mm", 1000.0) or 1000.0)
    panel = NavigationPanel()
    w.add_dock("Navigate", panel, "right")
    view = NavigationView(station, nav, panel, parent=panel)
    view.calibrated(s.calibration)
    s.calibration_changed.connect(view.calibrated)

    panel.move_held.connect(nav.hold_to_move)
    panel.insert_held.connect(nav.hold_to_insert)
    panel.preview_requested.connect(nav.plan_align)
    panel.correct_requested.connect(nav.correct)
    panel.guide_held.connect(nav.hold_to_guide)
    panel.show_simulated_hand(getattr(getattr(station.config, "force_sensor", None), "kind", "") == "simulated")
    nav.calibration_invalidated.connect(
        lambda why: w.show_banner(f"Calibration no longer valid — {why[0].upper()}{why[1:]}"))

    def verify():
        if s.step != "verify" and not station.go_to_step("verify"):
            panel.show_message(f"Verify blocked: {s.step_blocker('verify')}", True)
            return
        nav.verify()
    panel.verify_requested.connect(verify)
    if client is not None:
        panel.stop_requested.connect(client.stop)
        if hasattr(client, "event"):      # the loop's refusals (e.g. hand guiding) shown where the surgeon looks
            client.event.connect(lambda kind, payload: kind == "refused" and panel.show_message(f"Not done: {payload}",
                                                                                               True))
        client.stopped_changed.connect(panel.set_stopped)
        # STOPPED on the robot's pill in the status bar, seen whichever tab is in front
        w.status_bar.set_stopped("robot", bool(client.stopped))
        client.stopped_changed.connect(lambda on: w.status_bar.set_stopped("robot", bool(on)))
    else:
        panel.stop_button.setEnabled(False)
        panel.stop_button.setToolTip("no robot is configured")

    for signal, slot in ((nav.message, "show_message"), (nav.progress_changed, "show_progress"),
                         (nav.phase_changed, "set_phase")):
        connect_while_alive(signal, panel, slot)
    connect_while_alive(nav.preview_changed, view, "show_preview")
    connect_while_alive(nav.correction_changed, view, "show_correction")
    connect_while_alive(s.verification_changed, view, "show_verification")
    connect_while_alive(s.step_changed, view, "step")
    nav.phase_changed.connect(lambda *_: station._update_actions())
    connect_while_alive(s.changed, view, "update_hint")
    connect_while_alive(nav.phase_changed, view, "update_hint", nargs=0)
    connect_while_alive(nav.preview_changed, view, "update_hint", nargs=0)
    view.update_hint()
    station.navigation_view = view
    station.navigation_panel = panel
    return nav
