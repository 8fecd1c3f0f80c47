"""One cycle of the robot control loop: watchdog, weight compensation, admittance or jog,
limits, command. Runs inside the control process (``devices.robot_controller``); kept
apart so that a test can drive it cycle by cycle with a fake clock.

Every motion command expires (jogs after ``jog_hold_s`` unless renewed, admittance
after ``deadman_s`` without a dead-man heartbeat). STOP zeroes the command at once and
latches: it raises the loop's *epoch*, every command carries the epoch it was issued in
(``submit``), and one issued before the STOP is discarded wherever it was queued; a
motion command after a STOP is refused with one line until Reset, which is its own
step: the loop re-enables the devices, waits for fresh robot and sensor data, and
acknowledges (``reset_epoch``, a ``reset_done`` event), or faults saying which device
did not come back. Limits (``core.robot.limits``) apply to every mode, on the commanded
reference integrated over the true elapsed time together with the measured joints;
a cycle later than ``late_cycle_s`` while moving is a fault. Faults carry a
``devices.base.FaultKind``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.robot.admittance import ORIENTATION, FuzzyAdmittance
from core.robot.limits import MotionLimiter
from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import Hybrid5
from core.robot.weight_compensation import (ToolLoad, WeightCompensationError, hand_wrench,
                                            identify_tool_load, rezero)
from devices.base import DeviceError, FaultKind, Simulator

__all__ = ["IDLE", "JOG_JOINT", "JOG_TASK", "MOVE", "ADMITTANCE", "IDENTIFY", "STOPPED",
           "FAULT", "RESETTING", "SETTINGS", "LoopTiming", "ControlLoop"]

IDLE, JOG_JOINT, JOG_TASK, MOVE = "idle", "jog_joint", "jog_task", "move"
ADMITTANCE, IDENTIFY, STOPPED, FAULT = "admittance", "identify", "stopped", "fault"
RESETTING = "resetting"
MODE_CODES = {m: i for i, m in enumerate((IDLE, JOG_JOINT, JOG_TASK, MOVE, ADMITTANCE, IDENTIFY,
                                          STOPPED, FAULT, RESETTING))}
# commands that set a preference and move nothing: applied even when issued before a STOP
SETTINGS = ("speed", "drag_mode", "tool_load")


@dataclass
class LoopTiming:
    period_s: float = 0.001
    watchdog_s: float = 0.02
    jog_hold_s: float = 0.3           # a jog lapses unless renewed (a frozen GUI stops it)
    deadman_s: float = 0.4            # admittance lapses without a dead-man heartbeat
    move_gain: float = 10.0           # 1/s, task-space P gain of step moves
    settle_s: float = 0.4             # identification: dwell at rest before averaging
    average_s: float = 0.3            # identification: averaging window
    average_min_samples: int = 20     # ... and at least this many readings in it
    following_mm: float = 3.0         # largest measured lag behind the command (linear joints)
    following_rad: float = 0.05       # largest measured lag behind the command (rotary joints)
    late_cycle_s: float = 0.1         # a cycle later than this while moving is a fault; the
                                      # limits hold every command for this long (the horizon)
    reset_timeout_s: float = 1.0      # Reset waits this long for fresh robot and sensor data
    rest_mm_s: float = 0.05           # measured speeds below these: the robot is at rest
    rest_rad_s: float = 5e-4


@dataclass
class _Identify:
    targets: list
    start: np.ndarray
    index: int = 0
    t_arrived: float | None = None
    R: list = field(default_factory=list)
    W: list = field(default_factory=list)
    acc: list = field(default_factory=list)


class ControlLoop:
    """``cycle(now)`` once per period; ``submit(epoch, cmd, now)`` for each queued command
    (``handle(cmd, now)``: in the current epoch); ``stop(now)`` for STOP."""

    def __init__(self, robot, sensor, kin: Hybrid5, limiter: MotionLimiter,
                 T_flange_sensor, tool_load: ToolLoad | None, timing: LoopTiming):
        self.robot, self.sensor, self.kin, self.limiter = robot, sensor, kin, limiter
        self.R_flange_sensor = np.asarray(T_flange_sensor, float)[:3, :3]
        self.tool_load = tool_load
        self.timing = timing
        self.admittance = FuzzyAdmittance()
        self.mode = IDLE
        self.fault: str | None = None
        self.fault_kind: FaultKind | None = None
        self.speed = 0.5
        self.qd_cmd = np.zeros(kin.n_joints)
        self.want = np.zeros(kin.n_joints)
        self.q = self.X = self.q_ref = None
        self.qd_meas = np.zeros(kin.n_joints)
        self.wrench = np.zeros(6)
        self.hand = np.zeros(6)
        self.reasons: list = []
        self.events: list = []            # (kind, payload) for the GUI: faults, results
        self.epoch = 0                    # STOPs seen
        self.reset_epoch = 0              # the epoch of the last acknowledged Reset
        self.discarded = 0                # commands dropped for being issued before a STOP
        self.late_cycles = 0              # cycles later than twice the period
        self.longest_cycle_s = 0.0
        self.identify_start: np.ndarray | None = None   # the pose an interrupted routine left
        self._told = False                # the refusal line after a STOP/fault was sent
        self._expires = 0.0
        self._deadman_until = 0.0
        self._jog = np.zeros(5)
        self._target = None
        self._deadline = 0.0
        self._reset_deadline = 0.0
        self._now = 0.0
        self._ident: _Identify | None = None
        self._last_t = None
        self._rest_tol = np.where(kin.revolute, timing.rest_rad_s, timing.rest_mm_s)

    # -- commands -----------------------------------------------------------------
    def submit(self, epoch: int, cmd: tuple, now: float) -> None:
        """A command issued in ``epoch``: one from before the newest STOP is discarded; one
        from a newer epoch means a STOP this loop has not seen yet, which is applied first."""
        epoch = int(epoch)
        if epoch > self.epoch:
            self.stop(now, epoch)
        if epoch < self.epoch and cmd[0] not in SETTINGS:
            self.discarded += 1
            return
        self.handle(cmd, now)

    def handle(self, cmd: tuple, now: float) -> None:
        self._now = now
        name, *args = cmd
        if name == "reset":
            self._reset(now)
            return
        if name == "speed":
            self.speed = float(np.clip(args[0], 0.05, 1.0))
            return
        if name == "drag_mode":
            self.admittance.set_mode(args[0])
            return
        if name == "tool_load":
            self.tool_load = args[0]
            return
        if name == "deadman":
            self._deadman_until = now + self.timing.deadman_s
            return
        if name == "release":               # jog button released: brake now
            if self.mode in (JOG_JOINT, JOG_TASK):
                self.mode = IDLE
            return
        if name == "admittance" and not args[0]:   # letting go moves nothing: never refused
            if self.mode == ADMITTANCE:
                self.mode = IDLE
            return
        if self.mode in (STOPPED, FAULT, RESETTING):
            self._refuse_while_stopped(name)
            return                          # motion refused until reset
        if self.q is None:
            self.events.append(("refused", "the robot state has not been read yet: try again"))
            return
        if name == "jog_joint":
            self._start(JOG_JOINT, now)
            self._jog = np.asarray(args[0], float) * self.speed * self.kin.joint_limits.velocity
        elif name == "jog_task":
            self._start(JOG_TASK, now)
            self._jog = self._task_from_frame(np.asarray(args[0], float), args[1])
        elif name in ("step_task", "move_pose", "step_joint"):
            self._start_move(name, np.asarray(args[0], float), args[1] if len(args) > 1 else "base")
        elif name == "admittance":
            if args[0] and self.tool_load is None:
                self.events.append(("refused", "identify the tool load first (Tool load tab): "
                                    "without it the tool's weight would move the robot"))
            elif args[0]:
                self.admittance.reset()
                self.mode = ADMITTANCE
                self._deadman_until = now + self.timing.deadman_s
            elif self.mode == ADMITTANCE:
                self.mode = IDLE
        elif name == "identify_tool":
            self._start_identify(args[0])
        elif name == "return_to_identify_start":
            if self.identify_start is None:
                self.events.append(("refused", "no interrupted identification to return from"))
            else:
                self._start_move("move_pose", self.identify_start, "base")
        elif name == "rezero":
            self._rezero()
        else:
            self.events.append(("refused", f"unknown robot command {name!r}"))

    def _refuse_while_stopped(self, name) -> None:
        """One line per STOP or fault, not one per repeated jog command."""
        if self._told:
            return
        self._told = True
        if self.mode == STOPPED:
            line = f"STOPPED: {name.replace('_', ' ')} refused; press Reset before moving the robot"
        elif self.mode == RESETTING:
            line = f"{name.replace('_', ' ')} refused: Reset is still waiting for the devices"
        else:
            line = (f"{name.replace('_', ' ')} refused: the robot is in fault ({self.fault}); "
                    "press Reset first")
        self.events.append(("refused", line))

    def _start(self, mode, now):
        self.mode = mode
        self._expires = now + self.timing.jog_hold_s

    def _task_from_frame(self, rates, frame):
        """Jog rates (fractions of the tool speed limits) in base or tool frame -> task rates."""
        c = self.limiter.cart
        lin = rates[:3] * c.linear_speed * self.speed
        ang = rates[3:] * c.angular_speed * self.speed
        if frame == "tool":
            R = self.kin.forward(self.q)[:3, :3]
            lin = R @ lin
            w = R @ np.r_[ang, 0.0]
            tx = self.X[3]
            E = np.array([[1, 0], [0, math.cos(tx)], [0, math.sin(tx)]])
            ang = np.linalg.lstsq(E, w, rcond=None)[0]
        return np.r_[lin, ang]

    def _start_move(self, name, value, frame):
        try:
            if name == "step_joint":
                target = self.q + value
                self.kin.joint_limits.check(target, self.kin.joint_names)
                target = self.kin.pose(target)
            elif name == "move_pose":
                target = value
            else:
                d = value.copy()
                if frame == "tool":
                    d[:3] = self.kin.forward(self.q)[:3, :3] @ d[:3]
                target = self.X + d
            self._check_target(target)
        except KinematicsError as e:
            self.events.append(("refused", str(e)))
            return
        self._set_target(target)
        self.mode = MOVE

    def _check_target(self, target) -> None:
        """Reachable, inside the joint limits and inside the workspace box, or raise."""
        self.kin.joints_for_pose(target)
        lower, upper = self.limiter.box()
        if np.any(target < lower - 1e-9) or np.any(target > upper + 1e-9):
            raise KinematicsError("that move leaves the allowed workspace: move the other way "
                                  "or nearer the middle of the workspace")

    def _set_target(self, target) -> None:
        """Track ``target``; give up (and say so) if it is not reached in 3x the nominal time."""
        c = self.limiter.cart
        err = np.abs(target - self.X)
        nominal = max(np.linalg.norm(err[:3]) / (c.linear_speed * self.speed),
                      np.linalg.norm(err[3:]) / (c.angular_speed * self.speed))
        self._target = target
        self._deadline = self._now + 3 * nominal + 2.0

    def _start_identify(self, angles_deg):
        X = self.X.copy()
        targets = [np.r_[X[:3], math.radians(a), math.radians(b)] for a, b in angles_deg]
        try:
            for t in targets:
                self._check_target(t)
        except KinematicsError as e:
            self.events.append(("refused", f"the identification poses do not fit here ({e})"))
            return
        self._ident = _Identify(targets, X)
        self.identify_start = X
        self._set_target(targets[0])
        self.mode = IDENTIFY

    def _rezero(self):
        if self.tool_load is None:
            self.events.append(("refused", "identify the tool load before zeroing"))
            return
        self.tool_load = rezero(self.tool_load, self._R_base_sensor(), self.wrench)
        self.events.append(("tool_load", self.tool_load))

    def stop(self, now: float, epoch: int | None = None) -> None:
        """STOP: zero command now, drop whatever was queued, latch until reset."""
        self.epoch = self.epoch + 1 if epoch is None else max(int(epoch), self.epoch)
        self.qd_cmd[:] = 0
        self.robot.stop()
        if self.mode != FAULT:
            self.mode = STOPPED
        self._told = False
        self._interrupt_identification("STOP")
        self._target = None

    def _interrupt_identification(self, why: str) -> None:
        if self._ident is None:
            return
        k, n = self._ident.index, len(self._ident.targets)
        X = self._ident.start
        self._ident = None
        self.events.append(("refused", f"tool-load identification interrupted by {why} at pose "
                            f"{k + 1} of {n}: after Reset, 'Return to start' brings the tool back "
                            f"to x {X[0]:.1f}, y {X[1]:.1f}, z {X[2]:.1f} mm, "
                            f"θx {math.degrees(X[3]):.1f}°, θy {math.degrees(X[4]):.1f}°"))

    def _fault(self, message: str, kind: FaultKind = FaultKind.INTERNAL) -> None:
        self.qd_cmd[:] = 0
        try:
            self.robot.stop()
        except DeviceError:
            pass
        if self.mode != FAULT:
            self.events.append(("fault", message))
            self._told = False
            self.fault, self.fault_kind = message, kind
        self.mode = FAULT
        self._interrupt_identification("a fault")
        self._target = None

    def _reset(self, now):
        """Reset: clear the devices' faults, reconnect a failed sensor, re-enable; the reset
        completes (and is acknowledged) once robot and sensor data are fresh again."""
        kind = self.fault_kind
        self.robot.reset_fault()
        if kind is not None and kind.device == "force_sensor":
            try:
                self.sensor.reset()
            except DeviceError as e:
                self._fault(str(e), e.kind or FaultKind.SENSOR_UNREACHABLE)
                return
        self.fault = self.fault_kind = None
        self.mode = RESETTING
        self._told = False
        self.qd_cmd[:] = 0
        self.q_ref = None
        self._reset_deadline = now + self.timing.reset_timeout_s
        try:
            self.robot.enable()
        except DeviceError as e:
            self._fault(str(e), e.kind or FaultKind.ROBOT_DEVICE)

    # -- one cycle ------------------------------------------------------------------
    def _R_base_sensor(self):
        return self.kin.flange(self.q)[:3, :3] @ self.R_flange_sensor

    def _sense(self, now) -> bool:
        """Read robot and sensor; the watchdog faults on anything stale (while resetting,
        the devices get ``reset_timeout_s`` to come back)."""
        wd = self.timing.watchdog_s
        try:
            st = self.robot.state()
            if now - st.t > wd:
                raise DeviceError(f"robot state is {1000 * (now - st.t):.0f} ms old (watchdog "
                                  f"{1000 * wd:.0f} ms): check the robot controller link, then "
                                  "reset", FaultKind.ROBOT_STALE)
            if st.fault:
                raise DeviceError(st.fault, st.fault_kind or FaultKind.ROBOT_DEVICE)
            self.q, self.qd_meas = st.q, np.asarray(st.qd, float)
            self.X = self.kin.pose(self.q)
            R = self._R_base_sensor()
            if isinstance(self.sensor, Simulator):
                self.sensor.advance(now, R)
            s = self.sensor.read()
            if now - s.t > wd:
                raise DeviceError(f"force sensor data is {1000 * (now - s.t):.0f} ms old "
                                  f"(watchdog {1000 * wd:.0f} ms): check the sensor cable and "
                                  "power, then reset", FaultKind.SENSOR_STALE)
        except DeviceError as e:
            if self.mode == RESETTING and now <= self._reset_deadline:
                return False                      # not back yet: wait
            if e.kind is FaultKind.SENSOR_NOT_READY:
                self.qd_cmd[:] = 0                # just connected: the driver's own timeout
                self.robot.stop()                 # turns a silence into a stale fault
                return False
            if self.mode == RESETTING:
                self._fault(f"Reset did not bring the devices back within "
                            f"{self.timing.reset_timeout_s:.1f} s: {e}", FaultKind.RESET_TIMEOUT)
            else:
                self._fault(str(e), e.kind or FaultKind.INTERNAL)
            return False
        self.wrench = s.wrench
        self.hand = (hand_wrench(self.tool_load, R, s.wrench) if self.tool_load is not None
                     else np.zeros(6))
        return True

    def cycle(self, now: float) -> None:
        dt = self.timing.period_s if self._last_t is None else max(now - self._last_t, 1e-6)
        self._last_t = self._now = now
        self.longest_cycle_s = max(self.longest_cycle_s, dt)
        if dt > 2 * self.timing.period_s:
            self.late_cycles += 1
        if isinstance(self.robot, Simulator):
            self.robot.advance(now)
        moving = bool(np.any(self.qd_cmd))
        if moving and dt > self.timing.late_cycle_s and self.mode != FAULT:
            self._fault(f"the control cycle ran {1000 * dt:.0f} ms after the previous one "
                        f"(bound {1000 * self.timing.late_cycle_s:.0f} ms) while the robot moved: "
                        "it is stopped; close other programs on this computer, then reset",
                        FaultKind.LATE_CYCLE)
        if self.mode == FAULT:                    # keep showing where the robot is
            try:
                st = self.robot.state()
                self.q, self.qd_meas = st.q, np.asarray(st.qd, float)
                self.X = self.kin.pose(self.q)
            except (DeviceError, KinematicsError):
                pass
            return
        if not self._sense(now):
            return
        if self.mode == STOPPED:
            return
        if self.mode == RESETTING:
            self.mode = IDLE                      # both devices answer again: acknowledged
            self.reset_epoch = self.epoch
            self.events.append(("reset_done", self.epoch))
        if not self._follow(dt):
            return
        want = self._wanted(now, dt)
        qd, self.reasons = self.limiter.limit(self.q_ref, self.qd_cmd, want,
                                              dt=min(dt, self.limiter.horizon), q_meas=self.q)
        self.qd_cmd = qd
        self.robot.command_joint_velocity(qd)

    def _follow(self, dt) -> bool:
        """The commanded reference ``q_ref``: the integral of the commands over the true
        elapsed time (a late cycle held the last command all along), re-synchronised to the
        measurement when the robot is commanded and measured at rest. The limits act on it
        and on the measurement together. A robot whose *measured* position falls too far
        behind its reference is blocked or overloaded: a fault."""
        at_rest = not np.any(self.qd_cmd) and np.all(np.abs(self.qd_meas) <= self._rest_tol)
        if self.q_ref is None or at_rest:
            self.q_ref = self.q.copy()
            return True
        self.q_ref = self.q_ref + self.qd_cmd * dt
        err = self.q_ref - self.q
        tol = np.where(self.kin.revolute, self.timing.following_rad, self.timing.following_mm)
        bad = np.flatnonzero(np.abs(err) > tol)
        if bad.size:
            i = int(bad[0])
            rot = bool(self.kin.revolute[i])
            k = math.degrees(1.0) if rot else 1.0
            unit = "°" if rot else " mm"
            side = "behind" if err[i] * self.qd_cmd[i] >= 0 else "ahead of"
            self._fault(f"joint {self.kin.joint_names[i]} is {k * abs(err[i]):.2f}{unit} {side} "
                        f"its command (limit {k * tol[i]:.2f}{unit}): the robot is blocked or "
                        "overloaded; clear the obstruction, then reset", FaultKind.FOLLOWING)
            return False
        return True

    def _wanted(self, now, dt) -> np.ndarray:
        """The joint velocity the current mode asks for (before limits)."""
        kin = self.kin
        if self.mode in (JOG_JOINT, JOG_TASK) and now > self._expires:
            self.mode = IDLE                      # hold-to-run: released
        if self.mode == ADMITTANCE and now > self._deadman_until:
            self.mode = IDLE                      # dead-man released
            self.admittance.reset()
        if self.mode == JOG_JOINT:
            return self._jog
        if self.mode == JOG_TASK:
            return kin.inverse_pose_jacobian(self.q) @ self._jog
        if self.mode == ADMITTANCE:
            Xd = self.admittance.step(self.hand, self.X[3], min(dt, self.limiter.horizon))
            if self.admittance.mode == ORIENTATION:
                # the paper drags orientation in joint coordinates: joints 4 and 5 only,
                # pivoting about the flange (theta_x = ... + theta4, theta_y = -theta5, eq. 10)
                qd = np.zeros(kin.n_joints)
                qd[3], qd[4] = Xd[3], -Xd[4]
                return qd
            return kin.inverse_pose_jacobian(self.q) @ Xd
        if self.mode in (MOVE, IDENTIFY):
            return self._track(now)
        return np.zeros(kin.n_joints)

    def _track(self, now) -> np.ndarray:
        err = self._target - self.X
        done = np.all(np.abs(err[:3]) < 0.05) and np.all(np.abs(err[3:]) < 5e-4)
        if self.mode == IDENTIFY and done:
            self._identify_step(now)
        elif done:
            self.mode = IDLE
            self.events.append(("arrived", self.X.copy()))
        if self.mode not in (MOVE, IDENTIFY):
            return np.zeros(self.kin.n_joints)
        if now > self._deadline:
            if self.mode == IDENTIFY:
                self._identify_failed("a pose was not reached in time (a limit held it back)")
                return np.zeros(self.kin.n_joints)
            self.events.append(("refused", "the move did not arrive in time (a limit held it "
                                "back): jog to a freer pose and try again"))
            self.mode, self._target = IDLE, None
            return np.zeros(self.kin.n_joints)
        Xd = self.timing.move_gain * err
        c = self.limiter.cart
        s = max(np.linalg.norm(Xd[:3]) / (c.linear_speed * self.speed),
                np.linalg.norm(Xd[3:]) / (c.angular_speed * self.speed), 1.0)
        return self.kin.inverse_pose_jacobian(self.q) @ (Xd / s)

    def _identify_failed(self, why: str) -> None:
        """The routine failed without a fault: go back to the pose it started from."""
        start = self._ident.start
        self._ident = None
        self.events.append(("refused", f"tool-load identification failed ({why}): the tool "
                            "returns to the pose it started from"))
        self._set_target(start)
        self.mode = MOVE

    def _identify_step(self, now):
        """At a pose: wait ``settle_s`` with the robot measured at rest, then average the
        readings over ``average_s`` (at least ``average_min_samples`` of them, whatever
        the cycle timing); motion in the window starts the dwell again."""
        idf, t = self._ident, self.timing
        if not np.all(np.abs(self.qd_meas) <= 20 * self._rest_tol):
            idf.t_arrived, idf.acc = None, []     # still moving (or pushed): dwell again
            return
        if idf.t_arrived is None:
            idf.t_arrived = now
        elapsed = now - idf.t_arrived
        if elapsed < t.settle_s:
            return
        idf.acc.append(self.wrench.copy())
        if elapsed < t.settle_s + t.average_s or len(idf.acc) < t.average_min_samples:
            return
        idf.R.append(self._R_base_sensor())
        idf.W.append(np.mean(idf.acc, axis=0))
        idf.acc, idf.t_arrived = [], None
        idf.index += 1
        self.events.append(("identify_progress", (idf.index, len(idf.targets))))
        if idf.index < len(idf.targets):
            self._set_target(idf.targets[idf.index])
            return
        try:
            load = identify_tool_load(np.array(idf.R), np.array(idf.W))
        except WeightCompensationError as e:
            self._identify_failed(str(e))
            return
        self.tool_load = load
        self.events.append(("tool_load", self.tool_load))
        self._set_target(idf.start)               # done: back to where it started
        self.mode, self._ident, self.identify_start = MOVE, None, None

    @property
    def identify_progress(self):
        return None if self._ident is None else (self._ident.index, len(self._ident.targets))

    def simulate(self, what: str, value) -> bool:
        """A simulation-only command, for whichever simulated device takes it."""
        return any(isinstance(d, Simulator) and d.inject(what, value)
                   for d in (self.robot, self.sensor))
