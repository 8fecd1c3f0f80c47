"""Hybrid robot: FK/IK round trip, Jacobians against finite differences, limits, errors."""
import itertools
import math

import numpy as np
import pytest

from core.robot.kinematics import (JointLimitError, KinematicsError, ReachabilityError,
                             load_hybrid5)

ROBOT = load_hybrid5()
RNG = np.random.default_rng(7)


def workspace_poses(n):
    """Random task poses inside the paper's working ranges (x 550-700, y 350-600,
    z -250..-20 mm, theta_x +-40 deg, theta_y +-30 deg)."""
    lo = [550, 350, -250, math.radians(-40), math.radians(-30)]
    hi = [700, 600, -20, math.radians(40), math.radians(30)]
    return RNG.uniform(lo, hi, size=(n, 5))


def test_round_trip_pose_ik_fk_across_workspace():
    for X in workspace_poses(500):
        q = ROBOT.joints_for_pose(X)
        err = ROBOT.pose(q) - X
        assert np.max(np.abs(err[:3])) < 1e-6     # mm
        assert np.max(np.abs(err[3:])) < 1e-6     # rad


def test_round_trip_4x4_tool_pose():
    for X in workspace_poses(100):
        q = ROBOT.joints_for_pose(X)
        T = ROBOT.forward(q)
        q2 = ROBOT.inverse(T)
        assert np.max(np.abs(q2 - q)) < 1e-6
        assert np.allclose(T[:3, 3], X[:3], atol=1e-6)


def test_inverse_accepts_task_pose():
    X = workspace_poses(1)[0]
    assert np.allclose(ROBOT.inverse(X), ROBOT.joints_for_pose(X))


def test_workspace_corners_reachable_within_limits():
    ranges = [(550, 700), (350, 600), (-250, -20),
              (math.radians(-40), math.radians(40)), (math.radians(-30), math.radians(30))]
    for X in itertools.product(*ranges):
        q = ROBOT.joints_for_pose(np.array(X))
        assert ROBOT.within_limits(q)
        assert not ROBOT.is_singular(q)
        assert ROBOT.singularity_margin(q) > 0.2


def test_tool_axis_matches_pose_for_axis():
    d = np.array([0.3, -0.2, -0.9])
    X = ROBOT.pose_for_axis([620, 480, -100], d)
    T = ROBOT.forward(ROBOT.joints_for_pose(X))
    assert np.allclose(T[:3, 2], d / np.linalg.norm(d), atol=1e-12)
    assert np.allclose(T[:3, 3], [620, 480, -100], atol=1e-9)


def test_home_pose_tool_points_down():
    q = ROBOT.joints_for_pose([625, 475, -135, 0, 0])
    assert np.allclose(ROBOT.forward(q)[:3, 2], [0, 0, -1], atol=1e-12)  # tool +z points down
    assert np.allclose(ROBOT.flange(q)[:3, 3] - ROBOT.forward(q)[:3, 3], [0, 0, 150], atol=1e-9)


def fd_pose_jacobian(q, h=1e-6):
    J = np.zeros((5, 5))
    for i in range(5):
        dq = np.zeros(5)
        dq[i] = h
        J[:, i] = (ROBOT.pose(q + dq) - ROBOT.pose(q - dq)) / (2 * h)
    return J


def test_pose_jacobian_matches_finite_differences():
    for X in workspace_poses(50):
        q = ROBOT.joints_for_pose(X)
        assert np.allclose(ROBOT.pose_jacobian(q), fd_pose_jacobian(q), atol=1e-5, rtol=1e-6)


def test_inverse_jacobian_is_the_inverse():
    for X in workspace_poses(50):
        q = ROBOT.joints_for_pose(X)
        assert np.allclose(ROBOT.inverse_pose_jacobian(q) @ ROBOT.pose_jacobian(q), np.eye(5),
                           atol=1e-9)


def test_geometric_jacobian_matches_finite_differences():
    q = ROBOT.joints_for_pose(workspace_poses(1)[0])
    J = ROBOT.jacobian(q)
    h = 1e-6
    for i in range(5):
        dq = np.zeros(5)
        dq[i] = h
        Tp, Tm = ROBOT.forward(q + dq), ROBOT.forward(q - dq)
        assert np.allclose((Tp[:3, 3] - Tm[:3, 3]) / (2 * h), J[:3, i], atol=1e-5)
        dR = (Tp[:3, :3] - Tm[:3, :3]) / (2 * h) @ ROBOT.forward(q)[:3, :3].T
        w = np.array([dR[2, 1], dR[0, 2], dR[1, 0]])
        assert np.allclose(w, J[3:, i], atol=1e-6)


def test_unreachable_y_raises():
    with pytest.raises(ReachabilityError):
        ROBOT.joints_for_pose([625, 5000, -135, 0, 0])


def test_pose_beyond_joint_limit_raises():
    with pytest.raises(JointLimitError):
        ROBOT.joints_for_pose([625, 475, -135, 0, math.radians(60)])


def test_spin_about_tool_axis_raises():
    T = ROBOT.forward(ROBOT.joints_for_pose([625, 475, -135, 0, 0]))
    c, s = math.cos(0.2), math.sin(0.2)
    T[:3, :3] = T[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    with pytest.raises(ReachabilityError):
        ROBOT.inverse(T)


def test_bad_joint_vector_raises():
    with pytest.raises(KinematicsError):
        ROBOT.forward(np.zeros(4))


def test_non_finite_pose_raises():
    with pytest.raises(KinematicsError):
        ROBOT.joints_for_pose([np.nan, 0, 0, 0, 0])


def test_unclosable_chain_raises():
    with pytest.raises(ReachabilityError):
        ROBOT.pose([0.0, 5000.0, 600, 0, 0])


def test_cage_pose_follows_flange():
    q = ROBOT.joints_for_pose([600, 500, -100, 0.3, -0.2])
    T = ROBOT.cage(q)
    assert np.allclose(T, ROBOT.flange(q) @ ROBOT.T_flange_cage)
    # the file's mount: 100 mm below the flange along the flange's -z, same axes
    assert np.allclose(T[:3, 3], ROBOT.flange(q)[:3, 3] - 100 * ROBOT.flange(q)[:3, 2])


def test_the_control_loops_combined_calls_equal_the_separate_ones():
    """pose_f, pose_and_rotation, pose_and_margin, pose_and_jacobian_terms and jacobians (one
    pass through the closed chain, for the 1 kHz loop) give what the separate calls give."""
    rng = np.random.default_rng(11)
    home = ROBOT.joints_for_pose([625, 475, -135, 0, 0])
    for _ in range(200):
        q = home + rng.normal(0, 1, 5) * np.array([20, 20, 20, 0.2, 0.2])
        X, R = ROBOT.pose_and_rotation(q)
        assert np.array_equal(np.array(X), ROBOT.pose(q)) and np.array_equal(ROBOT.pose_f(list(q)), X)
        assert np.array_equal(R, ROBOT.flange(q)[:3, :3])
        X2, m = ROBOT.pose_and_margin(q)
        assert X2 == X and m == ROBOT.singularity_margin(q)
        X3, terms = ROBOT.pose_and_jacobian_terms(q)
        assert X3 == X and terms == ROBOT._jacobian_terms(q)
        J, Ji = ROBOT.jacobians(q)
        assert np.array_equal(J, ROBOT.pose_jacobian(q)) and np.array_equal(Ji, ROBOT.inverse_pose_jacobian(q))
        np.testing.assert_allclose(J @ Ji, np.eye(5), atol=1e-9)
