"""A folder the C-arm exports its shots into, polled for new files.

A file is taken only when its size and modification time have not changed for
``settle_s`` and it then reads completely (``core.imaging.images.read_image``
decodes it, which also refuses what is not an X-ray projection): a file still
being written waits. A taken file is moved into ``imported/`` (a refused one into
``refused/``) beside it, so it is never imported twice; where the folder cannot be
written, the file's (name, size, mtime) is remembered instead. Hidden files and
temporary names (``.part``, ``.tmp``, ``~``) are the exporter's own and never looked at.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from core.imaging.fluoro_image import ImageReadError
from core.imaging.modality import NotAShotError
from devices.base import DeviceError, DeviceStatus

__all__ = ["WatchedFolder"]

log = logging.getLogger(__name__)

_TEMPORARY = (".part", ".tmp", ".partial", ".crdownload", "~")
IMPORTED, REFUSED = "imported", "refused"


class WatchedFolder:
    """``poll_once()`` does one pass (tests and the thread call it); ``connect()`` starts the
    polling thread, ``disconnect()`` stops it. ``on_shot(path)`` gets the file where it
    now lies (in ``imported/``); ``on_refused(line)`` the reason a file was refused."""

    name = "DICOM folder"

    def __init__(self, folder, on_shot: Callable[[Path], None] | None = None,
                 on_refused: Callable[[str], None] | None = None, *, settle_s: float = 1.0,
                 poll_s: float = 0.5, give_up_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.on_shot, self.on_refused = on_shot, on_refused
        self.settle_s, self.poll_s, self.give_up_s = float(settle_s), float(poll_s), float(give_up_s)
        self.clock = clock
        self.last_message = "not started"
        self._status = DeviceStatus.DISCONNECTED
        self._seen: dict[str, tuple[int, int, float]] = {}   # name -> (size, mtime_ns, unchanged since)
        self._done: set[tuple[str, int, int]] = set()         # taken where it could not be moved
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.imported = 0

    def status(self) -> DeviceStatus:
        return self._status

    def connect(self) -> None:
        if not self.folder.is_dir():
            self._status = DeviceStatus.FAULT
            self.last_message = f"watched folder {self.folder} does not exist: create it or fix dicom.watch_folder"
            raise DeviceError(self.last_message)
        self._status = DeviceStatus.CONNECTED
        self.last_message = f"watching {self.folder}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watched-folder", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._status = DeviceStatus.DISCONNECTED
        self.last_message = "stopped"

    close = disconnect

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception as e:  # the folder vanished (unmounted share): say so, keep polling
                self._status = DeviceStatus.FAULT
                self.last_message = f"cannot read {self.folder} ({e}); check the export share"
                log.error("watched folder: %s", self.last_message)

    def poll_once(self) -> list[Path]:
        """One pass: the files taken (moved into ``imported/``) in name order."""
        now = self.clock()
        taken = []
        entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        present = set()
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(_TEMPORARY) or not entry.is_file(follow_symlinks=False):
                continue
            present.add(name)
            st = entry.stat(follow_symlinks=False)
            if (name, st.st_size, st.st_mtime_ns) in self._done:
                continue
            seen = self._seen.get(name)
            if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                self._seen[name] = (st.st_size, st.st_mtime_ns, now)   # new or still growing
                continue
            if now - seen[2] < self.settle_s:
                continue
            path = self._take(Path(entry.path), st, now - seen[2])
            if path is not None:
                taken.append(path)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        if self._status is DeviceStatus.FAULT:
            self._status = DeviceStatus.CONNECTED
        self.last_message = f"watching {self.folder}; {self.imported} imported"
        return taken

    def _take(self, path: Path, st, stable_s: float) -> Path | None:
        from core.imaging.images import read_image
        try:
            read_image(path)                 # decodes: a half-written file fails here and waits
        except NotAShotError as e:
            self._finish(path, st, REFUSED)
            self._refused(str(e).replace(str(path), path.name))
            return None
        except (ImageReadError, ValueError, OSError) as e:
            if stable_s < self.give_up_s:
                return None                  # may still be completing (a slow share)
            self._finish(path, st, REFUSED)
            self._refused(f"{path.name} stayed unreadable for {self.give_up_s:g} s: {e}")
            return None
        self.imported += 1
        return self._deliver(self._finish(path, st, IMPORTED))

    def _finish(self, path: Path, st, where: str) -> Path:
        """Move ``path`` into ``where/`` (never over another file); remember it if it cannot move."""
        self._seen.pop(path.name, None)
        target_dir = self.folder / where
        try:
            target_dir.mkdir(exist_ok=True)
            target = target_dir / path.name
            n = 1
            while target.exists():
                target = target_dir / f"{path.stem}-{n}{path.suffix}"
                n += 1
            os.replace(path, target)
            return target
        except OSError as e:
            log.warning("watched folder: cannot move %s into %s/ (%s): remembered instead", path.name, where,
                        e.strerror)
            self._done.add((path.name, st.st_size, st.st_mtime_ns))
            return path

    def _deliver(self, path: Path) -> Path:
        if self.on_shot is not None:
            try:
                self.on_shot(path)
            except Exception:
                log.exception("watched folder: the shot listener failed for %s", path)
        return path

    def _refused(self, line: str) -> None:
        log.warning("watched folder: %s", line)
        if self.on_refused is not None:
            try:
                self.on_refused(line)
            except Exception:
                log.exception("watched folder: the refusal listener failed")
