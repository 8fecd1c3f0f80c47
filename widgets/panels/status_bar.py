"""The device status bar: one coloured pill per device (C-arm, robot, force sensor, tracker).

Colour and text say the state (disconnected / simulated / connected / fault); the
tooltip holds the device's last message. A device's pill can also say STOPPED
(``set_stopped``: the robot after STOP, until the loop acknowledges Reset), over
whatever its connection status is. The widget only shows what it is told.
"""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from devices.base import DeviceStatus

__all__ = ["DeviceStatusBar", "DEVICE_LABELS", "STATUS_COLOURS", "STOPPED_COLOURS"]

DEVICE_LABELS = {"carm": "C-arm", "robot": "Robot", "force_sensor": "Force sensor", "tracker": "Tracker",
                 "slicer": "Slicer", "dicom": "DICOM"}

# status -> (text colour, background): readable on the dark theme, fault unmistakable
STATUS_COLOURS = {
    DeviceStatus.DISCONNECTED: ("#9aa4b1", "#2a3038"),
    DeviceStatus.SIMULATED: ("#9fd3ff", "#1d3550"),
    DeviceStatus.CONNECTED: ("#a8f0b8", "#1d4a2c"),
    DeviceStatus.FAULT: ("#ffe3e0", "#8f1f1a"),
}
# STOPPED: the red of the STOP button, brighter than a fault's, so it is told apart at a glance
STOPPED_COLOURS = ("#fff3f0", "#b3261e")


class DeviceStatusBar(QWidget):
    """``set_status(device, DeviceStatus, message, text=None)``; unknown device names get a new pill;
    ``text`` replaces the status word (the Slicer link says disabled / waiting / connected / fault)."""

    def __init__(self, devices=tuple(DEVICE_LABELS), parent=None):
        super().__init__(parent)
        self.setObjectName("device_status_bar")
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(4, 2, 4, 2)
        self._row.setSpacing(6)
        self._pills: dict[str, QLabel] = {}
        self._state: dict[str, tuple[DeviceStatus, str]] = {}
        self._stopped: set[str] = set()
        self._words: dict[str, str] = {}   # a device's own word for its state ("waiting" for Slicer), else the status
        for d in devices:
            self.set_status(d, DeviceStatus.DISCONNECTED, "not started")

    def set_status(self, device: str, status: DeviceStatus, message: str = "", text: str | None = None) -> None:
        if not isinstance(status, DeviceStatus):
            raise TypeError(f"status of {device} must be a DeviceStatus, got {status!r}")
        if device not in self._pills:
            pill = QLabel(objectName="device_pill")
            self._row.addWidget(pill)
            self._pills[device] = pill
        self._state[device] = (status, message)
        self._words[device] = text or status.value
        self._render(device)

    def set_stopped(self, device: str, stopped: bool) -> None:
        """Show (or clear) STOPPED on ``device``'s pill; its connection status is kept beneath."""
        if device not in self._pills:
            raise KeyError(f"no status pill for {device!r} (pills: {', '.join(self._pills)})")
        (self._stopped.add if stopped else self._stopped.discard)(device)
        self._render(device)

    def is_stopped(self, device: str) -> bool:
        return device in self._stopped

    def _render(self, device: str) -> None:
        pill = self._pills[device]
        status, message = self._state[device]
        label = DEVICE_LABELS.get(device, device.replace("_", " ").capitalize())
        if device in self._stopped:
            fg, bg = STOPPED_COLOURS
            pill.setText(f"■ {label}: STOPPED")
            tip = (f"{label}: STOPPED — press Reset in the Robot panel when the area is clear"
                   f"\n(connection: {status.value}" + (f"; {message})" if message else ")"))
        else:
            fg, bg = STATUS_COLOURS[status]
            word = self._words.get(device) or status.value
            pill.setText(f"● {label}: {word}")
            tip = f"{label}: {word}" + (f"\n{message}" if message else "")
        pill.setStyleSheet(f"QLabel#device_pill {{ color: {fg}; background: {bg}; }}")
        pill.setToolTip(tip)
        pill.setAccessibleDescription(message)

    def status(self, device: str) -> tuple[DeviceStatus, str]:
        return self._state[device]

    def pill(self, device: str) -> QLabel:
        return self._pills[device]
