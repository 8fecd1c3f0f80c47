"""Shots the C-arm pushes (DICOM C-STORE) or exports into a folder, into the session.

``ShotInbox`` (Qt-free: the bench and headless tests use it) takes one received or
exported file: it reads it through the shared reader (``core.imaging.images.read_shots``,
which refuses what is not an X-ray projection), picks the viewer from the Positioner
Primary Angle (near 0/180 deg: AP, near ±90 deg: LAT), else the file's View Position,
else asks like File → Open, and adds it to the session as a new shot.

``DicomInbox`` (Qt) owns the receiver and the watched folder from the ``[dicom]``
configuration. Each file is decoded on a reader thread of its own (never on the GUI
thread, nor on the receiver's, whose C-STORE response must not wait), then brought to the
GUI thread by a queued signal, in arrival order. Shots that need their view asked wait
their turn: one question on screen at a time, never a dialog opened over another. It
shows the "DICOM" pill (listening / disabled / fault) and says each outcome in one line
(log and status bar).
"""
from __future__ import annotations

import collections
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from app.session import SessionError
from core.imaging.fluoro_image import ImageReadError
from core.imaging.images import read_shots
from core.imaging.modality import view_from_positioner
from devices.base import DeviceError, DeviceStatus

__all__ = ["ShotInbox", "DicomInbox", "install_dicom_inbox", "incoming_folder", "build_sources"]

log = logging.getLogger(__name__)


class ShotInbox:
    """One file in, one shot (or one refusal line) out. ``say(text, error)`` gets the line;
    ``ask_view(path)`` returns "ap", "lat" or None (cancelled) when the file does not say."""

    def __init__(self, session, ask_view: Callable | None = None, say: Callable | None = None,
                 tolerance_deg: float = 20.0):
        self.session = session
        self.ask_view = ask_view or (lambda path: None)
        self.say = say or (lambda text, error=False: None)
        self.tolerance_deg = float(tolerance_deg)

    def take(self, path, source: str = "DICOM") -> str | None:
        """Read ``path`` and make it the current shot of its view; the view, or None."""
        return self.file(path, read_received(path), source)

    def file(self, path, shots, source: str = "DICOM") -> str | None:
        """``shots`` read from ``path`` (``read_received``: a list, or the one-line error)
        become the current shot of their view; the view, or None."""
        name = os.path.basename(os.fspath(path))
        if isinstance(shots, str):
            self._say(f"{source}: {shots}", error=True)
            return None
        first = shots[0]
        view = (view_from_positioner(first.primary_angle_deg, self.tolerance_deg) or first.view
                or self.ask_view(path))
        if view is None:
            angle = first.primary_angle_deg
            self._say(f"{source}: {name} not loaded: no view chosen (positioner primary angle "
                      + (f"{angle:.0f}°)" if angle is not None else "missing)"), error=False)
            return None
        shots = [s.with_view(view) for s in shots]
        try:
            self.session.open_shots(view, shots, name, path)
        except (SessionError, OSError) as e:
            self._say(f"{source}: cannot load {name}: {e}", error=True)
            return None
        self._say(f"{source}: {view.upper()} shot {name}" + (f" ({len(shots)} frames)" if len(shots) > 1 else ""))
        return view

    def _say(self, text: str, error: bool = False) -> None:
        (log.warning if error else log.info)("%s", text)
        self.say(text, error)


def read_received(path):
    """The shots of a received file, or the one line saying why not: safe on any thread
    (the decode of a 1024² frame takes tens of ms that the GUI thread should not wait)."""
    try:
        return read_shots(path)
    except (ImageReadError, ValueError, OSError) as e:
        return _one_line(e, path)


def _one_line(error, path) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.replace(os.fspath(path), os.path.basename(os.fspath(path)))


def incoming_folder(config) -> Path:
    """``dicom.incoming_folder``, else ``$XDG_DATA_HOME/fluoronav/dicom-incoming``."""
    folder = str(config.dicom.incoming_folder).strip()
    if folder:
        return Path(folder).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "fluoronav" / "dicom-incoming"


def build_sources(config, on_shot, on_refused) -> list:
    """The receiver and/or watched folder the configuration asks for (not started)."""
    from devices.dicom_receiver import DicomReceiver, ReceiverConfig
    from devices.watched_folder import WatchedFolder
    d = config.dicom
    sources = []
    if d.receive:
        rc = ReceiverConfig(ae_title=d.ae_title, bind_address=d.bind_address, port=d.port,
                            allowed_calling_ae_titles=d.allowed_calling_ae_titles,
                            acse_timeout_s=d.acse_timeout_s, dimse_timeout_s=d.dimse_timeout_s,
                            network_timeout_s=d.network_timeout_s, max_associations=d.max_associations,
                            max_pending=d.max_pending_connections, max_pdu_bytes=d.max_pdu_bytes,
                            incoming=incoming_folder(config))
        sources.append(DicomReceiver(rc, on_shot, on_refused))
    if str(d.watch_folder).strip():
        sources.append(WatchedFolder(Path(d.watch_folder).expanduser(), on_shot, on_refused,
                                     settle_s=d.watch_settle_s, poll_s=d.watch_poll_s))
    return sources


try:
    from PySide6.QtCore import QObject, QTimer, Signal
except ImportError:  # a headless install: ShotInbox alone
    QObject = None

if QObject is not None:
    class DicomInbox(QObject):
        """The configured DICOM sources, their files into the session on the GUI thread."""

        arrived = Signal(str, object)  # a file path and its shots (or the error), from the reader
        refused = Signal(str)          # a refusal line, emitted on a source's thread (queued)
        status_changed = Signal(str, object, str)   # "dicom", DeviceStatus, message

        def __init__(self, config, session, ask_view=None, say=None, parent=None):
            super().__init__(parent)
            self.config = config
            self.inbox = ShotInbox(session, ask_view, say, config.dicom.view_tolerance_deg)
            self.arrived.connect(self._take)
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluoronav-dicom-read")
            self._queue: collections.deque = collections.deque()
            self._filing = False
            self.refused.connect(lambda line: self.inbox._say(f"DICOM: {line}", error=True))
            self.sources: list = []
            self._error = ""
            self._last: tuple | None = None
            self._timer = QTimer(self)
            self._timer.timeout.connect(self.poll)

        def start(self) -> None:
            """Start listening / watching as configured; a source that fails is a fault line."""
            try:
                self.sources = build_sources(self.config, self.received, self.refused.emit)
            except DeviceError as e:
                self._error = str(e)
            for source in self.sources:
                try:
                    source.connect()
                except DeviceError as e:
                    self._error = str(e)
            self._timer.start(int(self.config.devices.status_poll_s * 1000))
            self.poll()

        def stop(self) -> None:
            self._timer.stop()
            for source in self.sources:
                source.disconnect()
            self.sources = []
            self._reader.shutdown(wait=False, cancel_futures=True)

        def received(self, path) -> None:
            """A source's file (called on its thread): decoded on the reader thread, then filed."""
            path = str(path)
            try:
                self._reader.submit(lambda: self.arrived.emit(path, read_received(path)))
            except RuntimeError:            # stopped: the file stays in the incoming folder
                log.info("DICOM: %s arrived after the inbox stopped; it stays in the incoming folder", path)

        def _take(self, path: str, shots) -> None:
            self._queue.append((path, shots))
            if self._filing:
                return          # asking the view of an earlier shot: this one waits its turn
            self._filing = True
            try:
                while self._queue:
                    self.inbox.file(*self._queue.popleft())
            finally:
                self._filing = False

        def status(self) -> tuple[DeviceStatus, str]:
            """(status, message) of the pill: fault if any source faulted, listening if one runs."""
            if self._error:
                return DeviceStatus.FAULT, self._error
            if not self.sources:
                return DeviceStatus.DISCONNECTED, "disabled ([dicom] receive = false, no watch_folder)"
            states = [(s.status(), s.last_message) for s in self.sources]
            faults = [m for st, m in states if st is DeviceStatus.FAULT]
            if faults:
                return DeviceStatus.FAULT, "; ".join(faults)
            return DeviceStatus.CONNECTED, "; ".join(m for _, m in states)

        def poll(self) -> None:
            state = self.status()
            if state != self._last:
                self._last = state
                self.status_changed.emit("dicom", *state)


def install_dicom_inbox(workstation) -> "DicomInbox":
    """The DICOM pill and, when configured, the receiver / watched folder feeding the viewers."""
    w = workstation.window
    tools = getattr(workstation, "viewer_tools", None)

    def say(text: str, error: bool = False) -> None:
        w.statusBar().showMessage(text, 15000)

    ask = (lambda path: tools.ask_view(path)) if tools is not None else None
    inbox = DicomInbox(workstation.config, workstation.session, ask_view=ask, say=say, parent=w)
    inbox.status_changed.connect(w.status_bar.set_status)
    inbox.start()
    sources = list(inbox.sources)            # the window may go without shutdown(): stop them then too
    w.destroyed.connect(lambda *_: [s.disconnect() for s in sources])
    workstation.dicom_inbox = inbox
    return inbox
