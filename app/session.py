"""The session: what this operation has so far, as one Qt-free evented model (psygnal).

It holds the latest image per view and the shot history (``app.state.shots.ShotHistory``:
every shot per view, the one on screen, where each can be read back), the calibration,
the plan book (trajectories with
their undo history, ``app.state.plans.PlanBook``), the alignment result, each device's
status and the workflow step. App controllers are its only writers; widgets subscribe
to its signals and render; they never keep state of their own that the session needs
(DESIGN.md). A script or a test drives a whole case through it without Qt.
Change it from the GUI thread only: device workers hand results over through
queued signals.

A listener that raises is a bug, and it is not hidden: psygnal stops that emission and
raises ``psygnal.EmitLoopError`` (the listener's exception as ``__cause__``) from the
writer's call, after the session's own state has changed. The GUI's controllers catch it
where a user action started (``app.main.Workstation``) and say it in one line. Acquired images are written to the session folder
``$XDG_DATA_HOME/fluoronav/sessions/<YYYYmmdd-HHMMSS>/`` as DICOM with their geometry.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from app.state.plans import PlanBook, load_session_plan, planning_calibration
from app.state.shots import ShotHistory

from core.audit import AUDIT_FILE, AuditLog
from core.formats.files import (previous_version, remove_stale_temps, sha256_file, write_json_atomic)
from core.formats.schema import FileFormatError, parse_json, validate
from core.imaging.fluoro_image import FluoroImage, ImageReadError
from core.imaging.images import read_image, write_dicom_xa
from devices.base import DeviceStatus

__all__ = ["Session", "listener_failure", "SessionError", "ResumedSession", "VIEWS", "DEVICES", "WORKFLOW_STEPS",
           "SESSION_FORMAT", "sessions_root", "find_session", "read_session_record"]

log = logging.getLogger(__name__)

VIEWS = ("ap", "lat")
DEVICES = ("carm", "robot", "force_sensor", "tracker")
WORKFLOW_STEPS = ("calibrate", "plan", "align", "verify")
_WORKING = (DeviceStatus.SIMULATED, DeviceStatus.CONNECTED)
SESSION_FORMAT = "fluoronav.session/1"


class SessionError(ValueError):
    """A request the session cannot honour now; the message says what is missing."""


def listener_failure(error: BaseException, action: str) -> str:
    """Log a listener's failure (``psygnal.EmitLoopError``) raised by ``action`` (what the user
    did, e.g. "loading the AP image"): one line at ERROR, the traceback at DEBUG; returns the
    line for a status bar."""
    cause = error.__cause__ or error
    text = (f"{action}: done, but a display of it failed ({type(cause).__name__}: "
            f"{(str(cause).splitlines() or [''])[0]}); the session holds the change, the log has the details")
    log.error("%s", text)
    log.debug("listener failure while %s", action, exc_info=cause)
    return text


def sessions_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` or ``$XDG_DATA_HOME/fluoronav/sessions`` (``~/.local/share`` when unset)."""
    if data_dir:
        return Path(data_dir)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "fluoronav" / "sessions"


class Session:
    """State of one operation. Signals: image_changed(view, image),
    calibration_changed(calib), alignment_changed(result),
    device_status_changed(device, status, message), step_changed(step),
    verification_changed(record), robot_state_changed(state) (the robot's newest state
    message, about 50 Hz: not followed by changed()),
    audited(event dict) (after each audit trail event, ``record``),
    resumed(ResumedSession) (``resume``: after the images, the calibration, the shots and the
    plan, before the step), changed() (after any of them but the robot state, and after every
    edit of the plan book ``plans``, whose own signals say which trajectory)."""

    image_changed = Signal(str, object)
    calibration_changed = Signal(object)
    alignment_changed = Signal(object)
    verification_changed = Signal(object)
    robot_state_changed = Signal(object)
    device_status_changed = Signal(str, object, str)
    step_changed = Signal(str)
    resumed = Signal(object)
    audited = Signal(object)
    changed = Signal()

    def __init__(self, data_dir=None, save_images: bool = True,
                 started_at: _dt.datetime | None = None):
        self.started_at = started_at or _dt.datetime.now()
        self._root = sessions_root(data_dir)
        self._folder: Path | None = None
        self.save_images = save_images
        self._images: dict[str, FluoroImage | None] = {v: None for v in VIEWS}
        self._saved: dict[str, list[str]] = {v: [] for v in VIEWS}
        self._saved_by_content: dict[str, dict[bytes, str]] = {v: {} for v in VIEWS}
        self._current_file: dict[str, str | None] = {v: None for v in VIEWS}
        self.calibration: Any = None
        self.plans = PlanBook()
        self.shots = ShotHistory(VIEWS)
        self.plans.changed.connect(self.changed.emit)
        self.plans.selection_changed.connect(lambda *_: self.changed.emit())   # Align follows the selection
        self.alignment: Any = None
        self.verification: Any = None
        self.robot_state: dict = {}
        self._devices = {d: (DeviceStatus.DISCONNECTED, "not started") for d in DEVICES}
        self.step: str | None = None
        self.resuming = False   # True while ``resume`` emits its events
        # what session.json keeps so that a resume restores only what is whole and still valid
        self._checksums: dict[str, str] = {}            # file name -> sha256 as saved
        self._calibration_file: str | None = None       # the calibration in use, when saved here
        self._calibration_known = False                  # the record names the calibration (or none)
        self._invalidated: dict[str, str] = {}          # calibration file -> why it fell
        self._records: dict[str, dict] = {}              # kind -> newest {"file", "calibration"}
        # every plan edit is saved at once (a kill loses none): here, or where the GUI says
        # (``plan_save_scheduler``: after the click's paint, coalesced); a deletion always here
        self._removal_pending = False
        self.plan_save_scheduler = None
        self._following_calibration = False
        self.plans.trajectory_removed.connect(self._on_trajectory_removed)
        self.plans.changed.connect(self._plan_edited)
        self._audit: AuditLog | None = None
        self._reasons: dict[str, str] = {}
        from app.audit import watch_session
        watch_session(self)

    # -- where data goes ------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The folder that holds the session folders."""
        return self._root

    @property
    def folder(self) -> Path:
        """The session folder, created on first use (a suffix keeps two sessions apart)."""
        if self._folder is None:
            stamp = self.started_at.strftime("%Y%m%d-%H%M%S")
            for n in range(1000):
                candidate = self._root / (stamp if n == 0 else f"{stamp}-{n}")
                try:
                    candidate.mkdir(parents=True, exist_ok=False)
                    break
                except FileExistsError:
                    continue
            else:
                raise SessionError(f"cannot create a session folder under {self._root}")
            self._folder = candidate
            log.info("session folder: %s", candidate)
        return self._folder

    # -- the audit trail -----------------------------------------------------------------
    @property
    def audit(self) -> AuditLog:
        """The case's audit trail: ``audit.jsonl`` in the session folder (in memory only when
        the session saves nothing); the folder is made on the first event."""
        if self._audit is None:
            self._audit = AuditLog(None if not self.save_images else self.folder / AUDIT_FILE)
        return self._audit

    def record(self, event: str, role: str, **details) -> dict:
        """Add an event to the audit trail. A disk failure is logged (one line) and the event
        kept in memory: the case goes on."""
        try:
            rec = self.audit.append(event, role, **details)
        except OSError:
            log.error("%s", self.audit.write_error)
            rec = self.audit.events[-1]
        self.audited.emit(rec)
        return rec

    def pop_reason(self, what: str) -> str:
        """The reason given with the last change of ``what`` (e.g. why a calibration fell)."""
        return self._reasons.pop(what, "")

    def current_file(self, view: str) -> str | None:
        """The session file of the image on screen in ``view`` (None: not saved)."""
        return self._current_file[_check_view(view)]

    # -- images ---------------------------------------------------------------------
    def image(self, view: str) -> FluoroImage | None:
        return self._images[_check_view(view)]

    def set_image(self, view: str, image: FluoroImage) -> Path | None:
        """Make ``image`` the current one of ``view`` and a new shot of the history (acquired,
        dropped); returns the file it was saved to."""
        path = self._show(view, image)
        name = self._current_file[view] if path is not None else None
        n = self.shots.count(view) + 1
        label = name or (os.path.basename(image.source) if image.source else f"{view.upper()} shot {n}")
        when = image.acquired_at.strftime("%H:%M:%S") if image.acquired_at else ""
        index = self.shots.add(view, self._images[view], f"{n}. {label}", f"{label} {when}".strip(),
                               path=path, saved=path is not None)
        self.shots.set_current(view, index)
        self.record("shot acquired", "technician", view=view, source=image.source or "", file=name,
                    label=label, acquired_at=image.acquired_at.isoformat() if image.acquired_at else None)
        return path

    def open_shots(self, view: str, images: list, name: str, path) -> int:
        """The images of one opened file (the frames of a multi-frame DICOM, else one) join the
        history, read back from ``path`` when brought back; the first is shown. Returns its
        index. SessionError (nothing recorded) when the first cannot be the ``view`` image."""
        _check_view(view)
        if not images:
            raise SessionError(f"{name} holds no image")
        self._check_image(view, images[0])
        first = self.shots.count(view)
        for i, shot in enumerate(images):
            label = name if len(images) == 1 else f"{name} [{i + 1}/{len(images)}]"
            frame = int(shot.extra.get("frame", i)) if len(images) > 1 else None
            self.shots.add(view, shot, label, label, path=os.path.abspath(path), frame=frame)
        self.shots.set_current(view, first)
        self._show(view, images[0])
        self.record("shot opened", "technician", view=view, source=os.path.abspath(path), file=name,
                    frames=len(images))
        return first

    def bring_back(self, view: str, index: int) -> FluoroImage:
        """Show shot ``index`` of the history again (no new shot). ``ShotMissingError`` (one
        line; the shot marked missing, the current image unchanged) when its file is gone."""
        image = self.shots.image(_check_view(view), index)
        self.shots.set_current(view, index)
        self._show(view, image.with_view(view))
        return self._images[view]

    def _check_image(self, view: str, image) -> None:
        if not isinstance(image, FluoroImage):
            raise SessionError(f"a {view} image must be a FluoroImage, got {type(image).__name__}")
        if image.view not in (None, view):
            raise SessionError(f"this is a {image.view} image; it cannot be the {view} image")

    def _show(self, view: str, image: FluoroImage) -> Path | None:
        _check_view(view)
        self._check_image(view, image)
        image = image.with_view(view)
        self._images[view] = image
        path = self._save_image(view, image) if self.save_images else None
        self.image_changed.emit(view, image)
        self.changed.emit()
        return path

    def _save_image(self, view: str, image: FluoroImage) -> Path:
        """Write the image once: a shot brought back (the shots strip) is the file it was
        saved as, not a new copy; ``current`` in session.json names the one on screen."""
        key = _content_key(image)
        name = self._saved_by_content[view].get(key)
        if name is None or not (self.folder / name).is_file():
            n = len(self._saved[view]) + 1
            while (self.folder / f"{view}-{n:03d}.dcm").exists():   # never overwrite a shot (resumed folder)
                n += 1
            path = self.folder / f"{view}-{n:03d}.dcm"
            write_dicom_xa(image, path)
            self._checksums[path.name] = sha256_file(path)
            self._saved[view].append(path.name)
            self._saved_by_content[view][key] = name = path.name
        self._current_file[view] = name
        self.save()
        return self.folder / name

    # -- calibration, plans, alignment ----------------------------------------------
    def set_calibration(self, calibration: Any, keep: str = "3d", file=None, why: str = "") -> None:
        """Make ``calibration`` current; the plan book follows it (``PlanBook.set_calibration``:
        ``keep="3d"`` for new shots, ``"clicks"`` for the same shots calibrated again).
        ``file``: where it was saved in the session folder (session.json names it).
        ``why``: the reason, which the audit trail records. None after a calibration invalidates
        it (``why``: e.g. the C-arm moved): session.json records that every calibration file of
        the folder fell, so a resume does not bring one back."""
        had = self.calibration is not None
        if why:
            self._reasons["calibration"] = why
        self.calibration = calibration
        if calibration is None and had:
            self._invalidate_calibrations(why or "it was declared invalid")
        elif calibration is not None:
            self._note_calibration_file(file)
        # the plan following a calibration is no edit: plan.json keeps the calibration it was
        # made with (a resume says so when that one is not restored)
        self._following_calibration = True
        try:
            self.plans.set_calibration(planning_calibration(calibration), keep)
        finally:
            self._following_calibration = False
        self.calibration_changed.emit(calibration)
        self.changed.emit()

    def _invalidate_calibrations(self, why: str) -> None:
        if self._folder is None:
            return
        for p in sorted(self._folder.glob("calibration-*.json")):
            self._invalidated.setdefault(p.name, why)
        self._calibration_file, self._calibration_known = None, True
        self._save_quietly("the calibration's invalidation")

    def _note_calibration_file(self, file) -> None:
        if file is None or self._folder is None or Path(file).absolute().parent != self._folder.absolute():
            self._calibration_file, self._calibration_known = None, False
            return
        name = Path(file).name
        try:
            self._checksums[name] = sha256_file(file)
        except OSError as e:
            log.error("the calibration file %s cannot be read back: %s", name, e)
            return
        self._calibration_file, self._calibration_known = name, True
        self._invalidated.pop(name, None)
        self._save_quietly("the calibration")

    def _save_quietly(self, what: str) -> None:
        """session.json updated where a failure must not stop the workflow (the log says it)."""
        if self._folder is None or not self.save_images:
            return
        try:
            self.save()
        except OSError as e:
            log.error("session.json could not be updated with %s: %s", what, e)

    def _on_trajectory_removed(self, _tid: str) -> None:
        self._removal_pending = not self.resuming

    def _plan_edited(self) -> None:
        if self.resuming or not self.save_images or self._following_calibration:
            return
        removal, self._removal_pending = self._removal_pending, False
        if self.plan_save_scheduler is not None and not removal:
            self.plan_save_scheduler()
            return
        self.save_plan_quietly()

    def save_plan_quietly(self) -> bool:
        """``save_plan`` where a full disk must not stop planning (the log says it)."""
        try:
            self.save_plan()
            return True
        except OSError as e:
            log.error("the plan could not be saved in the session folder: %s", e)
            return False

    def set_alignment(self, result: Any) -> None:
        self.alignment = result
        self.alignment_changed.emit(result)
        self.changed.emit()

    def set_verification(self, record: Any) -> None:
        """The verification shot's result (what the tip and axis errors were)."""
        self.verification = record
        self.verification_changed.emit(record)
        self.changed.emit()

    def save_record(self, kind: str, record: dict) -> Path:
        """Write an Align or Verify record (a JSON-able dict) with the case: ``<kind>-NN.json`` in
        the session folder, numbered on (a case keeps every alignment and verification)."""
        if kind not in ("alignment", "verification"):
            raise SessionError(f"a case record is 'alignment' or 'verification', not {kind!r}")
        taken = [int(p.stem.rsplit("-", 1)[1]) for p in self.folder.glob(f"{kind}-*.json")
                 if p.stem.rsplit("-", 1)[1].isdigit()]
        path = write_json_atomic(self.folder / f"{kind}-{max(taken, default=0) + 1:02d}.json", record)
        self._checksums[path.name] = sha256_file(path)
        self._records[kind] = {"file": path.name, "calibration": self._calibration_file}
        self.save()
        return path

    # -- devices --------------------------------------------------------------------
    def set_robot_state(self, state: dict) -> None:
        """The robot's newest state message (joints ``q``, ``wrench``, ``fault``, ...)."""
        if not isinstance(state, dict):
            raise SessionError(f"a robot state must be a dict, got {type(state).__name__}")
        self.robot_state = state
        self.robot_state_changed.emit(state)

    def device_status(self, device: str) -> tuple[DeviceStatus, str]:
        return self._devices[_check_device(device)]

    def set_device_status(self, device: str, status: DeviceStatus, message: str = "") -> None:
        _check_device(device)
        if not isinstance(status, DeviceStatus):
            raise SessionError(f"status of {device} must be a DeviceStatus, got {status!r}")
        if self._devices[device] == (status, message):
            return
        self._devices[device] = (status, message)
        self.device_status_changed.emit(device, status, message)
        self.changed.emit()

    def device_ready(self, device: str) -> bool:
        return self.device_status(device)[0] in _WORKING

    # -- workflow -------------------------------------------------------------------
    def step_blocker(self, step: str) -> str | None:
        """Why ``step`` cannot start now, or None when it can."""
        if step not in WORKFLOW_STEPS:
            raise SessionError(f"unknown workflow step {step!r} (steps: {', '.join(WORKFLOW_STEPS)})")
        if step == "plan" and self.calibration is None:
            return "calibrate the cage first"
        if step == "align" and not len(self.plans):
            return "plan at least one trajectory first"
        if step == "align" and not self.device_ready("robot"):
            return "the robot is not connected"
        if step == "align":
            why = self.align_blocker()
            if why is not None:
                return why
        if step == "verify" and self.alignment is None:
            return "align the robot first"
        if step == "verify" and not self.device_ready("carm"):
            return "the C-arm is not connected"
        return None

    def align_blocker(self) -> str | None:
        """Why the selected trajectory cannot be aligned to (None: it is complete; with none
        selected, Align takes the first complete one)."""
        tid = self.plans.selected
        if not tid or tid not in self.plans:
            if any(t.complete for t in self.plans):
                return None
            return "no trajectory is complete: click its entry and target in both the AP and the LAT image"
        t = self.plans.get(tid)
        if not t.complete:
            missing = " and ".join(k for k in ("entry", "target") if getattr(t, f"{k}_mm") is None)
            return f"{t.name} has no 3D {missing}: click it in both the AP and the LAT image"
        return None

    def allowed_steps(self) -> tuple[str, ...]:
        return tuple(s for s in WORKFLOW_STEPS if self.step_blocker(s) is None)

    def go_to_step(self, step: str) -> None:
        """Make ``step`` current; SessionError says what is missing when it is not allowed."""
        why = self.step_blocker(step)
        if why is not None:
            raise SessionError(f"cannot start {step}: {why}")
        if step != self.step:
            self.step = step
            if self._folder is not None and self.save_images:   # session.json says where the case was
                try:
                    self.save()
                except OSError as e:
                    log.error("session.json could not be updated: %s", e)
            self.step_changed.emit(step)
            self.changed.emit()

    # -- file -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": SESSION_FORMAT,
                "started_at": self.started_at.isoformat(timespec="seconds"),
                "images": {v: list(files) for v, files in self._saved.items()},
                "current": dict(self._current_file),
                "step": self.step,
                "devices": {d: {"status": s.value, "message": m} for d, (s, m) in self._devices.items()},
                "checksums": dict(sorted(self._checksums.items())),
                **({"calibration": self._calibration_file} if self._calibration_known else {}),
                "invalidated": {"calibrations": dict(sorted(self._invalidated.items()))},
                **({"records": {k: dict(v) for k, v in sorted(self._records.items())}} if self._records else {})}

    def save(self) -> Path:
        """Write ``session.json`` into the session folder atomically (the version it replaces
        kept as ``session.json.prev``)."""
        return write_json_atomic(self.folder / "session.json", self.to_dict(), keep_previous=True)

    def save_plan(self) -> Path:
        """Write the plan book to ``plan.json`` in the session folder atomically (what
        ``resume`` reads back; the version it replaces kept as ``plan.json.prev``), then its
        checksum into session.json: the plan is saved once both are written."""
        path = write_json_atomic(self.folder / "plan.json", self.plans.to_dict(), keep_previous=True)
        self._checksums[path.name] = sha256_file(path)
        self.save()
        return path

    # -- resuming an interrupted session ------------------------------------------------
    def _resume_records(self, folder: Path, record: dict, checksums: dict, result) -> None:
        """The newest Align and Verify records, where they still hold (``app.state.records``)."""
        _restore_records_into(self, folder, record, checksums, result)

    def is_fresh(self) -> bool:
        """Nothing taken, loaded, calibrated or planned yet (what ``resume`` needs)."""
        return (all(im is None for im in self._images.values()) and not any(self._saved.values())
                and not any(self.shots.count(v) for v in VIEWS)
                and self.calibration is None and not len(self.plans) and self.alignment is None)

    def resume(self, folder) -> "ResumedSession":
        """Carry on with the session saved in ``folder`` (after a crash or a restart).

        Reads ``session.json`` (SessionError, one line, nothing changed: not a session,
        corrupt, another format version, or this session already has shots), then adopts
        the folder: new shots continue its numbering, every saved shot is read (an
        unreadable one is reported and, if it was on screen, its view stays empty), the
        newest ``calibration-*.json`` is restored (an invalid one is reported: the session
        goes on uncalibrated), then ``plan.json`` into the plan book, exactly as saved, and
        the step where the workflow still allows it.
        Emits image_changed, calibration_changed, resumed, step_changed and changed.
        Returns what was restored and what was not (``.summary``: one line)."""
        if not self.is_fresh():
            raise SessionError("this session already has shots or a calibration: restart fluoronav and "
                               "resume before taking or loading any image")
        folder = Path(folder).absolute()
        record, record_problem = _read_record_or_previous(folder)
        result = ResumedSession(folder, {v: [] for v in VIEWS}, {v: -1 for v in VIEWS})
        if record_problem:
            result.problems.append(record_problem)
        result.removed_temps = remove_stale_temps(folder)   # what kills of earlier saves left
        if result.removed_temps:
            log.info("resume: removed %d temporary file(s) of interrupted saves: %s", len(result.removed_temps),
                     ", ".join(result.removed_temps))
        checksums = record.get("checksums", {})
        images: dict[str, FluoroImage | None] = {v: None for v in VIEWS}
        keys: dict[str, dict[bytes, str]] = {v: {} for v in VIEWS}
        for view in VIEWS:
            names, current = record["images"][view], record["current"][view]
            for name in names:
                image = None
                try:
                    image = read_image(folder / name).with_view(view)
                    _check_sum(folder / name, checksums.get(name))
                    keys[view][_content_key(image)] = name
                except Exception as e:   # noqa: BLE001 - a damaged file can fail a reader any way: skip the one
                    image, what = None, "the shot on screen" if name == current else "an earlier shot"
                    result.problems.append(f"{view.upper()}: {what} {name} cannot be read ({_one_line(e, folder)})"
                                           + (f": the {view.upper()} view stays empty, take or open it again"
                                              if name == current else ""))
                result.shots[view].append((folder / name, image))
            if current is not None:
                result.current[view] = names.index(current)
                images[view] = result.shots[view][result.current[view]][1]
            n = sum(im is not None for _p, im in result.shots[view])
            if n:
                result.restored.append(f"{n} {view.upper()} shot{'s' if n != 1 else ''}")
        calibration = _resume_calibration(folder, record, checksums, images, result)
        # adopt: from here on nothing can fail half-way
        old = self._folder
        if old is not None and old != folder and old.is_dir() and not any(old.iterdir()):
            old.rmdir()   # the empty folder this new session had made
        self._folder = folder
        self._audit = None            # the resumed case's own audit trail, appended to
        try:
            self.started_at = _dt.datetime.fromisoformat(record.get("started_at") or "")
        except (TypeError, ValueError):
            pass
        self._saved = {v: list(record["images"][v]) for v in VIEWS}
        self._saved_by_content = keys
        self._current_file = {v: (record["current"][v] if images[v] is not None else None) for v in VIEWS}
        self._images = images
        self.calibration = calibration
        self._checksums = dict(checksums)
        self._invalidated = dict(record["invalidated"])
        self._records = {}
        self._calibration_file = result.calibration_file
        self._calibration_known = True     # from now on session.json names it (null: none restored)
        self.plans.set_calibration(planning_calibration(calibration))
        for view in VIEWS:
            for i, (path, image) in enumerate(result.shots[view]):
                if image is None:
                    continue   # unreadable: the resume says so, there is nothing to bring back
                when = image.acquired_at.strftime("%H:%M:%S") if image.acquired_at else ""
                index = self.shots.add(view, image, f"{self.shots.count(view) + 1}. {path.name}",
                                       f"{path.name} {when}".strip(), path=path, saved=True)
                if i == result.current[view]:
                    self.shots.set_current(view, index)
        self.resuming = True
        try:
            for view in VIEWS:
                if images[view] is not None:
                    self.image_changed.emit(view, images[view])
            if calibration is not None:
                self.calibration_changed.emit(calibration)
            load_session_plan(self.plans, result, checksums.get("plan.json"))
            self._resume_records(folder, record, checksums, result)
            self.resumed.emit(result)   # the shots strip
            step = record["step"]
            if step is not None:
                why = self.step_blocker(step)
                if why is None:
                    self.step = step
                    result.restored.append(f"step {step}")
                else:
                    result.problems.append(f"step {step} not restored: {why}")
                    earlier = [s for s in WORKFLOW_STEPS[:WORKFLOW_STEPS.index(step)] if self.step_blocker(s) is None]
                    self.step = earlier[-1] if earlier else None
                if self.step is not None:
                    self.step_changed.emit(self.step)
        finally:
            self.resuming = False
        self.changed.emit()
        self.record("session resumed", "system", restored=list(result.restored), problems=list(result.problems))
        log.info("%s", result.summary)
        for problem in result.problems:
            log.warning("resume: %s", problem)
        return result


def _restore_records_into(session: "Session", folder: Path, record: dict, checksums: dict, result) -> None:
    from app.state.records import restore_records
    notes = record.get("records", {})
    got = restore_records(folder, notes, checksums, result.calibration_file if session.calibration is not None
                          else None, set(session.plans.ids()), _check_sum, result)
    for kind, obj in got.items():
        if obj is None:
            continue
        session._records[kind] = dict(notes[kind])
        if kind == "alignment":
            session.alignment = obj
            session.alignment_changed.emit(obj)
        else:
            session.verification = obj
            session.verification_changed.emit(obj)


@dataclass
class ResumedSession:
    """What ``Session.resume`` brought back: ``shots`` per view, the saved files in order with
    their image (None: unreadable), ``current`` the index of the one on screen (-1: none),
    ``restored`` and ``problems`` (one line each; listeners of ``resumed`` add theirs)."""
    folder: Path
    shots: dict
    current: dict
    restored: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    removed_temps: list = field(default_factory=list)   # temporary files of interrupted saves, removed
    calibration_file: str | None = None                  # the calibration file restored

    @property
    def summary(self) -> str:
        text = f"resumed session {self.folder.name}: " + (", ".join(self.restored) or "nothing saved yet")
        if self.problems:
            text += f"; {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}: " + "; ".join(self.problems)
        return text


class DamagedFileError(ValueError):
    """A file that no longer matches the checksum session.json recorded when it was saved."""


def _check_sum(path: Path, expected: str | None) -> None:
    """DamagedFileError when ``path`` does not match ``expected`` (None: nothing recorded)."""
    if expected is not None and sha256_file(path) != expected:
        raise DamagedFileError(f"{path.name} is damaged or was not completely saved (its content differs from "
                               "the checksum recorded when it was saved)")


def _read_record_or_previous(folder: Path) -> tuple[dict, str]:
    """``read_session_record``, or, when session.json is damaged, its previous version
    session.json.prev with one line saying so."""
    try:
        return read_session_record(folder), ""
    except SessionError as e:
        prev = previous_version(folder / "session.json")
        if "is corrupt" not in str(e) or not prev.is_file():
            raise
        try:
            record = read_session_record(folder, prev.name)
        except SessionError:
            raise e from None
        what = str(e).rsplit(" [", 1)[1].rstrip("]") if " [" in str(e) else "unreadable"
        return record, (f"session.json is damaged ({what}): its previous version {prev.name} was used "
                        "(the last save before the restart may be missing)")


def _resume_calibration(folder: Path, record: dict, checksums: dict, images: dict, result):
    """The calibration ``resume`` restores (None: none), with its line in ``result``: the one
    session.json names (older records: the newest file), never one invalidated during the case,
    nor a damaged one, nor one made for images of another size than the shots on screen."""
    from core.calibration import CageCalibration, CalibrationFileError

    invalidated = record["invalidated"]
    if "calibration" in record:
        name = record["calibration"]
    else:
        files = sorted(p.name for p in folder.glob("calibration-*.json"))
        name = files[-1] if files else None
    if name is None:
        if invalidated:
            newest = sorted(invalidated)[-1]
            result.problems.append(f"calibration {newest} not restored: it was invalidated before the restart "
                                   f"({invalidated[newest]}): calibrate again")
        return None
    if name in invalidated:
        result.problems.append(f"calibration {name} not restored: it was invalidated before the restart "
                               f"({invalidated[name]}): calibrate again")
        return None
    try:
        _check_sum(folder / name, checksums.get(name))
        calibration = CageCalibration.load(folder / name)
    except (CalibrationFileError, DamagedFileError, OSError) as e:
        result.problems.append(f"{_one_line(e, folder)}: the session continues uncalibrated, calibrate again")
        return None
    for view in VIEWS:
        image, vc = images[view], calibration.views.get(view)
        shape = tuple(getattr(vc, "image_shape", ()) or ())
        if image is not None and len(shape) == 2 and tuple(image.pixels.shape[:2]) != shape:
            h, w = image.pixels.shape[:2]
            result.problems.append(f"calibration {name} not restored: it was made for {shape[1]}x{shape[0]} "
                                   f"{view.upper()} images and the {view.upper()} shot on screen is {w}x{h} "
                                   "(its clicks and 3D points would be wrong): calibrate again")
            return None
    result.restored.append(f"calibration {name}")
    result.calibration_file = name
    return calibration


def read_session_record(folder, name: str = "session.json") -> dict:
    """The validated ``session.json`` of ``folder``; SessionError (one line) says what is wrong."""
    folder = Path(folder)
    path = folder / name
    if not folder.is_dir():
        raise SessionError(f"{folder} is not a folder: choose a session folder (named like 20261120-083005) "
                           "under the sessions folder")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SessionError(f"{folder} is not a fluoronav session (it has no session.json): choose a session "
                           "folder (named like 20261120-083005) under the sessions folder") from None
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror or e}") from None
    corrupt = (f"{path} is corrupt, the session cannot be resumed: its shots are the .dcm files there "
               "(File → Open folder)")
    try:
        d = parse_json(raw, path.name)
    except FileFormatError as e:
        raise SessionError(f"{corrupt} [{e.what}]") from None
    fmt = d.get("format") if isinstance(d, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("fluoronav.session/"):
        raise SessionError(f"{path} is not a fluoronav session file (format {fmt!r}): choose a session folder "
                           "under the sessions folder")
    if fmt != SESSION_FORMAT:
        raise SessionError(f"{path} was written by another fluoronav version (format {fmt}, this version reads "
                           f"{SESSION_FORMAT}): resume it with that version, or open its shots with File → Open folder")
    try:
        validate(d, "session", path.name)
    except FileFormatError as e:
        raise SessionError(f"{corrupt} [{e.json_path}: {e.what}]") from None
    images, current, step = d["images"], d.get("current", {}), d.get("step")
    out = {"images": {}, "current": {}, "step": step, "started_at": d.get("started_at"),
           "checksums": dict(d.get("checksums", {})),
           "invalidated": dict((d.get("invalidated") or {}).get("calibrations", {}))}
    if "calibration" in d:
        out["calibration"] = d["calibration"]
    if d.get("records"):
        out["records"] = {k: dict(v) for k, v in d["records"].items()}
    for view in VIEWS:
        names, cur = images.get(view, []), current.get(view)
        if cur is not None and cur not in names:
            raise SessionError(f"{corrupt} [current.{view} {cur!r} is not one of its images]")
        out["images"][view], out["current"][view] = list(names), cur
    return out


def find_session(spec, data_dir=None) -> Path:
    """The session folder ``spec`` names: a folder, or ``"last"`` (the newest session folder
    under ``sessions_root(data_dir)``). Checked with ``read_session_record`` (or its
    previous version, as ``resume`` does)."""
    if str(spec) == "last":
        root = sessions_root(data_dir)
        found = sorted(p for p in root.glob("*") if (p / "session.json").is_file()) if root.is_dir() else []
        if not found:
            raise SessionError(f"no session to resume under {root}: start a new one")
        folder = found[-1]
    else:
        folder = Path(spec).expanduser().absolute()
    _read_record_or_previous(folder)   # a damaged session.json with a good previous version resumes
    return folder


def _one_line(error, folder) -> str:
    """The first line of an error, the session folder's path left out."""
    text = (str(error).splitlines() or [type(error).__name__])[0]
    return text.replace(str(folder) + os.sep, "")


def _content_key(image: FluoroImage) -> bytes:
    """What makes two images the same shot: their pixels and when they were taken."""
    px = np.ascontiguousarray(image.pixels)
    h = hashlib.blake2b(px.data, digest_size=16)
    h.update(repr((px.shape, px.dtype.str, image.acquired_at)).encode())
    return h.digest()


def _check_view(view: str) -> str:
    if view not in VIEWS:
        raise SessionError(f"unknown view {view!r}: use 'ap' or 'lat'")
    return view


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise SessionError(f"unknown device {device!r} (devices: {', '.join(DEVICES)})")
    return device
