"""The session: what this operation has so far, as a plain evented model (no Qt).

It holds the latest image per view, the calibration, the plans, the alignment
result, each device's status and the workflow step. Widgets subscribe to its
events; they never keep state of their own that the session needs (DESIGN.md).
Change it from the GUI thread only: device workers hand results over through
queued signals. Acquired images are written to the session folder
``$XDG_DATA_HOME/fluoronav/sessions/<YYYYmmdd-HHMMSS>/`` as DICOM with their geometry.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.files import write_json_atomic
from core.image_io import FluoroImage, write_dicom_xa
from devices.base import DeviceStatus

__all__ = ["Event", "Session", "SessionError", "VIEWS", "DEVICES", "WORKFLOW_STEPS",
           "sessions_root"]

log = logging.getLogger(__name__)

VIEWS = ("ap", "lat")
DEVICES = ("carm", "robot", "force_sensor", "tracker")
WORKFLOW_STEPS = ("calibrate", "plan", "align", "verify")
_WORKING = (DeviceStatus.SIMULATED, DeviceStatus.CONNECTED)


class SessionError(ValueError):
    """A request the session cannot honour now; the message says what is missing."""


class Event:
    """Callbacks called in order by ``emit``; a failing callback is logged, not raised."""

    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable] = []

    def connect(self, callback: Callable) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args) -> None:
        for cb in list(self._callbacks):
            try:
                cb(*args)
            except Exception:  # one broken listener must not stop the others
                log.exception("listener of session event %s failed", self.name)


def sessions_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` or ``$XDG_DATA_HOME/fluoronav/sessions`` (``~/.local/share`` when unset)."""
    if data_dir:
        return Path(data_dir)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "fluoronav" / "sessions"


class Session:
    """State of one operation. Events: image_changed(view, image),
    calibration_changed(calib), plans_changed(plans), alignment_changed(result),
    device_status_changed(device, status, message), step_changed(step), changed()."""

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
        self.plans: list[Any] = []
        self.alignment: Any = None
        self._devices = {d: (DeviceStatus.DISCONNECTED, "not started") for d in DEVICES}
        self.step: str | None = None
        for name in ("image_changed", "calibration_changed", "plans_changed",
                     "alignment_changed", "device_status_changed", "step_changed", "changed"):
            setattr(self, name, Event(name))

    # -- where data goes ------------------------------------------------------------
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

    # -- images ---------------------------------------------------------------------
    def image(self, view: str) -> FluoroImage | None:
        return self._images[_check_view(view)]

    def set_image(self, view: str, image: FluoroImage) -> Path | None:
        """Make ``image`` the current one of ``view``; returns the file it was saved to."""
        _check_view(view)
        if not isinstance(image, FluoroImage):
            raise SessionError(f"a {view} image must be a FluoroImage, got {type(image).__name__}")
        if image.view not in (None, view):
            raise SessionError(f"this is a {image.view} image; it cannot be the {view} image")
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
            path = self.folder / f"{view}-{len(self._saved[view]) + 1:03d}.dcm"
            write_dicom_xa(image, path)
            self._saved[view].append(path.name)
            self._saved_by_content[view][key] = name = path.name
        self._current_file[view] = name
        self.save()
        return self.folder / name

    # -- calibration, plans, alignment ----------------------------------------------
    def set_calibration(self, calibration: Any) -> None:
        self.calibration = calibration
        self.calibration_changed.emit(calibration)
        self.changed.emit()

    def set_plans(self, plans: list) -> None:
        self.plans = list(plans)
        self.plans_changed.emit(list(self.plans))
        self.changed.emit()

    def add_plan(self, plan: Any) -> None:
        self.set_plans(self.plans + [plan])

    def set_alignment(self, result: Any) -> None:
        self.alignment = result
        self.alignment_changed.emit(result)
        self.changed.emit()

    # -- devices --------------------------------------------------------------------
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
        if step == "align" and not self.plans:
            return "plan at least one trajectory first"
        if step == "align" and not self.device_ready("robot"):
            return "the robot is not connected"
        if step == "verify" and self.alignment is None:
            return "align the robot first"
        if step == "verify" and not self.device_ready("carm"):
            return "the C-arm is not connected"
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
            self.step_changed.emit(step)
            self.changed.emit()

    # -- file -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": "fluoronav.session/1",
                "started_at": self.started_at.isoformat(timespec="seconds"),
                "images": {v: list(files) for v, files in self._saved.items()},
                "current": dict(self._current_file),
                "step": self.step,
                "devices": {d: {"status": s.value, "message": m} for d, (s, m) in self._devices.items()}}

    def save(self) -> Path:
        """Write ``session.json`` into the session folder atomically."""
        return write_json_atomic(self.folder / "session.json", self.to_dict())


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
