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
