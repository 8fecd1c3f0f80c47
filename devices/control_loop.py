"""One cycle of the robot control loop: watchdog, weight compensation, admittance or jog,
limits, command. Runs inside the control process (``devices.robot_controller``); kept
apart so that a test can drive it cycle by cycle with a fake clock.

Every motion command expires (jogs after ``jog_hold_s`` unless renewed, admittance
after ``deadman_s`` without a dead-man heartbeat); STOP zeroes the command at once
and latches until ``reset``. Limits (``core.robot.limits``) apply to every mode.
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
from devices.base import DeviceError

__all__ = ["IDLE", "JOG_JOINT", "JOG_TASK", "MOVE", "ADMITTANCE", "IDENTIFY", "STOPPED",
           "FAULT", "LoopTiming", "ControlLoop"]

IDLE, JOG_JOINT, JOG_TASK, MOVE = "idle", "jog_joint", "jog_task", "move"
ADMITTANCE, IDENTIFY, STOPPED, FAULT = "admittance", "identify", "stopped", "fault"


@dataclass
class LoopTiming:
    period_s: float = 0.001
    watchdog_s: float = 0.02
    jog_hold_s: float = 0.3           # a jog lapses unless renewed (a frozen GUI stops it)
    deadman_s: float = 0.4            # admittance lapses without a dead-man heartbeat
    move_gain: float = 10.0           # 1/s, task-space P gain of step moves
    settle_s: float = 0.4             # identification: dwell before averaging
    average_s: float = 0.3            # identification: averaging window
    following_mm: float = 3.0         # largest lag behind the command (linear joints)
    following_rad: float = 0.05       # largest lag behind the command (rotary joints)


@dataclass
class _Identify:
    targets: list
    index: int = 0
    t_arrived: float | None = None
    R: list = field(default_factory=list)
    W: list = field(default_factory=list)
    acc: list = field(default_factory=list)


class ControlLoop:
    """``cycle(now)`` once per period; ``handle(cmd, now)`` for each queued command."""

    def __init__(self, robot, sensor, kin: Hybrid5, limiter: MotionLimiter,
                 T_flange_sensor, tool_load: ToolLoad | None, timing: LoopTiming):
        self.robot, self.sensor, self.kin, self.limiter = robot, sensor, kin, limiter
        self.R_flange_sensor = np.asarray(T_flange_sensor, float)[:3, :3]
        self.tool_load = tool_load
        self.timing = timing
        self.admittance = FuzzyAdmittance()
        self.mode = IDLE
        self.fault: str | None = None
        self.speed = 0.5
        self.qd_cmd = np.zeros(kin.n_joints)
        self.want = np.zeros(kin.n_joints)
        self.q = self.X = self.q_ref = None
        self.wrench = np.zeros(6)
        self.hand = np.zeros(6)
        self.reasons: list = []
        self.events: list = []            # (kind, payload) for the GUI: faults, results
        self._expires = 0.0
        self._deadman_until = 0.0
        self._jog = np.zeros(5)
        self._target = None
        self._deadline = 0.0
        self._now = 0.0
        self._ident: _Identify | None = None
        self._last_t = None

    # -- commands -----------------------------------------------------------------
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
        if self.mode in (STOPPED, FAULT):
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
        elif name == "rezero":
            self._rezero()
        else:
            self.events.append(("refused", f"unknown robot command {name!r}"))

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
        c = self.limiter.cart
        if np.any(target < c.box_lower - 1e-9) or np.any(target > c.box_upper + 1e-9):
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
        self._ident = _Identify(targets)
        self._set_target(targets[0])
        self.mode = IDENTIFY

    def _rezero(self):
        if self.tool_load is None:
            self.events.append(("refused", "identify the tool load before zeroing"))
            return
        self.tool_load = rezero(self.tool_load, self._R_base_sensor(), self.wrench)
        self.events.append(("tool_load", self.tool_load))

    def stop(self, now: float) -> None:
        """STOP: zero command now, latch until reset."""
        self.qd_cmd[:] = 0
        self.robot.stop()
        if self.mode != FAULT:
            self.mode = STOPPED
        self._target = self._ident = None

    def _fault(self, message: str) -> None:
        self.qd_cmd[:] = 0
        try:
            self.robot.stop()
        except DeviceError:
            pass
        if self.mode != FAULT:
            self.events.append(("fault", message))
        self.mode, self.fault = FAULT, message

    def _reset(self, now):
        if hasattr(self.robot, "reset_fault"):
            self.robot.reset_fault()
        self.fault = None
        self.mode = IDLE
        self.qd_cmd[:] = 0
        try:
            self.robot.enable()
        except DeviceError as e:
            self._fault(str(e))

    # -- one cycle ------------------------------------------------------------------
    def _R_base_sensor(self):
        return self.kin.flange(self.q)[:3, :3] @ self.R_flange_sensor

    def _sense(self, now) -> bool:
        """Read robot and sensor; the watchdog faults on anything stale."""
        wd = self.timing.watchdog_s
        try:
            st = self.robot.state()
            if now - st.t > wd:
                raise DeviceError(f"robot state is {1000 * (now - st.t):.0f} ms old: check the "
                                  "robot controller link, then reset")
            if st.fault:
                raise DeviceError(st.fault)
            self.q = st.q
            self.X = self.kin.pose(self.q)
            R = self._R_base_sensor()
            if hasattr(self.sensor, "R_base_sensor"):      # simulator: pose the sensor
                self.sensor.R_base_sensor = R
            s = self.sensor.read()
            if now - s.t > wd:
                raise DeviceError(f"force sensor data is {1000 * (now - s.t):.0f} ms old: check "
                                  "the sensor cable and power, then reset")
        except DeviceError as e:
            self._fault(str(e))
            return False
        self.wrench = s.wrench
        self.hand = (hand_wrench(self.tool_load, R, s.wrench) if self.tool_load is not None
                     else np.zeros(6))
        return True

    def cycle(self, now: float) -> None:
        dt = self.timing.period_s if self._last_t is None else min(max(now - self._last_t, 1e-4), 0.01)
        self._last_t = self._now = now
        if hasattr(self.robot, "step"):
            self.robot.step(now)
        if self.mode == FAULT:                    # keep showing where the robot is
            try:
                self.q = self.robot.state().q
                self.X = self.kin.pose(self.q)
            except (DeviceError, KinematicsError):
                pass
            return
        if not self._sense(now):
            return
        if self.mode == STOPPED:
            return
        if not self._follow(dt):
            return
        want = self._wanted(now, dt)
        qd, self.reasons = self.limiter.limit(self.q_ref, self.qd_cmd, want)
        self.qd_cmd = qd
        self.robot.command_joint_velocity(qd)

    def _follow(self, dt) -> bool:
        """The limits act on the commanded reference ``q_ref`` (the integral of the commands,
        re-synchronised to the measurement whenever the robot is commanded at rest), so a
        lagging servo cannot carry the robot past a limit; a robot that falls too far
        behind its reference (blocked, overloaded) is a fault."""
        if self.q_ref is None or not np.any(self.qd_cmd):
            self.q_ref = self.q.copy()
            return True
        self.q_ref = self.q_ref + self.qd_cmd * dt
        err = np.abs(self.q - self.q_ref)
        tol = np.where(self.kin.revolute, self.timing.following_rad, self.timing.following_mm)
        bad = np.flatnonzero(err > tol)
        if bad.size:
            i = int(bad[0])
            self._fault(f"joint {self.kin.joint_names[i]} is {err[i]:.3g} behind its command: the "
                        "robot is blocked or overloaded; clear the obstruction, then reset")
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
            Xd = self.admittance.step(self.hand, self.X[3], dt)
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
            self.events.append(("refused", "the move did not arrive in time (a limit held it "
                                "back): jog to a freer pose and try again"))
            self.mode, self._target, self._ident = IDLE, None, None
            return np.zeros(self.kin.n_joints)
        Xd = self.timing.move_gain * err
        c = self.limiter.cart
        s = max(np.linalg.norm(Xd[:3]) / (c.linear_speed * self.speed),
                np.linalg.norm(Xd[3:]) / (c.angular_speed * self.speed), 1.0)
        return self.kin.inverse_pose_jacobian(self.q) @ (Xd / s)

    def _identify_step(self, now):
        idf = self._ident
        if idf.t_arrived is None:
            idf.t_arrived = now
        elapsed = now - idf.t_arrived
        if elapsed < self.timing.settle_s:
            return
        idf.acc.append(self.wrench.copy())
        if elapsed < self.timing.settle_s + self.timing.average_s:
            return
        idf.R.append(self._R_base_sensor())
        idf.W.append(np.mean(idf.acc, axis=0))
        idf.acc, idf.t_arrived = [], None
        idf.index += 1
        self.events.append(("identify_progress", (idf.index, len(idf.targets))))
        if idf.index < len(idf.targets):
            self._set_target(idf.targets[idf.index])
            return
        self.mode, self._ident = IDLE, None
        try:
            self.tool_load = identify_tool_load(np.array(idf.R), np.array(idf.W))
            self.events.append(("tool_load", self.tool_load))
        except WeightCompensationError as e:
            self.events.append(("refused", str(e)))

    @property
    def identify_progress(self):
        return None if self._ident is None else (self._ident.index, len(self._ident.targets))
