"""The plan book: trajectories with their undo history, as a Qt-free evented model.

``PlanBook`` owns the trajectories (``core.planning.two_view.Trajectory``, immutable
records keyed by a stable id), the selection and the calibration that turns clicks
into 3D points. It is part of the session (``Session.plans``): the planning controller
and the overlays subscribe to its signals, a script edits it the same way. Every edit
goes through ``book.history`` (``app.state.history.UndoHistory``) as a command that swaps
whole records, so undo puts back exactly what was there; dragging a handle merges into
one undo step. 3D points are always recomputed from the clicks with the current
calibration (cheap: two rays).
Plans are saved as ``{"format": "fluoronav.plan/1", "frame": "cage",
"calibration": {...}, "trajectories": [{"id", "name", "level", "side", "colour",
"diameter_mm", "clicks", "entry_mm", "target_mm", "entry_gap_mm", "target_gap_mm"}]}``
(points in mm in the cage frame, clicks in raw pixels), written atomically and
validated on load.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import logging
from dataclasses import replace
from pathlib import Path

from psygnal import Signal

from app.state.history import Command, UndoHistory
from core.formats.files import previous_version, sha256_file, write_json_atomic
from core.planning.two_view import (MAX_RAY_GAP_MM, PLAN_FORMAT, POINTS, VIEWS, PlanningError, Trajectory,
                                    TwoViewCalibration, check_click, epipolar_line, locate_trajectory,
                                    plan_from_dict, read_plan, snap_to_epipolar)

__all__ = ["PlanBook", "PlanFileError", "PLAN_FORMAT", "PALETTE", "load_plan_file", "save_plan_file",
           "planning_calibration", "load_session_plan", "is_given_name"]

log = logging.getLogger(__name__)

# Colours that stay distinct on a grey X-ray and for the common colour blindnesses.
PALETTE = ("#ffb000", "#00c8ff", "#ff5fd2", "#8cff3c", "#ff6a3d", "#b48cff", "#ffffff")


class PlanFileError(ValueError):
    """A plan file is missing, malformed or from an unknown format version."""


# --- undo commands -------------------------------------------------------------------
class _Replace(Command):
    """Swap one trajectory record for another (None = absent): every edit is one of these."""

    def __init__(self, book: "PlanBook", tid: str, old, new, text: str, index: int | None = None,
                 drag_token=None):
        super().__init__(text)
        self.book, self.tid, self.old, self.new = book, tid, old, new
        self.index = index
        self.drag_token = drag_token

    def redo(self):
        self.book._put(self.tid, self.new, self.index)

    def undo(self):
        self.book._put(self.tid, self.old, self.index)

    def merge_with(self, other) -> bool:
        """Successive moves of one handle in one drag are one undo step."""
        if not isinstance(other, _Replace) or self.drag_token is None or other.drag_token != self.drag_token \
                or other.tid != self.tid:
            return False
        self.new = other.new
        return True


# --- the model ---------------------------------------------------------------------
class PlanBook:
    """Trajectories by id, in table order, with selection, calibration and undo history.

    Signals: ``trajectory_changed(tid)`` (added, edited or 3D recomputed),
    ``trajectory_removed(tid)``, ``order_changed()``, ``selection_changed(tid)``
    ("" for none), ``changed()`` after any edit; ``history.changed()`` after every push,
    undo, redo or clear.
    """
    trajectory_changed = Signal(str)
    trajectory_removed = Signal(str)
    order_changed = Signal()
    selection_changed = Signal(str)
    changed = Signal()

    def __init__(self, calibration: TwoViewCalibration | None = None, max_gap_mm: float = MAX_RAY_GAP_MM):
        self.history = UndoHistory()
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

    def default_name(self, level: str, side: str, exclude: str = "") -> str:
        """"L4 left", or "L4 left 2", ... when taken (by a trajectory other than ``exclude``)."""
        base = f"{level} {side}"
        names = {t.name for tid, t in self._items.items() if tid != exclude}
        return base if base not in names else next(f"{base} {i}" for i in itertools.count(2)
                                                   if f"{base} {i}" not in names)

    def add(self, level: str = "L4", side: str = "left", name: str | None = None, colour: str | None = None,
            diameter_mm: float = 6.5) -> str:
        """Create a trajectory (no clicks yet), select it, and return its id."""
        colour = colour or PALETTE[len(self._order) % len(PALETTE)]
        traj = Trajectory(name or self.default_name(level, side), level, side, colour, diameter_mm)
        tid = self.new_id()
        self.history.push(_Replace(self, tid, None, traj, f"new trajectory {traj.name}"))
        self.select(tid)
        return tid

    def remove(self, tid: str) -> None:
        old = self.get(tid)
        self.history.push(_Replace(self, tid, old, None, f"delete {old.name}", index=self._order.index(tid)))

    def set_click(self, tid: str, kind: str, view: str, uv, drag_token=None) -> Trajectory:
        """Place (or with ``uv`` None clear) ``kind`` in ``view``; returns the new record.

        Moves that carry the same ``drag_token`` merge into one undo step.
        """
        old = self.get(tid)
        new = old.with_click(kind, view, uv)
        verb = "clear" if uv is None else ("move" if old.click(kind, view) is not None else "set")
        self.history.push(_Replace(self, tid, old, new, f"{verb} {kind} of {old.name} in {view.upper()}",
                                      drag_token=drag_token))
        return self.get(tid)

    def place_click(self, tid: str, kind: str, view: str, uv, shape=None, snap: bool = True) -> Trajectory:
        """A click placing ``kind`` of ``tid`` at raw pixel ``uv`` of ``view`` (what the
        planning screen does with a click): checked inside the image of ``shape`` (rows,
        cols; ClickOutsideImageError, one line), and when the other view already has this
        point and ``snap``, moved onto that click's X-ray drawn in this view (the epipolar
        curve), so that both clicks show the same 3D point. One undo step; returns the record."""
        uv = check_click(uv, shape, view)
        other = "lat" if view == "ap" else "ap"
        first = self.get(tid).click(kind, other)
        if snap and first is not None and self.calibration is not None:
            line = epipolar_line(self.calibration, other, first, view, shape=shape)
            if len(line) >= 2:
                uv, _ = snap_to_epipolar(uv, line)
        return self.set_click(tid, kind, view, uv)

    def import_trajectories(self, trajectories) -> list[str]:
        """Add trajectories that come with their 3D points (a Slicer markups file), one undo step
        each; one with the name of a trajectory in the plan replaces it. With a calibration, their
        clicks become the points' projections (the 3D is then located from them, as any edit).
        Returns their ids in order."""
        by_name = {t.name: tid for tid, t in self._items.items()}
        ids = []
        for t in trajectories:
            if not isinstance(t, Trajectory):
                raise PlanningError(f"an imported trajectory must be a Trajectory, got {type(t).__name__}")
            if self.calibration is not None and t.complete:
                t = _reprojected(self.calibration, t)
            tid = by_name.get(t.name)
            old = self._items.get(tid) if tid else None
            tid = tid or self.new_id()
            self.history.push(_Replace(self, tid, old, t, f"import {t.name}"))
            by_name[t.name] = tid
            ids.append(tid)
        return ids

    def set_fields(self, tid: str, **fields) -> None:
        """Rename, change level, side, colour or diameter: ``set_fields(tid, level="L5")``.

        A name the plan gave ("L4 left", "L4 left 2") follows a new level or side ("L3 left");
        a name the surgeon typed is kept."""
        allowed = {"name", "level", "side", "colour", "diameter_mm"}
        if not fields or not set(fields) <= allowed:
            raise PlanningError(f"editable fields are {', '.join(sorted(allowed))}, got {', '.join(fields) or 'none'}")
        old = self.get(tid)
        new = replace(old, **fields)  # validated by Trajectory
        if "name" not in fields and (new.level, new.side) != (old.level, old.side) and is_given_name(old):
            new = replace(new, name=self.default_name(new.level, new.side, exclude=tid))
        if new == old:
            return
        what = ", ".join(f"{k} {v}" for k, v in fields.items())
        self.history.push(_Replace(self, tid, old, new, f"{old.name}: {what}"))

    # -- not undoable: view state and consequences ---------------------------------------------
    def select(self, tid: str) -> None:
        if tid and tid not in self._items:
            raise PlanningError(f"no trajectory {tid!r} in the plan")
        if tid != self._selected:
            self._selected = tid
            self.selection_changed.emit(tid)

    def __iter__(self):
        return iter(self.trajectories())

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
        self.history.clear()
        for tid in self._order:
            t = self._items[tid]
            if keep == "3d" and calibration is not None:
                t = _reprojected(calibration, t)
            self._items[tid] = self._located(t)
            self.trajectory_changed.emit(tid)
        if self._order:   # an empty plan has nothing to redraw or save
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
        self.history.clear()
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


def is_given_name(t: Trajectory) -> bool:
    """Whether ``t``'s name is one the plan gives for its level and side ("L4 left",
    "L4 left 2"), not one typed by hand ("L4 left screw", "revision")."""
    base = f"{t.level} {t.side}"
    rest = t.name[len(base):] if t.name.startswith(base) else None
    return rest is not None and (rest == "" or (rest[:1] == " " and rest[1:].isdigit() and rest[1:] != "0"))


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


def _parse_plan(d, where: str = "plan") -> tuple[dict, list, str, float]:
    try:
        return plan_from_dict(d, where)
    except PlanningError as e:
        raise PlanFileError(str(e)) from None


def save_plan_file(d: dict, path) -> Path:
    """Write a plan dict as JSON atomically (temporary file + rename in the same folder)."""
    return write_json_atomic(path, d)


def load_plan_file(path) -> dict:
    """Read and validate a plan file (``core.planning.two_view.read_plan``); PlanFileError says what is wrong."""
    try:
        return read_plan(path)
    except PlanningError as e:
        raise PlanFileError(str(e)) from None




def _read_session_plan(path: Path, sha256: str | None) -> tuple[dict | None, str]:
    """The validated plan dict of ``path`` (checked against ``sha256`` when given), or None and why."""
    try:
        if sha256 is not None and sha256_file(path) != sha256:
            return None, (f"{path.name} is damaged or was not completely saved (its content differs from the "
                          "checksum recorded when it was saved)")
        return load_plan_file(path), ""
    except PlanFileError as e:
        return None, str(e)
    except OSError as e:
        return None, f"{path.name} cannot be read ({e.strerror or e})"


def planning_calibration(calibration) -> TwoViewCalibration | None:
    """``calibration`` when it can turn clicks into 3D points (``ray``, ``locate``, ``project``),
    else None: a calibration record without the two-view model leaves the plan in clicks."""
    if calibration is None:
        return None
    return calibration if all(callable(getattr(calibration, m, None)) for m in ("ray", "locate", "project")) else None


def load_session_plan(book: PlanBook, resumed, sha256: str | None = None) -> bool:
    """A resumed session's ``plan.json`` into ``book``, exactly as saved (the calibration was
    restored just before). ``sha256``: what session.json recorded for it; a plan.json that
    differs (damaged, or its save interrupted) or cannot be read gives way to its previous
    version ``plan.json.prev``, said in one line. Adds a line to ``resumed.restored`` or
    ``resumed.problems`` (``app.session.ResumedSession``); True when a plan was loaded."""
    path = Path(resumed.folder) / "plan.json"
    if not path.exists():
        return False
    d, why = _read_session_plan(path, sha256)
    if d is None:
        prev = previous_version(path)
        d2, why2 = _read_session_plan(prev, None) if prev.is_file() else (None, "")
        if d2 is None:
            resumed.problems.append(f"{why}: plan again" + (f" ({prev.name}: {why2})" if why2 else ""))
            return False
        resumed.problems.append(f"{why}: its previous version {prev.name} was restored (the last edits before "
                                "the restart may be missing)")
        d = d2
    try:
        book.load_dict(d)
    except (PlanFileError, PlanningError, ValueError, TypeError, KeyError) as e:
        resumed.problems.append(f"plan.json cannot be restored ({(str(e).splitlines() or [type(e).__name__])[0]}): "
                                "plan again")
        return False
    n = len(book)
    resumed.restored.append(f"plan: {n} trajector{'y' if n == 1 else 'ies'}")
    saved_with = (d.get("calibration") or {}).get("created_utc")
    now = getattr(book.calibration, "created_utc", None)
    if n and saved_with and not now:
        resumed.problems.append(f"the plan was made with the calibration of {saved_with}, which was not restored: "
                                "calibrate again, then check each trajectory in both views")
    elif n and saved_with and now and saved_with != now:
        resumed.problems.append(f"the plan was made with the calibration of {saved_with}, not the one restored "
                                f"({now}): check each trajectory in both views")
    return True
