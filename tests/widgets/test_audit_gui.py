"""The Audit dock, File → Export audit trail and Case report in the workstation (Xvfb)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from app.config import load_defaults
from app.main import Workstation
from core.audit import read_audit
from core.imaging.fluoro_image import FluoroImage

pytestmark = pytest.mark.gui


@pytest.fixture
def station(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "fluoronav.ini"), QSettings.Format.IniFormat)
    st = Workstation(load_defaults(), settings=settings, panels=False)
    st.session._root = tmp_path / "sessions"
    qtbot.addWidget(st.window)
    yield st
    st.window.close()


def test_events_show_in_the_audit_dock_and_export_as_jsonl_and_csv(station, tmp_path):
    w, s, panel = station.window, station.session, station.audit_panel
    assert "Audit" in w.docks and {d.windowTitle() for d in w.tabifiedDockWidgets(w.docks["Audit"])} == {"Log"}
    names = {a.objectName() for m in w.menuBar().actions() if m.menu() for a in m.menu().actions()}
    assert {"action_export_audit", "action_case_report"} <= names
    px = np.full((40, 50), 2000, np.uint16)
    s.set_image("ap", FluoroImage(px, pixel_spacing_mm=(0.4, 0.4), sid_mm=1000.0, view="ap"))
    s.record("stop", "surgeon", command="stop")
    t = panel.table
    assert t.rowCount() == 2
    assert [t.item(r, 2).text() for r in range(2)] == ["shot acquired", "stop"]
    assert t.item(0, 1).text() == "technician" and json.loads(t.item(0, 3).text())["file"] == "ap-001.dcm"
    out = tmp_path / "export"
    out.mkdir()
    jsonl, csv_path = station.export_audit(out)
    assert [e["event"] for e in read_audit(jsonl).events] == ["shot acquired", "stop"]
    rows = list(csv.reader(csv_path.open(newline="")))
    assert [r[3] for r in rows[1:]] == ["shot acquired", "stop"]
    assert t.item(t.rowCount() - 1, 2).text() == "audit exported"     # the export is itself recorded


def test_case_report_from_the_gui_goes_into_the_session_folder(station):
    s = station.session
    s.record("stop", "surgeon", command="stop")
    path = station.write_report()
    assert path == s.folder / "case-report.pdf" and path.read_bytes().startswith(b"%PDF")
    last = station.audit_panel.table
    assert last.item(last.rowCount() - 1, 2).text() == "report"
    assert read_audit(s.folder / "audit.jsonl").events[-1]["pages"] >= 2


def test_the_case_report_action_builds_in_a_worker_with_progress(station, qtbot):
    """File → Case report: the PDF is built off the GUI thread; the status bar shows each
    stage, the event loop keeps running meanwhile, a second request waits its turn."""
    from PySide6.QtCore import QTimer
    s, w = station.session, station.window
    s.set_image("ap", FluoroImage(np.full((40, 50), 2000, np.uint16), pixel_spacing_mm=(0.4, 0.4), sid_mm=1000.0,
                                  view="ap"))
    said, got = [], []
    w.statusBar().messageChanged.connect(lambda text: said.append(text))
    ticks = []
    timer = QTimer(w, interval=1)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    action = next(a for m in w.menuBar().actions() if m.menu() for a in m.menu().actions()
                  if a.objectName() == "action_case_report")
    assert station.start_report(done=got.append)
    assert station.report_busy
    assert not station.start_report() and "already being built" in said[-1]
    qtbot.waitUntil(lambda: bool(got), timeout=20000)
    timer.stop()
    path = got[0]
    assert path == s.folder / "case-report.pdf" and path.read_bytes().startswith(b"%PDF")
    assert not station.report_busy and ticks            # the GUI thread ran its timers meanwhile
    stages = [t for t in said if t.startswith("case report: ")]
    assert any("reading the case folder" in t for t in stages) and any("writing" in t for t in stages)
    assert said[-1].startswith("case report written: ") and said[-1].endswith("pages)")
    assert read_audit(s.folder / "audit.jsonl").events[-1]["event"] == "report"
    # the menu action goes the same way
    got.clear()
    action.trigger()
    assert station.report_busy
    qtbot.waitUntil(lambda: not station.report_busy, timeout=20000)
    assert said[-1].startswith("case report written: ")
