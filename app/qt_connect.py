"""Widgets and Qt controllers following the Qt-free session state (psygnal signals)."""
from __future__ import annotations

import weakref

import shiboken6
from PySide6.QtCore import QObject

__all__ = ["connect_while_alive"]


def connect_while_alive(signal, owner: QObject, slot: str, nargs: int | None = None) -> None:
    """Connect ``owner.<slot>`` to a psygnal ``signal`` of the (longer-lived) session state,
    for as long as ``owner``'s Qt object exists: a closed window's controller neither
    receives nor keeps anything alive. ``nargs``: how many of the signal's arguments to pass
    (all when None)."""
    ref = weakref.ref(owner)

    def call(*args):
        o = ref()
        if o is None or not shiboken6.isValid(o):
            signal.disconnect(call)
            return
        getattr(o, slot)(*(args if nargs is None else args[:nargs]))
    signal.connect(call)
