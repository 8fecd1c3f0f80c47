"""The one path device state takes into the session.

Device I/O runs off the GUI thread (``app.devices_controller`` workers, the robot control
process); their status and the robot's state arrive on the GUI thread (queued signals,
the robot client's queue drained by its timer) and are handed here, and from here to the
session. Widgets render the session, never a device's signals. Qt-free: it calls
``connect`` on what it is given (Qt or psygnal signals alike), so a script can feed it
by hand the same way.
"""
from __future__ import annotations

import weakref

from psygnal import EmitLoopError, Signal

from app.session import DEVICES, Session, listener_failure

__all__ = ["DeviceStateAdapter", "device_state"]

_ADAPTERS: "weakref.WeakKeyDictionary[Session, DeviceStateAdapter]" = weakref.WeakKeyDictionary()


def device_state(session: Session) -> "DeviceStateAdapter":
    """The session's adapter (one per session)."""
    adapter = _ADAPTERS.get(session)
    if adapter is None:
        adapter = _ADAPTERS[session] = DeviceStateAdapter(session)
    return adapter


class DeviceStateAdapter:
    """Writes device status and robot state into ``session``.

    The session's devices (``app.session.DEVICES``) go to ``session.set_device_status``;
    any other device a part adds has its status kept in ``others`` and announced by
    ``other_status_changed(device, status, message)`` (the status bar shows it too)."""

    other_status_changed = Signal(str, object, str)

    def __init__(self, session: Session):
        self._session = weakref.ref(session)
        self.others: dict[str, tuple] = {}

    @property
    def session(self) -> Session:
        s = self._session()
        if s is None:
            raise RuntimeError("the session of this device adapter is gone")
        return s

    def status(self, device: str, status, message: str = "") -> None:
        if device in DEVICES:
            self.session.set_device_status(device, status, message)
        elif self.others.get(device) != (status, message):
            self.others[device] = (status, message)
            self.other_status_changed.emit(device, status, message)

    def robot_state(self, state: dict) -> None:
        self.session.set_robot_state(state)

    def connect_devices(self, devices) -> None:
        """A ``DevicesController``: its workers' statuses (``device_status_changed``)."""
        devices.device_status_changed.connect(self._reported(self.status, "a device status"))

    def connect_robot(self, client) -> None:
        """A ``RobotControllerClient``: robot and force-sensor statuses, the newest state."""
        client.device_status.connect(self._reported(self.status, "a robot status"))
        client.state_changed.connect(self._reported(self.robot_state, "the robot state"))

    @staticmethod
    def _reported(write, what: str):
        """``write`` for a device's signal: a failing listener of the session is one ERROR line
        in the log (the session holds the new state), not a traceback lost in the event loop.
        A direct call (a script) raises as any session writer does."""
        def call(*args):
            try:
                write(*args)
            except EmitLoopError as e:
                listener_failure(e, f"showing {what}")
        return call
