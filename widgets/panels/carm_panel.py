"""The C-arm panel: orbit angles (LAO/RAO, cranial/caudal), SID and detector, Acquire AP/LAT.

Thin: it emits ``pose_requested(primary_deg, secondary_deg)`` (a short pause after the
last change, so that holding an arrow key does not flood the C-arm) and
``acquire_requested(view)``; the application answers with ``set_pose_confirmed``,
``set_device_text`` and ``set_last_shot``. Degrees here (the UI), as the DICOM
Positioner Primary/Secondary Angles: primary + = LAO, secondary + = cranial.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QDoubleSpinBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

__all__ = ["CArmPanel", "angle_text", "POSE_DELAY_MS"]

POSE_DELAY_MS = 300
LIMITS_DEG = {"primary": 120.0, "secondary": 60.0}
_BIG = "min-height: 48px; font-size: 15pt;"


def angle_text(primary_deg: float, secondary_deg: float) -> str:
    """'LAO 20° · CRAN 5°' (primary + = LAO, secondary + = cranial)."""
    p = f"{'LAO' if primary_deg >= 0 else 'RAO'} {abs(primary_deg):.0f}°"
    s = f"{'CRAN' if secondary_deg >= 0 else 'CAUD'} {abs(secondary_deg):.0f}°"
    return f"{p} · {s}"


def _spin(name: str, limit: float) -> QDoubleSpinBox:
    s = QDoubleSpinBox(objectName=name)
    s.setRange(-limit, limit)
    s.setDecimals(0)
    s.setSingleStep(1.0)
    s.setSuffix("°")
    s.setKeyboardTracking(False)
    s.setAlignment(Qt.AlignmentFlag.AlignRight)
    s.setStyleSheet("QDoubleSpinBox { min-height: 44px; font-size: 16pt; }"
                    " QDoubleSpinBox::up-button, QDoubleSpinBox::down-button { width: 36px; }")
    return s


class CArmPanel(QWidget):
    pose_requested = Signal(float, float)
    acquire_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("carm_panel")
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        self.spins = {"primary": _spin("carm_primary", LIMITS_DEG["primary"]),
                      "secondary": _spin("carm_secondary", LIMITS_DEG["secondary"])}
        self.spins["primary"].setToolTip("Orbit: + LAO (detector to the patient's left), − RAO; ±120°")
        self.spins["secondary"].setToolTip("Tilt: + cranial (detector to the head), − caudal; ±60°")
        for row, (key, label) in enumerate((("primary", "LAO + / RAO −"), ("secondary", "Cran + / Caud −"))):
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(self.spins[key], row, 1)
            self.spins[key].valueChanged.connect(self._changed)
        self.zero_button = QPushButton("0° / 0°", objectName="carm_zero")
        self.zero_button.setToolTip("Back to the standard AP and LAT orbit")
        self.zero_button.setStyleSheet(_BIG)
        self.zero_button.clicked.connect(lambda: self.set_angles(0.0, 0.0))
        grid.addWidget(self.zero_button, 0, 2, 2, 1)
        self.pose_label = QLabel("", objectName="carm_pose_label")
        self.device_label = QLabel("C-arm not connected", objectName="carm_device_label")
        self.device_label.setWordWrap(True)
        buttons = QHBoxLayout()
        self.acquire_buttons = {}
        for view, key in (("ap", "F5"), ("lat", "F6")):
            b = QPushButton(f"Acquire {view.upper()}", objectName=f"carm_acquire_{view}")
            b.setToolTip(f"Take a {view.upper()} shot at these angles ({key})")
            b.setStyleSheet(_BIG + " font-weight: bold;")
            b.clicked.connect(lambda _=False, v=view: self.acquire_requested.emit(v))
            buttons.addWidget(b)
            self.acquire_buttons[view] = b
        self.last_labels = {v: QLabel(f"{v.upper()}: no shot yet", objectName=f"carm_last_{v}")
                            for v in ("ap", "lat")}
        col = QVBoxLayout(self)
        col.addLayout(grid)
        col.addWidget(self.pose_label)
        col.addLayout(buttons)
        for lab in self.last_labels.values():
            col.addWidget(lab)
        col.addWidget(self.device_label)
        col.addStretch(1)
        self._timer = QTimer(self, singleShot=True, interval=POSE_DELAY_MS)
        self._timer.timeout.connect(self._send)
        self._confirmed = (0.0, 0.0)
        self._show_pose()

    # -- user -> application ------------------------------------------------------------------
    def angles(self) -> tuple[float, float]:
        return self.spins["primary"].value(), self.spins["secondary"].value()

    def set_angles(self, primary_deg: float, secondary_deg: float) -> None:
        """Set both spin boxes (as the user would) and ask for the pose after the pause."""
        for key, value in (("primary", primary_deg), ("secondary", secondary_deg)):
            self.spins[key].setValue(float(value))

    def _changed(self, *_):
        self._show_pose()
        self._timer.start()

    def _send(self) -> None:
        self.pose_requested.emit(*self.angles())

    def flush(self) -> None:
        """Send a pending pose now (before an acquisition)."""
        if self._timer.isActive():
            self._timer.stop()
            self._send()

    # -- application -> display ----------------------------------------------------------------
    def set_pose_confirmed(self, primary_deg: float, secondary_deg: float, error: str = "") -> None:
        """The C-arm's answer; on refusal the boxes go back to the pose it holds."""
        if error:
            self.pose_label.setText(f"refused: {error}")
            self.pose_label.setStyleSheet("color: #ff7b72;")
            for key, value in zip(("primary", "secondary"), self._confirmed):
                self.spins[key].blockSignals(True)
                self.spins[key].setValue(value)
                self.spins[key].blockSignals(False)
            return
        self._confirmed = (float(primary_deg), float(secondary_deg))
        self.pose_label.setStyleSheet("")
        self._show_pose()

    def _show_pose(self) -> None:
        pending = self.angles() != self._confirmed
        self.pose_label.setText(f"C-arm at {angle_text(*self._confirmed)}"
                                + (f"  → {angle_text(*self.angles())}" if pending else ""))

    def set_device_text(self, text: str) -> None:
        self.device_label.setText(text)

    def set_last_shot(self, view: str, primary_deg: float, secondary_deg: float, sid_mm: float | None = None) -> None:
        sid = f", SID {sid_mm:.0f} mm" if sid_mm else ""
        self.last_labels[view].setText(f"{view.upper()} shot: {angle_text(primary_deg, secondary_deg)}{sid}")

    def set_acquire_enabled(self, enabled: bool, why_not: str = "") -> None:
        for view, b in self.acquire_buttons.items():
            b.setEnabled(enabled)
            b.setToolTip(f"Take a {view.upper()} shot at these angles" if enabled else f"Acquire: {why_not}")
        for s in self.spins.values():
            s.setEnabled(enabled)
