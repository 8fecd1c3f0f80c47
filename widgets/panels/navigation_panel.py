"""The Align / Verify panel: what to do next, the alignment preview or its refusal, the
hold-to-move and hold-to-insert buttons (and their held keys), the path's progress, the
verification's deviations and grade, and a STOP that is always there.

Thin: it emits what the surgeon does (``move_held(bool)``, ``insert_held(bool)``,
``preview_requested``, ``verify_requested``, ``stop_requested``) and shows what it is told.
Motion is hold-to-run: a button emits True on press and False on release; the held keys
(space bar: move, I: insert) do the same on the key press and release, never on the key's
auto-repeat, and a window losing the focus while one is held counts as a release. Esc is not
used here: STOP has its own button and key (F12), and Esc only cancels edits.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QComboBox, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QTextEdit, QVBoxLayout, QHBoxLayout, QWidget)

__all__ = ["NavigationPanel", "MOVE_KEY", "INSERT_KEY"]

MOVE_KEY = Qt.Key.Key_Space
INSERT_KEY = Qt.Key.Key_I
_HOLD = ("QPushButton { min-height: 64px; font-size: 16pt; font-weight: bold; background: #2b5d8c;"
         " border-radius: 8px; color: #e8eef5; } QPushButton:pressed { background: #2f8c4e; }"
         " QPushButton:disabled { background: #2a3038; color: #6b7580; }")
_STOP = ("QPushButton { min-height: 48px; font-size: 18pt; font-weight: bold; color: #fff3f0;"
         " background: #b3261e; border: 2px solid #e0574f; border-radius: 8px; }"
         " QPushButton:pressed { background: #7f1a15; }")
_GRADE_COLOURS = {"A": "#7ee08a", "B": "#c8e07e", "C": "#f0c674", "D": "#ff9a5c", "E": "#ff6b5c"}


class _HeldKeys(QObject):
    """Application-wide: the held keys while the panel is shown (text fields keep their keys)."""

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        self.held: set = set()

    def eventFilter(self, obj, ev) -> bool:
        t = ev.type()
        if t in (QEvent.Type.ApplicationDeactivate, QEvent.Type.WindowDeactivate) and self.held:
            self.release_all()
            return False
        if t not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) or not self.panel.keys_active():
            return False
        key = ev.key()
        if key not in (MOVE_KEY, INSERT_KEY) or ev.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False
        if isinstance(QApplication.focusWidget(), (QLineEdit, QTextEdit, QAbstractSpinBox, QComboBox)):
            return False
        if ev.isAutoRepeat():
            return True            # the hold goes on: no new press, no release
        pressed = t == QEvent.Type.KeyPress
        if pressed == (key in self.held):
            return True            # the second event Qt delivers (window and widget): once only
        (self.held.add if pressed else self.held.discard)(key)
        self.panel._key_hold(key, pressed)
        return True

    def release_all(self) -> None:
        for key in sorted(self.held):
            self.panel._key_hold(key, False)
        self.held.clear()


class NavigationPanel(QWidget):
    PINNED = ("stop_button", "stopped_label")       # kept in view above the dock's scrolled part
    move_held = Signal(bool)
    insert_held = Signal(bool)
    guide_held = Signal(bool, object)       # held, and in simulation the push ("in", "out", "side") or None
    preview_requested = Signal()
    correct_requested = Signal()
    verify_requested = Signal()
    stop_requested = Signal()

    def __init__(self, parent=None, install_keys: bool = True):
        super().__init__(parent)
        self.setObjectName("navigation_panel")
        lay = QVBoxLayout(self)
        self.stop_button = QPushButton("STOP  (F12)", objectName="navigation_stop")
        self.stop_button.setStyleSheet(_STOP)
        self.stop_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.stop_button.setToolTip("Stop the robot now (F12; also the robot panel's STOP)")
        self.stop_button.pressed.connect(self.stop_requested.emit)
        lay.addWidget(self.stop_button)
        self.stopped_label = QLabel("", objectName="navigation_stopped", wordWrap=True)
        self.stopped_label.setStyleSheet("QLabel { background: #6b1d1a; color: #ffe3df; font-size: 14pt;"
                                         " padding: 6px; border-radius: 6px; }")
        self.stopped_label.setVisible(False)
        lay.addWidget(self.stopped_label)
        self.next_label = QLabel("", objectName="navigation_next", wordWrap=True)
        self.next_label.setStyleSheet("QLabel { font-size: 14pt; font-weight: bold; }")
        lay.addWidget(self.next_label)
        self.preview_label = QLabel("", objectName="navigation_preview", wordWrap=True)
        lay.addWidget(self.preview_label)
        self.refusal_label = QLabel("", objectName="navigation_refusal", wordWrap=True)
        self.refusal_label.setStyleSheet("QLabel { color: #ffb4a8; font-weight: bold; }")
        self.refusal_label.setVisible(False)
        lay.addWidget(self.refusal_label)
        self.preview_button = QPushButton("Preview alignment", objectName="navigation_preview_button")
        self.preview_button.clicked.connect(self.preview_requested.emit)
        lay.addWidget(self.preview_button)
        row = QHBoxLayout()
        self.move_button = self._hold_button("Hold to MOVE\n(space bar)", "navigation_move", self.move_held)
        self.insert_button = self._hold_button("Hold to INSERT\n(I key)", "navigation_insert", self.insert_held)
        row.addWidget(self.move_button)
        row.addWidget(self.insert_button)
        lay.addLayout(row)
        self.progress = QProgressBar(objectName="navigation_progress", maximum=1000)
        self.progress.setFormat("%p %")
        self.progress_label = QLabel("", objectName="navigation_progress_label")
        lay.addWidget(self.progress_label)
        lay.addWidget(self.progress)
        self.guide_button = self._hold_button("Hold to GUIDE by hand along the line", "navigation_guide", None)
        self.guide_button.setToolTip("Dead-man for hand guiding: free along the planned line up to the stand-off, "
                                     "stiff off it (the tool must be within 5 mm and 5° of the line)")
        self.guide_button.setStyleSheet(_HOLD.replace("min-height: 64px", "min-height: 40px"))
        self.guide_button.pressed.connect(lambda: self.guide_held.emit(True, None))
        self.guide_button.released.connect(lambda: self.guide_held.emit(False, None))
        lay.addWidget(self.guide_button)
        self.push_row = QWidget(objectName="navigation_push_row")
        prow = QHBoxLayout(self.push_row)
        prow.setContentsMargins(0, 0, 0, 0)
        prow.addWidget(QLabel("simulated hand:"))
        self.push_buttons = {}
        for key, text in (("in", "push in"), ("out", "pull back"), ("side", "push sideways")):
            b = QPushButton(text, objectName=f"navigation_push_{key}")
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setToolTip("Simulation: holds the dead-man and pushes on the tool with about 10 N")
            b.pressed.connect(lambda k=key: self.guide_held.emit(True, k))
            b.released.connect(lambda k=key: self.guide_held.emit(False, k))
            prow.addWidget(b)
            self.push_buttons[key] = b
        self.push_row.setVisible(False)
        lay.addWidget(self.push_row)
        self.correct_button = QPushButton("&Correct from shots  (Alt+C)", objectName="navigation_correct")
        self.correct_button.setToolTip("Closed loop: AP + LAT with the wire through the guide, docked on the entry; "
                                       "the wire is found in both, the correction computed, and you hold MOVE to "
                                       "apply it. Repeats until under 0.3 mm and 0.3°.")
        self.correct_button.clicked.connect(self.correct_requested.emit)
        lay.addWidget(self.correct_button)
        self.loop_label = QLabel("", objectName="navigation_loop", wordWrap=True)
        self.loop_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.loop_label)
        self.verify_button = QPushButton("Verify: acquire AP + LAT with the wire", objectName="navigation_verify")
        self.verify_button.setStyleSheet("QPushButton { min-height: 44px; font-size: 14pt; }")
        self.verify_button.clicked.connect(self.verify_requested.emit)
        lay.addWidget(self.verify_button)
        self.result_label = QLabel("", objectName="navigation_result", wordWrap=True)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.result_label)
        self.message_label = QLabel("", objectName="navigation_message", wordWrap=True)
        lay.addWidget(self.message_label)
        lay.addStretch(1)
        self._active = True
        self.keys = _HeldKeys(self)
        if install_keys and QApplication.instance() is not None:
            app = QApplication.instance()
            app.installEventFilter(self.keys)
            self.destroyed.connect(lambda *_: app.removeEventFilter(self.keys))
        self.set_phase("idle")

    def _hold_button(self, text, name, signal) -> QPushButton:
        b = QPushButton(text, objectName=name)
        b.setStyleSheet(_HOLD)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)    # the space bar never "clicks" it: it holds
        if signal is not None:
            b.pressed.connect(lambda: signal.emit(True))
            b.released.connect(lambda: signal.emit(False))
        return b

    # -- keys -----------------------------------------------------------------------------
    def set_keys_active(self, active: bool) -> None:
        """The held keys work in the Align and Verify steps only (elsewhere the space bar is free)."""
        self._active = bool(active)
        if not active:
            self.keys.release_all()

    def keys_active(self) -> bool:
        return self._active and self.isVisible() and self.isEnabled()

    def _key_hold(self, key, pressed: bool) -> None:
        button = self.move_button if key == MOVE_KEY else self.insert_button
        if pressed and not button.isEnabled():
            return
        button.setDown(pressed)
        (self.move_held if key == MOVE_KEY else self.insert_held).emit(pressed)

    # -- showing ----------------------------------------------------------------------------
    def set_next(self, text: str, blocked: bool = False) -> None:
        self.next_label.setText(text)
        self.next_label.setStyleSheet("QLabel { font-size: 14pt; font-weight: bold; color: %s; }"
                                      % ("#f0c674" if blocked else "#e8eef5"))

    def show_preview(self, summary: str | None) -> None:
        self.preview_label.setText(summary or "")
        if summary:
            self.refusal_label.setVisible(False)

    def show_refusal(self, text: str) -> None:
        self.refusal_label.setText(text)
        self.refusal_label.setVisible(bool(text))
        if text:
            self.preview_label.setText("")

    def show_progress(self, kind: str, fraction: float) -> None:
        self.progress_label.setText({"approach": "approach", "insert": "insertion"}.get(kind, kind))
        self.progress.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))

    def set_phase(self, phase: str) -> None:
        """Which controls make sense: Move before the guide is on the line, Insert after, Verify
        once aligned."""
        self.phase = phase
        self.move_button.setEnabled(phase in ("idle", "approach", "correction"))
        self.insert_button.setEnabled(phase in ("aligned", "insert"))
        self.correct_button.setEnabled(phase == "aligned")
        guide = phase in ("idle", "aligned")
        self.guide_button.setEnabled(guide)
        for b in self.push_buttons.values():
            b.setEnabled(guide)
        self.verify_button.setEnabled(phase in ("aligned", "inserted", "verified"))
        self.preview_button.setEnabled(phase in ("idle", "aligned", "inserted", "verified"))

    def show_correction(self, summary: dict | None, truth: list | None = None) -> None:
        """Each closed-loop shot pair: the measured residual and the correction sent after it
        (in simulation the true residual beside it); why the loop stopped."""
        if not summary:
            self.loop_label.setText("")
            return
        rows = []
        for i, it in enumerate(summary.get("iterations", [])):
            row = f"pair {it['shot']}: residual {it['residual_mm']:.2f} mm, {it['residual_deg']:.2f}°"
            if it.get("correction_mm"):
                row += f" → correction {it['correction_mm']:.2f} mm, {it['correction_deg']:.2f}°"
            if truth and i < len(truth) and truth[i]:
                row += f" <span style='color:#8fa3b8'>(truth {truth[i]['tip_mm']:.2f} mm, {truth[i]['angle_deg']:.2f}°)</span>"
            rows.append(row)
        why = summary.get("stop_reason") or ""
        colour = "#7ee08a" if summary.get("converged") else "#f0c674"
        head = "<b>Closed loop</b>" + (f" — <span style='color:{colour}'>{why}</span>" if why else "")
        self.loop_label.setText(head + ("<br>" + "<br>".join(rows) if rows else ""))

    def show_verification(self, lines: list[str], grade: str | None) -> None:
        """The deviations (one per line) and the Gertzbein-Robbins grade, large."""
        g = ""
        if grade:
            g = (f"<span style='font-size:22pt; font-weight:bold; color:{_GRADE_COLOURS.get(grade, '#e8eef5')}'>"
                 f"Gertzbein-Robbins {grade}</span><br>")
        self.result_label.setText(g + "<br>".join(lines))

    def show_message(self, text: str, warn: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("QLabel { color: %s; }" % ("#f0c674" if warn else "#b8c4d0"))

    def show_simulated_hand(self, shown: bool) -> None:
        """The push buttons: only with a simulated force sensor (a real hand pushes the real tool)."""
        self.push_row.setVisible(bool(shown))

    def set_stopped(self, stopped: bool) -> None:
        self.stopped_label.setText("ROBOT STOPPED — press Reset in the Robot panel when the area is clear"
                                   if stopped else "")
        self.stopped_label.setVisible(bool(stopped))
        if stopped:
            self.keys.release_all()
            for b in (self.move_button, self.insert_button):
                b.setDown(False)
