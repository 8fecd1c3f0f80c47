"""Simulated force sensor: gravity rotates with the pose, hand wrench, stalls."""
import numpy as np
import pytest

from core.geometry.rigid import from_euler
from devices.base import DeviceError
from devices.force_sensor import SimulatedForceSensor


class Clock:
    t = 10.0

    def __call__(self):
        return self.t


def quiet(**kw):
    s = SimulatedForceSensor(force_noise_N=0, torque_noise_Nm=0, drift_N_per_sqrt_s=0,
                             gain_error=0, **kw)
    s.connect()
    return s


def test_tool_weight_rotates_with_pose():
    s = quiet(mass_kg=30 / 9.80665, com_sensor_mm=(0, 0, 100))
    assert np.allclose(s.read().wrench, [0, 0, -30, 0, 0, 0], atol=1e-9)
    s.R_base_sensor = from_euler("x", np.pi / 2)[:3, :3]
    w = s.read().wrench
    # gravity (0, 0, -30) in a sensor frame turned 90 deg about x: (0, -30, 0)
    assert np.allclose(w[:3], [0, -30, 0], atol=1e-9)
    assert np.allclose(w[3:], np.cross([0, 0, 0.1], [0, -30, 0]), atol=1e-9)


def test_hand_wrench_adds_in_sensor_frame():
    s = quiet(mass_kg=0.0)
    s.R_base_sensor = from_euler("z", np.pi / 2)[:3, :3]
    s.hand_wrench_base = np.array([10.0, 0, 0, 0, 0, 0])
    assert np.allclose(s.read().wrench[:3], [0, -10, 0], atol=1e-9)


def test_noise_level_matches_setting():
    s = SimulatedForceSensor(mass_kg=0.0, drift_N_per_sqrt_s=0, gain_error=0, seed=3)
    s.connect()
    w = np.array([s.read().wrench for _ in range(4000)])
    assert w[:, 0].std() == pytest.approx(0.15, rel=0.05)
    assert w[:, 4].std() == pytest.approx(0.004, rel=0.05)


def test_stall_then_timeout_raises():
    clock = Clock()
    s = SimulatedForceSensor(clock=clock, timeout_s=0.02)
    s.connect()
    first = s.read()
    s.stall()
    clock.t += 0.01
    assert s.read().sequence == first.sequence      # repeated: stale
    clock.t += 0.02
    with pytest.raises(DeviceError):
        s.read()


def test_read_disconnected_raises():
    with pytest.raises(DeviceError):
        SimulatedForceSensor().read()


def test_reading_beyond_the_rated_range_is_refused_with_its_figure():
    from devices.base import FaultKind
    s = quiet(mass_kg=0.0)
    assert s.inject("sensor_spike", [0, 0, -600.0, 0, 0, 0])     # Mini45: Fz rated 580 N
    with pytest.raises(DeviceError, match="Fz = -600.0 N, beyond its rated 580 N") as e:
        s.read()
    assert e.value.kind is FaultKind.SENSOR_IMPLAUSIBLE
    assert np.allclose(s.read().wrench, 0, atol=1e-9)             # one corrupt reading


def test_simulator_interface_poses_the_sensor_and_takes_only_its_commands():
    s = quiet(mass_kg=30 / 9.80665)
    s.advance(0.0, from_euler("x", np.pi / 2)[:3, :3])
    assert np.allclose(s.read().wrench[:3], [0, -30, 0], atol=1e-9)
    assert s.inject("hand", [0, 0, 5.0, 0, 0, 0]) and not s.inject("robot_stall", True)


def test_reset_reconnects_after_a_stall():
    clock = Clock()
    s = SimulatedForceSensor(clock=clock, timeout_s=0.02)
    s.connect()
    s.read()
    s.inject("sensor_stall", True)
    clock.t += 0.05
    with pytest.raises(DeviceError):
        s.read()
    s.inject("sensor_stall", False)
    s.reset()
    assert s.read().t == clock.t
