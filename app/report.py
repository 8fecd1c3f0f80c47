"""The case report: a PDF of one session folder (``fluoronav report SESSION``, File → Case report).

Read from the folder alone, so it can be made after the case, on another machine: the
header (session, date, software version), the accepted calibration's figures (balls matched
per plane, residuals, RMS), each trajectory of ``plan.json`` with its numbers, each
verification (``verification-NN.json``) with its two shots drawn with the plan line and the
detected tool, its deviations and Gertzbein–Robbins grade, and the audit trail's summary.
Built with Qt's own ``QTextDocument`` + ``QPdfWriter``; headless it runs on the offscreen
platform. ``case_report_html`` is the document's text, ``write_case_report`` the PDF.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app import __version__
from app.session import SessionError, read_session_record

__all__ = ["ReportError", "CaseData", "read_case", "case_report_html", "write_case_report", "REPORT_FILE"]

REPORT_FILE = "case-report.pdf"
SHOT_PX = 245          # a verification shot's width on the page (points): two side by side on A4


class ReportError(ValueError):
    """The report cannot be made; the message says why in one line."""


@dataclass
class CaseData:
    """What the report shows, read from a session folder (``read_case``)."""
    folder: Path
    record: dict
    calibration: object = None
    calibration_file: str | None = None
    trajectories: list = field(default_factory=list)     # [(Trajectory dict, TrajectoryAngles | None)]
    verifications: list = field(default_factory=list)    # [(file name, dict)]
    audit: object = None                                 # core.audit.AuditRead
    problems: list = field(default_factory=list)


def read_case(folder) -> CaseData:
    """The case in ``folder``: ReportError (one line) when it is not a session; a part that
    cannot be read (calibration, plan, a record) is left out and named in ``problems``."""
    from core.audit import AUDIT_FILE, read_audit
    from core.calibration import CageCalibration, CalibrationFileError
    from core.planning.two_view import PlanningError, read_plan, trajectory_angles

    folder = Path(folder).expanduser().absolute()
    try:
        record = read_session_record(folder)
    except SessionError as e:
        raise ReportError(str(e)) from None
    case = CaseData(folder, record)
    calib_files = sorted(folder.glob("calibration-*.json"))
    if calib_files:
        try:
            case.calibration = CageCalibration.load(calib_files[-1])
            case.calibration_file = calib_files[-1].name
        except CalibrationFileError as e:
            case.problems.append(f"{calib_files[-1].name}: {str(e).splitlines()[0]}")
    if (folder / "plan.json").is_file():
        try:
            plan = read_plan(folder / "plan.json")
            for t in plan.get("trajectories", []):
                angles = None
                if t.get("entry_mm") is not None and t.get("target_mm") is not None:
                    try:
                        angles = trajectory_angles(t["entry_mm"], t["target_mm"], t.get("side", "left"))
                    except (PlanningError, ValueError):
                        angles = None
                case.trajectories.append((t, angles))
        except PlanningError as e:
            case.problems.append(f"plan.json: {str(e).splitlines()[0]}")
    for p in sorted(folder.glob("verification-*.json")):
        try:
            case.verifications.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as e:
            case.problems.append(f"{p.name} cannot be read: {e}")
    case.audit = read_audit(folder / AUDIT_FILE)
    case.problems.extend(case.audit.problems)
    return case


# --- the document ------------------------------------------------------------------------------
def _f(x, fmt=".2f", unit="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:{fmt}}{unit}"


def _pt(p) -> str:
    return "–" if p is None else "(" + ", ".join(f"{float(c):.1f}" for c in p) + ")"


def _when(t) -> str:
    """An ISO time as people read it (UTC, to the second)."""
    return "–" if not t else str(t)[:19].replace("T", " ")


def _table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table border="1" cellspacing="0" cellpadding="3" width="100%"><tr>{h}</tr>{body}</table>'


def case_report_html(case: CaseData, images: dict | None = None) -> str:
    """The report as HTML (Qt's rich-text subset); ``images`` maps a verification's file name
    to its (AP, LAT) picture resource names (``write_case_report`` draws them)."""
    from app.audit import calibration_figures
    from core.audit import audit_summary

    images = images or {}
    r = case.record
    out = ["<html><body>",
           f"<h1>fluoronav case report</h1>",
           _table(["session", "started", "workflow step", "software", "report made (UTC)"],
                  [[case.folder.name, r.get("started_at") or "–", r.get("step") or "–", f"fluoronav {__version__}",
                    _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]])]
    shots = {v: len(r["images"][v]) for v in ("ap", "lat")}
    out.append(f"<p>Shots saved: {shots['ap']} AP, {shots['lat']} LAT.</p>")

    out.append("<h2>Calibration</h2>")
    if case.calibration is None:
        out.append("<p><b>No accepted calibration in this session.</b></p>")
    else:
        f = calibration_figures(case.calibration)
        out.append(f"<p>{html.escape(case.calibration_file or '')}: method {html.escape(str(f.get('method')))}, "
                   f"made {html.escape(str(f.get('created_utc')))}, angle between the views "
                   f"{_f(f.get('view_angle_deg'), '.1f', '°')}; overall residual RMS {_f(f.get('rms_px'), '.3f')} px "
                   f"({_f(f.get('rms_mm'), '.3f')} mm).</p>")
        out.append(_table(["plane", "view", "balls matched", "expected", "RMS px", "max px", "RMS mm"],
                          [[pid, p["view"].upper(), p["matched"], p["expected"], _f(p["rms_px"], ".3f"),
                            _f(p["max_px"], ".3f"), _f(p["rms_mm"], ".3f")]
                           for pid, p in (f.get("planes") or {}).items()]))

    out.append("<h2>Trajectories</h2>")
    if not case.trajectories:
        out.append("<p>No trajectory planned.</p>")
    else:
        rows = []
        for t, a in case.trajectories:
            rows.append([t.get("name", ""), t.get("level", ""), t.get("side", ""), _pt(t.get("entry_mm")),
                         _pt(t.get("target_mm")), _f(a.length_mm if a else None, ".1f"),
                         _f(math.degrees(a.medial_rad) if a else None, ".1f"),
                         _f(math.degrees(a.cranial_rad) if a else None, ".1f"),
                         _f(t.get("diameter_mm"), ".1f")])
        out.append("<p>Points in mm in the cage frame of the calibration; angles in degrees.</p>")
        out.append(_table(["name", "level", "side", "entry mm", "target mm", "length mm", "medial °",
                           "cranial °", "Ø mm"], rows))

    # each verification on a page of its own: its two shots stay beside its numbers
    out.append("<h2 style='page-break-before: always'>Verification</h2>")
    if not case.verifications:
        out.append("<p>No verification shot in this session.</p>")
    for i, (name, v) in enumerate(case.verifications):
        g = v.get("grade") or {}
        grade = g.get("grade") if isinstance(g, dict) else None
        brk = " style='page-break-before: always'" if i else ""
        out.append(f"<h3{brk}>{html.escape(str(v.get('name') or v.get('trajectory')))}"
                   f" — {html.escape(name)}</h3>")
        out.append(_table(["entry mm", "tip mm", "angle °", "depth mm", "Gertzbein–Robbins"],
                          [[_f(v.get("entry_deviation_mm")), _f(v.get("tip_deviation_mm")), _f(v.get("angle_deg")),
                            _f(v.get("depth_error_mm"), "+.2f"),
                            grade or (f"no grade ({g.get('reason')})" if isinstance(g, dict) and g else "not graded")]]))
        pics = images.get(name)
        if pics:
            out.append("<p>" + "&nbsp;".join(f"<img src='{html.escape(p)}' width='{SHOT_PX}' height='{SHOT_PX}'>"
                                             for p in pics) + "</p>")
            out.append("<p>Drawn on the verification shots: the plan (green, entry ○ to target ●) and the "
                       "detected tool (red, tip ●).</p>")
        else:
            out.append("<p>(the verification shots are not in the folder)</p>")
        truth = v.get("truth")
        if isinstance(truth, dict):
            out.append(f"<p>Simulation truth: entry {_f(truth.get('entry_deviation_mm'))} mm, tip "
                       f"{_f(truth.get('tip_deviation_mm'))} mm, angle {_f(truth.get('angle_deg'))}°, grade "
                       f"{html.escape(str(truth.get('grade')))}.</p>")

    out.append("<h2 style='page-break-before: always'>Audit trail</h2>")
    events = case.audit.events if case.audit is not None else []
    s = audit_summary(events)
    out.append(f"<p>{s['events']} events from {_when(s['first'])} to {_when(s['last'])} UTC; "
               f"{len(s['stops'])} STOP{'s' if len(s['stops']) != 1 else ''}, "
               f"{len(s['faults'])} fault{'s' if len(s['faults']) != 1 else ''}.</p>")
    if s["by_event"]:
        out.append(_table(["event", "count"], sorted(s["by_event"].items())))
        out.append(_table(["role", "count"], sorted(s["by_role"].items())))
    if s["faults"]:
        out.append("<h3>Faults</h3>" + _table(["time", "device", "message"],
                                               [[_when(x["t"]), x["device"], x["message"]] for x in s["faults"]]))
    if s["stops"]:
        out.append("<p>STOP pressed at: " + ", ".join(html.escape(_when(t)) for t in s["stops"]) + "</p>")
    if case.problems:
        out.append("<h3>Left out of this report</h3><ul>"
                   + "".join(f"<li>{html.escape(p)}</li>" for p in case.problems) + "</ul>")
    out.append("</body></html>")
    return "".join(out)


# --- pictures and the PDF -------------------------------------------------------------------------
def _shot_picture(case: CaseData, view: str, file: str, v: dict):
    """A verification shot (8-bit, windowed) with the plan line and the detected tool drawn in;
    None when the file cannot be read."""
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter, QPen

    from core.imaging.fluoro_image import ImageReadError
    from core.imaging.images import read_image
    try:
        image = read_image(case.folder / file)
    except (ImageReadError, OSError, ValueError):
        return None
    px = np.asarray(image.pixels, float)
    lo, hi = np.percentile(px, [1, 99])
    g = np.ascontiguousarray((np.clip((px - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8))
    h, w = g.shape
    qimg = QImage(g.data, w, h, w, QImage.Format_Grayscale8).convertToFormat(QImage.Format_RGB32)
    p = QPainter(qimg)
    p.setRenderHint(QPainter.Antialiasing)
    lw = max(1.0, w / 256)
    if case.calibration is not None and v.get("plan_entry_mm") and v.get("plan_target_mm"):
        try:
            uv = np.asarray(case.calibration.project([v["plan_entry_mm"], v["plan_target_mm"]])[view], float)
        except Exception:                      # noqa: BLE001 - a point that does not project is not drawn
            uv = None
        if uv is not None and np.all(np.isfinite(uv)):
            p.setPen(QPen(QColor(60, 230, 90), lw))
            p.drawLine(QPointF(*uv[0]), QPointF(*uv[1]))
            p.drawEllipse(QPointF(*uv[0]), 3 * lw, 3 * lw)
            p.setBrush(QColor(60, 230, 90))
            p.drawEllipse(QPointF(*uv[1]), 2 * lw, 2 * lw)
            p.setBrush(Qt.NoBrush)
    det = (v.get("detections") or {}).get(view) or {}
    if det.get("tip_raw") and det.get("back_raw"):
        p.setPen(QPen(QColor(255, 60, 60), lw))
        p.drawLine(QPointF(*det["back_raw"]), QPointF(*det["tip_raw"]))
        p.setBrush(QColor(255, 60, 60))
        p.drawEllipse(QPointF(*det["tip_raw"]), 2 * lw, 2 * lw)
    p.setPen(QColor(255, 255, 255))
    p.drawText(QPointF(6, 6 + 12 * lw), view.upper())
    p.end()
    return qimg


def _verification_files(case: CaseData, v: dict) -> dict:
    """The shots of a verification: as recorded, else the newest saved AP and LAT."""
    shots = v.get("shots") if isinstance(v.get("shots"), dict) else {}
    out = {}
    for view in ("ap", "lat"):
        f = shots.get(view) or (case.record["images"][view][-1] if case.record["images"][view] else None)
        if f:
            out[view] = f
    return out


def _qt_app():
    """The running Qt application, else a headless QGuiApplication (offscreen platform)."""
    from PySide6.QtGui import QGuiApplication
    app = QGuiApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QGuiApplication(["fluoronav-report"])
    return app


def write_case_report(folder, out=None, progress=None) -> tuple[Path, int]:
    """Write the case report of ``folder`` as a PDF (``out``, else ``case-report.pdf`` in the
    folder); returns (path, pages). ReportError (one line) when it cannot. ``progress(percent,
    text)`` hears each stage. Qt-reentrant only (QTextDocument, QImage, QPdfWriter): it may run
    in a worker thread while the GUI goes on (``app.main.Workstation.start_report``)."""
    say = progress or (lambda _pct, _text: None)
    say(5, "reading the case folder")
    case = read_case(folder)
    app = _qt_app()   # noqa: F841 - kept alive while painting
    from PySide6.QtCore import QMarginsF, QSizeF, QUrl
    from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument

    doc = QTextDocument()
    font = doc.defaultFont()
    font.setPointSizeF(8.0)
    doc.setDefaultFont(font)
    pictures = {}
    for i, (name, v) in enumerate(case.verifications):
        say(15 + int(50 * i / max(1, len(case.verifications))), f"drawing the verification shots of {name}")
        names = []
        for view, file in _verification_files(case, v).items():
            img = _shot_picture(case, view, file, v)
            if img is not None:
                key = f"shot://{name}/{view}"
                doc.addResource(QTextDocument.ImageResource, QUrl(key), img)
                names.append(key)
        if names:
            pictures[name] = names
    say(70, "laying out the pages")
    doc.setHtml(case_report_html(case, pictures))
    out = Path(out) if out else case.folder / REPORT_FILE
    out = out.expanduser().absolute()
    if not out.parent.is_dir():
        raise ReportError(f"cannot write {out}: the folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp")
    writer = QPdfWriter(str(tmp))
    writer.setTitle(f"fluoronav case report {case.folder.name}")
    writer.setCreator(f"fluoronav {__version__}")
    writer.setResolution(72)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.A4), QPageLayout.Portrait, QMarginsF(15, 15, 15, 15),
                                     QPageLayout.Millimeter))
    rect = writer.pageLayout().paintRectPixels(writer.resolution())
    doc.setPageSize(QSizeF(rect.width(), rect.height()))
    pages = doc.pageCount()
    say(85, f"writing {pages} pages")
    doc.print_(writer)
    del writer                                   # closes the file
    try:
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ReportError(f"cannot write {out}: Qt wrote no PDF (is the disk full or read-only?)")
        os.replace(tmp, out)
    except OSError as e:
        raise ReportError(f"cannot write {out}: {e.strerror or e}") from None
    say(100, "written")
    return out, pages


def record_report(folder, path, pages: int, audit=None) -> str | None:
    """Add the report to the case's audit trail (``audit``: the session's own log, else the
    folder's file); returns a one-line problem when the trail could not be written."""
    from core.audit import AUDIT_FILE, AuditLog
    log_ = audit if audit is not None else AuditLog(Path(folder).expanduser().absolute() / AUDIT_FILE)
    try:
        log_.append("report", "system", file=str(path), pages=int(pages))
    except OSError:
        return log_.write_error
    return None
