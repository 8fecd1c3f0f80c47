"""The tracker panel: the tracker's status, a banner when a tool the tracked loop needs is
not seen, one row per tool (seen or not, its flag, its marker-fit RMS) and the frame's
number, rate and age.

Thin: ``app.tracker.TrackerMonitor`` computes what to show and calls ``set_status``,
``set_banner``, ``set_tools`` and ``set_frame``; the panel keeps no state the session needs.
"""
from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from devices.base import DeviceStatus
from widgets.panels.status_bar import STATUS_COLOURS

__all__ = ["TrackerPanel", "TOOL_LABELS", "TOOL_COLOURS"]

# a tool's status value (core.navigation.tracking.ToolStatus.value) -> what the row says
TOOL_LABELS = {"ok": "seen", "missing": "not seen", "out_of_volume": "out of volume",
               "partially_out_of_volume": "partly out of volume", "disabled": "disabled",
               "stale": "no data"}
TOOL_COLOURS = {"ok": "#7ee08a", "missing": "#ff6b5c", "out_of_volume": "#ff9a5c",
                "partially_out_of_volume": "#f0c674", "disabled": "#9aa4b1", "stale": "#9aa4b1"}


class TrackerPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("tracker_panel")
        self.status_label = QLabel("Tracker: not started", objectName="tracker_status")
        self.status_label.setWordWrap(True)
        self.banner = QLabel(objectName="tracker_banner", wordWrap=True)
        self.banner.setStyleSheet("QLabel#tracker_banner { background: #8f1f1a; color: #fff3f0; font-size: 15pt;"
                                  " font-weight: bold; padding: 8px; border-radius: 6px; }")
        self.banner.setVisible(False)
        self.table = QTableWidget(0, 3, objectName="tracker_tools")
        self.table.setHorizontalHeaderLabels(["Tool", "Seen", "RMS"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.frame_label = QLabel("no frame yet", objectName="tracker_frame")
        self.health_label = QLabel("", objectName="tracker_link_health", wordWrap=True)
        self.health_label.setStyleSheet("QLabel#tracker_link_health { color: #9aa4b1; }")
        col = QVBoxLayout(self)
        col.addWidget(self.status_label)
        col.addWidget(self.banner)
        col.addWidget(self.table)
        col.addWidget(self.frame_label)
        col.addWidget(self.health_label)
        col.addStretch(1)
        self.set_status(DeviceStatus.DISCONNECTED, "not started")

    def set_status(self, status: DeviceStatus, message: str = "") -> None:
        fg, bg = STATUS_COLOURS[status]
        if message.lower().startswith("tracker: "):      # the label already says whose it is
            message = message[len("tracker: "):]
        self.status_label.setText(f"● Tracker: {status.value}" + (f" — {message}" if message else ""))
        self.status_label.setStyleSheet(f"QLabel#tracker_status {{ color: {fg}; background: {bg};"
                                        " padding: 6px; border-radius: 6px; font-size: 14pt; }")

    def set_banner(self, text: str | None) -> None:
        """A tool needed for control is not seen (None: all are)."""
        self.banner.setText(text or "")
        self.banner.setVisible(bool(text))

    def set_tools(self, rows) -> None:
        """``rows``: (name, status value, rms_mm or NaN, needed for control) per tool, in order."""
        rows = list(rows)
        resized = self.table.rowCount() != len(rows)
        if resized:
            self.table.setRowCount(len(rows))
        for r, (name, status, rms, needed) in enumerate(rows):
            label = TOOL_LABELS.get(status, status)
            cells = (name + ("  (control)" if needed else ""), label,
                     f"{rms:.2f} mm" if rms is not None and math.isfinite(rms) else "—")
            for c, text in enumerate(cells):
                item = self.table.item(r, c)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(r, c, item)
                if item.text() != text:
                    item.setText(text)
                if c == 1:
                    item.setForeground(QColor(TOOL_COLOURS.get(status, "#e8eef5")))
        if resized:     # as tall as its rows: the space below is the panel's, not an empty table's
            self.table.resizeRowsToContents()
            height = self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
            self.table.setFixedHeight(height + sum(self.table.rowHeight(r) for r in range(len(rows))) + 2)

    def set_frame(self, frame_number: int | None, rate_hz: float | None, age_ms: float | None) -> None:
        if frame_number is None:
            self.frame_label.setText("no frame yet")
            return
        rate = f"{rate_hz:.0f} frames/s" if rate_hz is not None and math.isfinite(rate_hz) else "rate —"
        age = f"{age_ms:.0f} ms old" if age_ms is not None and math.isfinite(age_ms) else ""
        self.frame_label.setText(f"frame {frame_number} · {rate} · {age}")

    def set_link_health(self, text: str) -> None:
        """The link's counters in words ("" hides the line)."""
        if self.health_label.text() != text:
            self.health_label.setText(text)
        self.health_label.setVisible(bool(text))

    def row_texts(self) -> list[tuple[str, str, str]]:
        """What the table shows, row by row (for tests and logs)."""
        return [tuple(self.table.item(r, c).text() for c in range(3)) for r in range(self.table.rowCount())]
