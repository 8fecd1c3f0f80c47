"""The workflow bar: Calibrate → Plan → Align → Verify.

The current step is highlighted and a step is enabled only when the session
allows it (``set_enabled_steps``). Clicking emits ``step_requested(step)``; the
application decides (``app.session.Session.go_to_step``) and calls ``set_current``.
Beside the steps, ``set_hint(text, blocked)`` says what to do next, or what blocks it.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

__all__ = ["WorkflowBar", "STEP_LABELS"]

STEP_LABELS = {"calibrate": "Calibrate", "plan": "Plan", "align": "Align", "verify": "Verify"}


class WorkflowBar(QWidget):
    step_requested = Signal(str)

    def __init__(self, steps=tuple(STEP_LABELS), parent=None):
        super().__init__(parent)
        self.setObjectName("workflow_bar")
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        row.setSpacing(6)
        self.buttons: dict[str, QPushButton] = {}
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        for i, step in enumerate(steps):
            if i:
                row.addWidget(QLabel("›", objectName="workflow_arrow"))
            b = QPushButton(f"{i + 1}  {STEP_LABELS.get(step, step.title())}", objectName="workflow_step")
            b.setCheckable(True)
            b.clicked.connect(lambda _=False, s=step: self._clicked(s))
            self._group.addButton(b)
            self.buttons[step] = b
            row.addWidget(b)
        self.hint = QLabel("", objectName="workflow_hint")
        self.hint.setWordWrap(False)
        # a long hint is cut at the window's edge (its tooltip has it whole) rather than
        # widening the window beyond a 1366 px screen
        self.hint.setMinimumWidth(1)
        self.hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row.addSpacing(12)
        row.addWidget(self.hint, 1)
        self._current: str | None = None
        self.set_enabled_steps(())

    def _clicked(self, step: str) -> None:
        # the check state follows the application's decision, not the click
        self.set_current(self._current)
        self.step_requested.emit(step)

    def set_current(self, step: str | None) -> None:
        if step is not None and step not in self.buttons:
            raise ValueError(f"unknown workflow step {step!r}")
        self._current = step
        self._group.setExclusive(False)
        for s, b in self.buttons.items():
            b.setChecked(s == step)
        self._group.setExclusive(True)

    @property
    def current(self) -> str | None:
        return self._current

    def set_enabled_steps(self, steps, reasons: dict[str, str] | None = None) -> None:
        """Enable exactly ``steps``; ``reasons[step]`` becomes the tooltip of a disabled step."""
        steps = set(steps)
        for s, b in self.buttons.items():
            b.setEnabled(s in steps)
            b.setToolTip("" if s in steps else (reasons or {}).get(s, ""))

    def set_hint(self, text: str, blocked: bool = False) -> None:
        """What to do next (or, ``blocked``, what stands in the way), beside the steps."""
        self.hint.setText(text)
        self.hint.setToolTip(text)
        self.hint.setStyleSheet("QLabel#workflow_hint { color: %s; font-weight: bold; }"
                                % ("#f0c674" if blocked else "#9fd3ff"))
