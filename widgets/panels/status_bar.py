"""The device status bar: one coloured pill per device (C-arm, robot, force sensor, tracker).

Colour and text say the state (disconnected / simulated / connected / fault); the
tooltip holds the device's last message. The widget only shows what it is told.
"""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from devices.base import DeviceStatus

__all__ = ["DeviceStatusBar", "DEVICE_LABELS", "STATUS_COLOURS"]

DEVICE_LABELS = {"carm": "C-arm", "robot": "Robot", "force_sensor": "Force sensor", "tracker": "Tracker",
                 "slicer": "Slicer", "dicom": "DICOM"}

# status -> (text colour, background): readable on the dark theme, fault unmistakable
STATUS_COLOURS = {
    DeviceStatus.DISCONNECTED: ("#9aa4b1", "#2a3038"),
    DeviceStatus.SIMULATED: ("#9fd3ff", "#1d3550"),
    DeviceStatus.CONNECTED: ("#a8f0b8", "#1d4a2c"),
    DeviceStatus.FAULT: ("#ffe3e0", "#8f1f1a"),
}


class DeviceStatusBar(QWidget):
    """``set_status(device, DeviceStatus, message, text=None)``; unknown device names get a new pill;
    ``text`` replaces the status word (the Slicer link says disabled / waiting / connected / fault)."""

    def __init__(self, devices=tuple(DEVICE_LABELS), parent=None):
        super().__init__(parent)
        self.setObjectName("device_status_bar")
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(4, 2, 4, 2)
        self._row.setSpacing(10)
        self._pills: dict[str, QLabel] = {}
        self._state: dict[str, tuple[DeviceStatus, str]] = {}
        for d in devices:
            self.set_status(d, DeviceStatus.DISCONNECTED, "not started")

    def set_status(self, device: str, status: DeviceStatus, message: str = "", text: str | None = None) -> None:
        if not isinstance(status, DeviceStatus):
            raise TypeError(f"status of {device} must be a DeviceStatus, got {status!r}")
        pill = self._pills.get(device)
        if pill is None:
            pill = QLabel(objectName="device_pill")
            self._row.addWidget(pill)
            self._pills[device] = pill
        fg, bg = STATUS_COLOURS[status]
        label = DEVICE_LABELS.get(device, device.replace("_", " ").capitalize())
        word = text or status.value
        pill.setText(f"●  {label}: {word}")
        pill.setStyleSheet(f"QLabel#device_pill {{ color: {fg}; background: {bg}; }}")
        pill.setToolTip(f"{label}: {word}" + (f"\n{message}" if message else ""))
        pill.setAccessibleDescription(message)
        self._state[device] = (status, message)

    def status(self, device: str) -> tuple[DeviceStatus, str]:
        return self._state[device]

    def pill(self, device: str) -> QLabel:
        return self._pills[device]
