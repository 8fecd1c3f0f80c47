"""``fluoronav sim run --tracker --motion`` on one drawn case against the simulator's truth:
the robot marker's hand-eye, the tracked loop converged after the registration pairs (no image
correction pairs), the patient's breathing followed and a bump recovered within 0.5 mm in under
1 s, new verification shots asked for, verification of the moved patient, and the summary's
tracker keys."""
from __future__ import annotations

import math

import pytest

from app.commands import sim as simcmd
from app.sim_case import draw_case

RUN_SEED, CASE = 1, 2        # L3 left in the image-only run too (tests/app/test_sim_run.py)


@pytest.fixture(scope="module")
def result():
    return simcmd.run_specs([draw_case(RUN_SEED, CASE, tracker=True, motion=True)], workers=1)[0]


def test_tracked_case_lands_and_recovers_from_the_bump(result):
    r = result
    assert r["ok"], r.get("reason")
    he = r["tracker"]["hand_eye"]
    assert he["error_mm"] <= 0.3 and he["error_deg"] <= 0.15 and he["poses"] == 12
    assert r["converged"] and r["closed_loop_shots"] == 0 and r["registration_shot_pairs"] == 3
    # calibration, three registration pairs, verification: no correction shots
    assert r["shots"] == 2 + 2 * 3 + 2
    assert r["closed_loop"]["tool_tip_mm"] <= 0.5 < r["open_loop"]["tool_tip_mm"]
    assert r["tip_error_mm"] <= 1.0 and r["angle_error_deg"] <= 1.0 and r["grade"] == "A"
    m = r["motion"]
    assert 5.0 <= m["bump_mm"] <= 20.0 and 1.0 <= m["breath_mm"] <= 3.0
    assert m["breathing_error_mm"]["p95"] <= 0.5
    assert m["recovery_s"] <= 1.0 and m["after_recovery_mm"]["mean"] <= 0.5
    assert m["reverify"] and r["reverify_asked"] and abs(m["net_shift_mm"] - m["bump_mm"]) < 3.0
    assert not m["holds"]
    # the verification shots of the moved patient measure the wire against the moved plan
    assert r["verification_error"]["tip_deviation_mm"] <= 0.5 and r["verification_error"]["angle_deg"] <= 0.3


def test_summary_carries_the_tracker_figures(result):
    s = simcmd.summarize([result], 10.0, 1)
    t = s["tracker"]
    assert set(t) >= {"hand_eye_error_mm", "hand_eye_error_deg", "tracked_steps", "converged_fraction", "motion"}
    mo = t["motion"]
    assert mo["cases"] == 1 and mo["recovered_fraction"] == 1.0 and mo["reverify_fraction"] == 1.0
    assert mo["recovery_s"]["max"] <= 1.0 and not math.isnan(mo["tip_error_after_recovery_mm"]["mean"])
    line = simcmd._summary_line(s)
    assert "motion: recovered in" in line and "\n" not in line
    assert "bump recovered in" in simcmd._case_line(result)
