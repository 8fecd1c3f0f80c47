"""The audit trail of a scripted case (tests/app/audit_case.py) and its case report PDF
(``fluoronav report``), read back with pdfium; bad folders give one line and a non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.audit import read_audit
from tests.app.audit_case import drive

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [   # (event, role) in order: what the script did
    ("shot acquired", "technician"), ("shot acquired", "technician"),
    ("calibration rejected", "technician"), ("calibration accepted", "technician"),
    ("plan edit", "surgeon"),                                   # new trajectory
    *[("plan edit", "surgeon")] * 4,                            # entry and target in both views
    ("plan edit", "surgeon"), ("plan undo", "surgeon"), ("plan redo", "surgeon"),   # the rename
    ("jog", "surgeon"), ("jog release", "surgeon"), ("identify", "technician"),
    ("path", "surgeon"), ("path hold", "surgeon"), ("alignment", "surgeon"),
    ("stop", "surgeon"), ("reset", "surgeon"), ("fault", "robot"),
    ("shot acquired", "technician"), ("shot acquired", "technician"),
    ("verification", "surgeon"), ("calibration invalidated", "system"),
]


def fluoronav(*args):
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return drive(str(tmp_path_factory.mktemp("audit") / "sessions"))


def test_the_audit_trail_holds_every_step_of_the_case_in_order_with_its_role(case):
    folder = Path(case["folder"])
    r = read_audit(folder / "audit.jsonl")
    assert r.problems == []
    assert [(e["event"], e["role"]) for e in r.events] == EXPECTED == [tuple(x) for x in case["events"]]
    ev = r.events
    assert [e["mono"] for e in ev] == sorted(e["mono"] for e in ev)
    assert [(e["view"], e["file"]) for e in ev if e["event"] == "shot acquired"] == [
        ("ap", "ap-001.dcm"), ("lat", "lat-001.dcm"), ("ap", "ap-002.dcm"), ("lat", "lat-002.dcm")]
    rejected, accepted = ev[2], ev[3]
    assert rejected["reason"] == "the technician wants a second look"
    assert set(accepted["planes"]) == {"ap_1", "ap_2", "lat_1", "lat_2"}
    assert all(p["matched"] <= p["expected"] and p["matched"] >= 20 for p in accepted["planes"].values())
    assert 0 < accepted["rms_px"] < 0.3 and case["calibration_file"] in accepted["note"]
    assert ev[9]["what"] == ev[10]["what"] == ev[11]["what"] == "L4 left: name L4 left screw"
    assert ev[15]["kind"] == "approach" and ev[15]["samples"] == 3
    assert ev[20]["message"].startswith("joint 3 following error")
    v = ev[23]
    assert v["grade"] == case["verification"]["grade"] == "A"
    assert v["tip_deviation_mm"] == pytest.approx(case["verification"]["tip_mm"])
    assert ev[24]["reason"] == "the C-arm was moved"
    # the client got every command after it was recorded, nothing dropped
    assert case["sent"] == ["hold_jog_task", "release", "identify_tool", "follow_path", "hold_path", "stop", "reset"]


def test_a_resumed_case_appends_to_its_trail_and_keeps_every_earlier_line(case, tmp_path):
    from app.session import Session
    path = Path(case["folder"]) / "audit.jsonl"
    before = path.read_bytes()
    again = Session(tmp_path / "other")
    again.resume(case["folder"])
    after = path.read_bytes()
    assert after.startswith(before)
    added = read_audit(path).events[len(EXPECTED):]
    # the case ended with the calibration invalidated (the C-arm moved): resume does not bring it back
    assert [(e["event"], e["role"]) for e in added] == [("session resumed", "system")]
    assert again.calibration is None


def test_the_report_of_the_case_has_its_pages_and_numbers(case, tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    out = tmp_path / "report.pdf"
    run = fluoronav("report", case["folder"], "--out", out)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"case report: {out} (3 pages)")
    pdf = pdfium.PdfDocument(str(out))
    assert len(pdf) == 3          # header, calibration and plan; the verification; the audit summary
    text = [" ".join(pdf[i].get_textpage().get_text_range().split()) for i in range(len(pdf))]
    t = case["trajectory"]
    e, g = t["entry_mm"], t["target_mm"]
    assert "L4 left screw" in text[0] and "3d2d" in text[0]
    assert "(" + ", ".join(f"{x:.1f}" for x in e) + ")" in text[0]
    assert "(" + ", ".join(f"{x:.1f}" for x in g) + ")" in text[0]
    length = sum((a - b) ** 2 for a, b in zip(e, g)) ** 0.5
    assert f" {length:.1f} " in text[0]
    for plane in ("ap_1", "ap_2", "lat_1", "lat_2"):
        assert plane in text[0]
    v = case["verification"]
    assert f"{v['entry_mm']:.2f} {v['tip_mm']:.2f} {v['angle_deg']:.2f}" in text[1] and " A " in text[1] + " "
    assert "1 STOP, 1 fault" in text[2] and "joint 3 following error 2.10 mm" in text[2]
    # the report is itself in the trail
    last = read_audit(Path(case["folder"]) / "audit.jsonl").events[-1]
    assert last["event"] == "report" and last["file"] == str(out) and last["pages"] == 3
    # the verification page holds the two shots, drawn in: mostly grey X-ray, with green and red strokes
    import numpy as np
    rgb = np.asarray(pdf[1].render(scale=1.0).to_pil().convert("RGB")).astype(int)
    r_, g_, b_ = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green = int(np.sum((g_ > 180) & (r_ < 120) & (b_ < 140)))
    red = int(np.sum((r_ > 200) & (g_ < 100) & (b_ < 100)))
    grey = int(np.sum((abs(r_ - g_) < 4) & (abs(g_ - b_) < 4) & (r_ < 235) & (r_ > 20)))
    assert green > 20 and red > 20 and grey > 50_000


def test_a_damaged_last_audit_line_is_named_in_the_report_and_the_rest_counted(case, tmp_path):
    import shutil
    folder = tmp_path / "copy"
    shutil.copytree(case["folder"], folder)
    raw = (folder / "audit.jsonl").read_bytes()
    (folder / "audit.jsonl").write_bytes(raw + b'{"t": "2026-12-03T10:00:00+00:00", "role": "sur')
    from app.report import case_report_html, read_case
    c = read_case(folder)
    assert len(c.audit.events) == raw.count(b"\n") and c.audit.damaged_last_line
    html = case_report_html(c)
    assert "Left out of this report" in html and "is damaged (cut off by a crash?)" in html


@pytest.mark.parametrize("make, says", [
    (lambda p: p / "absent", "is not a folder"),
    (lambda p: p, "is not a fluoronav session (it has no session.json)"),
    (lambda p: (p / "session.json").write_text("{not json") and p, "is corrupt"),
])
def test_report_on_a_bad_folder_is_one_line_and_a_failure(tmp_path, make, says):
    folder = make(tmp_path)
    run = fluoronav("report", folder)
    assert run.returncode != 0 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fluoronav report: error: ") and says in lines[0]
    assert "Traceback" not in run.stderr


def test_report_into_a_missing_folder_is_one_line(case, tmp_path):
    run = fluoronav("report", case["folder"], "--out", tmp_path / "no" / "such" / "r.pdf")
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1 and "does not exist" in run.stderr
