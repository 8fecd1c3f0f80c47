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
