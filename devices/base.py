"""What every device driver shares: its connection status, its errors and their kinds, and
the interface of a simulated device."""
from __future__ import annotations

import abc
import enum

import numpy as np


class DeviceStatus(enum.Enum):
    """Shown in the status bar for each device."""
    DISCONNECTED = "disconnected"
    SIMULATED = "simulated"
    CONNECTED = "connected"
    FAULT = "fault"


class FaultKind(enum.Enum):
    """What failed, carried with every fault so that nothing decides on message text.
    ``device`` names the status-bar pill the fault belongs to."""
    ROBOT_STALE = "robot_stale"              # the robot's state stream stopped or is late
    ROBOT_DEVICE = "robot_device"            # the robot's own controller reports a fault
    HARD_STOP = "hard_stop"                  # a joint reached its mechanical stop
    FOLLOWING = "following"                  # the measured tracking error: blocked or overloaded
    LATE_CYCLE = "late_cycle"                # the control loop ran later than its bound
    SENSOR_STALE = "sensor_stale"            # the force sensor's stream stopped
    SENSOR_NOT_READY = "sensor_not_ready"    # connected, no sample yet
    SENSOR_UNREACHABLE = "sensor_unreachable"
    SENSOR_STATUS = "sensor_status"          # the sensor's own status word reports a fault
    SENSOR_IMPLAUSIBLE = "sensor_implausible"  # a reading beyond the sensor's rated range
    RESET_TIMEOUT = "reset_timeout"          # a device did not come back after Reset
    INTERNAL = "internal"                    # a bug in the control loop (the robot is stopped)

    @property
    def device(self) -> str:
        """``"robot"`` or ``"force_sensor"``: the device the fault is about."""
        return "force_sensor" if self.value.startswith("sensor") else "robot"


class DeviceError(RuntimeError):
    """A device failed or stopped answering; the message says what to check and ``kind``
    (a ``FaultKind``) says what failed."""

    def __init__(self, message: str, kind: "FaultKind | None" = None):
        super().__init__(message)
        self.kind = kind


class NormalStream:
    """Standard normal draws from ``rng`` fetched in blocks: numpy's Generator draws them one
    after the other, so these are the same numbers in the same order as one call per draw,
    without a Generator call (about 1.5 us) per control cycle. Nothing else may draw from
    ``rng`` once the stream is in use."""

    def __init__(self, rng, block: int = 4096):
        self.rng, self.block = rng, int(block)
        self._buf = np.zeros(0)
        self._i = 0

    def take(self, n: int) -> np.ndarray:
        if self._i + n > len(self._buf):
            self._buf = np.concatenate([self._buf[self._i:], self.rng.standard_normal(max(self.block, n))])
            self._i = 0
        out = self._buf[self._i:self._i + n]
        self._i += n
        return out


class Simulator(abc.ABC):
    """A simulated device, beyond its driver interface: the control loop advances it once
    per cycle and hands it the simulation-only commands (a hand on the tool, stalls,
    injected faults). Real drivers do not implement it, so the loop needs no ``hasattr``."""

    @abc.abstractmethod
    def advance(self, now: float, R_base_sensor=None) -> None:
        """Bring the simulation to ``now``; ``R_base_sensor`` is the sensor's orientation
        (base frame) from the measured joints, for devices that depend on it."""

    @abc.abstractmethod
    def inject(self, what: str, value) -> bool:
        """Apply the simulation-only command ``what``; False when it is not this device's."""
