"""6-axis force/torque sensor: the interface and a simulator.

A reading is a ``WrenchSample``: ``t`` (``time.perf_counter`` seconds, when it was
measured), ``wrench`` = [fx, fy, fz (N), tx, ty, tz (N*m)] in the sensor frame,
``sequence`` (increments per sample; gaps mean lost samples) and ``status``
(0 = healthy). ``read()`` returns the newest sample and raises ``DeviceError`` (with its ``FaultKind``)
when the stream has been silent longer than the sensor's timeout, or when a reading lies
beyond the sensor's rated range (``rated_range``: a saturated gauge or a corrupt record
is never taken for a force). ``reset()`` reconnects.
"""
from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass

import numpy as np

from core.robot.weight_compensation import GRAVITY_BASE, cross3
from devices.base import DeviceError, DeviceStatus, FaultKind, NormalStream, Simulator

__all__ = ["WrenchSample", "ForceSensor", "SimulatedForceSensor", "MINI45_RATED", "seconds_until_reading"]


@dataclass(frozen=True)
class WrenchSample:
    t: float
    wrench: np.ndarray
    sequence: int
    status: int = 0


# ATI Mini45 SI-290-10: Fx, Fy 290 N, Fz 580 N, Tx, Ty, Tz 10 N*m
MINI45_RATED = (290.0, 290.0, 580.0, 10.0, 10.0, 10.0)
AXES = ("Fx", "Fy", "Fz", "Tx", "Ty", "Tz")


class ForceSensor(abc.ABC):
    status: DeviceStatus = DeviceStatus.DISCONNECTED
    rated_range: np.ndarray = np.array(MINI45_RATED)

    def reset(self) -> None:
        """Reconnect (the fault's Reset): a fresh stream, sequence and watchdog."""
        self.disconnect()
        self.connect()

    def check_plausible(self, sample: WrenchSample) -> WrenchSample:
        """``sample``, or ``DeviceError`` when a reading lies beyond the rated range."""
        if (np.abs(sample.wrench) <= self.rated_range).all():   # the cycle's usual case
            return sample                                         # (False for NaN too)
        over = np.abs(sample.wrench) > self.rated_range
        if not np.all(np.isfinite(sample.wrench)) or np.any(over):
            i = int(np.flatnonzero(over | ~np.isfinite(sample.wrench))[0])
            unit = "N" if i < 3 else "N*m"
            raise DeviceError(
                f"the force sensor reads {AXES[i]} = {sample.wrench[i]:.1f} {unit}, beyond its "
                f"rated {self.rated_range[i]:g} {unit}: an overload or a corrupt reading; take "
                "the load off, check the sensor, then reset", FaultKind.SENSOR_IMPLAUSIBLE)
        return sample

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> WrenchSample:
        """The newest sample; ``DeviceError`` if the stream is stale."""


class SimulatedForceSensor(ForceSensor, Simulator):
    """Tool weight rotated with the pose + hand wrench + offsets + gain error + noise + drift.

    The caller (the control loop) sets the sensor orientation ``R_base_sensor`` and the
    simulated hand wrench (base frame, torque about the sensor origin) each cycle. Noise
    defaults follow an ATI Mini45 (resolution 1/16 N, 1/752 N*m) with cable and
    temperature effects: force sigma 0.15 N, torque sigma 0.004 N*m, drift random walk.
    ``inject("sensor_spike", wrench)`` makes the next reading ``wrench`` (a corrupt record).
    """

    def __init__(self, mass_kg=30.0 / 9.80665, com_sensor_mm=(0.0, 0.0, 70.0),
                 force_offset_N=(0.0, 0.0, 0.0), torque_offset_Nm=(0.0, 0.0, 0.0),
                 force_noise_N=0.15, torque_noise_Nm=0.004, drift_N_per_sqrt_s=0.02,
                 gain_error=0.005, timeout_s=0.05, seed=0, clock=time.perf_counter):
        self.mass_kg = float(mass_kg)
        self.com_sensor_mm = np.asarray(com_sensor_mm, float)
        self.offset = np.concatenate([force_offset_N, torque_offset_Nm]).astype(float)
        self.noise = np.array([force_noise_N] * 3 + [torque_noise_Nm] * 3, float)
        self.drift_rate = float(drift_N_per_sqrt_s)
        self.timeout_s = float(timeout_s)
        self._rng = np.random.default_rng(seed)
        self._gain = 1.0 + gain_error * self._rng.uniform(-1, 1, 6)
        self._normal = NormalStream(self._rng)
        self._drift = np.zeros(6)
        self._clock = clock
        self.R_base_sensor = np.eye(3)
        self.hand_wrench_base = np.zeros(6)
        self._seq = 0
        self._last: WrenchSample | None = None
        self._stalled = False
        self._spike = None

    def connect(self) -> None:
        self.status = DeviceStatus.SIMULATED
        self._last = None

    def advance(self, now: float, R_base_sensor=None) -> None:
        if R_base_sensor is not None:
            self.R_base_sensor = R_base_sensor

    def inject(self, what: str, value) -> bool:
        if what == "hand":
            self.hand_wrench_base = np.asarray(value, float)
        elif what == "sensor_stall":
            self.stall(bool(value))
        elif what == "sensor_spike":
            self._spike = np.asarray(value, float)
        else:
            return False
        return True

    def disconnect(self) -> None:
        self.status = DeviceStatus.DISCONNECTED

    def stall(self, stalled: bool = True) -> None:
        """Fault on demand: the stream stops (the last sample is repeated, then times out)."""
        self._stalled = stalled

    def true_wrench(self) -> np.ndarray:
        """Noise-free reading: tool weight + hand wrench + offsets (sensor frame)."""
        R = self.R_base_sensor
        G = R.T @ (self.mass_kg * GRAVITY_BASE)
        load = np.concatenate([G, cross3(self.com_sensor_mm / 1000.0, G)])
        hb = self.hand_wrench_base
        if hb.any():                              # (no hand: adding R^T 0 changes nothing)
            load = load + np.concatenate([R.T @ hb[:3], R.T @ hb[3:]])
        return self._gain * load + self.offset

    def read(self) -> WrenchSample:
        if self.status is DeviceStatus.DISCONNECTED:
            raise DeviceError("force sensor not connected: connect it first",
                              FaultKind.SENSOR_UNREACHABLE)
        now = self._clock()
        if self._stalled:
            if self._last is None or now - self._last.t > self.timeout_s:
                raise DeviceError("force sensor stream stopped: check the sensor cable and power, "
                                  "then reset the fault", FaultKind.SENSOR_STALE)
            return self._last
        dt = 0.0 if self._last is None else max(0.0, now - self._last.t)
        z = self._normal.take(9)                  # 3 for the drift, then 6 for the noise
        self._drift[:3] += self.drift_rate * math.sqrt(dt) * z[:3]
        w = self.true_wrench() + self._drift + self.noise * z[3:]
        if self._spike is not None:
            w, self._spike = self._spike, None
        self._seq += 1
        self._last = WrenchSample(now, w, self._seq)
        return self.check_plausible(self._last)


def seconds_until_reading(sensor: ForceSensor, timeout_s: float) -> float | None:
    """Seconds until ``sensor.read()`` succeeds (a fresh, plausible sample), or None when it
    has not within ``timeout_s``: how recovery after a sensor failure is measured."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            sensor.read()
            return time.monotonic() - t0
        except DeviceError:
            time.sleep(0.001)
    return None
