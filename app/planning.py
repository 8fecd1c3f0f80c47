"""Planning in the GUI: the controller between the viewers, the planning panel, the 3D view
and the plan book.

The plan itself (trajectories, selection, undo history, the plan file) is
``app.state.plans.PlanBook``, Qt-free and owned by the session (``Session.plans``).
``PlanningController`` connects the viewers, the panel and the 3D view to it: click
entry in one view, the epipolar line appears in the other, click there, then the
target the same way; the overlays, the 3D trajectories and the table redraw from the
book's signals, whoever edited it.
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut

from app.qt_connect import connect_while_alive
from app.state.plans import (PALETTE, PLAN_FORMAT, PlanBook, PlanFileError, load_plan_file,
                             planning_calibration, save_plan_file)
from core.planning.plausibility import unusual_figures
from core.planning.two_view import (LEVELS, POINTS, VIEWS, ClickOutsideImageError, PatientAxes, PlanningError,
                                    check_click, epipolar_line, image_angles, plan_warnings,
                                    tool_band, trajectory_angles)

__all__ = ["PlanBook", "PlanFileError", "PLAN_FORMAT", "PALETTE", "load_plan_file", "save_plan_file",
           "PlanningController", "install_planning"]

log = logging.getLogger(__name__)

# --- the controller ------------------------------------------------------------------------
def _other(view: str) -> str:
    return "lat" if view == "ap" else "ap"


class PlanningController(QObject):
    """Connects viewer clicks and handle drags, the panel and the 3D view to a ``PlanBook``.

    Placing a point: ``new_trajectory()`` (N) starts with the entry; a click in
    either view sets it there and the other view shows that pixel's X-ray as a
    dashed (epipolar) line; the click in the other view is snapped to the line
    (unless ``snap`` is off or Shift is held) and gives the 3D point; then the
    target the same way. Handles drag in either view; everything follows live.
    ``message(text, warn)`` says what to do next, or what is wrong.

    Viewer overlay layers used (``viewer.overlay(name)``, each can be hidden):
    "trajectories" (handles and axes), "tool" (the tool band), "labels" (names),
    "epipolar" (the dashed line of the point being placed).
    """
    message = Signal(str, bool)
    drag_finished = Signal()

    def __init__(self, model: PlanBook, viewers: dict, panel=None, scene_view=None, confirm=None,
                 T_scene_cage=None, patient_axes=None, shortcut_parent=None, parent=None, session=None):
        from widgets.viewers.trajectory_overlays import EpipolarOverlay

        super().__init__(parent)
        self.model, self.viewers, self.panel = model, viewers, panel
        self.session = session
        self.scene = None
        if scene_view is not None:
            from widgets.scene.trajectories import SceneTrajectories
            self.scene = SceneTrajectories(scene_view, T_scene_cage)
            self.scene.enable_picking(self._picked_in_3d)
        self.confirm = confirm or self._ask
        self.patient_axes = patient_axes or PatientAxes()
        self.snap = True
        self.placing: tuple[str, str] | None = None  # (trajectory id, "entry"|"target")
        self._drag = None                             # (tid, kind, view, token) while a handle moves
        self._overlays = {v: {} for v in VIEWS}
        # While a click or a drag is handled (``_input``), only the 2D overlays are redrawn at
        # once; the 3D trajectories and the table follow from a zero timer, coalesced, once
        # both viewers have painted (the surgeon's eyes are on the image just clicked)
        self._input = False
        self._later: set[str] = set()        # trajectories whose 3D actor is due
        self._panel_due = False
        self._later_timer = QTimer(self, singleShot=True, interval=0)
        self._later_timer.timeout.connect(self.flush)
        for v in VIEWS:  # created bottom to top: the band under the handles, names on top
            for layer in ("epipolar", "tool", "trajectories", "labels"):
                viewers[v].overlay(layer)
        self._epipolar = {v: EpipolarOverlay(viewers[v].overlay("epipolar")) for v in VIEWS}
        for v in VIEWS:
            viewers[v].pixel_clicked.connect(lambda u, vv, mods, view=v: self.click(view, u, vv, mods))
        for signal, slot in ((model.trajectory_changed, "_refresh"), (model.trajectory_removed, "_drop"),
                             (model.selection_changed, "_selection_changed"), (model.order_changed, "_refresh_panel"),
                             (model.history.changed, "_undo_state")):
            connect_while_alive(signal, self, slot)
        if panel is not None:
            self._connect_panel(panel)
        if shortcut_parent is not None:
            self.install_shortcuts(shortcut_parent)
        self.refresh_all()

    # -- user actions ----------------------------------------------------------------------
    def new_trajectory(self, level: str | None = None, side: str | None = None) -> str:
        """Create a trajectory (default: the other side of the last one, or the next level)."""
        if level is None or side is None:
            level, side = self._next_level_side()
        tid = self.model.add(level, side)
        self.placing = (tid, "entry")
        self._say(f"{self.model.get(tid).name}: click the ENTRY point in the AP or the LAT image")
        self._refresh_epipolar()
        return tid

    def _next_level_side(self) -> tuple[str, str]:
        if not len(self.model):
            return "L4", "left"
        last = self.model.trajectories()[-1]
        if last.side == "left":
            return last.level, "right"
        i = LEVELS.index(last.level)
        return LEVELS[min(i + 1, len(LEVELS) - 1)], "left"

    def place(self, kind: str) -> None:
        """Click ``kind`` of the selected trajectory again, in both views (one undo step)."""
        tid = self.model.selected
        if not tid:
            self._say("select a trajectory in the table first", warn=True)
            return
        t = self.model.get(tid)
        if any(t.click(kind, v) is not None for v in VIEWS):
            self.model.history.begin_macro(f"re-place {kind} of {t.name}")
            for v in VIEWS:
                if self.model.get(tid).click(kind, v) is not None:
                    self.model.set_click(tid, kind, v, None)
            self.model.history.end_macro()
        self.placing = (tid, kind)
        self._say(f"{t.name}: click the {kind.upper()} point in the AP or the LAT image")
        self._refresh_epipolar()

    def cancel(self) -> None:
        """Esc: stop placing points (the clicks made so far stay, Ctrl+Z removes them)."""
        if self.placing is not None:
            self.placing = None
            self._say("placing cancelled")
        self._refresh_epipolar()

    def click(self, view: str, u: float, v: float, modifiers=None) -> None:
        """A click on ``view`` at raw pixel (u, v): places the pending point, if any."""
        if self.placing is None or self.placing[0] not in self.model:
            self.placing = None
            self._say("press N (New) to plan a trajectory, or drag a handle to move a point")
            return
        tid, kind = self.placing
        shift = modifiers is not None and bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        with self._user_input():
            try:
                t = self.model.place_click(tid, kind, view, (u, v), self.viewers[view].image_shape,
                                           snap=self.snap != shift)
            except ClickOutsideImageError as e:
                self._say(str(e), warn=True)
                return
            self._after_click(tid, kind, view, t)
        self._paint_viewers_now()

    @contextlib.contextmanager
    def _user_input(self):
        """While a click or a handle drag is handled: 3D and table updates wait (``flush``)."""
        outer, self._input = self._input, True
        try:
            yield
        finally:
            self._input = outer
            if not outer and (self._later or self._panel_due):
                self._later_timer.start()

    @property
    def frame_3d_due(self) -> bool:
        """A 3D update or frame is still to come (the event loop brings it)."""
        return bool(self._later) or bool(getattr(self.scene, "_render_pending", False))

    @contextlib.contextmanager
    def _batch(self):
        """Outside a click: the table refreshed once at the end, however many trajectories changed."""
        if self._input:
            yield
            return
        self._input = True
        try:
            yield
        finally:
            self._input = False
        self.flush()

    def flush(self) -> None:
        """Apply the 3D and table updates that a click or a drag left for later (the zero
        timer calls it once the viewers have painted; a script or a test may call it at once)."""
        self._later_timer.stop()
        later, self._later = self._later, set()
        panel, self._panel_due = self._panel_due, False
        for tid in self.model.ids():
            if tid in later:
                self._refresh_3d(tid)
        if panel or later:
            self._refresh_panel()

    def _paint_viewers_now(self) -> None:
        """Both viewers show the edit before the 3D view renders it (that render waits for the
        event loop): the surgeon's eyes are on the image just clicked."""
        for viewer in self.viewers.values():
            paint = getattr(viewer, "paint_now", None)
            if paint is not None:
                paint()

    def _after_click(self, tid: str, kind: str, view: str, t) -> None:
        other = _other(view)
        if t.click(kind, other) is None:
            self._say(f"{t.name}: now click the {kind.upper()} in the {other.upper()} image, on the dashed line")
        elif not self._gap_message(tid, kind):
            if kind == "entry" and any(t.click("target", v) is None for v in VIEWS):
                self.placing = (tid, "target")
                self._say(f"{t.name}: entry placed. Now click the TARGET point in the AP or the LAT image")
            else:
                self.placing = None
                problems = plan_warnings(t, self.patient_axes, self.model.max_gap_mm)
                if problems:
                    self._say(f"{t.name}: " + "; ".join(problems), warn=True)
                else:
                    self._say(f"{t.name} planned" + (f": {t.length_mm:.1f} mm" if t.complete else ""))
        if self.model.calibration is None:
            self._say("no calibration yet: the clicks are kept, and the 3D trajectory appears once the cage is "
                      "calibrated", warn=True)
        self._refresh_epipolar()

    def _gap_message(self, tid: str, kind: str) -> bool:
        """Say so (and return True) when the two clicks of ``kind`` do not show the same point."""
        t = self.model.get(tid)
        gap = getattr(t, f"{kind}_gap_mm")
        if gap is None or gap <= self.model.max_gap_mm:
            return False
        self._say(f"{t.name} {kind}: the AP and LAT clicks are {gap:.1f} mm apart: they do not show the same "
                  "point. Drag a handle onto the dashed line", warn=True)
        return True

    def handle_dragged(self, view: str, tid: str, kind: str, u: float, v: float, finished: bool) -> None:
        """A handle of ``tid`` moves in ``view``: one undo step per drag, live in both views and 3D."""
        if self._drag is None or self._drag[:3] != (tid, kind, view):
            self._drag = (tid, kind, view, object())
            self.model.select(tid)
        token = self._drag[3]
        with self._user_input():
            try:
                uv = check_click((u, v), self.viewers[view].image_shape, view)
            except ClickOutsideImageError as e:
                self._say(str(e) + " (the handle stays inside)", warn=True)
                self._drag = None if finished else self._drag
                self._refresh(tid)
                return
            self.model.set_click(tid, kind, view, uv, drag_token=token)
            if finished:
                self._drag = None
                self.drag_finished.emit()
                if not self._gap_message(tid, kind):
                    self._say(f"{self.model.get(tid).name}: {kind} moved in {view.upper()}")
                self._refresh_epipolar()
        self._paint_viewers_now()

    def delete_selected(self) -> bool:
        """Delete the selected trajectory after confirmation; True when deleted."""
        tid = self.model.selected
        if not tid:
            self._say("select a trajectory to delete", warn=True)
            return False
        name = self.model.get(tid).name
        if not self.confirm(f"Delete trajectory {name}?\n\nCtrl+Z brings it back."):
            return False
        if self.placing and self.placing[0] == tid:
            self.placing = None
        self.model.remove(tid)
        self._say(f"{name} deleted (Ctrl+Z brings it back)")
        return True

    def undo(self) -> None:
        h = self.model.history
        self._say(f"undo: {h.undo_text()}" if h.can_undo() else "nothing to undo")
        h.undo()
        self._refresh_epipolar()

    def redo(self) -> None:
        h = self.model.history
        self._say(f"redo: {h.redo_text()}" if h.can_redo() else "nothing to redo")
        h.redo()
        self._refresh_epipolar()

    def save(self, path) -> Path:
        path = self.model.save(path)
        self._say(f"plan saved to {path}")
        return path

    def load(self, path) -> None:
        try:
            self.model.load(path)
        except PlanFileError as e:
            self._say(str(e), warn=True)
            raise
        self.placing = None
        self.refresh_all()
        self._say(f"plan loaded from {path}: {len(self.model)} trajectories")

    def view_along(self) -> None:
        """V: the 3D view looks down the selected trajectory."""
        tid = self.model.selected
        if self.scene is None or tid not in self.scene.ids():
            self._say("select a complete trajectory to look along it", warn=True)
            return
        self.scene.view_along(tid)

    def _picked_in_3d(self, tid: str) -> None:
        if tid in self.model:
            self.model.select(tid)
            self._say(f"{self.model.get(tid).name} selected")

    def _resumed(self, _resumed=None) -> None:
        """A resumed session's plan is in the book: nothing is being placed, draw it all."""
        self.placing = None
        self.refresh_all()

    def set_snap(self, on: bool) -> None:
        self.snap = bool(on)

    def set_calibration(self, calibration, keep: str = "3d") -> None:
        """A new calibration (``PlanBook.set_calibration``; through the session when there is
        one, so that the session and the plan agree); placing stops."""
        self.placing = None
        if self.session is not None:
            self.session.set_calibration(calibration, keep)   # calls back calibration_followed
        else:
            self.model.set_calibration(planning_calibration(calibration), keep)
        self.refresh_all()

    def calibration_followed(self, _calibration=None) -> None:
        """The session's calibration changed (the book already follows it): placing stops."""
        self.placing = None
        self.refresh_all()

    # -- wiring ------------------------------------------------------------------------------
    def _connect_panel(self, panel) -> None:
        panel.new_requested.connect(lambda: self.new_trajectory())
        panel.place_requested.connect(self.place)
        panel.delete_requested.connect(self.delete_selected)
        panel.undo_requested.connect(self.undo)
        panel.redo_requested.connect(self.redo)
        panel.selection_requested.connect(self.model.select)
        panel.edit_requested.connect(self._edit)
        panel.snap_toggled.connect(self.set_snap)
        panel.view_along_requested.connect(self.view_along)
        panel.save_requested.connect(self._save_dialog)
        panel.load_requested.connect(self._load_dialog)
        self.message.connect(panel.set_status)

    def _edit(self, tid: str, field: str, value) -> None:
        try:
            self.model.set_fields(tid, **{field: value})
        except PlanningError as e:
            self._say(str(e), warn=True)
            self._refresh_panel()

    def install_shortcuts(self, parent) -> list:
        """N new, E/T re-place entry/target, V look along in 3D, Delete, Ctrl+Z, Ctrl+Shift+Z
        (and Ctrl+Y), and Esc to stop placing.

        Esc is not a QShortcut: the viewers' measuring tools also end on Esc (two Esc shortcuts
        in one window would make both ambiguous, so neither would fire). Placing listens to the
        Esc key presses nobody else took, through an event filter on ``parent``. Esc never
        stops the robot: STOP has its own key (F12, the robot panel's).
        """
        keys = (("N", self.new_trajectory), ("E", lambda: self.place("entry")), ("T", lambda: self.place("target")),
                ("V", self.view_along),
                (QKeySequence.StandardKey.Delete, self.delete_selected), (QKeySequence.StandardKey.Undo, self.undo),
                ("Ctrl+Shift+Z", self.redo), ("Ctrl+Y", self.redo))
        self.shortcuts = []
        for key, slot in keys:
            s = QShortcut(QKeySequence(key), parent)
            s.setContext(Qt.ShortcutContext.WindowShortcut)
            s.activated.connect(lambda slot=slot: slot())
            self.shortcuts.append(s)
        parent.installEventFilter(self)
        return self.shortcuts

    def eventFilter(self, obj, event) -> bool:
        """Esc that reached the window unclaimed: stop placing (see ``install_shortcuts``)."""
        if (event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape
                and self.placing is not None):
            self.cancel()
            return True
        return False

    def _ask(self, text: str) -> bool:
        from PySide6.QtWidgets import QMessageBox

        parent = self.panel.window() if self.panel is not None else None
        answer = QMessageBox.question(parent, "Delete trajectory", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _save_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.panel, "Save plan", "plan.json", "Plans (*.json)")
        if path:
            self.save(path)

    def _load_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.panel, "Load plan", "", "Plans (*.json)")
        if path:
            try:
                self.load(path)
            except PlanFileError:
                pass  # already said in the panel

    def _say(self, text: str, warn: bool = False) -> None:
        (log.warning if warn else log.info)("%s", text)
        self.message.emit(text, warn)

    # -- drawing -----------------------------------------------------------------------------
    def refresh_all(self) -> None:
        with self._batch():
            for tid in self.model.ids():
                self._refresh(tid)
        self._refresh_panel()
        self._refresh_epipolar()
        self._undo_state()

    def _overlay(self, view: str, tid: str):
        from widgets.viewers.trajectory_overlays import TrajectoryOverlay

        if tid not in self._overlays[view]:
            viewer = self.viewers[view]
            self._overlays[view][tid] = TrajectoryOverlay(
                viewer.overlay("trajectories"),
                on_drag=lambda kind, u, v, fin, view=view, tid=tid: self.handle_dragged(view, tid, kind, u, v, fin),
                tool_group=viewer.overlay("tool"), label_group=viewer.overlay("labels"))
        return self._overlays[view][tid]

    def _refresh(self, tid: str) -> None:
        """Redraw ``tid`` in both views, then in 3D and its table row (those two later while a
        click or a drag is handled: ``flush``)."""
        t = self.model.get(tid)
        selected = tid == self.model.selected
        warn = bool(self.model.gap_too_large(tid))
        calib = self.model.calibration
        for view in VIEWS:
            clicks = {k: t.click(k, view) for k in POINTS}
            outline = axis = None
            if t.complete and calib is not None:
                band = tool_band(calib, view, t.entry_mm, t.target_mm, t.diameter_mm)
                outline, axis = band.outline, band.axis
            elif clicks["entry"] is not None and clicks["target"] is not None:
                axis = [clicks["entry"], clicks["target"]]
            self._overlay(view, tid).update(clicks, t.colour, t.name, outline, axis, selected, warn, t.side)
        if self._input:
            if self.scene is not None and (t.complete or tid in self.scene.ids()):   # else nothing in 3D
                self._later.add(tid)
            self._panel_due = True
        else:
            self._later.discard(tid)
            self._refresh_3d(tid)
            self._refresh_panel()
        if self._drag is not None and self._drag[0] == tid:
            self._refresh_epipolar()

    def _refresh_3d(self, tid: str) -> None:
        if self.scene is None or tid not in self.model:
            return
        t = self.model.get(tid)
        first = not self.scene.ids() and t.complete
        self.scene.update(tid, t.entry_mm, t.target_mm, t.colour, t.diameter_mm, tid == self.model.selected)
        if first:  # the first trajectory in 3D: show it, later the user's camera is kept
            self.scene.focus()

    def _drop(self, tid: str) -> None:
        self._later.discard(tid)
        for view in VIEWS:
            overlay = self._overlays[view].pop(tid, None)
            if overlay is not None:
                overlay.remove()
        if self.scene is not None:
            self.scene.remove(tid)
        if self.placing and self.placing[0] == tid:
            self.placing = None
        self._refresh_panel()
        self._refresh_epipolar()

    def _selection_changed(self, tid: str) -> None:
        with self._batch():   # one table refresh for all, not one per trajectory
            for t in self.model.ids():
                self._refresh(t)
        if self.panel is not None:
            self.panel.set_selected(tid)

    def epipolar_source(self):
        """(tid, kind, view) of the point whose X-ray is drawn in the other view, or None."""
        if self._drag is not None:
            return self._drag[:3]
        if self.placing is None or self.placing[0] not in self.model:
            return None
        tid, kind = self.placing
        t = self.model.get(tid)
        clicked = [v for v in VIEWS if t.click(kind, v) is not None]
        return (tid, kind, clicked[0]) if len(clicked) == 1 else None

    def _refresh_epipolar(self) -> None:
        src, calib = self.epipolar_source(), self.model.calibration
        lines = {v: None for v in VIEWS}
        colour = "#ffffff"
        if src is not None and calib is not None and src[0] in self.model:
            tid, kind, view = src
            t = self.model.get(tid)
            other = _other(view)
            shape = self.viewers[other].image_shape
            try:
                lines[other] = epipolar_line(calib, view, t.click(kind, view), other, shape=shape)
            except PlanningError as e:
                self._say(str(e), warn=True)
            colour = t.colour
        for v in VIEWS:
            self._epipolar[v].set_line(lines[v], colour)

    def _refresh_panel(self, *_) -> None:
        if self.panel is None:
            return
        if self._input:
            self._panel_due = True
            return
        self._panel_due = False
        rows = []
        for tid, t in zip(self.model.ids(), self.model.trajectories()):
            row = {"tid": tid, "name": t.name, "level": t.level, "side": t.side, "colour": t.colour,
                   "diameter": t.diameter_mm, "length": None, "medial": None, "cranial": None,
                   "gap": None, "warn": bool(self.model.gap_too_large(tid))}
            gaps = [g for g in (t.entry_gap_mm, t.target_gap_mm) if g is not None]
            row["gap"] = max(gaps) if gaps else None
            row["problems"] = plan_warnings(t, self.patient_axes, self.model.max_gap_mm)
            if t.complete and t.length_mm >= 1.0:
                a = trajectory_angles(t.entry_mm, t.target_mm, t.side, self.patient_axes)
                row.update(length=a.length_mm, medial=math.degrees(a.medial_rad), cranial=math.degrees(a.cranial_rad))
                row["unusual"] = unusual_figures(t.level, a.medial_rad, a.cranial_rad, a.length_mm)
                if self.model.calibration is not None:
                    drawn = image_angles(self.model.calibration, t.entry_mm, t.target_mm)
                    row["image_angles"] = {v: (math.degrees(ang), px) for v, (ang, px) in drawn.items()}
            rows.append(row)
        self.panel.set_rows(rows)
        self.panel.set_selected(self.model.selected)

    def _undo_state(self, *_):
        if self.panel is not None and shiboken6.isValid(self.panel):
            h = self.model.history
            self.panel.set_undo_state(h.can_undo(), h.can_redo(), h.undo_text(), h.redo_text())


def install_planning(window, session=None, T_scene_cage=None, patient_axes=None, confirm=None,
                     autosave_ms: int | None = 500) -> PlanningController:
    """Add planning to the main window: the "Planning" dock, overlays in both viewers,
    trajectories in the 3D view, shortcuts; returns the controller (``.model`` is the plan book).

    ``window`` needs ``viewers``, ``scene_view`` and ``add_dock`` (widgets.main_window).
    With a ``session`` (app.session.Session) the controller works on ``session.plans`` (which
    follows ``session.calibration``) and every edit is written to ``<session folder>/plan.json``
    once the viewers have painted it (during a handle drag at most every ``autosave_ms``, and at
    its end; ``None``: the session writes each edit at once itself). ``PlanBook.load`` reads it
    back exactly; a resumed session's plan is not written again until it changes.
    ``T_scene_cage`` places the cage frame in the 3D view's frame (the simulator's
    ``T_world_cage``); ``patient_axes`` defaults to the cage's standard mounting.
    """
    from widgets.panels.planning_panel import PlanningPanel

    panel = PlanningPanel(colours=PALETTE)
    dock = window.add_dock("Planning", panel, "right")
    model = session.plans if session is not None else PlanBook()
    controller = PlanningController(model, window.viewers, panel, window.scene_view, confirm=confirm,
                                    T_scene_cage=T_scene_cage, patient_axes=patient_axes,
                                    shortcut_parent=window, parent=window, session=session)
    scene_dock = window.scene_view.parentWidget()
    if hasattr(window, "resizeDocks") and scene_dock is not None and scene_dock in window.findChildren(type(dock)):
        window.resizeDocks([scene_dock, dock], [45, 55], Qt.Orientation.Vertical)  # 3D above, plan below
    if session is not None:
        connect_while_alive(session.calibration_changed, controller, "calibration_followed")
        if autosave_ms is not None:
            _save_plan_edits_after_the_paint(session, controller, int(autosave_ms))
        connect_while_alive(session.resumed, controller, "_resumed")
    return controller


def _save_plan_edits_after_the_paint(session, controller, drag_ms: int) -> None:
    """Every plan edit is written (``Session.save_plan``, atomic) from a zero timer: after the
    click's viewers have painted, one write for the edits of one event. While a handle is being
    dragged, at most one write every ``drag_ms``, and the drag's end at once."""
    timer = QTimer(controller, singleShot=True, interval=0)
    timer.timeout.connect(session.save_plan_quietly)

    def edited():
        if controller._drag is not None:          # a drag: throttled
            if not timer.isActive():
                timer.start(drag_ms)
        else:
            timer.start(0)
    session.plan_save_scheduler = edited
    controller.drag_finished.connect(lambda: timer.start(0))
    controller.autosave_timer = timer
    # the resumed plan is the file on disk: not written again until it changes
    connect_while_alive(session.resumed, timer, "stop", nargs=0)



