"""The log panel: Python ``logging`` records shown as they come, coloured by level.

``LogPanel.handler`` is a ``logging.Handler``; records from any thread reach the
panel through a queued Qt signal, so device workers may log freely.
"""
from __future__ import annotations

import html
import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QPlainTextEdit

__all__ = ["LogPanel", "LEVEL_COLOURS"]

LEVEL_COLOURS = {logging.DEBUG: "#7f8a96", logging.INFO: "#c9d1d9", logging.WARNING: "#f2c14e",
                 logging.ERROR: "#ff7b72", logging.CRITICAL: "#ff4d4d"}


class _Bridge(QObject):
    record = Signal(int, str)


class _QtHandler(logging.Handler):
    def __init__(self, bridge: _Bridge):
        super().__init__()
        self._bridge = bridge
        self.setFormatter(logging.Formatter("%(asctime)s  %(levelname)-7s %(name)s: %(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._bridge.record.emit(record.levelno, self.format(record))
        except RuntimeError:  # the panel is gone (application quitting)
            pass


class LogPanel(QPlainTextEdit):
    """Read-only, newest line at the bottom, at most ``max_lines`` kept."""

    def __init__(self, parent=None, max_lines: int = 5000, level: int = logging.INFO):
        super().__init__(parent)
        self.setObjectName("log_panel")
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self._bridge = _Bridge(self)
        self._bridge.record.connect(self.append_record)
        self.handler = _QtHandler(self._bridge)
        self.handler.setLevel(level)

    def attach(self, logger: logging.Logger | None = None) -> None:
        """Show the records of ``logger`` (the root logger by default)."""
        logger = logger or logging.getLogger()
        logger.addHandler(self.handler)
        if logger.getEffectiveLevel() > self.handler.level:
            logger.setLevel(self.handler.level)

    def detach(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self.handler)

    def append_record(self, level: int, text: str) -> None:
        colour = LEVEL_COLOURS.get(level, LEVEL_COLOURS[logging.INFO if level < logging.ERROR else logging.ERROR])
        self.appendHtml(f'<span style="color:{colour}; white-space:pre">{html.escape(text)}</span>')
        sb = self.verticalScrollBar()
        sb.setValue(sb.maximum())
