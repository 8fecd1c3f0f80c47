"""The case's Align and Verify records as a resume brings them back (Qt-free).

``Session.save_record`` writes ``alignment-NN.json`` / ``verification-NN.json`` and notes in
session.json (``records``) the newest of each with the calibration in use when it was made.
``restore_records`` reads them back for ``Session.resume``: only under that same calibration
(restored, not invalidated), only whole (checksum), only for a trajectory the restored plan
still has. A restored verification is its measured figures (``RestoredVerification``): the
wire detections behind them stay in the file, the report draws them from there.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RestoredVerification", "restore_records", "RECORD_KINDS", "ALIGNMENT_FORMAT"]

RECORD_KINDS = ("alignment", "verification")
ALIGNMENT_FORMAT = "fluoronav.alignment/1"   # app.navigation writes it


@dataclass(frozen=True, eq=False)
class RestoredVerification:
    """A verification read back from the case folder: ``record`` (a ``VerificationRecord``),
    the trajectory ``tid``, the ``file``; no detections (``restored`` is True)."""
    tid: str
    record: object
    file: str
    detections: None = None
    truth: None = None
    T_world_cage: None = None          # the 3D view places it with the calibration's cage frame
    restored: bool = True

    @property
    def grade(self) -> str | None:
        g = self.record.grade
        return None if g is None else g.get("grade")

    def summary(self) -> str:
        r = self.record
        text = (f"{r.name}: entry {r.entry_deviation_mm:.2f} mm, tip {r.tip_deviation_mm:.2f} mm, "
                f"angle {r.angle_deg:.2f}°, depth {r.depth_error_mm:+.2f} mm")
        if r.grade is not None:
            g = r.grade
            text += (f", Gertzbein-Robbins {g['grade']}" if g.get("grade") else f", no grade ({g.get('reason')})")
        return text + " (restored)"


def restore_records(folder: Path, notes: dict, checksums: dict, calibration_file: str | None, plan_ids,
                    check_sum, result) -> dict:
    """{kind: restored object or None} for ``alignment`` (the record dict) and ``verification``
    (``RestoredVerification``); each one not restored says why in ``result.problems``, each one
    restored in ``result.restored``. ``notes``: session.json's ``records``."""
    out = {k: None for k in RECORD_KINDS}
    for kind in RECORD_KINDS:
        note = notes.get(kind)
        if not note:
            continue
        name = note["file"]
        why = _refusal(kind, note, calibration_file)
        record = None
        if why is None:
            try:
                check_sum(folder / name, checksums.get(name))
                record = json.loads((folder / name).read_text(encoding="utf-8"))
                obj, tid = _parse(kind, record, name)
            except (OSError, ValueError, TypeError, KeyError) as e:
                why = f"{name} cannot be read ({(str(e).splitlines() or [type(e).__name__])[0]})"
        if why is None and tid not in plan_ids:
            why = f"its trajectory {tid!r} is no longer in the plan"
        if why is not None:
            result.problems.append(f"{kind} {name} not restored: {why}")
            continue
        out[kind] = obj
        result.restored.append(f"{kind} {name}")
    return out


def _refusal(kind: str, note: dict, calibration_file: str | None) -> str | None:
    made_under = note.get("calibration")
    if made_under is None:
        return "it was made without a saved calibration"
    if calibration_file != made_under:
        return (f"it was made under calibration {made_under}, which is not restored (invalidated or replaced): "
                + ("align again" if kind == "alignment" else "verify again"))
    return None


def _parse(kind: str, d, name: str):
    if not isinstance(d, dict):
        raise ValueError(f"{name} is not a JSON object")
    tid = d.get("trajectory")
    if not isinstance(tid, str) or not tid:
        raise ValueError(f"{name} names no trajectory")
    if kind == "alignment":
        if d.get("format") != ALIGNMENT_FORMAT:
            raise ValueError(f"{name} is not an alignment record (format {d.get('format')!r})")
        for key in ("tip_error_mm", "angle_error_deg"):
            if not isinstance(d.get(key), (int, float)) or not math.isfinite(d[key]):
                raise ValueError(f"{name}: {key} is not a finite number")
        return d, tid
    from core.navigation.verification import VerificationError, VerificationRecord
    try:
        rec = VerificationRecord.from_dict(d)
    except VerificationError as e:
        raise ValueError(str(e)) from None
    return RestoredVerification(tid, rec, name), tid
