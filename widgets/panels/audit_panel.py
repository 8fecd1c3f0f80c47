"""The Audit panel: the case's audit trail as a table, newest at the bottom, with Export.

A thin view: rows come from the session's ``audited`` events (``app.main`` connects them);
Export asks ``export_requested`` of the app, which writes the JSONL copy and the CSV.
"""
from __future__ import annotations

import json

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

__all__ = ["AuditPanel"]

_COLUMNS = ("time (UTC)", "role", "event", "details")
_HIDDEN = ("t", "mono", "role", "event")


class AuditPanel(QWidget):
    """Signals: ``export_requested()``, ``report_requested()``."""
    export_requested = Signal()
    report_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, len(_COLUMNS), objectName="audit_table")
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)   # one line a row
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = QLabel("no events yet")
        export = QPushButton("Export…", objectName="audit_export")
        export.setToolTip("Write a copy of the audit trail (JSON lines) and a CSV for a spreadsheet")
        export.clicked.connect(self.export_requested.emit)
        report = QPushButton("Case report", objectName="audit_report")
        report.setToolTip("Write the case report (PDF) into the session folder")
        report.clicked.connect(self.report_requested.emit)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(report)
        row.addWidget(export)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.table)
        lay.addLayout(row)

    def set_events(self, events, problem: str = "") -> None:
        """Show ``events`` (a resumed case's whole trail); ``problem``: one line, e.g. a damaged line."""
        self.table.setRowCount(0)
        for e in events:
            self.add_event(e)
        if problem:
            self.summary.setText(problem)

    def add_event(self, e: dict) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        details = {k: v for k, v in e.items() if k not in _HIDDEN}
        cells = (str(e.get("t", ""))[:23].replace("T", " "), e.get("role", ""), e.get("event", ""),
                 json.dumps(details, ensure_ascii=False) if details else "")
        for c, text in enumerate(cells):
            self.table.setItem(r, c, QTableWidgetItem(str(text)))
        if r < 50:   # the first rows set the columns' widths; later ones do not re-measure all
            for c in range(3):
                self.table.resizeColumnToContents(c)
        self.table.scrollToBottom()
        self.summary.setText(f"{r + 1} event{'s' if r else ''}")
