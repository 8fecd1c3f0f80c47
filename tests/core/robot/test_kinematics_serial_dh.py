"""Generic DH arm (KUKA LBR iiwa 7 R800): FK, Jacobian and numerical IK."""
import numpy as np
import pytest

from core.robot.kinematics import KinematicsError, ReachabilityError, load_serial_dh

ARM = load_serial_dh()


def test_zero_pose_is_straight_up():
    T = ARM.forward(np.zeros(7))
    assert np.allclose(T[:3, 3], [0, 0, 340 + 400 + 400 + 126], atol=1e-9)


def test_jacobian_matches_finite_differences():
    q = np.random.default_rng(1).uniform(-1, 1, 7)
    J, h = ARM.jacobian(q), 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = h
        Tp, Tm = ARM.forward(q + dq), ARM.forward(q - dq)
        assert np.allclose((Tp[:3, 3] - Tm[:3, 3]) / (2 * h), J[:3, i], atol=1e-5)
        dR = (Tp[:3, :3] - Tm[:3, :3]) / (2 * h) @ ARM.forward(q)[:3, :3].T
        assert np.allclose([dR[2, 1], dR[0, 2], dR[1, 0]], J[3:, i], atol=1e-6)


def test_ik_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(8):
        q = rng.uniform(ARM.joint_limits.lower * 0.7, ARM.joint_limits.upper * 0.7)
        T = ARM.forward(q)
        q2 = ARM.inverse(T, q_seed=q + rng.normal(0, 0.2, 7))
        T2 = ARM.forward(q2)
        assert np.max(np.abs(T2[:3, 3] - T[:3, 3])) < 1e-6
        assert np.max(np.abs(T2[:3, :3] - T[:3, :3])) < 1e-6
        assert ARM.within_limits(q2)


def test_out_of_reach_raises():
    T = np.eye(4)
    T[:3, 3] = [2000, 0, 300]
    with pytest.raises(ReachabilityError):
        ARM.inverse(T, restarts=1)


def test_bad_dh_table_raises():
    from core.robot.kinematics import SerialDH
    with pytest.raises(KinematicsError):
        SerialDH(np.zeros((3, 3)), ARM.joint_limits)
