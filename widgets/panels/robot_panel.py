"""The robot panel: STOP, fault banner, jog (Cartesian and joint, step or hold-to-run),
hand guiding with a dead-man, tool-load identification, live force/torque plots.

Thin: every control calls one method of ``app.robot_controller_client.RobotControllerClient``
(``client``); the panel only shows the state the client emits. STOP is always visible
and has a key of its own, F12, watched application-wide through an event filter (never a
QShortcut, so that no other shortcut on that key can make it ambiguous). Esc is not STOP:
Esc cancels an edit (placing a point, a measuring tool); pressed while the robot moves it
says on screen that it did not stop the robot, so a stop is never assumed that did not
happen. The dead-man is the held button or held F8.
Large targets for gloved hands at 1.5 m. After STOP the banner says STOPPED until the
controller acknowledges a Reset; a fault banner names the device that failed.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer
from PySide6.QtWidgets import (QApplication, QButtonGroup, QComboBox, QGridLayout, QHBoxLayout,
                               QLabel, QProgressBar, QPushButton, QRadioButton, QSizePolicy, QSlider,
                               QTabWidget, QVBoxLayout, QWidget)

__all__ = ["RobotPanel", "StopKeyFilter", "STOP_KEY", "DEADMAN_KEY", "ESC_IS_NOT_STOP"]

STOP_KEY = Qt.Key.Key_F12
CANCEL_KEY = Qt.Key.Key_Escape
DEADMAN_KEY = Qt.Key.Key_F8
CART_AXES = ("x", "y", "z", "θx", "θy")
STEP_CHOICES = {"step 0.1 mm / 0.1°": 0.1, "step 1 mm / 1°": 1.0, "step 5 mm / 5°": 5.0}
BIG = "min-height: 52px; min-width: 64px; font-size: 16pt; font-weight: bold;"
STOP_STYLE = ("QPushButton { min-height: 72px; font-size: 24pt; font-weight: bold; color: #fff3f0;"
              " background: #b3261e; border: 2px solid #e0574f; border-radius: 8px; }"
              " QPushButton:pressed { background: #7f1a15; }")
BANNER_STYLE = ("QLabel { background: #6b1d1a; color: #ffe3df; font-size: 14pt; padding: 8px;"
                " border-radius: 6px; }")
DEADMAN_STYLE = ("QPushButton { min-height: 72px; font-size: 18pt; font-weight: bold; "
                 "background: #2b5d8c; border-radius: 8px; color: #e8eef5; }"
                 " QPushButton:pressed { background: #2f8c4e; }")


def _button(text, style=BIG, name=None):
    b = QPushButton(text)
    b.setStyleSheet(style)
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    if name:
        b.setObjectName(name)
    return b


ESC_IS_NOT_STOP = "Esc cancels edits only: the robot is still moving. STOP is F12 or the red button."


class StopKeyFilter(QObject):
    """Calls ``stop`` on every STOP key the application sees (the shortcut-override probe and
    the key press), whichever widget has the focus, and lets the key go on to its other users.
    An Esc press while the robot moves calls ``esc_while_moving`` (a warning on screen)."""

    def __init__(self, stop, parent=None, moving=None, esc_while_moving=None):
        super().__init__(parent)
        self._stop = stop
        self._moving, self._esc = moving, esc_while_moving

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress) and event.key() == STOP_KEY:
            self._stop()
        elif (kind == QEvent.Type.KeyPress and event.key() == CANCEL_KEY and not event.isAutoRepeat()
              and self._esc is not None and self._moving is not None and self._moving()):
            self._esc()
        return False


PLOT_TABS = ("Hand guiding", "Tool load")   # the tabs under which the force/torque plots show


class _Compact:
    """Asks for no more height than its minimum: a dock's scroll area sizes a panel holding
    word-wrapped labels by its preferred height, which made the plots scroll out of view."""

    def sizeHint(self):
        hint = super().sizeHint()
        return QSize(hint.width(), self.minimumSizeHint().height())


class _CompactTabs(_Compact, QTabWidget):
    pass


class _CompactPlots(_Compact, pg.GraphicsLayoutWidget):
    def minimumSizeHint(self):
        return QSize(super().minimumSizeHint().width(), self.minimumHeight())


class RobotPanel(QWidget):
    PINNED = ("stop_button",)       # kept in view above the dock's scrolled part
    def __init__(self, client, parent=None, follow_client_state: bool = True):
        """``client`` takes the commands and reports faults, STOP and events; the robot's
        state reaches ``show_state`` from the client itself, or, with
        ``follow_client_state=False``, from whoever connects it (the session)."""
        super().__init__(parent)
        self.setObjectName("robot_panel")
        self.client = client
        kin = client.kinematics
        self.joint_names, self.limits = kin.joint_names, kin.joint_limits
        self._rotary = np.asarray(kin.revolute, bool)
        layout = QVBoxLayout(self)
        self.stop_button = _button("STOP  (F12)", STOP_STYLE, "robot_stop")
        self.stop_button.pressed.connect(client.stop)
        layout.addWidget(self.stop_button)
        # the STOP key is watched by an application-wide event filter, not a QShortcut: any
        # other shortcut on it in the window would make a shortcut ambiguous and silence the STOP
        self._stop_filter = StopKeyFilter(client.stop, self, moving=self._robot_moving,
                                          esc_while_moving=lambda: self.show_message(ESC_IS_NOT_STOP))
        app = QApplication.instance()
        app.installEventFilter(self._stop_filter)
        self.destroyed.connect(lambda *_: app.removeEventFilter(self._stop_filter))
        banner = QHBoxLayout()
        self.fault_banner = QLabel(objectName="robot_fault_banner", wordWrap=True)
        self.fault_banner.setStyleSheet(BANNER_STYLE)
        self.reset_button = _button("Reset", name="robot_reset")
        self.reset_button.clicked.connect(client.reset)
        banner.addWidget(self.fault_banner, 1)
        banner.addWidget(self.reset_button)
        layout.addLayout(banner)
        self.status_label = QLabel("starting the robot controller…", objectName="robot_status")
        layout.addWidget(self.status_label)
        self.message_label = QLabel(objectName="robot_message", wordWrap=True)
        self.message_label.setStyleSheet("color: #f0c674;")
        layout.addWidget(self.message_label)
        self._message_timer = QTimer(self, singleShot=True, interval=8000)
        self._message_timer.timeout.connect(self.message_label.clear)
        self.tabs = _CompactTabs()
        self.tabs.addTab(self._jog_tab(), "Jog")
        self.tabs.addTab(self._joint_tab(), "Joints")
        self.tabs.addTab(self._guide_tab(), "Hand guiding")
        self.tabs.addTab(self._load_tab(), "Tool load")
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self._plots())
        # only the tab in front asks for height (a QTabWidget asks for its tallest page), and the
        # force/torque plots show under the tabs where forces matter (hand guiding, tool load):
        # at 1920 x 1080 they then fit without scrolling
        self.tabs.currentChanged.connect(self._front_tab_sized)
        self._front_tab_sized(self.tabs.currentIndex())
        self._set_fault(None)
        self.tabs.setEnabled(False)               # until the control loop runs; STOP always works
        client.ready_changed.connect(self.tabs.setEnabled)
        if follow_client_state:
            client.state_changed.connect(self.show_state)
        client.fault_raised.connect(self._set_fault)
        client.stopped_changed.connect(self._set_stopped)
        client.event.connect(self._on_event)
        self._plot_timer = QTimer(self, interval=100)
        self._plot_timer.timeout.connect(self._update_plots)
        self._plot_timer.start()
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def _front_tab_sized(self, index: int) -> None:
        for i in range(self.tabs.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.tabs.widget(i).setSizePolicy(policy, policy)
        self.plot.setVisible(self.tabs.tabText(index) in PLOT_TABS)
        self.tabs.updateGeometry()

    # -- building ------------------------------------------------------------------
    def _jog_tab(self):
        w = QWidget()
        g = QGridLayout(w)
        self.frame_combo = QComboBox(objectName="robot_frame")
        self.frame_combo.addItems(["base frame", "tool frame"])
        self.mode_combo = QComboBox(objectName="robot_jog_mode")
        self.mode_combo.addItems(["hold to move", "step"])
        self.step_combo = QComboBox(objectName="robot_step")
        self.step_combo.addItems(list(STEP_CHOICES))
        self.step_combo.setCurrentIndex(1)
        self.speed_slider = QSlider(Qt.Orientation.Horizontal, objectName="robot_speed")
        self.speed_slider.setRange(5, 100)
        self.speed_slider.setValue(50)
        self.speed_label = QLabel("speed 50 %")
        self.speed_slider.valueChanged.connect(self._speed_changed)
        g.addWidget(self.frame_combo, 0, 0, 1, 2)
        g.addWidget(self.mode_combo, 0, 2, 1, 2)
        g.addWidget(self.step_combo, 1, 0, 1, 2)
        g.addWidget(self.speed_label, 2, 0, 1, 1)
        g.addWidget(self.speed_slider, 2, 1, 1, 3)
        self.frame_combo.setToolTip("jog frame: robot base or tool")
        self.step_combo.setToolTip("step size (step mode)")
        self.cart_buttons = {}
        for i, axis in enumerate(CART_AXES):
            for j, sign in enumerate((-1, 1)):
                b = _button(f"{axis} {'−' if sign < 0 else '+'}", name=f"jog_{i}_{sign:+d}")
                b.pressed.connect(lambda i=i, s=sign: self._cart_pressed(i, s))
                b.released.connect(self.client.release)
                g.addWidget(b, 3 + i, 2 * j, 1, 2)
                self.cart_buttons[(i, sign)] = b
        self.pose_label = QLabel(objectName="robot_pose")
        self.pose_label.setStyleSheet("font-family: 'DejaVu Sans Mono';")
        g.addWidget(self.pose_label, 8, 0, 1, 4)
        return w

    def _joint_tab(self):
        w = QWidget()
        g = QGridLayout(w)
        self.joint_bars, self.joint_labels = [], []
        for i, name in enumerate(self.joint_names):
            minus = _button("−", name=f"joint_{i}_minus")
            plus = _button("+", name=f"joint_{i}_plus")
            for b, s in ((minus, -1), (plus, 1)):
                b.pressed.connect(lambda i=i, s=s: self._joint_pressed(i, s))
                b.released.connect(self.client.release)
            bar = QProgressBar(objectName=f"joint_{i}_bar", textVisible=False)
            bar.setRange(0, 1000)
            bar.setMinimumHeight(28)
            label = QLabel(name)
            label.setStyleSheet("font-family: 'DejaVu Sans Mono';")
            g.addWidget(minus, i, 0)
            g.addWidget(label, i, 1)
            g.addWidget(bar, i, 2)
            g.addWidget(plus, i, 3)
            self.joint_bars.append(bar)
            self.joint_labels.append(label)
        return w

    def _guide_tab(self):
        w = QWidget()
        v = QVBoxLayout(w)
        h = QHBoxLayout()
        self.drag_group = QButtonGroup(self)
        for k, (mode, text) in enumerate((("position", "Position drag"),
                                          ("orientation", "Orientation drag"))):
            r = QRadioButton(text, objectName=f"drag_{mode}")
            r.setStyleSheet("font-size: 15pt; min-height: 44px;")
            r.setChecked(k == 0)
            r.toggled.connect(lambda on, m=mode: on and self.client.set_drag_mode(m))
            self.drag_group.addButton(r)
            h.addWidget(r)
        v.addLayout(h)
        self.deadman_button = _button("Hold to guide  (F8)", DEADMAN_STYLE, "robot_deadman")
        self.deadman_button.pressed.connect(lambda: self.client.set_deadman(True))
        self.deadman_button.released.connect(lambda: self.client.set_deadman(False))
        v.addWidget(self.deadman_button)
        self.guide_label = QLabel(objectName="robot_guide_status", wordWrap=True)
        v.addWidget(self.guide_label)
        v.addStretch(1)
        return w

    def _load_tab(self):
        w = QWidget()
        v = QVBoxLayout(w)
        self.identify_button = _button("Identify tool load", name="robot_identify")
        self.identify_button.setToolTip("the robot tilts the tool through 9 poses")
        self.identify_button.clicked.connect(lambda: self.client.identify_tool())
        self.identify_progress = QProgressBar(objectName="robot_identify_progress")
        self.identify_progress.setMinimumHeight(28)
        self.zero_button = _button("Zero here", name="robot_zero")
        self.zero_button.setToolTip("hands off the tool: re-zero the sensor at this pose")
        self.zero_button.clicked.connect(self.client.rezero)
        self.return_button = _button("Return to start", name="robot_return")
        self.return_button.setToolTip("back to the pose an interrupted identification started from")
        self.return_button.clicked.connect(self.client.return_to_identify_start)
        self.load_label = QLabel("no tool load identified: forces include the tool weight",
                                 objectName="robot_load", wordWrap=True)
        for x in (self.identify_button, self.identify_progress, self.zero_button,
                  self.return_button, self.load_label):
            v.addWidget(x)
        v.addStretch(1)
        return w

    def _plots(self):
        self.plot = _CompactPlots()
        self.plot.setBackground("#15181c")
        # force and torque side by side: half the height stacked plots took, so both show whole
        # under the hand guiding and tool load tabs at 1920 x 1080 and 1366 x 768
        self.plot.setMinimumHeight(150)
        self.force_plot = self.plot.addPlot(row=0, col=0, title="hand force (N), last 10 s")
        self.torque_plot = self.plot.addPlot(row=0, col=1, title="hand torque (N·m)")
        colours = ("#e06c75", "#98c379", "#61afef")
        self.curves = [p.plot(pen=pg.mkPen(c, width=2)) for p in (self.force_plot, self.torque_plot)
                       for c in colours]
        for p in (self.force_plot, self.torque_plot):
            p.setXRange(-10, 0)
            p.showGrid(x=True, y=True, alpha=0.3)
        return self.plot

    # -- actions -----------------------------------------------------------------------
    def _speed_changed(self, value):
        self.speed_label.setText(f"speed {value} %")
        self.client.set_speed(value / 100.0)

    def _cart_pressed(self, i, sign):
        frame = self.frame_combo.currentText().split()[0]
        if self.mode_combo.currentText() == "step":
            size = STEP_CHOICES[self.step_combo.currentText()]
            delta = np.zeros(5)
            delta[i] = sign * (size if i < 3 else math.radians(size))
            self.client.step_task(delta, frame)
        else:
            v = np.zeros(5)
            v[i] = sign
            self.client.hold_jog_task(v, frame)

    def _joint_pressed(self, i, sign):
        if self.mode_combo.currentText() == "step":
            size = STEP_CHOICES[self.step_combo.currentText()]
            delta = np.zeros(len(self.joint_names))
            delta[i] = sign * (math.radians(size) if self._rotary[i] else size)
            self.client.step_joint(delta)
        else:
            v = np.zeros(len(self.joint_names))
            v[i] = sign
            self.client.hold_jog_joint(v)

    def keyPressEvent(self, ev):
        if ev.key() == DEADMAN_KEY and not ev.isAutoRepeat():
            self.client.set_deadman(True)
            return
        super().keyPressEvent(ev)

    def keyReleaseEvent(self, ev):
        if ev.key() == DEADMAN_KEY and not ev.isAutoRepeat():
            self.client.set_deadman(False)
            return
        super().keyReleaseEvent(ev)

    # -- showing state -------------------------------------------------------------------
    def _set_fault(self, message, kind=None):
        if not message and self.client.stopped:
            self._set_stopped(True)                 # STOP outlives a cleared fault
            return
        self.fault_banner.setVisible(bool(message))
        self.reset_button.setVisible(bool(message))
        if message:
            what = "FORCE SENSOR FAULT" if kind and kind.startswith("sensor") else "ROBOT FAULT"
            self.fault_banner.setText(f"{what} — {message}")

    def _set_stopped(self, stopped: bool):
        if stopped:
            self.fault_banner.setText("STOPPED — press Reset when the area is clear")
            self.fault_banner.setVisible(True)
            self.reset_button.setVisible(True)
        else:
            self._set_fault(None)

    def show_state(self, s: dict):
        mode = s["mode"]
        if mode == "fault":
            self._set_fault(s["fault"], s.get("fault_kind"))
        elif mode == "stopped" or self.client.stopped:
            self._set_stopped(True)
        elif mode == "resetting":
            self.fault_banner.setText("RESETTING — waiting for the robot and the force sensor")
            self.fault_banner.setVisible(True)
            self.reset_button.setVisible(False)
        else:
            self._set_fault(None)
        limits = ", ".join(sorted(set(s["limits"]))) or "none"
        rt = "" if s.get("realtime", True) else "  (no real-time priority)"
        self.status_label.setText(f"mode: {mode}   limits active: {limits}{rt}")
        X = s["pose"]
        self.pose_label.setText(
            f"tip x {X[0]:7.1f}  y {X[1]:7.1f}  z {X[2]:7.1f} mm\n"
            f"    θx {math.degrees(X[3]):6.1f}°  θy {math.degrees(X[4]):6.1f}°")
        lo, hi = self.limits.lower, self.limits.upper
        for i, (bar, label) in enumerate(zip(self.joint_bars, self.joint_labels)):
            q = s["q"][i]
            bar.setValue(int(1000 * (q - lo[i]) / (hi[i] - lo[i])))
            unit, val = ("°", math.degrees(q)) if self._rotary[i] else ("mm", q)
            label.setText(f"{self.joint_names[i]:>6} {val:8.1f} {unit}")
        d = s["damping"]
        self.guide_label.setText(
            f"{s['drag_mode']} drag · damping {d[0]:.2f} N·s/mm, {d[1]:.1f} N·m·s/rad · "
            "release the button to stop")
        if s.get("identify"):
            k, n = s["identify"]
            self.identify_progress.setRange(0, n)
            self.identify_progress.setValue(k)

    def _on_event(self, kind, payload):
        if kind == "tool_load":
            load = payload
            self.identify_progress.setValue(self.identify_progress.maximum())
            self.load_label.setText(
                f"tool {load.weight_N:.2f} N, centre of mass {np.round(load.com_sensor_mm, 1)} mm "
                f"(sensor frame); residuals {load.force_rms_N:.3f} N, "
                f"{load.torque_rms_Nm:.4f} N·m RMS over {load.n_poses} poses "
                "(paper table 7: ≤ 0.75 N, ≤ 0.06 N·m mean)")
        elif kind == "refused":
            self.show_message(f"Not done: {payload}")
        elif kind == "reset_done":
            self.message_label.clear()            # what was refused before is history now

    def _robot_moving(self) -> bool:
        """A joint speed commanded now, or a motion mode (a jog, hand guiding, a path)."""
        s = self.client.state or {}
        if self.client.stopped or s.get("mode") in ("stopped", "fault", "resetting"):
            return False
        qd = np.asarray(s.get("qd_cmd", 0.0), float)
        return s.get("mode") not in (None, "idle") or bool(np.any(qd != 0))

    def show_message(self, text: str) -> None:
        """A result or refusal, kept on screen for 8 s."""
        self.message_label.setText(text)
        self._message_timer.start()

    def _update_plots(self):
        hand = bool(self.client.state.get("tool_load"))
        t, w = self.client.plot_data(hand=hand)
        if len(t) == 0:
            return
        what = "hand" if hand else "sensor (tool weight included)"
        self.force_plot.setTitle(f"{what} force (N), last 10 s")
        self.torque_plot.setTitle(f"{what} torque (N·m)")
        for k, c in enumerate(self.curves):
            c.setData(t, w[:, k])
