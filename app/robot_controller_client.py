"""The Qt side of the robot: starts the control process, drains its state queue with a
QTimer and emits signals; repeats hold-to-run jogs and the dead-man heartbeat while a
button is held. Every panel action is one method here that a script can call.

STOP is shown at once (``stopped_changed(True)`` as the request goes out) and stays
shown until the control loop acknowledges a Reset issued after it; a fault names its
device through its ``FaultKind``, never through its text.

``install_robot_panel(window)`` adds the robot panel as a dock and the robot (with its
cage) to the 3D view, and returns the client.
"""
from __future__ import annotations

import collections
import time

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from core.robot.kinematics.hybrid5 import load_hybrid5
from devices.base import DeviceStatus, FaultKind
from devices.robot_controller import ControllerConfig, RobotController

__all__ = ["RobotControllerClient", "install_robot_panel", "IDENTIFY_ANGLES_DEG"]

# the identification poses (theta_x, theta_y) in degrees: the paper's table-7 span, 9 poses
IDENTIFY_ANGLES_DEG = [(tx, ty) for tx in (-30, 0, 30) for ty in (-20, 0, 20)]
REPEAT_MS = 50          # hold-to-run and dead-man repeat (the loop lets go after 300/400 ms)
HISTORY_S = 10.0


class RobotControllerClient(QObject):
    state_changed = Signal(dict)          # the newest state message (about 50 Hz)
    fault_raised = Signal(str)            # one line saying what to do
    event = Signal(str, object)           # "tool_load", "identify_progress", "refused", ...
    ready_changed = Signal(bool)
    stopped_changed = Signal(bool)        # True from STOP until the loop acknowledges Reset
    device_status = Signal(str, object, str)   # ("robot" | "force_sensor", DeviceStatus, message)

    def __init__(self, config: ControllerConfig | None = None, parent=None, poll_ms: int = 20):
        super().__init__(parent)
        self.kinematics = load_hybrid5(config.robot_file if config else None)
        self.controller = RobotController(config)
        self.history = collections.deque(maxlen=int(HISTORY_S * 110))   # (t, wrench[6])
        self.state: dict = {}
        self._ready = False
        self.stopped = False
        self._poll = QTimer(self, interval=poll_ms)
        self._poll.timeout.connect(self.poll)
        self._repeat = QTimer(self, interval=REPEAT_MS)
        self._repeat.timeout.connect(self._resend)
        self._held: tuple | None = None
        self._deadman = QTimer(self, interval=REPEAT_MS)
        self._deadman.timeout.connect(lambda: self.controller.deadman())

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        self.controller.start(wait=False)
        self._poll.start()

    def shutdown(self) -> None:
        self._poll.stop()
        self._repeat.stop()
        self._deadman.stop()
        self.controller.close()

    def poll(self) -> None:
        if not self._ready and self.controller.ready():
            self._ready = True
            self.ready_changed.emit(True)
            self._emit_status(None)
        if self.controller.process is not None and not self.controller.alive():
            self._poll.stop()
            message = "the robot control process ended: restart fluoronav; the robot is stopped"
            self.fault_raised.emit(message)
            self.device_status.emit("robot", DeviceStatus.FAULT, message)
            return
        if self.stopped and not self.controller.stopped():
            self.stopped = False                  # the loop acknowledged a Reset after the STOP
            self.stopped_changed.emit(False)
        last = None
        for msg in self.controller.drain():
            if "q" in msg:
                self.history.append((msg["t"], msg["wrench"], msg["hand"]))
                last = msg
            for kind, payload in msg.get("events", []):
                if kind == "fault":
                    self.fault_raised.emit(payload)
                self.event.emit(kind, payload)
        if last is not None:
            if (last["fault"] or None) != (self.state.get("fault") or None):
                self._emit_status(last["fault"], last.get("fault_kind"))
            self.state = last
            self.state_changed.emit(last)

    def _emit_status(self, fault, kind=None) -> None:
        """Device pills: the fault's kind names the device that failed."""
        sensor_sim = self.controller.config.netft_host is None
        ok_robot = (DeviceStatus.SIMULATED, "simulated hybrid robot, 1 kHz control process")
        ok_sensor = ((DeviceStatus.SIMULATED, "simulated 6-axis sensor") if sensor_sim else
                     (DeviceStatus.CONNECTED, f"ATI Net F/T {self.controller.config.netft_host}"))
        sensor_fault = bool(fault) and kind is not None and FaultKind(kind).device == "force_sensor"
        self.device_status.emit("robot", *((DeviceStatus.FAULT, fault) if fault and not sensor_fault
                                           else ok_robot))
        self.device_status.emit("force_sensor", *((DeviceStatus.FAULT, fault) if sensor_fault
                                                  else ok_sensor))

    # -- actions (one per panel control) -------------------------------------------------
    def stop(self) -> None:
        """STOP everything: the flag goes straight to the loop; hold timers end too."""
        self.controller.stop()
        if not self.stopped:
            self.stopped = True
            self.stopped_changed.emit(True)
        self.release()
        self.set_deadman(False)

    def reset(self) -> None:
        """Ask for Reset; ``stopped`` stays true until the loop acknowledges it."""
        self.controller.reset()

    def set_speed(self, fraction: float) -> None:
        self.controller.send("speed", float(fraction))

    def set_drag_mode(self, mode: str) -> None:
        self.controller.send("drag_mode", mode)

    def step_task(self, delta, frame: str = "base") -> None:
        self.controller.step_task(delta, frame)

    def step_joint(self, delta) -> None:
        self.controller.step_joint(delta)

    def hold_jog_task(self, fractions, frame: str = "base") -> None:
        self._hold(("jog_task", np.asarray(fractions, float), frame))

    def hold_jog_joint(self, fractions) -> None:
        self._hold(("jog_joint", np.asarray(fractions, float)))

    def _hold(self, cmd) -> None:
        self._held = cmd
        self._resend()
        self._repeat.start()

    def _resend(self) -> None:
        if self._held is not None:
            self.controller.send(*self._held)

    def release(self) -> None:
        """Button released: stop repeating and tell the loop to brake now."""
        if self._held is not None:
            self.controller.send("release")
        self._held = None
        self._repeat.stop()

    def set_deadman(self, held: bool) -> None:
        """Admittance only while the dead-man is held."""
        if held:
            self.controller.admittance(True)
            self._deadman.start()
        else:
            self._deadman.stop()
            self.controller.admittance(False)

    def identify_tool(self, angles_deg=None) -> None:
        self.controller.send("identify_tool", list(angles_deg or IDENTIFY_ANGLES_DEG))

    def rezero(self) -> None:
        self.controller.send("rezero")

    def return_to_identify_start(self) -> None:
        """Move back to where an interrupted tool-load identification started."""
        self.controller.send("return_to_identify_start")

    def simulate_hand(self, wrench_base) -> None:
        """Simulation only: a hand pushing on the tool (base frame, N and N*m)."""
        self.controller.send("sim", "hand", np.asarray(wrench_base, float))

    def plot_data(self, hand: bool = True):
        """(t relative to now in s, wrench (N, 6)) over the last 10 s."""
        if not self.history:
            return np.zeros(0), np.zeros((0, 6))
        t = np.array([h[0] for h in self.history])
        w = np.array([h[2] if hand else h[1] for h in self.history])
        return t - time.perf_counter(), w


def install_robot_panel(window, config: ControllerConfig | None = None, area: str = "left",
                        session=None) -> RobotControllerClient:
    """Dock the robot panel in ``window`` and show the robot in ``window.scene_view``; the
    robot and force-sensor statuses and the robot's state go into the session
    (``app.device_state``) when a session is given, else the statuses straight to
    ``window.status_bar``."""
    from PySide6.QtWidgets import QApplication

    from widgets.panels.robot_panel import RobotPanel
    from widgets.scene.robot import RobotSceneActors, load_cage_balls

    client = RobotControllerClient(config, parent=window)
    panel = RobotPanel(client, follow_client_state=session is None)
    window.add_dock("Robot", panel, area)
    actors = RobotSceneActors(client.kinematics, load_cage_balls())
    home = client.kinematics.joints_for_pose([625, 475, -135, 0, 0])
    actors.update(home)
    window.scene_view.set_actor("robot", actors.assembly)
    last = [0.0, None]
    # ten times the encoder noise: 0.02 mm on the slides, 0.2 mrad on the revolute joints
    still = np.where(np.asarray(client.kinematics.revolute, bool), 2e-4, 0.02)

    def redraw(state):
        now, q = time.monotonic(), state.get("q")
        # the 3D view at 20 Hz at most, and only when the robot moved (encoder noise
        # aside): a software-rendered frame costs 100-200 ms that other threads wait for
        if q is None or now - last[0] < 1 / 20:
            return
        q = np.asarray(q, float)
        if last[1] is not None and np.all(np.abs(q - last[1]) < still):
            return
        last[0], last[1] = now, q
        actors.update(q)
        window.scene_view.render(interactive=True)

    if session is not None:   # statuses and state into the session, through its one adapter;
        # the panel and the 3D robot render the session's robot state
        from app.device_state import device_state
        from app.qt_connect import connect_while_alive
        device_state(session).connect_robot(client)
        connect_while_alive(session.robot_state_changed, panel, "show_state")
        connect_while_alive(session.robot_state_changed, window, "redraw_robot")
        window.redraw_robot = redraw
    else:
        client.state_changed.connect(redraw)
        if hasattr(window, "status_bar"):
            client.device_status.connect(window.status_bar.set_status)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(client.shutdown)
    window.robot_client, window.robot_panel, window.robot_actors = client, panel, actors
    client.start()
    return client
