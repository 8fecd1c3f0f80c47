"""Fuzzy variable admittance: dead-bands, the fuzzy rules, the integration against the
closed-form first-order response, modes."""
import math

import numpy as np
import pytest

from core.robot.admittance import (ORIENTATION, AdmittanceError, AdmittanceParameters,
                             ArmStiffnessRLS, FuzzyAdmittance, FuzzyDamping, dead_band)


def test_dead_band_removes_small_push_without_jump():
    assert np.allclose(dead_band([1.0, 1.0, 0.5], 1.8), 0)
    assert np.allclose(dead_band([3.0, 0, 0], 1.8), [1.2, 0, 0])
    assert np.linalg.norm(dead_band([1.81, 0, 0], 1.8)) == pytest.approx(0.01)


def test_constant_damping_matches_closed_form():
    """Fuzzy off, arm estimate fixed: v(t) = F/D (1 - exp(-D t / M)) within 1 %."""
    adm = FuzzyAdmittance(variable=False)
    D, M, dt = adm.pos.damping_bounds()[1], adm.pos.p.mass, 0.001
    F = np.array([11.8, 0, 0, 0, 0, 0])          # 10 N beyond the 1.8 N dead-band
    for k in range(1, 101):
        v = adm.step(F, 0.0, dt)[0]
        if k in (5, 20, 100):
            t = k * dt
            expected = 10.0 / D * (1 - math.exp(-D * t / M))
            assert v == pytest.approx(expected, rel=0.01 + D * dt / M)
    assert v == pytest.approx(10.0 / D, rel=1e-3)


def test_fuzzy_rules_push_hard_means_low_damping():
    fz = FuzzyDamping(15.0, 60.0)
    assert fz.level(0.0, -60.0) == pytest.approx(1.0)     # letting go: stop
    assert fz.level(0.0, 0.0) == pytest.approx(0.8)
    assert fz.level(15.0, 60.0) == pytest.approx(0.0)
    assert fz.level(15.0, 0.0) < fz.level(7.5, 0.0) < fz.level(1.0, 0.0)
    assert fz.level(7.5, -60.0) > fz.level(7.5, 0.0) > fz.level(7.5, 60.0)


def test_variable_damping_moves_faster_on_a_sustained_push():
    fixed, fuzzy = FuzzyAdmittance(variable=False), FuzzyAdmittance()
    F = np.array([0, 16.8, 0, 0, 0, 0])
    for _ in range(500):
        vf = fixed.step(F, 0.0, 0.001)[1]
        vz = fuzzy.step(F, 0.0, 0.001)[1]
    assert vz > 1.5 * vf
    assert fuzzy.pos.damping < fuzzy.pos.damping_bounds()[0] + 0.3 * np.subtract(
        *fuzzy.pos.damping_bounds()[::-1])


def test_stiff_arm_raises_damping_floor():
    rls = ArmStiffnessRLS(0.3, 0.0, 2.0, forgetting=0.98)
    rng = np.random.default_rng(0)
    for _ in range(400):
        dx, dv = rng.normal(0, 0.05), rng.normal(0, 1.0)
        rls.update(-1.5 * dx + 0.01 * dv, dx, dv)
    assert rls.stiffness == pytest.approx(1.5, rel=0.02)


def test_orientation_drag_turns_about_joint_axes():
    adm = FuzzyAdmittance(variable=False)
    adm.set_mode(ORIENTATION)
    tx = 0.5
    axis5 = np.array([0, math.cos(tx), math.sin(tx)])
    out = None
    for _ in range(300):
        out = adm.step(np.r_[20.0, 0, 0, 0.6 * axis5], tx, 0.001)
    assert np.allclose(out[:3], 0)                 # no translation in orientation drag
    assert out[3] == pytest.approx(0, abs=1e-12)
    assert out[4] == pytest.approx(0.5 / adm.rot.damping_bounds()[1], rel=0.01)


def test_position_drag_ignores_torque():
    adm = FuzzyAdmittance()
    out = adm.step([0, 0, 0, 2.0, 2.0, 2.0], 0.0, 0.001)
    assert np.allclose(out, 0)


def test_bad_mode_raises():
    with pytest.raises(AdmittanceError):
        FuzzyAdmittance().set_mode("sideways")


def test_bad_wrench_raises():
    with pytest.raises(AdmittanceError):
        FuzzyAdmittance().step([0, 0, np.nan, 0, 0, 0], 0.0, 0.001)


def test_bad_parameters_raise():
    with pytest.raises(AdmittanceError):
        AdmittanceParameters(mass=0.0, damping_floor=1, damping_max=2, damping_per_stiffness=0,
                             dead_band=1, force_ref=1, rate_ref=1, stiffness0=0,
                             stiffness_min=0, stiffness_max=1)


def test_long_push_keeps_damping_finite():
    """Steady guiding (little excitation for the stiffness estimate) stays well defined."""
    adm = FuzzyAdmittance()
    rng = np.random.default_rng(5)
    for _ in range(5000):
        out = adm.step(np.r_[0, 6.0 + 0.1 * rng.standard_normal(), 0, 0, 0, 0], 0.0, 0.001)
    # unbounded, the forgetting factor would grow the covariance by 0.995^-n (e^25 here,
    # an overflow after 2.5 min at 1 kHz)
    assert np.trace(adm.pos.rls.P) <= 1e6
    lo, hi = adm.pos.damping_bounds()
    assert np.all(np.isfinite(out)) and lo <= adm.pos.damping <= hi
    assert 0.0 <= adm.pos.rls.stiffness <= 2.0
