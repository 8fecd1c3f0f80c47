"""The audit trail file (core.audit): append-only JSON lines, fsynced, a torn last line survived."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from core.audit import AuditError, AuditLog, audit_summary, read_audit, write_audit_csv


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.5
        return self.t


def test_each_event_is_one_fsynced_json_line_with_time_role_and_details(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    log = AuditLog(tmp_path / "audit.jsonl", clock=Clock())
    log.append("shot acquired", "technician", view="ap", file="ap-001.dcm")
    log.append("verification", "surgeon", tip_deviation_mm=np.float64(0.75), tip_mm=np.array([1.0, 2.0, 3.0]),
               angle_deg=float("nan"))
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and len(synced) == 2
    a, b = (json.loads(x) for x in lines)
    assert (a["event"], a["role"], a["view"], a["file"], a["mono"]) == ("shot acquired", "technician", "ap",
                                                                          "ap-001.dcm", 100.5)
    assert a["t"].endswith("+00:00") and "T" in a["t"]                    # ISO-8601 UTC
    assert b["tip_deviation_mm"] == 0.75 and b["tip_mm"] == [1.0, 2.0, 3.0] and b["angle_deg"] is None
    assert b["mono"] == 101.0
    assert read_audit(tmp_path / "audit.jsonl").events == [a, b] == log.events


def test_appending_never_rewrites_earlier_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("calibration accepted", "technician", rms_px=0.08)
    before = path.read_bytes()
    AuditLog(path).append("stop", "surgeon")          # another process, later: appends
    after = path.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2


def test_a_damaged_last_line_is_reported_in_one_line_and_the_rest_kept(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append("plan edit", "surgeon", what=f"edit {i}")
    raw = path.read_bytes()
    path.write_bytes(raw[:-12])                      # the crash cut the last line
    r = read_audit(path)
    assert [e["what"] for e in r.events] == ["edit 0", "edit 1"]
    assert r.damaged_last_line and len(r.problems) == 1 and "\n" not in r.problems[0]
    assert "last line (3)" in r.problems[0] and "2 events before it are kept" in r.problems[0]
    # the next event goes on a line of its own: the torn one stays torn, nothing glued to it
    AuditLog(path).append("session resumed", "system")
    r = read_audit(path)
    assert [e["event"] for e in r.events] == ["plan edit", "plan edit", "session resumed"]
    assert len(r.problems) == 1 and "line 3 is damaged" in r.problems[0] and not r.damaged_last_line


def test_garbage_and_wrong_records_are_left_out_and_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("stop", "surgeon")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n[1, 2]\n{\"event\": \"x\"}\n\n")
    AuditLog(path).append("reset", "surgeon")
    r = read_audit(path)
    assert [e["event"] for e in r.events] == ["stop", "reset"]
    assert [p.split(":")[1].strip().split(" is")[0] for p in r.problems] == ["line 2", "line 3", "line 4"]


def test_a_missing_file_has_no_events(tmp_path):
    r = read_audit(tmp_path / "nothing.jsonl")
    assert r.events == [] and r.problems == []


@pytest.mark.parametrize("event, role, details, says", [
    ("", "surgeon", {}, "needs a name"),
    ("stop", "nurse", {}, "unknown audit role 'nurse'"),
    ("stop", "surgeon", {"t": 1}, "reserved key(s) t"),
])
def test_bad_events_are_refused_and_nothing_written(tmp_path, event, role, details, says):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError, match=says.replace("(", r"\(").replace(")", r"\)")):
        log.append(event, role, **details)
    assert not (tmp_path / "audit.jsonl").exists() and log.events == []


def test_a_disk_failure_keeps_the_event_in_memory_and_says_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    log = AuditLog(blocker / "audit.jsonl")           # its folder is a file: cannot be written
    with pytest.raises(OSError):
        log.append("stop", "surgeon")
    assert [e["event"] for e in log.events] == ["stop"]
    assert log.write_error.startswith("the audit trail") and "\n" not in log.write_error


def test_memory_only_log_and_summary_counts(tmp_path):
    log = AuditLog(None)
    for ev, role in [("shot acquired", "technician"), ("stop", "surgeon"), ("fault", "robot"),
                     ("shot acquired", "technician"), ("stop", "surgeon")]:
        log.append(ev, role, device="robot", message="joint 3 following error") if ev == "fault" \
            else log.append(ev, role)
    s = audit_summary(log.events)
    assert s["events"] == 5 and s["by_event"] == {"shot acquired": 2, "stop": 2, "fault": 1}
    assert s["by_role"] == {"technician": 2, "surgeon": 2, "robot": 1}
    assert len(s["stops"]) == 2 and s["faults"][0]["message"] == "joint 3 following error"
    out = write_audit_csv(log.events, tmp_path / "audit.csv")
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["t", "mono", "role", "event", "details"] and len(rows) == 6
    assert rows[3][2:4] == ["robot", "fault"] and json.loads(rows[3][4])["device"] == "robot"
