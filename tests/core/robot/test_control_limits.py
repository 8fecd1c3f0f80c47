"""The controller's motion limits hold under randomized command sequences (hypothesis)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.robot.limits import MotionLimiter, braking_speed, cartesian_limits_from_doc
from core.robot.kinematics import load_hybrid5
from resources import path

ROBOT = load_hybrid5()
with open(path("robots", "hybrid5.json")) as f:
    CART = cartesian_limits_from_doc(json.load(f))
DT = 0.001
LIMITER = MotionLimiter(ROBOT, CART, DT)
HOME = ROBOT.joints_for_pose([625, 475, -135, 0, 0])


def test_braking_speed_stops_in_distance():
    v = float(braking_speed(10.0, 300.0, DT))
    assert v * DT + v * v / 600.0 == pytest.approx(10.0)
    assert braking_speed(-1.0, 300.0, DT) == 0.0


def run_sequence(commands, hold_steps):
    """Apply each random joint-velocity command for ``hold_steps`` cycles from home;
    check every limit at every step."""
    q, qd = HOME.copy(), np.zeros(5)
    jl = ROBOT.joint_limits
    worst = 0.0
    for cmd in commands:
        for _ in range(hold_steps):
            new, _ = LIMITER.limit(q, qd, cmd)
            assert np.all(np.abs(new) <= jl.velocity + 1e-9)
            acc = np.abs(new - qd) / DT
            worst = max(worst, float(np.max(acc / jl.acceleration)))
            qd = new
            q = q + qd * DT
            X = ROBOT.pose(q)
            assert np.all(q >= jl.lower - 1e-9) and np.all(q <= jl.upper + 1e-9)
            assert np.all(X >= CART.box_lower - 1e-6) and np.all(X <= CART.box_upper + 1e-6)
            Xd = ROBOT.pose_jacobian(q) @ qd
            assert np.linalg.norm(Xd[:3]) <= CART.linear_speed * 1.02
            assert np.linalg.norm(Xd[3:]) <= CART.angular_speed * 1.02
    return worst


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.floats(-1e4, 1e4), min_size=5, max_size=5), min_size=5, max_size=5),
       st.integers(50, 200))
def test_limits_hold_under_random_commands(commands, hold):
    worst_acc = run_sequence([np.array(c) for c in commands], hold)
    assert worst_acc <= 1.0 + 1e-9


def test_long_push_into_workspace_wall_stops_at_wall():
    """Drive +y at full speed for 10 s: the tool stops at the box, never beyond."""
    q, qd = HOME.copy(), np.zeros(5)
    qd_y = ROBOT.inverse_pose_jacobian(HOME) @ np.array([0, 1000.0, 0, 0, 0])
    for _ in range(10000):
        qd, _ = LIMITER.limit(q, qd, qd_y)
        q = q + qd * DT
    y = ROBOT.pose(q)[1]
    assert CART.box_upper[1] - 2.0 < y <= CART.box_upper[1] + 1e-9


def test_non_finite_command_gives_zero():
    qd, why = LIMITER.limit(HOME, np.zeros(5), [np.nan] * 5)
    assert np.all(qd == 0) and why == ["non-finite command"]


def drive_with_late_cycles(limiter, seed=0, steps=1500, told=True, late_every=0.1):
    """Full speed into the +y face with commands held for 1-30 ms (a fraction
    ``late_every`` of them late); ``told``: the limiter is given the time since the previous
    command. The largest excursion beyond the face (mm)."""
    rng = np.random.default_rng(seed)
    q, qd = ROBOT.joints_for_pose([625, 600, -135, 0, 0]), np.zeros(5)
    worst, dt = -np.inf, DT
    for _ in range(steps):
        want = ROBOT.inverse_pose_jacobian(q) @ np.array([0, 1000.0, 0, 0, 0])
        qd, _ = limiter.limit(q, qd, want, dt=dt if told else None)
        dt = float(rng.uniform(0.010, 0.030)) if rng.random() < late_every else DT
        q = q + qd * dt                          # the command stays in force until the next
        worst = max(worst, ROBOT.pose(q)[1] - CART.box_upper[1])
    return worst


def test_horizon_keeps_the_box_whatever_the_late_cycles():
    limiter = MotionLimiter(ROBOT, CART, DT, horizon_s=0.03)
    assert drive_with_late_cycles(limiter) <= 1e-9
    assert drive_with_late_cycles(limiter, told=False) <= 1e-9


def test_without_the_late_cycles_in_its_horizon_the_drive_leaves_the_box():
    """The failure the horizon prevents: a limiter that assumes one period per command."""
    assert drive_with_late_cycles(LIMITER, told=False, late_every=1) > 0.05


def test_margin_keeps_the_pose_inside_the_box_by_that_much():
    limiter = MotionLimiter(ROBOT, CART, DT, horizon_s=0.03, margin=[0.5, 0.5, 0.5, 0.01, 0.01])
    assert -0.51 < drive_with_late_cycles(limiter) <= -0.5 + 1e-9
    assert limiter.box()[1][1] == pytest.approx(CART.box_upper[1] - 0.5)


def test_measured_pose_ahead_of_the_reference_is_bounded_where_it_is():
    """A robot pushed 3 mm past its reference, 2 mm from the face: no command towards it."""
    q_ref = ROBOT.joints_for_pose([625, CART.box_upper[1] - 5.0, -135, 0, 0])
    q_meas = ROBOT.joints_for_pose([625, CART.box_upper[1] - 2.0, -135, 0, 0])
    want = ROBOT.inverse_pose_jacobian(q_ref) @ np.array([0, 50.0, 0, 0, 0])
    limiter = MotionLimiter(ROBOT, CART, DT, horizon_s=0.1)
    alone, _ = limiter.limit(q_ref, want, want)                # moving at 50 mm/s
    both, why = limiter.limit(q_ref, want, want, q_meas=q_meas)
    v_alone, v_both = (ROBOT.pose_jacobian(q_ref) @ alone)[1], (ROBOT.pose_jacobian(q_ref) @ both)[1]
    assert v_both < v_alone and "workspace" in why
    # the braking bound from 2 mm with a 0.1 s horizon: 250 (-0.1 + sqrt(0.01 + 0.016))
    assert v_both <= 250 * (-0.1 + np.sqrt(0.01 + 2 * 2.0 / 250)) + 1e-9
