"""Hand guiding along the planned line in the control loop (issue 12's virtual fixture): free
along the line up to the stand-off, stiff off it, engaged only with the tool near the line, the
dead-man still required, the loop's limits still on."""
import math

import numpy as np
import pytest

from core.robot.virtual_fixture import tool_axis
from devices.control_loop import ADMITTANCE, IDLE
from test_robot_controller import make_loop, run


def tool_line(lp, offset_mm=(0.0, 0.0, 0.0), tilt_rad=0.0):
    """The line through the tool's tip now (shifted by ``offset_mm``), along its axis tilted about x."""
    X = lp.X
    axis = tool_axis(X[3] + tilt_rad, X[4])
    return np.asarray(X[:3], float) + np.asarray(offset_mm, float), axis


def offsets(lp, point, axis):
    X = lp.X
    w = np.asarray(X[:3], float) - point
    s = float(w @ axis)
    return s, float(np.linalg.norm(w - s * axis))


def push(lp, F, seconds):
    def each(loop):
        loop.handle(("deadman",), loop.clock.t)
        loop.sensor.hand_wrench_base = np.asarray(F, float)
    run(lp, seconds, each)


def test_a_push_moves_the_tool_along_the_line_and_not_off_it():
    lp = make_loop(period=0.002)
    point, axis = tool_line(lp, tilt_rad=0.0)
    point = point + 15.0 * axis               # the stand-off 15 mm ahead: room to move in
    lp.handle(("fixture", (point.tolist(), axis.tolist(), (-math.inf, 0.0))), lp.clock.t)
    lp.handle(("admittance", True), lp.clock.t)
    assert lp.mode == ADMITTANCE and lp.fixture is not None
    s0, _ = offsets(lp, point, axis)
    side = np.cross(axis, [1.0, 0, 0])
    side /= np.linalg.norm(side)
    F = 8.0 * axis + 8.0 * side                # as hard along the line as across it
    push(lp, np.r_[F, 0, 0, 0], 0.6)
    s1, lateral = offsets(lp, point, axis)
    assert s1 - s0 > 2.0                       # it followed the hand along the line
    assert lateral < 8.0 / 60.0 + 0.05         # across: the spring's F/K (60 N/mm), no drift
    push(lp, np.r_[20.0 * axis, 0, 0, 0], 1.5)  # hard in: it stops at the stand-off
    s2, _ = offsets(lp, point, axis)
    assert -0.2 < s2 <= 0.05
    push(lp, np.zeros(6), 0.3)                 # let go: back onto the line
    assert offsets(lp, point, axis)[1] < 0.02


def test_the_fixture_engages_only_near_the_line_and_only_on_the_deadman():
    lp = make_loop(period=0.002)
    point, axis = tool_line(lp, offset_mm=(12.0, 0.0, 0.0))       # 12 mm to the side
    lp.handle(("fixture", (point.tolist(), axis.tolist(), (-math.inf, 0.0))), lp.clock.t)
    X0 = np.asarray(lp.X, float).copy()
    lp.handle(("admittance", True), lp.clock.t)
    assert lp.mode != ADMITTANCE
    msg = [p for k, p in lp.events if k == "refused"][-1]
    assert msg.startswith("hand guiding along the line refused: the tool is 12.0 mm") and "hold Move" in msg
    run(lp, 0.2)
    assert np.abs(np.asarray(lp.X, float) - X0).max() < 0.01       # never dragged to the line
    near, axis = tool_line(lp, offset_mm=(0.5, 0.0, 0.0))
    lp.handle(("fixture", (near.tolist(), axis.tolist(), (-20.0, 10.0))), lp.clock.t)
    lp.handle(("admittance", True), lp.clock.t)
    assert lp.mode == ADMITTANCE
    run(lp, 0.6)                               # no dead-man heartbeat: it lapses
    assert lp.mode == IDLE
    lp.handle(("fixture", None), lp.clock.t)
    assert lp.fixture is None
    lp.handle(("fixture", ([0, 0, 0], [0, 0, 0], (-1.0, 0.0))), lp.clock.t)   # a bad line: one line
    assert lp.fixture is None and "refused" in [p for k, p in lp.events if k == "refused"][-1]
