"""The virtual fixture: free along the planned line, stiff off it, speed-bounded."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.robot.kinematics.hybrid5 import Hybrid5
from core.robot.virtual_fixture import FixtureParameters, LineFixture, VirtualFixtureError, tool_axis

DT = 0.002
AXIS = np.array([0.15, -0.2, -1.0]) / np.linalg.norm([0.15, -0.2, -1.0])
STAND_OFF = np.array([615.0, 485.0, -185.0])


def simulate(fx, wrench, seconds, tip=None, angles=None):
    """An ideal robot following the task velocity; returns the tip, angles and the peak speed."""
    X = np.asarray(Hybrid5.pose_for_axis(STAND_OFF - 30 * AXIS if tip is None else tip, AXIS), float)
    if angles is not None:
        X[3:] = angles
    peak = 0.0
    for k in range(int(round(seconds / DT))):
        w = wrench(k * DT) if callable(wrench) else wrench
        v = fx.step(w, X[:3], X[3], X[4], DT)
        peak = max(peak, float(np.linalg.norm(v[:3])))
        X = X + v * DT
    return X, peak


def off_line(fx, X):
    s, lateral, rot = fx.offsets(X[:3], tool_axis(X[3], X[4]))
    return s, float(np.linalg.norm(lateral)), math.degrees(float(np.linalg.norm(rot)))


def side_dir():
    s = np.cross(AXIS, [1.0, 0, 0])
    return s / np.linalg.norm(s)


def test_tool_axis_matches_the_robot():
    X = Hybrid5.pose_for_axis(STAND_OFF, AXIS)
    assert np.abs(tool_axis(X[3], X[4]) - AXIS).max() < 1e-12


def test_a_sideways_push_moves_the_tip_less_than_half_a_millimetre():
    fx = LineFixture(STAND_OFF, AXIS)
    push = np.r_[20.0 * side_dir(), 0, 0, 0]
    X, _ = simulate(fx, push, 1.5)
    s, lat, ang = off_line(fx, X)
    # D v + K x = F: after 15 time constants, (20 - 1.8 N dead-band) / 60 N/mm
    assert lat == pytest.approx(18.2 / 60.0, abs=1e-3) and lat < 0.5
    assert s == pytest.approx(-30.0, abs=1e-6) and ang < 1e-9


def test_an_axial_push_moves_along_the_line_and_stops_at_the_stand_off():
    fx = LineFixture(STAND_OFF, AXIS)
    X, peak = simulate(fx, np.r_[12.0 * AXIS, 0, 0, 0], 0.5)
    s, lat, ang = off_line(fx, X)
    assert -28.0 < s < -5.0 and lat < 1e-9 and ang < 1e-9        # travelled >2 mm in, along the line
    X, peak = simulate(fx, np.r_[40.0 * AXIS, 0, 0, 0], 2.0, tip=X[:3])
    s, lat, _ = off_line(fx, X)
    assert -0.05 < s <= 1e-9 and lat < 1e-9                     # at the stand-off, never past it
    assert peak <= fx.p.max_speed + 1e-9
    # pulled back out, it follows freely
    X2, _ = simulate(fx, np.r_[-12.0 * AXIS, 0, 0, 0], 0.5, tip=X[:3])
    assert off_line(fx, X2)[0] < -5.0


def test_drifts_back_onto_the_line_and_its_direction():
    fx = LineFixture(STAND_OFF, AXIS)
    start = STAND_OFF - 30 * AXIS + 2.0 * side_dir()
    X0 = Hybrid5.pose_for_axis(STAND_OFF, AXIS)
    tilted = X0[3:] + np.radians([0.8, -0.6])
    X, _ = simulate(fx, np.zeros(6), 1.5, tip=start, angles=tilted)
    s, lat, ang = off_line(fx, X)
    assert lat < 1e-3 and ang < 1e-3
    assert off_line(fx, np.r_[start, tilted])[2] > 0.9               # it was a degree off


def test_a_torque_barely_tilts_the_tool_and_speeds_are_bounded():
    fx = LineFixture(STAND_OFF, AXIS)
    X, _ = simulate(fx, np.r_[0, 0, 0, 1.0, 0.5, 0.0], 1.0)
    ang = off_line(fx, X)[2]
    tau = np.array([1.0, 0.5, 0.0])
    a = tool_axis(X[3], X[4])
    expect = math.degrees((np.linalg.norm(tau - (tau @ a) * a) - 0.1) / 100.0)   # dead-band, K_r
    assert ang == pytest.approx(expect, rel=0.02) and ang < 0.7
    fx2 = LineFixture(STAND_OFF, AXIS)
    v = np.zeros(5)
    for _ in range(50):
        v = fx2.step(np.r_[300.0 * side_dir() + 300.0 * AXIS, 30.0, 0, 0], STAND_OFF - 30 * AXIS,
                     *Hybrid5.pose_for_axis(STAND_OFF, AXIS)[3:], DT)
    assert np.linalg.norm(v[:3]) <= fx2.p.max_speed + 1e-9 and "speed" in fx2.state.limited
    assert "turn rate" in fx2.state.limited


def test_dead_band_holds_small_forces():
    fx = LineFixture(STAND_OFF, AXIS)
    X, _ = simulate(fx, np.r_[1.5 * side_dir() + 1.5 * AXIS, 0.05, 0, 0], 0.5)
    s, lat, ang = off_line(fx, X)
    assert lat < 1e-9 and s == pytest.approx(-30.0, abs=1e-9) and ang < 1e-9


def test_bad_input():
    with pytest.raises(VirtualFixtureError, match="direction"):
        LineFixture(STAND_OFF, [0, 0, 0])
    with pytest.raises(VirtualFixtureError, match="axial range"):
        LineFixture(STAND_OFF, AXIS, axial_range_mm=(0.0, -5.0))
    with pytest.raises(VirtualFixtureError, match="positive"):
        FixtureParameters(lateral_stiffness=0.0)
    fx = LineFixture(STAND_OFF, AXIS)
    with pytest.raises(VirtualFixtureError, match="6-vector"):
        fx.step(np.zeros(3), STAND_OFF, 0.0, 0.0, DT)
    with pytest.raises(VirtualFixtureError, match="dt"):
        fx.step(np.zeros(6), STAND_OFF, 0.0, 0.0, 0.0)
