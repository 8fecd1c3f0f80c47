"""CT-to-fluoro registration of one level on a small simulated case: back to the truth from known
offsets, a refusal when the start is far off, and bad input.

The shots come from the anatomy at 1.5 mm through the simulator's full image formation
(noise, blur, cage balls); the engine renders the CT at 2 mm, bone only (``core.registration.simulated``).
"""
import numpy as np
import pytest

from core.geometry.rigid import invert, rotation_angle
from core.registration import (RegistrationError, RegistrationRefused, RegistrationSettings, ShotView,
                               level_model, register, register_ct_level, target_errors_mm)
from core.registration.models import pose_delta
from core.registration.simulated import simulated_ct_case


@pytest.fixture(scope="module")
def case():
    return simulated_ct_case(4, levels=("L3",), room_spacing_mm=1.5, ct_spacing_mm=2.0, shape=(384, 384))


def _start(case, x):
    info = case.levels["L3"]
    return case.T_cage_ct @ pose_delta(np.r_[np.radians(x[:3]), x[3:]], info["centre_ct"])


@pytest.mark.slow
def test_registration_returns_to_the_truth_from_a_known_offset(case):
    info = case.levels["L3"]
    T0 = _start(case, np.array([4.0, -3.0, 3.0, 7.0, -6.0, 5.0]))      # degrees, mm
    assert target_errors_mm(T0, case.T_cage_ct, info["targets_ct"]).max() > 8.0
    r = register_ct_level(case.ct, info["centre_ct"], case.views, T0, info["targets_ct"])
    tre = target_errors_mm(r.T_calib_model, case.T_cage_ct, info["targets_ct"])
    assert tre.max() < 1.5, tre
    D = invert(case.T_cage_ct) @ r.T_calib_model
    assert np.degrees(rotation_angle(D)) < 1.5
    centre_err = np.linalg.norm(D[:3, :3] @ info["centre_ct"] + D[:3, 3] - info["centre_ct"])
    assert centre_err < 1.5
    assert r.similarity > 0.15 and r.disagreement_mm <= 2.0
    assert set(r.per_view) == {"ap", "lat"} and all(v["ncc"] > 0 for v in r.per_view.values())


@pytest.mark.slow
def test_a_start_60_mm_off_is_refused(case):
    info = case.levels["L3"]
    T0 = _start(case, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 60.0]))      # 60 mm cranial: no bone in reach
    with pytest.raises(RegistrationRefused, match="did not converge") as e:
        register_ct_level(case.ct, info["centre_ct"], case.views, T0, info["targets_ct"])
    assert e.value.result is not None
    assert target_errors_mm(e.value.result.T_calib_model, case.T_cage_ct, info["targets_ct"]).max() > 10


def test_bad_input_is_refused_with_a_message(case):
    info = case.levels["L3"]
    c = info["centre_ct"]
    with pytest.raises(RegistrationError, match="two calibrated shots"):
        register_ct_level(case.ct, c, case.views[:1], case.T_cage_ct)
    with pytest.raises(RegistrationError, match="rigid"):
        level_model(case.ct, c, 2 * case.T_cage_ct)
    with pytest.raises(RegistrationError, match="level centre"):
        level_model(case.ct, [np.nan, 0, 0], case.T_cage_ct)
    with pytest.raises(RegistrationError, match="outside the CT"):
        level_model(case.ct, c + [0, 0, 900.0], case.T_cage_ct)
    blank = ShotView("lat", np.zeros_like(case.views[1].image), case.views[1].geometry)
    with pytest.raises(RegistrationError, match="blank"):
        register_ct_level(case.ct, c, [case.views[0], blank], case.T_cage_ct)
    far = case.T_cage_ct.copy()
    far[:3, 3] += 5000.0 * case.views[0].geometry.detector_normal      # behind the AP source
    with pytest.raises(RegistrationError, match="AP"):
        register(level_model(case.ct, c, far), case.views)
    with pytest.raises(RegistrationError):
        RegistrationSettings(stages=())
