"""Closed-loop correction (robot paper eq. 24) against a robot whose truth differs from its model."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.navigation.closed_loop import (ClosedLoopCorrection, ClosedLoopError, ToolLine, correct_command,
                                         line_residual, tool_frame)
from core.robot.kinematics.hybrid5 import load_hybrid5

K = load_hybrid5()
TIP = np.array([612.0, 490.0, -185.0])
AXIS = np.array([0.2, -0.15, -1.0]) / np.linalg.norm([0.2, -0.15, -1.0])
NOISE_MM = 0.05


def rigid(rot_deg, axis, shift_mm, about):
    """A rigid motion: ``rot_deg`` about ``axis`` through ``about``, then ``shift_mm``."""
    R = Rotation.from_rotvec(np.radians(rot_deg) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = about - R @ about + np.asarray(shift_mm)
    return T


F_BASE = rigid(0.3, [1.0, 0.4, 0.2], [0.25, -0.3, 0.15], TIP + [0, 0, 150.0])     # 0.42 mm + 0.3 deg at the flange
E_TOOL = rigid(0.3, [0.3, -1.0, 0.1], [-0.2, 0.3, 0.2], np.zeros(3))           # in the tool frame


def true_tool(T_cmd, kind):
    """Where the real tool goes when commanded ``T_cmd`` through the model's inverse."""
    q = K.inverse(T_cmd)
    if kind == "base":
        return F_BASE @ K.forward(q)
    if kind == "tool":
        return K.forward(q) @ E_TOOL
    dq = np.array([0.5, -0.4, 0.45, math.radians(0.2), math.radians(-0.25)])   # joint offsets
    return K.forward(q + dq)


def measure(T_true, rng, noise=NOISE_MM, with_tip=True, length=100.0):
    """The tool line found in both shots: its tip and a point 100 mm up the shaft, each with noise."""
    tip = T_true[:3, 3] + rng.normal(0, noise, 3)
    back = T_true[:3, 3] - length * T_true[:3, 2] + rng.normal(0, noise, 3)
    return ToolLine(back, tip - back, tip if with_tip else None)


def truth_error(T_true):
    return (float(np.linalg.norm(T_true[:3, 3] - TIP)),
            math.degrees(math.acos(min(1.0, T_true[:3, 2] @ AXIS))))


def run_loop(kind, rng, **kw):
    loop = ClosedLoopCorrection(TIP, AXIS)
    T_cmd = loop.initial_command()
    while True:
        T_true = true_tool(T_cmd, kind)
        step = loop.update(measure(T_true, rng, **kw), T_cmd)
        if step.next_command is None:
            return loop, T_true
        T_cmd = step.next_command


@pytest.mark.parametrize("kind", ["base", "tool", "joints"])
def test_converges_under_the_thresholds_in_three_shots(kind):
    """A fixed rigid error in base or in the tool frame, or joint offsets; 0.05 mm noise on the
    measured tip and on a point 100 mm up the shaft; ten seeded cases each."""
    open_loop = truth_error(true_tool(tool_frame(TIP, AXIS), kind))
    assert open_loop[0] > 0.4 and open_loop[1] > 0.2             # open loop misses the 0.3 mm threshold
    worst = [0.0, 0.0, 0]
    for seed in range(10):
        loop, T_true = run_loop(kind, np.random.default_rng(100 * seed + len(kind)))
        mm, deg = truth_error(T_true)
        assert loop.converged and len(loop.history) <= 3, loop.summary()
        worst = [max(worst[0], mm), max(worst[1], deg), max(worst[2], len(loop.history))]
        s = loop.summary()
        assert s["stop_reason"].startswith("converged after")
        assert s["iterations"][0]["residual_mm"] == pytest.approx(open_loop[0], abs=0.15)
    assert worst[0] < 0.25 and worst[1] < 0.25, worst         # the truth, not the measurement


def test_one_exact_step_for_a_rigid_error_without_noise():
    """Exact for an error in base; for an error in the tool frame the unseen spin, re-set to
    the robot's convention, leaves a second-order remainder (0.3 deg x 0.4 mm scale)."""
    rng = np.random.default_rng(0)
    for kind, tol in (("base", 2e-3), ("tool", 2e-3)):
        T0 = tool_frame(TIP, AXIS)
        T1 = correct_command(T0, measure(true_tool(T0, kind), rng, noise=0.0), TIP, AXIS)
        mm, deg = truth_error(true_tool(T1, kind))
        assert mm < tol and deg < tol, kind
        # and the command keeps the robot's spin convention: the model's inverse takes it
        assert np.abs(K.forward(K.inverse(T1)) - T1).max() < 1e-9


def test_tool_frame_is_the_robots_convention():
    T = tool_frame(TIP, AXIS)
    q = K.joints_for_pose(K.pose_for_axis(TIP, AXIS))
    assert np.abs(K.forward(q) - T).max() < 1e-9


def test_line_only_corrects_across_the_line():
    rng = np.random.default_rng(5)
    loop = ClosedLoopCorrection(TIP, AXIS)
    T_cmd = loop.initial_command()
    for _ in range(3):
        T_true = true_tool(T_cmd, "base")
        step = loop.update(measure(T_true, rng, with_tip=False), T_cmd)
        if step.next_command is None:
            break
        T_cmd = step.next_command
    assert loop.converged and step.residual.axial_mm is None
    w = T_true[:3, 3] - TIP
    lateral = np.linalg.norm(w - (w @ AXIS) * AXIS)
    assert lateral < 0.3 and truth_error(T_true)[1] < 0.3
    assert "tip not seen" in loop.history[0].stop_reason or "tip not seen" in loop.stop_reason


def test_residual_parts():
    side = np.cross(AXIS, [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    m = ToolLine(TIP + 0.8 * side - 50 * AXIS, AXIS, TIP + 0.8 * side + 0.6 * AXIS)
    r = line_residual(TIP, AXIS, m)
    assert r.axial_mm == pytest.approx(0.6) and r.lateral_mm == pytest.approx(0.8)
    assert r.distance_mm == pytest.approx(1.0) and r.angle_deg == pytest.approx(0.0, abs=1e-6)
    r2 = line_residual(TIP, AXIS, ToolLine(m.point, m.direction))      # no tip: across the line only
    assert r2.axial_mm is None and r2.distance_mm == pytest.approx(0.8)


def test_stops_after_max_shots_and_refuses_wild_corrections():
    loop = ClosedLoopCorrection(TIP, AXIS, threshold_mm=0.01, threshold_deg=0.01, max_shots=2)
    rng = np.random.default_rng(9)
    T_cmd = loop.initial_command()
    s1 = loop.update(measure(true_tool(T_cmd, "joints"), rng, noise=0.2), T_cmd)
    s2 = loop.update(measure(true_tool(s1.next_command, "joints"), rng, noise=0.2), s1.next_command)
    assert loop.done and not loop.converged and s2.next_command is None
    assert "after 2 shot pairs (the maximum)" in loop.stop_reason
    with pytest.raises(ClosedLoopError, match="has stopped"):
        loop.update(measure(true_tool(T_cmd, "base"), rng), T_cmd)
    wild = ClosedLoopCorrection(TIP, AXIS)
    with pytest.raises(ClosedLoopError, match="misdetected or the C-arm moved"):
        wild.update(ToolLine(TIP + [6.0, 0, 0] - 50 * AXIS, AXIS, TIP + [6.0, 0, 0]), wild.initial_command())
    assert wild.done and wild.stop_reason.startswith("refused")


def test_bad_input():
    with pytest.raises(ClosedLoopError, match="non-zero"):
        ToolLine(TIP, [0.0, 0, 0])
    with pytest.raises(ClosedLoopError, match="opposite way"):
        correct_command(tool_frame(TIP, AXIS), ToolLine(TIP, -AXIS, TIP), TIP, AXIS)
    with pytest.raises(ClosedLoopError, match="gain"):
        correct_command(tool_frame(TIP, AXIS), ToolLine(TIP, AXIS, TIP), TIP, AXIS, gain=1.5)
    with pytest.raises(ClosedLoopError, match="4x4"):
        correct_command(np.eye(3), ToolLine(TIP, AXIS, TIP), TIP, AXIS)
    with pytest.raises(ClosedLoopError, match="positive"):
        ClosedLoopCorrection(TIP, AXIS, threshold_mm=0)
    with pytest.raises(ClosedLoopError, match="ToolLine"):
        ClosedLoopCorrection(TIP, AXIS).update((TIP, AXIS), tool_frame(TIP, AXIS))


def test_half_gain_halves_the_correction():
    T0 = tool_frame(TIP, AXIS)
    m = measure(true_tool(T0, "base"), np.random.default_rng(0), noise=0.0)
    full, half = correct_command(T0, m, TIP, AXIS), correct_command(T0, m, TIP, AXIS, gain=0.5)
    assert np.linalg.norm(half[:3, 3] - T0[:3, 3]) == pytest.approx(
        0.5 * np.linalg.norm(full[:3, 3] - T0[:3, 3]), rel=0.02)
