"""``fluoronav report SESSION_FOLDER [--out REPORT.pdf]``: the case report as a PDF."""
from __future__ import annotations

from app.cli import CommandError


def register(sub) -> None:
    p = sub.add_parser("report", help="the case report (PDF) of a session folder")
    p.add_argument("session", metavar="SESSION_FOLDER", help="a session folder (named like 20261120-083005)")
    p.add_argument("--out", metavar="REPORT.pdf", help="where to write it (default: case-report.pdf in the folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    from app.report import ReportError, record_report, write_case_report
    try:
        path, pages = write_case_report(args.session, args.out)
    except ReportError as e:
        raise CommandError(str(e)) from None
    problem = record_report(args.session, path, pages)
    print(f"case report: {path} ({pages} page{'s' if pages != 1 else ''})")
    if problem:
        print(f"note: {problem}")
    return 0
