"""The audit trail of a case: an append-only JSON-lines file, one event per line.

Each line is one JSON object ``{"t": ISO-8601 UTC, "mono": monotonic s, "role": ROLE,
"event": NAME, ...details}``, written with flush and ``os.fsync`` before ``append`` returns,
so a crash loses at most the line being written. Lines are never rewritten: the file is
opened for appending only. ``read_audit`` gives back every whole line; a damaged last line
(the crash case) is reported in one line and the rest is kept; a damaged line elsewhere is
reported the same way (it cannot come from a crash, so it says so).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["AuditLog", "AuditRead", "AuditError", "ROLES", "read_audit", "audit_summary", "write_audit_csv",
           "AUDIT_FILE"]

ROLES = ("surgeon", "technician", "system", "robot")
AUDIT_FILE = "audit.jsonl"
_RESERVED = ("t", "mono", "role", "event")


class AuditError(ValueError):
    """An event that cannot be recorded as given (unknown role, no name, reserved key)."""


def _jsonable(x):
    """Details as JSON: numpy arrays and scalars as lists and numbers, non-finite floats as
    null (JSON has no NaN), anything else as its text."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


class AuditLog:
    """Appends events to ``path`` (``None``: kept in memory only, e.g. a session that saves
    nothing). ``events`` holds what this process recorded, also when a write failed
    (``write_error`` then says why, in one line)."""

    def __init__(self, path=None, clock=time.monotonic, now=None):
        self.path = None if path is None else Path(path)
        self.events: list[dict] = []
        self.write_error: str | None = None
        self._clock = clock
        self._now = now or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._lock = threading.Lock()
        self.listeners: list = []   # callables(event dict), called after each append

    def append(self, event: str, role: str, **details) -> dict:
        """Record ``event`` by ``role`` with ``details`` (JSON-able after conversion).
        Returns the record; OSError from the disk is raised after the record is kept in memory."""
        if not isinstance(event, str) or not event.strip():
            raise AuditError("an audit event needs a name")
        if role not in ROLES:
            raise AuditError(f"unknown audit role {role!r} (roles: {', '.join(ROLES)})")
        bad = [k for k in details if k in _RESERVED]
        if bad:
            raise AuditError(f"audit details cannot use the reserved key(s) {', '.join(bad)}")
        rec = {"t": self._now().isoformat(timespec="milliseconds"), "mono": round(float(self._clock()), 6),
               "role": role, "event": event, **_jsonable(details)}
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            self.events.append(rec)
            try:
                if self.path is not None:
                    self._write(line)
                self.write_error = None
            except OSError as e:
                self.write_error = f"the audit trail {self.path} could not be written: {e.strerror or e}"
                raise
            finally:
                for fn in list(self.listeners):
                    fn(rec)
        return rec

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end, whatever another writer did; never truncated
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self._ends_without_newline(fd):
                os.write(fd, b"\n")   # a torn line from a crash stays torn, on its own line
            data = line.encode("utf-8")
            while data:
                n = os.write(fd, data)
                data = data[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_without_newline(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"


@dataclass
class AuditRead:
    """What ``read_audit`` found: the whole ``events`` in file order and ``problems`` (one line
    each: a damaged line, where it is)."""
    path: Path
    events: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def damaged_last_line(self) -> bool:
        return any("last line" in p for p in self.problems)


def read_audit(path) -> AuditRead:
    """Every event of the audit file ``path``; a missing file has none. A line that is not a
    JSON object with ``t``, ``role`` and ``event`` is left out and reported."""
    path = Path(path)
    out = AuditRead(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            ok = isinstance(rec, dict) and all(k in rec for k in ("t", "role", "event"))
        except (UnicodeDecodeError, ValueError):
            ok = False
        if ok:
            out.events.append(rec)
        elif i == len(lines):
            out.problems.append(f"{path.name}: the last line ({i}) is damaged (cut off by a crash?): "
                                f"left out, the {len(out.events)} events before it are kept")
        else:
            out.problems.append(f"{path.name}: line {i} is damaged (not written by a crash: the file was "
                                "changed by hand?): left out, the other lines are kept")
    return out


def audit_summary(events) -> dict:
    """Counts by event (in first-seen order), by role, the STOPs and faults with their times."""
    by_event: dict = {}
    by_role: dict = {}
    stops, faults = [], []
    for e in events:
        by_event[e["event"]] = by_event.get(e["event"], 0) + 1
        by_role[e["role"]] = by_role.get(e["role"], 0) + 1
        if e["event"] == "stop":
            stops.append(e["t"])
        elif e["event"] == "fault":
            faults.append({"t": e["t"], "device": e.get("device"), "message": e.get("message")})
    return {"events": len(events), "by_event": by_event, "by_role": by_role, "stops": stops, "faults": faults,
            "first": events[0]["t"] if events else None, "last": events[-1]["t"] if events else None}


def write_audit_csv(events, path) -> Path:
    """The events as CSV (t, mono, role, event, details as JSON) for a spreadsheet; atomic."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["t", "mono", "role", "event", "details"])
    for e in events:
        details = {k: v for k, v in e.items() if k not in _RESERVED}
        w.writerow([e.get("t"), e.get("mono"), e.get("role"), e.get("event"),
                    json.dumps(details, ensure_ascii=False, sort_keys=True) if details else ""])
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")
    os.replace(tmp, path)
    return path
