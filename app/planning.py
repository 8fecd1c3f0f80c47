"""The plan: trajectories as an evented model, every edit an undoable command.

``PlanModel`` owns the trajectories (``core.planning.two_view.Trajectory``, immutable
records keyed by a stable id), the selection and the calibration that turns
clicks into 3D points. Every edit goes through ``model.undo_stack`` as a
``QUndoCommand`` that swaps whole records, so undo puts back exactly what was
there; dragging a handle merges into one undo step. 3D points are always
recomputed from the clicks with the current calibration (cheap: two rays).
Plans are saved as ``{"format": "fluoronav.plan/1", "frame": "cage",
"calibration": {...}, "trajectories": [{"id", "name", "level", "side", "colour",
"diameter_mm", "clicks", "entry_mm", "target_mm", "entry_gap_mm", "target_gap_mm"}]}``
(points in mm in the cage frame, clicks in raw pixels), written atomically and
validated on load.

``PlanningController`` (further down) connects the viewers, the panel and the
3D view to the model: click entry in one view, the epipolar line appears in
the other, click there, then the target the same way.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import logging
from dataclasses import replace
from pathlib import Path

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QUndoCommand, QUndoStack

from core.formats.files import write_json_atomic
from core.planning.two_view import (LEVELS, MAX_RAY_GAP_MM, POINTS, VIEWS, ClickOutsideImageError, PatientAxes,
                           PlanningError, Trajectory, TwoViewCalibration, check_click, epipolar_line,
                           image_angles, locate_trajectory, plan_warnings, snap_to_epipolar, tool_band,
                           trajectory_angles)

__all__ = ["PlanModel", "PlanFileError", "PLAN_FORMAT", "PALETTE", "load_plan_file", "save_plan_file",
           "PlanningController", "install_planning", "load_resumed_plan"]

log = logging.getLogger(__name__)

PLAN_FORMAT = "fluoronav.plan/1"
# Colours that stay distinct on a grey X-ray and for the common colour blindnesses.
PALETTE = ("#ffb000", "#00c8ff", "#ff5fd2", "#8cff3c", "#ff6a3d", "#b48cff", "#ffffff")
_DRAG_ID = 0x504C  # QUndoCommand.id() of handle moves, so that a drag merges


class PlanFileError(ValueError):
    """A plan file is missing, malformed or from an unknown format version."""


# --- undo commands -------------------------------------------------------------------
class _Replace(QUndoCommand):
    """Swap one trajectory record for another (None = absent): every edit is one of these."""

    def __init__(self, model: "PlanModel", tid: str, old, new, text: str, index: int | None = None,
                 drag_token=None):
        super().__init__(text)
        self.model, self.tid, self.old, self.new = model, tid, old, new
        self.index = index
        self.drag_token = drag_token

    def redo(self):
        self.model._put(self.tid, self.new, self.index)

    def undo(self):
        self.model._put(self.tid, self.old, self.index)

    def id(self) -> int:
        return _DRAG_ID if self.drag_token is not None else -1

    def mergeWith(self, other) -> bool:
        """Successive moves of one handle in one drag are one undo step."""
        if not isinstance(other, _Replace) or other.drag_token is None or other.drag_token != self.drag_token \
                or other.tid != self.tid:
            return False
        self.new = other.new
        return True


# --- the model ---------------------------------------------------------------------
class PlanModel(QObject):
    """Trajectories by id, in table order, with selection and calibration.

    Signals: ``trajectory_changed(tid)`` (added, edited or 3D recomputed),
    ``trajectory_removed(tid)``, ``order_changed()``, ``selection_changed(tid)``
    ("" for none), ``changed()`` after any of them.
    """
    trajectory_changed = Signal(str)
    trajectory_removed = Signal(str)
    order_changed = Signal()
    selection_changed = Signal(str)
    changed = Signal()

    def __init__(self, calibration: TwoViewCalibration | None = None, max_gap_mm: float = MAX_RAY_GAP_MM,
                 parent=None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self._items: dict[str, Trajectory] = {}
        self._order: list[str] = []
        self._selected = ""
        self._ids = itertools.count(1)
        self.calibration = calibration
        self.max_gap_mm = float(max_gap_mm)

    # -- reading ----------------------------------------------------------------------
    def ids(self) -> list[str]:
        return list(self._order)

    def trajectories(self) -> list[Trajectory]:
        return [self._items[t] for t in self._order]

    def get(self, tid: str) -> Trajectory:
        if tid not in self._items:
            raise PlanningError(f"no trajectory {tid!r} in the plan")
        return self._items[tid]

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, tid) -> bool:
        return tid in self._items

    @property
    def selected(self) -> str:
        return self._selected

    def gap_too_large(self, tid: str) -> list[str]:
        """The points ('entry'/'target') of ``tid`` whose two clicks miss by over ``max_gap_mm``."""
        t = self.get(tid)
        return [k for k in POINTS if (g := getattr(t, f"{k}_gap_mm")) is not None and g > self.max_gap_mm]

    # -- the one place records change (commands call it) -------------------------------------
    def _put(self, tid: str, traj: Trajectory | None, index: int | None = None) -> None:
        if traj is None:
            if tid in self._items:
                del self._items[tid]
                self._order.remove(tid)
                if self._selected == tid:
                    self._selected = ""
                    self.selection_changed.emit("")
                self.trajectory_removed.emit(tid)
                self.order_changed.emit()
                self.changed.emit()
            return
        traj = self._located(traj)
        added = tid not in self._items
        self._items[tid] = traj
        if added:
            self._order.insert(len(self._order) if index is None else min(index, len(self._order)), tid)
        self.trajectory_changed.emit(tid)
        if added:
            self.order_changed.emit()
        self.changed.emit()

    def _located(self, traj: Trajectory) -> Trajectory:
        """3D from the clicks with the current calibration (kept as saved when there is none)."""
        if self.calibration is None:
            return traj
        return locate_trajectory(self.calibration, traj, self.max_gap_mm)

    # -- edits (each one undoable) ---------------------------------------------------------
    def new_id(self) -> str:
        while (tid := f"t{next(self._ids)}") in self._items:
            pass
        return tid

    def default_name(self, level: str, side: str) -> str:
        base = f"{level} {side}"
        names = {t.name for t in self._items.values()}
        return base if base not in names else next(f"{base} {i}" for i in itertools.count(2)
                                                   if f"{base} {i}" not in names)

    def add(self, level: str = "L4", side: str = "left", name: str | None = None, colour: str | None = None,
            diameter_mm: float = 6.5) -> str:
        """Create a trajectory (no clicks yet), select it, and return its id."""
        colour = colour or PALETTE[len(self._order) % len(PALETTE)]
        traj = Trajectory(name or self.default_name(level, side), level, side, colour, diameter_mm)
        tid = self.new_id()
        self.undo_stack.push(_Replace(self, tid, None, traj, f"new trajectory {traj.name}"))
        self.select(tid)
        return tid

    def remove(self, tid: str) -> None:
        old = self.get(tid)
        self.undo_stack.push(_Replace(self, tid, old, None, f"delete {old.name}", index=self._order.index(tid)))

    def set_click(self, tid: str, kind: str, view: str, uv, drag_token=None) -> Trajectory:
        """Place (or with ``uv`` None clear) ``kind`` in ``view``; returns the new record.

        Moves that carry the same ``drag_token`` merge into one undo step.
        """
        old = self.get(tid)
        new = old.with_click(kind, view, uv)
        verb = "clear" if uv is None else ("move" if old.click(kind, view) is not None else "set")
        self.undo_stack.push(_Replace(self, tid, old, new, f"{verb} {kind} of {old.name} in {view.upper()}",
                                      drag_token=drag_token))
        return self.get(tid)

    def set_fields(self, tid: str, **fields) -> None:
        """Rename, change level, side, colour or diameter: ``set_fields(tid, level="L5")``."""
        allowed = {"name", "level", "side", "colour", "diameter_mm"}
        if not fields or not set(fields) <= allowed:
            raise PlanningError(f"editable fields are {', '.join(sorted(allowed))}, got {', '.join(fields) or 'none'}")
        old = self.get(tid)
        new = replace(old, **fields)  # validated by Trajectory
        if new == old:
            return
        what = ", ".join(f"{k} {v}" for k, v in fields.items())
        self.undo_stack.push(_Replace(self, tid, old, new, f"{old.name}: {what}"))

    # -- not undoable: view state and consequences ---------------------------------------------
    def select(self, tid: str) -> None:
        if tid and tid not in self._items:
            raise PlanningError(f"no trajectory {tid!r} in the plan")
        if tid != self._selected:
            self._selected = tid
            self.selection_changed.emit(tid)

    def set_calibration(self, calibration: TwoViewCalibration | None, keep: str = "3d") -> None:
        """Use a new calibration (new shots, or the same shots calibrated again).

        ``keep="3d"`` (new shots): a point that has its 3D position keeps it, the
        plan in the cage frame never moves silently, and its clicks become its
        projections in the new images; points without 3D are located from their
        clicks. ``keep="clicks"`` (same shots): every 3D point is recomputed from
        its clicks. The undo history is cleared: its clicks belong to the old images.
        """
        if keep not in ("3d", "clicks"):
            raise PlanningError(f"keep must be '3d' or 'clicks', got {keep!r}")
        self.calibration = calibration
        self.undo_stack.clear()
        for tid in self._order:
            t = self._items[tid]
            if keep == "3d" and calibration is not None:
                t = _reprojected(calibration, t)
            self._items[tid] = self._located(t)
            self.trajectory_changed.emit(tid)
        self.changed.emit()

    # -- file ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "saved_at": _dt.datetime.now().isoformat(timespec="seconds"),
                "frame": "cage", "calibration": _calibration_id(self.calibration),
                "max_gap_mm": self.max_gap_mm, "selected": self._selected or None,
                "trajectories": [{"id": tid, **self._items[tid].to_dict()} for tid in self._order]}

    def load_dict(self, d: dict) -> None:
        """Replace the plan by a validated ``fluoronav.plan/1`` dict; clears the undo history."""
        items, order, selected, max_gap = _parse_plan(d)
        self.undo_stack.clear()
        for tid in list(self._order):
            self._put(tid, None)
        self.max_gap_mm = max_gap
        for tid in order:
            self._put(tid, items[tid])
        self.select(selected if selected in self._items else "")

    def save(self, path) -> Path:
        return save_plan_file(self.to_dict(), path)

    def load(self, path) -> None:
        self.load_dict(load_plan_file(path))


def _calibration_id(calibration) -> dict | None:
    """What identifies the calibration the 3D points are in (CageCalibration: time, cage, method)."""
    if calibration is None:
        return None
    cage = getattr(calibration, "cage", None)
    return {"type": type(calibration).__name__, "created_utc": getattr(calibration, "created_utc", None),
            "method": getattr(calibration, "method", None),
            "cage": {k: cage.get(k) for k in ("name", "sha256")} if isinstance(cage, dict) else None}


def _reprojected(calibration: TwoViewCalibration, t: Trajectory) -> Trajectory:
    """``t`` with the clicks of each 3D point replaced by its projections (raw pixels)."""
    for kind in POINTS:
        point = getattr(t, f"{kind}_mm")
        if point is None:
            continue
        uv = calibration.project([list(point)])
        for view in VIEWS:
            t = t.with_click(kind, view, [float(x) for x in uv[view][0]])
    return t


def _parse_plan(d) -> tuple[dict, list, str, float]:
    if not isinstance(d, dict):
        raise PlanFileError(f"a plan must be a JSON object, got {type(d).__name__}")
    if d.get("format") != PLAN_FORMAT:
        raise PlanFileError(f"not a plan file of format {PLAN_FORMAT} (format is {d.get('format')!r})")
    rows = d.get("trajectories")
    if not isinstance(rows, list):
        raise PlanFileError("the plan has no 'trajectories' list")
    items, order = {}, []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"]:
            raise PlanFileError(f"trajectory {i + 1} has no id")
        tid = row["id"]
        if tid in items:
            raise PlanFileError(f"trajectory id {tid!r} appears twice")
        try:
            items[tid] = Trajectory.from_dict({k: v for k, v in row.items() if k != "id"})
        except (PlanningError, TypeError, ValueError) as e:
            raise PlanFileError(f"trajectory {i + 1} ({row.get('name', tid)}): {e}") from None
        order.append(tid)
    max_gap = d.get("max_gap_mm", MAX_RAY_GAP_MM)
    if not isinstance(max_gap, (int, float)) or not max_gap > 0:
        raise PlanFileError(f"max_gap_mm must be a positive number, got {max_gap!r}")
    return items, order, d.get("selected") or "", float(max_gap)


def save_plan_file(d: dict, path) -> Path:
    """Write a plan dict as JSON atomically (temporary file + rename in the same folder)."""
    return write_json_atomic(path, d)


def load_plan_file(path) -> dict:
    """Read and validate a plan file; PlanFileError says what is wrong."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanFileError(f"{path}: not a readable JSON plan ({e})") from None
    _parse_plan(d)
    return d


# --- the controller ------------------------------------------------------------------------
def _other(view: str) -> str:
    return "lat" if view == "ap" else "ap"


class PlanningController(QObject):
    """Connects viewer clicks and handle drags, the panel and the 3D view to a ``PlanModel``.

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

    def __init__(self, model: PlanModel, viewers: dict, panel=None, scene_view=None, confirm=None,
                 T_scene_cage=None, patient_axes=None, shortcut_parent=None, parent=None):
        from widgets.viewers.trajectory_overlays import EpipolarOverlay

        super().__init__(parent)
        self.model, self.viewers, self.panel = model, viewers, panel
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
        for v in VIEWS:  # created bottom to top: the band under the handles, names on top
            for layer in ("epipolar", "tool", "trajectories", "labels"):
                viewers[v].overlay(layer)
        self._epipolar = {v: EpipolarOverlay(viewers[v].overlay("epipolar")) for v in VIEWS}
        for v in VIEWS:
            viewers[v].pixel_clicked.connect(lambda u, vv, mods, view=v: self.click(view, u, vv, mods))
        model.trajectory_changed.connect(self._refresh)
        model.trajectory_removed.connect(self._drop)
        model.selection_changed.connect(self._selection_changed)
        model.order_changed.connect(self._refresh_panel)
        model.undo_stack.indexChanged.connect(self._undo_state)
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
            self.model.undo_stack.beginMacro(f"re-place {kind} of {t.name}")
            for v in VIEWS:
                if self.model.get(tid).click(kind, v) is not None:
                    self.model.set_click(tid, kind, v, None)
            self.model.undo_stack.endMacro()
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
        try:
            uv = check_click((u, v), self.viewers[view].image_shape, view)
        except ClickOutsideImageError as e:
            self._say(str(e), warn=True)
            return
        other = _other(view)
        first = self.model.get(tid).click(kind, other)
        shift = modifiers is not None and bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        if first is not None and self.snap != shift and self.model.calibration is not None:
            line = epipolar_line(self.model.calibration, other, first, view, shape=self.viewers[view].image_shape)
            if len(line) >= 2:
                uv, _ = snap_to_epipolar(uv, line)
        t = self.model.set_click(tid, kind, view, uv)
        self._after_click(tid, kind, view, t)

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
            if not self._gap_message(tid, kind):
                self._say(f"{self.model.get(tid).name}: {kind} moved in {view.upper()}")
            self._refresh_epipolar()

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
        self._say(f"undo: {self.model.undo_stack.undoText()}" if self.model.undo_stack.canUndo() else "nothing to undo")
        self.model.undo_stack.undo()
        self._refresh_epipolar()

    def redo(self) -> None:
        self._say(f"redo: {self.model.undo_stack.redoText()}" if self.model.undo_stack.canRedo() else "nothing to redo")
        self.model.undo_stack.redo()
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

    def set_snap(self, on: bool) -> None:
        self.snap = bool(on)

    def set_calibration(self, calibration, keep: str = "3d") -> None:
        """A new calibration (see ``PlanModel.set_calibration``); placing stops."""
        self.placing = None
        self.model.set_calibration(calibration, keep)
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

        Esc is not a shortcut: the robot panel's emergency stop owns it (two Esc shortcuts in
        one window would make both ambiguous, so neither would fire). Placing listens to the
        Esc key presses nobody else took, through an event filter on ``parent``.
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
        """Redraw ``tid`` in both views and in 3D, and its table row."""
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
        if self.scene is not None:
            first = not self.scene.ids() and t.complete
            self.scene.update(tid, t.entry_mm, t.target_mm, t.colour, t.diameter_mm, selected)
            if first:  # the first trajectory in 3D: show it, later the user's camera is kept
                self.scene.focus()
        self._refresh_panel()
        if self._drag is not None and self._drag[0] == tid:
            self._refresh_epipolar()

    def _drop(self, tid: str) -> None:
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

    def _refresh_panel(self) -> None:
        if self.panel is None:
            return
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
                if self.model.calibration is not None:
                    drawn = image_angles(self.model.calibration, t.entry_mm, t.target_mm)
                    row["image_angles"] = {v: (math.degrees(ang), px) for v, (ang, px) in drawn.items()}
            rows.append(row)
        self.panel.set_rows(rows)
        self.panel.set_selected(self.model.selected)

    def _undo_state(self, *_):
        if self.panel is not None and shiboken6.isValid(self.model.undo_stack) and shiboken6.isValid(self.panel):
            s = self.model.undo_stack
            self.panel.set_undo_state(s.canUndo(), s.canRedo(), s.undoText(), s.redoText())


def install_planning(window, session=None, T_scene_cage=None, patient_axes=None, confirm=None,
                     autosave_ms: int | None = 500) -> PlanningController:
    """Add planning to the main window: the "Planning" dock, overlays in both viewers,
    trajectories in the 3D view, shortcuts; returns the controller (``.model`` is the plan).

    ``window`` needs ``viewers``, ``scene_view`` and ``add_dock`` (widgets.main_window).
    With a ``session`` (app.session.Session) the plan follows ``session.calibration``
    and every change is handed to ``session.set_plans`` (a list of ``Trajectory``) and,
    ``autosave_ms`` after the last change, written to ``<session folder>/plan.json``
    (``PlanModel.load`` reads it back exactly).
    ``T_scene_cage`` places the cage frame in the 3D view's frame (the simulator's
    ``T_world_cage``); ``patient_axes`` defaults to the cage's standard mounting.
    """
    from widgets.panels.planning_panel import PlanningPanel

    panel = PlanningPanel(colours=PALETTE)
    dock = window.add_dock("Planning", panel, "right")
    model = PlanModel(getattr(session, "calibration", None), parent=window)
    controller = PlanningController(model, window.viewers, panel, window.scene_view, confirm=confirm,
                                    T_scene_cage=T_scene_cage, patient_axes=patient_axes,
                                    shortcut_parent=window, parent=window)
    scene_dock = window.scene_view.parentWidget()
    if hasattr(window, "resizeDocks") and scene_dock is not None and scene_dock in window.findChildren(type(dock)):
        window.resizeDocks([scene_dock, dock], [45, 55], Qt.Orientation.Vertical)  # 3D above, plan below
    if session is not None:
        session.calibration_changed.connect(controller.set_calibration)
        model.changed.connect(lambda: session.set_plans(model.trajectories()))
        if autosave_ms is not None:
            timer = QTimer(controller, singleShot=True, interval=int(autosave_ms))
            timer.timeout.connect(lambda: _autosave(model, session))
            model.changed.connect(timer.start)
            controller.autosave_timer = timer
        if hasattr(session, "resumed"):
            session.resumed.connect(lambda resumed: load_resumed_plan(controller, resumed))
    return controller


def load_resumed_plan(controller: PlanningController, resumed) -> bool:
    """A resumed session (app.session.ResumedSession): its ``plan.json`` into the planning, drawn
    in both viewers and 3D, exactly as saved (the calibration was restored just before).
    The file is not written again until the plan changes. Adds a line to ``resumed.restored``
    or ``resumed.problems``; True when a plan was loaded."""
    path = Path(resumed.folder) / "plan.json"
    if not path.exists():
        return False
    try:
        saved_with = (load_plan_file(path).get("calibration") or {}).get("created_utc")
        controller.load(path)
    except PlanFileError as e:
        resumed.problems.append(f"{e}: plan again")
        return False
    finally:
        timer = getattr(controller, "autosave_timer", None)
        if timer is not None:
            timer.stop()   # the file on disk is this plan
    n = len(controller.model)
    resumed.restored.append(f"plan: {n} trajector{'y' if n == 1 else 'ies'}")
    now = getattr(controller.model.calibration, "created_utc", None)
    if n and saved_with and now and saved_with != now:
        resumed.problems.append(f"the plan was made with the calibration of {saved_with}, not the one restored "
                                f"({now}): check each trajectory in both views")
    return True


def _autosave(model: PlanModel, session) -> None:
    try:
        model.save(Path(session.folder) / "plan.json")
    except OSError as e:  # a full disk must not stop planning; the log says it
        log.error("the plan could not be saved in the session folder: %s", e)
