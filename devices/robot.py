"""Robot arm: the interface the control loop drives, and a simulator.

State (``RobotState``): ``t`` (``time.perf_counter`` s when measured), joint
positions ``q`` and velocities ``qd`` (mm or rad, per second), ``enabled``, and
``fault`` (None or one line saying what to do). Commands are joint velocities;
``stop()`` commands zero at once. A robot that is not enabled, or in fault,
ignores motion commands and brakes; so does a drive that got no fresh command for its
``command_timeout_s`` (the drive's own watchdog, which bounds how long a late control
cycle can keep an old command running).
"""
from __future__ import annotations

import abc
import collections
import time
from dataclasses import dataclass

import numpy as np

from core.robot.kinematics.base import Kinematics
from devices.base import DeviceError, DeviceStatus, FaultKind, NormalStream, Simulator

__all__ = ["RobotState", "Robot", "SimulatedRobot"]


@dataclass(frozen=True)
class RobotState:
    t: float
    q: np.ndarray
    qd: np.ndarray
    enabled: bool
    fault: str | None = None
    fault_kind: FaultKind | None = None


class Robot(abc.ABC):
    kinematics: Kinematics
    status: DeviceStatus = DeviceStatus.DISCONNECTED

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def enable(self) -> None:
        """Release brakes and servo on; raises ``DeviceError`` while in fault."""

    @abc.abstractmethod
    def disable(self) -> None: ...

    @abc.abstractmethod
    def state(self) -> RobotState:
        """The newest measured state; ``DeviceError`` if the link is down."""

    @abc.abstractmethod
    def command_joint_velocity(self, qd) -> None: ...

    def stop(self) -> None:
        self.command_joint_velocity(np.zeros(self.kinematics.n_joints))

    @abc.abstractmethod
    def reset_fault(self) -> None: ...


class SimulatedRobot(Robot, Simulator):
    """Joint velocity servos (first order, time constant ``tau_s``) behind a command
    latency, with the joints' own speed/acceleration limits, hard stops at the joint
    limits, encoder noise, a drive watchdog (no command for ``command_timeout_s``: brake),
    and faults and stalls on demand. ``step(now)`` advances the physics to ``now`` (the
    control loop calls it each cycle through ``Simulator.advance``)."""

    def __init__(self, kinematics: Kinematics, q0, latency_s=0.001, tau_s=0.01,
                 encoder_noise=(0.002, 2e-5), seed=0, clock=time.perf_counter, timeout_s=0.05,
                 command_timeout_s: float | None = None):
        self.kinematics = kinematics
        self.limits = kinematics.joint_limits
        self._q = np.asarray(q0, float).copy()
        self._qd = np.zeros_like(self._q)
        self._cmd = np.zeros_like(self._q)
        self._pending = collections.deque()
        self.latency_s, self.tau_s, self.timeout_s = latency_s, tau_s, timeout_s
        self.command_timeout_s = command_timeout_s
        self._t_cmd = -float("inf")          # when the newest command took effect
        self._noise = np.where(kinematics.revolute, encoder_noise[1], encoder_noise[0])
        self._rng = np.random.default_rng(seed)
        self._normal = NormalStream(self._rng)
        self._clock = clock
        self._t = clock()
        self._t_state = self._t
        self.enabled = False
        self.fault: str | None = None
        self.fault_kind: FaultKind | None = None
        self._stalled = False

    # -- interface ---------------------------------------------------------------
    def connect(self) -> None:
        self.status = DeviceStatus.SIMULATED
        self._t = self._t_state = self._clock()

    def disconnect(self) -> None:
        self.enabled = False
        self.status = DeviceStatus.DISCONNECTED

    def enable(self) -> None:
        if self.fault:
            raise DeviceError(f"robot in fault ({self.fault}); reset the fault before enabling",
                              self.fault_kind or FaultKind.ROBOT_DEVICE)
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False
        self._cmd[:] = 0

    def state(self) -> RobotState:
        if self.status is DeviceStatus.DISCONNECTED:
            raise DeviceError("robot not connected: connect it first", FaultKind.ROBOT_STALE)
        if self._stalled and self._clock() - self._t_state > self.timeout_s:
            raise DeviceError("robot state stream stopped: check the robot controller link, "
                              "then reset the fault", FaultKind.ROBOT_STALE)
        q = self._q + self._noise * self._normal.take(len(self._q))
        return RobotState(self._t_state, q, self._qd.copy(), self.enabled, self.fault,
                          self.fault_kind)

    def command_joint_velocity(self, qd) -> None:
        qd = np.asarray(qd, float)
        if qd.shape != self._q.shape or not np.isfinite(qd).all():
            raise DeviceError("joint velocity command has the wrong size or non-finite values",
                              FaultKind.INTERNAL)
        self._pending.append((self._clock() + self.latency_s, qd.copy()))

    def stop(self) -> None:
        self._pending.clear()
        self._cmd[:] = 0

    def reset_fault(self) -> None:
        self.fault = self.fault_kind = None
        self._stalled = False

    # -- Simulator ----------------------------------------------------------------
    def advance(self, now: float, R_base_sensor=None) -> None:
        self.step(now)

    def inject(self, what: str, value) -> bool:
        if what == "robot_stall":
            self.stall(bool(value))
        elif what == "robot_fault":
            self.inject_fault(str(value))
        else:
            return False
        return True

    # -- simulation -------------------------------------------------------------
    def inject_fault(self, message: str, kind: FaultKind = FaultKind.ROBOT_DEVICE) -> None:
        """Fault on demand: servo off, brakes on (motion ends within the braking time)."""
        self.fault, self.fault_kind = message, kind
        self.enabled = False

    def stall(self, stalled: bool = True) -> None:
        """The state stream stops updating (the loop's watchdog must notice)."""
        self._stalled = stalled

    @property
    def true_q(self) -> np.ndarray:
        return self._q.copy()

    def step(self, now: float | None = None, max_step_s: float = 0.001) -> None:
        """Advance to ``now`` in steps of at most ``max_step_s``: the mechanism moves on
        through a late control cycle, applying each command when its latency has passed."""
        now = self._clock() if now is None else now
        while now - self._t > 1e-12:
            # one step for a cycle a few percent long (the real clock's jitter), not a second
            # step of microseconds after it; late cycles still go in steps of max_step_s
            t = now if now - self._t <= 1.1 * max_step_s else self._t + max_step_s
            self._integrate(t)
        if not self._stalled:
            self._t_state = now

    def _integrate(self, now: float) -> None:
        dt = now - self._t
        while self._pending and self._pending[0][0] <= now:
            self._t_cmd, self._cmd = self._pending.popleft()
        if self.command_timeout_s is not None and now - self._t_cmd > self.command_timeout_s:
            self._cmd = np.zeros_like(self._cmd)     # the drive's watchdog: brake
        target = self._cmd if (self.enabled and not self.fault) else np.zeros_like(self._cmd)
        # np.minimum(np.maximum()): np.clip's result, without its per-call overhead
        v, a = self.limits.velocity, 2 * self.limits.acceleration
        target = np.minimum(np.maximum(target, -v), v)
        acc = (target - self._qd) / max(self.tau_s, dt)
        acc = np.minimum(np.maximum(acc, -a), a)
        self._qd = self._qd + acc * dt
        q = self._q + self._qd * dt
        hit = (q < self.limits.lower) | (q > self.limits.upper)
        if hit.any():                        # a hard stop: the mechanism stops, servo faults
            q = np.clip(q, self.limits.lower, self.limits.upper)
            self._qd[hit] = 0.0
            i = int(np.flatnonzero(hit)[0])
            self.inject_fault(f"joint {self.kinematics.joint_names[i]} hit its hard stop: "
                              "jog it back by hand-wheel, then reset the fault",
                              FaultKind.HARD_STOP)
        self._q, self._t = q, now
