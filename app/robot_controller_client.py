"""The Qt side of the robot: starts the control process, drains its state queue with a
QTimer and emits signals; repeats hold-to-run jogs and the dead-man heartbeat while a
button is held. Every panel action is one method here that a script can call.

Align: ``follow_path(kind, q_samples, dt)`` sends a path ("approach", then "insert");
the robot moves along it only while ``hold_path(True)`` (or ``set_deadman(True)`` while a
path is active) is renewed by the dead-man heartbeat; ``follow`` is the state's
``{"kind", "progress", "arrived", "paused", "reason"}`` (None without a path).

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
from devices.control_loop import PATH_KINDS, PathError, PathRefusal, check_path
from devices.robot_controller import ControllerConfig, RobotController

__all__ = ["RobotControllerClient", "install_robot_panel", "IDENTIFY_ANGLES_DEG", "insertion_samples",
           "PathError", "PathRefusal"]

# the identification poses (theta_x, theta_y) in degrees: the paper's table-7 span, 9 poses
IDENTIFY_ANGLES_DEG = [(tx, ty) for tx in (-30, 0, 30) for ty in (-20, 0, 20)]
REPEAT_MS = 50          # hold-to-run and dead-man repeat (the loop lets go after 300/400 ms)
HISTORY_S = 10.0


def insertion_samples(kinematics, insertion, dt: float = 0.01, speed_mm_s: float = 2.0,
                      accel_mm_s2: float = 10.0, depth_mm: float | None = None) -> np.ndarray:
    """Joint samples every ``dt`` of the insertion (``core.navigation.align.InsertionSegment``):
    the tool tip along the planned line from the stand-off to ``depth_mm`` (default: the
    planned depth) on a trapezoid of ``speed_mm_s`` and ``accel_mm_s2``, the tool's axis
    on the line throughout (``pose_for_axis`` and the closed-form inverse, eq. 11)."""
    L = float(insertion.length_mm if depth_mm is None else min(max(depth_mm, 0.0), insertion.length_mm))
    if not (speed_mm_s > 0 and accel_mm_s2 > 0 and dt > 0):
        raise PathError(PathRefusal.PERIOD, "insertion speed, acceleration and sample period must be positive")
    ta = speed_mm_s / accel_mm_s2
    if accel_mm_s2 * ta * ta >= L:                 # a triangle: the peak speed is never reached
        ta = float(np.sqrt(L / accel_mm_s2))
        v, T = accel_mm_s2 * ta, 2 * ta
    else:
        v, T = speed_mm_s, L / speed_mm_s + ta
    t = np.minimum(np.arange(int(np.ceil(T / dt)) + 1) * dt, T)
    s = np.where(t < ta, 0.5 * accel_mm_s2 * t ** 2,
                 np.where(t <= T - ta, 0.5 * accel_mm_s2 * ta ** 2 + v * (t - ta),
                          L - 0.5 * accel_mm_s2 * (T - t) ** 2))
    s[-1] = L
    d = np.asarray(insertion.direction, float)
    return np.array([kinematics.joints_for_pose(kinematics.pose_for_axis(insertion.tip_at(x), d))
                     for x in s])


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
        self._path_kind: str | None = None
        self._path_id = 0                        # numbers the paths sent (the state echoes it)
        self._hold_id = 0                        # numbers the dead-man presses for a path
        self._path_hold = QTimer(self, interval=REPEAT_MS)   # repeats the press while held
        self._path_hold.timeout.connect(self._send_hold)
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
        self._path_hold.stop()
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
                if kind == "follow_refused":
                    self._path_kind = None
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
        self._path_kind = None

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
        """Admittance only while the dead-man is held; with a path to follow (Align), the
        dead-man moves the robot along the path instead."""
        if held and self.path_active():
            self.hold_path(True)
            return
        if held:
            self.controller.admittance(True)
            self._deadman.start()
        else:
            self._deadman.stop()
            self._path_hold.stop()
            self.controller.send("follow_hold", False)
            self.controller.admittance(False)

    def set_fixture(self, point=None, direction=None, axial_range_mm=(-float("inf"), 0.0)) -> None:
        """Hand guiding (the dead-man) along the line through ``point`` (base mm) along
        ``direction``: free along it within ``axial_range_mm``, stiff off it; ``None`` clears it.
        The loop engages it only with the tool near the line."""
        spec = None if point is None else ([float(x) for x in point], [float(x) for x in direction],
                                            tuple(float(x) for x in axial_range_mm))
        self.controller.send("fixture", spec)

    # -- Align: path following -------------------------------------------------------------
    def follow_path(self, kind: str, q_samples, dt: float) -> None:
        """Send a path: joint samples (N, 5) every ``dt`` s, ``kind`` "approach" or "insert".
        Checked here first (``PathError`` with its ``PathRefusal``: kind, shape, finite, joint
        ranges, joint speed and acceleration); the loop checks it again against where the
        robot is (start, insertion only after the approach arrived) and refuses with a
        ``follow_refused`` event. The robot moves only while ``hold_path(True)`` is held."""
        if kind not in PATH_KINDS:
            raise PathError(PathRefusal.KIND, f"a path is 'approach' or 'insert', got {kind!r}")
        Q, dt = check_path(self.kinematics, kind, q_samples, dt)
        self._path_kind = kind
        self._path_id += 1
        self.controller.send("follow", kind, Q, dt, self._path_id)

    def hold_path(self, held: bool) -> None:
        """The dead-man for path following: the loop advances only while this is held (the
        press, numbered, repeats every ``REPEAT_MS``; the loop lets go 400 ms after the last);
        released, the robot stops at once. A press that began before a path was sent does
        not start that path: the insertion needs a press of its own."""
        if held:
            self._hold_id += 1
            self._send_hold()
            self._path_hold.start()
        else:
            self._path_hold.stop()
            self.controller.send("follow_hold", False)

    def _send_hold(self) -> None:
        self.controller.send("follow_hold", True, self._hold_id)

    def cancel_path(self) -> None:
        """Give up the path (the robot brakes and stays where it is; not a STOP)."""
        self._path_hold.stop()
        self.controller.send("follow_cancel")
        self._path_kind = None

    @property
    def path_id(self) -> int:
        """The number of the last path sent; the loop's ``follow`` state echoes the one it follows."""
        return self._path_id

    @property
    def follow(self) -> dict | None:
        """The newest ``{"kind", "progress", "arrived", "paused", "reason"}`` (None: no path)."""
        return self.state.get("follow")

    def path_active(self) -> bool:
        """A path was sent and has not arrived, been cancelled or been aborted."""
        f = self.follow
        if self._path_kind is None:
            return False
        if f is None or f.get("id") != self._path_id:
            return True                          # the path is on its way to the loop
        return not f["arrived"] and not f["reason"].startswith(("aborted", "cancelled"))

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
    if session is not None:   # every command into the case's audit trail, before the panel's buttons connect
        from app.audit import watch_robot_client
        watch_robot_client(session, client)
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
