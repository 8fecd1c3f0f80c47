"""Plausibility of a pedicle trajectory by level: a usual plan passes, a wrong level,
an implausible angle or length warns (never refuses); bad input is one clear error."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.planning.plausibility import PLAUSIBLE_RANGES, implausibilities, unusual_figures
from core.planning.two_view import LEVELS, PatientAxes, Trajectory, plan_warnings


def _direction(axes, transverse_deg, sagittal_deg):
    left, post, sup = (np.asarray(a) for a in (axes.left, axes.posterior, axes.superior))
    d = -post + math.tan(math.radians(transverse_deg)) * left + math.tan(math.radians(sagittal_deg)) * sup
    return d / np.linalg.norm(d)


def _left_pedicle(level, medial_deg, cranial_deg, length_mm=45.0):
    axes = PatientAxes()
    entry = np.array([25.0, 0.0, 0.0])
    target = entry + length_mm * _direction(axes, -medial_deg, cranial_deg)  # left: medial is towards -left
    return Trajectory(f"{level} left", level=level, side="left", entry_mm=tuple(entry), target_mm=tuple(target),
                      entry_gap_mm=0.1, target_gap_mm=0.1)


def test_every_level_has_ranges_and_the_mean_anatomy_passes():
    assert set(PLAUSIBLE_RANGES) == set(LEVELS)
    # Zindrick 1987 mean transverse pedicle angles, straight-ahead, 45 mm: nothing to say
    for level, medial in (("T12", 10), ("L1", 11), ("L2", 12), ("L3", 14), ("L4", 18), ("L5", 30), ("S1", 35)):
        assert implausibilities(level, math.radians(medial), math.radians(2.0), 45.0) == [], level
        assert plan_warnings(_left_pedicle(level, medial, 2.0)) == [], level


def test_44_degrees_cranial_warns_and_says_which_way_and_the_range():
    lines = plan_warnings(_left_pedicle("L4", 15, 44))
    assert lines == ["44° cranial is unusual at L4 (expected 20° caudal to 30° cranial): check the target "
                     "in the LAT image"]
    caudal = plan_warnings(_left_pedicle("L4", 15, -25))
    assert len(caudal) == 1 and caudal[0].startswith("25° caudal is unusual at L4")
    # the cortical-bone trajectory's ~25° cranial is inside (Santoni 2009)
    assert plan_warnings(_left_pedicle("L4", 5, 25)) == []


def test_medial_limit_depends_on_the_level():
    # 35° medial: usual at L5 (mean 30°), not at L1 (mean 11°): changing the level changes the verdict
    assert unusual_figures("L5", math.radians(35), 0.0, 45.0) == set()
    assert unusual_figures("L1", math.radians(35), 0.0, 45.0) == {"medial"}
    assert unusual_figures("L1", math.radians(24.9), 0.0, 45.0) == set()
    assert unusual_figures("L1", math.radians(25.1), 0.0, 45.0) == {"medial"}
    line = plan_warnings(_left_pedicle("L1", 35, 0))
    assert line == ["35° medial is unusual at L1 (expected up to 25°): check the level and the target"]


def test_length_unusual_for_a_screw_but_not_a_mis_click_warns_once():
    assert unusual_figures("L3", 0.2, 0.0, 20.0) == {"length"}
    assert plan_warnings(_left_pedicle("L3", 14, 0, length_mm=20)) == [
        "20 mm is an unusual screw length at L3 (expected 25-65 mm)"]
    # beyond the coarse mis-click bound only the coarse line is said, not a second one
    long = plan_warnings(_left_pedicle("L3", 14, 0, length_mm=100))
    assert long == ["length 100 mm is outside 15-90 mm"]
    assert unusual_figures("S1", math.radians(35), 0.0, 68.0) == set()   # S1 screws reach further


def test_several_unusual_figures_at_once():
    assert unusual_figures("L2", math.radians(40), math.radians(-30), 70.0) == {"medial", "cranial", "length"}
    assert len(implausibilities("L2", math.radians(40), math.radians(-30), 70.0)) == 3


@pytest.mark.parametrize("args,match", [(("C5", 0.1, 0.0, 45.0), "no plausible ranges for level 'C5'"),
                                        (("L4", float("nan"), 0.0, 45.0), "finite"),
                                        (("L4", 0.1, 0.0, float("inf")), "finite")])
def test_bad_input_is_one_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        implausibilities(*args)
