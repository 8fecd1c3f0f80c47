"""A resumed case brings back its newest Align and Verify records, only where they still hold
(the same calibration, whole files, the trajectory still planned), and every plan edit is on
disk the moment it is made. Ground truth: what a first session wrote (a real calibration of
simulated 256² shots, tests/app/conftest.py)."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from app.session import Session
from app.state.records import ALIGNMENT_FORMAT
from core.imaging.fluoro_image import FluoroImage
from core.navigation.verification import VerificationRecord

from tests.app.conftest import CALIBRATION_SHAPE

T0 = dt.datetime(2026, 11, 20, 9, 0, 0)


def _shot(view: str, value: int) -> FluoroImage:
    return FluoroImage(np.full(CALIBRATION_SHAPE, value, np.uint16), view=view,
                       acquired_at=T0 + dt.timedelta(seconds=value))


def _calibrated(root, cal, name="calibration-a.json") -> Session:
    s = Session(root, started_at=T0)
    s.set_image("ap", _shot("ap", 100))
    s.set_image("lat", _shot("lat", 200))
    cal.save(s.folder / name)
    s.set_calibration(cal, file=s.folder / name)
    return s


def _alignment(tid: str) -> dict:
    return {"format": ALIGNMENT_FORMAT, "trajectory": tid, "name": "L4 left", "inserted": False,
            "tip_error_mm": 0.125, "angle_error_deg": 0.25, "q": [1.0, 2.0, 3.0, 4.0, 5.0]}


def _verification(tid: str) -> dict:
    rec = VerificationRecord(np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 45.0]), np.array([0.5, 0.0, 44.0]),
                             np.array([0.0, 0.0, 1.0]), 0.75, 1.25, np.radians(1.5), -1.0,
                             np.array([0.25, 0.0, 0.0]), {}, {"grade": "A"}, "L4 left")
    d = rec.to_dict()
    d["trajectory"] = tid
    return d


def _case(root, cal):
    """Calibrated, one trajectory planned, aligned and verified (records saved with the case)."""
    s = _calibrated(root, cal)
    tid = s.plans.add("L4", "left")
    s.set_alignment(_alignment(tid))
    s.save_record("alignment", _alignment(tid))
    s.save_record("verification", _verification(tid))
    return s, tid


def test_alignment_and_verification_come_back_with_their_figures(tmp_path, flat_panel_calibration):
    first, tid = _case(tmp_path, flat_panel_calibration)
    events = []
    s = Session(tmp_path)
    s.audited.connect(lambda e: events.append(e["event"]))
    r = s.resume(first.folder)
    assert s.alignment is not None and s.alignment["trajectory"] == tid
    assert s.alignment["tip_error_mm"] == 0.125 and s.alignment["angle_error_deg"] == 0.25
    v = s.verification
    assert v.tid == tid and v.grade == "A" and v.restored
    assert v.record.entry_deviation_mm == 0.75 and v.record.tip_deviation_mm == 1.25
    assert v.record.angle_deg == pytest.approx(1.5, abs=1e-12)
    assert "alignment alignment-01.json" in r.restored and "verification verification-01.json" in r.restored
    assert s.step_blocker("verify") != "align the robot first"
    assert "alignment" not in events and "verification" not in events   # audited when made, not again
    # the next record of the resumed case is numbered on
    assert s.save_record("alignment", _alignment(tid)).name == "alignment-02.json"


def test_an_invalidated_calibration_takes_its_alignment_with_it(tmp_path, flat_panel_calibration):
    first, tid = _case(tmp_path, flat_panel_calibration)
    first.set_calibration(None, why="the C-arm moved")
    s = Session(tmp_path)
    r = s.resume(first.folder)
    assert s.calibration is None and s.alignment is None and s.verification is None
    assert any(p.startswith("alignment alignment-01.json not restored") for p in r.problems)
    assert any(p.startswith("verification verification-01.json not restored") for p in r.problems)


def test_a_new_calibration_after_the_alignment_is_restored_without_it(tmp_path, flat_panel_calibration):
    first, tid = _case(tmp_path, flat_panel_calibration)
    flat_panel_calibration.save(first.folder / "calibration-b.json")
    first.set_calibration(flat_panel_calibration.__class__.load(first.folder / "calibration-b.json"),
                          file=first.folder / "calibration-b.json")
    s = Session(tmp_path)
    r = s.resume(first.folder)
    assert s.calibration is not None and r.calibration_file == "calibration-b.json"
    assert s.alignment is None and s.verification is None
    line = next(p for p in r.problems if p.startswith("alignment alignment-01.json not restored"))
    assert "calibration-a.json" in line and "align again" in line


def test_a_damaged_record_is_said_and_the_other_kept(tmp_path, flat_panel_calibration):
    first, tid = _case(tmp_path, flat_panel_calibration)
    path = first.folder / "alignment-01.json"
    path.write_text(path.read_text().replace("0.125", "9.125"))
    s = Session(tmp_path)
    r = s.resume(first.folder)
    assert s.alignment is None and s.verification is not None
    line = next(p for p in r.problems if p.startswith("alignment alignment-01.json"))
    assert "damaged" in line


def test_a_record_of_a_deleted_trajectory_is_not_restored(tmp_path, flat_panel_calibration):
    first, tid = _case(tmp_path, flat_panel_calibration)
    first.plans.remove(tid)
    s = Session(tmp_path)
    r = s.resume(first.folder)
    assert s.alignment is None and s.verification is None and not len(s.plans)
    assert any("no longer in the plan" in p for p in r.problems)


def test_every_plan_edit_is_on_disk_at_once(tmp_path, flat_panel_calibration):
    s = _calibrated(tmp_path, flat_panel_calibration)
    tid = s.plans.add("L4", "left")
    on_disk = lambda: json.loads((s.folder / "plan.json").read_text())   # noqa: E731
    assert [t["level"] for t in on_disk()["trajectories"]] == ["L4"]
    s.plans.set_fields(tid, level="L3")
    assert [t["level"] for t in on_disk()["trajectories"]] == ["L3"]
    s.plans.set_click(tid, "entry", "ap", (120.0, 130.0))
    assert on_disk()["trajectories"][0]["clicks"]["entry"]["ap"] == [120.0, 130.0]
    s.plans.history.undo()
    assert on_disk()["trajectories"][0]["clicks"]["entry"]["ap"] is None
    # what a kill right now would leave: the resumed plan is the one just edited
    r = Session(tmp_path)
    r.resume(s.folder)
    assert [t.level for t in r.plans.trajectories()] == ["L3"]
    assert json.loads((s.folder / "session.json").read_text())["checksums"]["plan.json"]


def test_a_scheduled_save_waits_for_its_call_but_a_deletion_does_not(tmp_path, flat_panel_calibration):
    s = _calibrated(tmp_path, flat_panel_calibration)
    due = []
    s.plan_save_scheduler = lambda: due.append(1)
    tid = s.plans.add("L4", "left")
    assert due and not (s.folder / "plan.json").exists()
    assert s.save_plan_quietly() and len(json.loads((s.folder / "plan.json").read_text())["trajectories"]) == 1
    n = len(due)
    s.plans.remove(tid)
    assert len(due) == n and json.loads((s.folder / "plan.json").read_text())["trajectories"] == []
