"""Whole simulated cases that used to fail or miss, against the truth (issue 12), one process:

- case 9 of run seed 1: the LAT's field edge runs through the dark body over half its circle;
  the K-wire's tip lies there (it was "outside the field": "tip not in view");
- case 8: the planned line lies within 7 deg of the two views' epipolar plane with the AP tilted
  one way: the technician tilts it the other way and calibrates again (verification was 0.5 mm
  and 0.5 deg off the truth).
- cases 24 and 64: lateral shots whose dark body covers the whole field edge (24: the field was
  not found, the whole image taken for it) or whose blurred surround at the edge set the ball
  threshold above every ball (64): "no round balls found in the LAT shot".
(A cage ball on the wire's tip in the closed-loop shots: ``tests/core/navigation/test_tool_line_balls.py``.)
Figures with margin: tip and angle within 1 mm and 1 deg of the plan, grade A, the verification
within 0.3 mm and 0.3 deg of the true deviation.
"""
from __future__ import annotations

import pytest

from app.commands import sim as simcmd
from app.sim_case import draw_case

RUN_SEED = 1
CASES = (8, 9, 24, 64)


@pytest.fixture(scope="module")
def results():
    return {r["case"]: r for r in simcmd.run_specs([draw_case(RUN_SEED, i) for i in CASES], workers=1)}


@pytest.mark.parametrize("case", CASES)
def test_case_lands_on_the_plan_and_verifies_the_truth(results, case):
    r = results[case]
    assert r["ok"], r.get("reason")
    assert r["tip_error_mm"] <= 1.0 and r["entry_error_mm"] <= 1.0 and r["angle_error_deg"] <= 1.0
    assert r["grade"] == "A"
    ve = r["verification_error"]
    assert ve["tip_deviation_mm"] <= 0.3 and ve["entry_deviation_mm"] <= 0.3 and ve["angle_deg"] <= 0.3
    assert r["plane_angle_deg"] >= 10.0
    assert r["budget_mm"]["tool_detection"] < 1.0


def test_a_line_near_the_epipolar_plane_makes_the_technician_retilt_the_ap(results):
    r = results[8]
    assert r["carm_setups"] == 2 and r["ap_pose_deg"][1] * r["spec"]["ap_pose_deg"][1] < 0
    assert r["shots"] == 4 + 2 * r["closed_loop_shots"] + 2
    assert results[9]["carm_setups"] == 1
