"""Simulated robot: servo dynamics, latency, limits, faults, stalls."""
import numpy as np
import pytest

from core.robot.kinematics import load_hybrid5
from devices.base import DeviceError
from devices.robot import SimulatedRobot

KIN = load_hybrid5()
HOME = KIN.joints_for_pose([625, 475, -135, 0, 0])


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(**kw):
    clock = Clock()
    r = SimulatedRobot(KIN, HOME, clock=clock, encoder_noise=(0, 0), **kw)
    r.connect()
    r.enable()
    return r, clock


def run(r, clock, seconds, dt=0.001):
    for _ in range(int(round(seconds / dt))):
        clock.t += dt
        r.step()


def test_velocity_command_moves_joint_as_commanded():
    r, clock = make(latency_s=0.002, tau_s=0.01)
    r.command_joint_velocity([0, 0, 20.0, 0, 0])
    run(r, clock, 1.0)
    moved = r.state().q[2] - HOME[2]
    # 1 s at 20 mm/s minus the latency, minus the ramp at the servo's acceleration
    # bound (2 x 300 mm/s^2; tau alone would ask more): 20 * 0.998 - 20^2 / (2 * 600)
    assert moved == pytest.approx(20 * 0.998 - 400 / 1200, abs=0.01)
    assert r.state().qd[2] == pytest.approx(20.0, abs=1e-3)


def test_latency_delays_the_command():
    r, clock = make(latency_s=0.005)
    r.command_joint_velocity([0, 0, 20.0, 0, 0])
    run(r, clock, 0.004)
    assert r.state().qd[2] == 0.0
    run(r, clock, 0.003)
    assert r.state().qd[2] > 0.0


def test_disabled_robot_does_not_move():
    r, clock = make()
    r.disable()
    r.command_joint_velocity([0, 0, 20.0, 0, 0])
    run(r, clock, 0.2)
    assert np.allclose(r.state().q, HOME)


def test_hard_stop_faults():
    r, clock = make()
    q0 = HOME.copy()
    q0[2] = KIN.joint_limits.upper[2] - 0.5
    r._q = q0
    r.command_joint_velocity([0, 0, 50.0, 0, 0])
    run(r, clock, 0.5)
    s = r.state()
    assert s.fault and "hard stop" in s.fault
    assert s.q[2] <= KIN.joint_limits.upper[2]
    with pytest.raises(DeviceError):
        r.enable()


def test_stalled_state_stream_raises():
    r, clock = make(timeout_s=0.02)
    r.stall()
    run(r, clock, 0.05)
    with pytest.raises(DeviceError):
        r.state()


def test_bad_command_raises():
    r, _ = make()
    with pytest.raises(DeviceError):
        r.command_joint_velocity([0, 0, np.inf, 0, 0])


def test_encoder_noise_is_small_and_unbiased():
    r = SimulatedRobot(KIN, HOME, seed=4)
    r.connect()
    qs = np.array([r.state().q for _ in range(2000)])
    assert np.allclose(qs.mean(0), HOME, atol=2e-4)
    assert qs[:, 0].std() == pytest.approx(0.002, rel=0.1)


def test_drive_watchdog_brakes_without_fresh_commands():
    r, clock = make(latency_s=0.0, command_timeout_s=0.05)
    r.command_joint_velocity([0, 0, 20.0, 0, 0])
    run(r, clock, 0.04)
    assert r.state().qd[2] > 18.0                # nearly up to speed
    run(r, clock, 0.1)                          # no new command: braked to rest
    assert abs(r.state().qd[2]) < 0.01          # braked (first order, 10 ms time constant)


def test_a_late_step_integrates_the_whole_interval_in_small_steps():
    """One 30 ms call moves the robot as thirty 1 ms calls do (the mechanism does not wait)."""
    a, ca = make(latency_s=0.0)
    b, cb = make(latency_s=0.0)
    for r in (a, b):
        r.command_joint_velocity([0, 0, 20.0, 0, 0])
    run(a, ca, 0.03)
    cb.t += 0.03
    b.step()
    assert np.allclose(a.state().q, b.state().q, atol=1e-9)


def test_simulator_interface_takes_robot_commands_only():
    r, clock = make()
    assert r.inject("robot_fault", "drive overheated") and not r.inject("hand", [0] * 6)
    s = r.state()
    assert s.fault == "drive overheated" and s.fault_kind.value == "robot_device"
    r.reset_fault()
    r.enable()
    assert r.state().fault is None
