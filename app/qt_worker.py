"""Work off the GUI thread for the Qt-free session state: a thread per job, its progress
and its result handed back to the GUI thread by queued signals.

``QtThreadRunner().run(name, job, done, progress)`` runs ``job(report)`` in a new thread;
``report(percent, text)`` from there reaches ``progress(percent, text)`` in the GUI thread,
and the job's return value reaches ``done(result)`` there. The job must not raise (the
caller wraps its errors into the result); an exception that escapes anyway is logged and
handed back as ``done(error)``, so the caller's busy state always ends.
"""
from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, Signal, Slot

__all__ = ["QtThreadRunner"]

log = logging.getLogger(__name__)


class QtThreadRunner(QObject):
    """Create it in the GUI thread; ``run`` may be called there any number of times."""

    _done = Signal(object, object)       # callback, result
    _progress = Signal(object, int, str)  # callback, percent, text

    def __init__(self, parent=None):
        super().__init__(parent)
        # slots of this object: the worker's emits are queued to the thread it lives in
        self._done.connect(self._deliver_done)
        self._progress.connect(self._deliver_progress)

    @Slot(object, object)
    def _deliver_done(self, callback, result) -> None:
        callback(result)

    @Slot(object, int, str)
    def _deliver_progress(self, callback, pct: int, text: str) -> None:
        callback(pct, text)

    def run(self, name: str, job, done, progress) -> None:
        def work():
            try:
                result = job(lambda pct, text: self._progress.emit(progress, int(pct), str(text)))
            except BaseException as e:  # noqa: BLE001 - the GUI thread must hear that the job ended
                log.exception("background job %s failed", name)
                result = e
            self._done.emit(done, result)
        threading.Thread(target=work, name=name, daemon=True).start()
