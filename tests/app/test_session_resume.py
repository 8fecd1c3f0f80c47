"""Resuming an interrupted session: ``Session.resume`` reads the folder back —
shots, the one on screen per view, the newest calibration, the step — and every bad
folder is one line with nothing half-restored. Ground truth: the shots and calibration
written by a first session (simulated 256² shots, the real calibration pipeline)."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pytest

from app.session import Session, SessionError, find_session, read_session_record
from core.imaging.images import read_image

T0 = dt.datetime(2026, 11, 20, 8, 30, 5)
CALIB_NAME = "calibration-20261120-083100.json"


@pytest.fixture(scope="module")
def simulated():
    import torch
    torch.set_num_threads(2)
    from core.calibration import calibrate
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), shape=(256, 256),
                      detector="flat_panel")   # no distortion: the calibration can be saved as a file
    shots = {"ap1": sim.acquire("ap"), "lat1": sim.acquire("lat"), "ap2": sim.acquire("ap")}
    cal = calibrate(sim.cage, {v: shots[f"{v}1"].image.pixels for v in ("ap", "lat")},
                    {v: shots[f"{v}1"].distortion for v in ("ap", "lat")})
    return sim, {k: s.image for k, s in shots.items()}, cal


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, simulated):
    """A first session: AP 1, LAT 1, AP 2, AP 1 brought back; calibrated; planning."""
    _, images, cal = simulated
    root = tmp_path_factory.mktemp("sessions")
    s = Session(root, started_at=T0)
    s.set_image("ap", images["ap1"])
    s.set_image("lat", images["lat1"])
    s.set_image("ap", images["ap2"])
    s.set_image("ap", images["ap1"])           # back to the first AP: not written again
    cal.save(s.folder / "calibration-20261120-083000.json")   # an older one, replaced by:
    cal.save(s.folder / CALIB_NAME)
    s.set_calibration(cal)
    s.go_to_step("calibrate")
    s.go_to_step("plan")
    return s.folder


@pytest.fixture
def folder(saved_folder, tmp_path):
    """A fresh copy of the saved session for each test (tests damage it)."""
    return shutil.copytree(saved_folder, tmp_path / "sessions" / saved_folder.name)


def sample_pixels(cal):
    """Raw pixels of a few cage-frame points in both views."""
    pts = np.array([[0.0, 0.0, 0.0], [20.0, -15.0, 40.0], [-30.0, 25.0, -10.0], [5.0, 60.0, 30.0]])
    uv = cal.project(pts)
    return uv["ap"], uv["lat"]


def record_events(s):
    seen = []
    s.image_changed.connect(lambda v, im: seen.append(("image", v)))
    s.calibration_changed.connect(lambda c: seen.append(("calibration", c is not None)))
    s.resumed.connect(lambda r: seen.append(("resumed", r.folder.name)))
    s.step_changed.connect(lambda step: seen.append(("step", step)))
    s.changed.connect(lambda: seen.append(("changed",)))
    return seen


def test_the_saved_record_names_every_shot_the_current_one_and_the_step(saved_folder):
    rec = json.loads((saved_folder / "session.json").read_text())
    assert rec["images"] == {"ap": ["ap-001.dcm", "ap-002.dcm"], "lat": ["lat-001.dcm"]}
    assert rec["current"] == {"ap": "ap-001.dcm", "lat": "lat-001.dcm"}
    assert rec["step"] == "plan"      # the step is saved when it changes, not only with a shot


def test_resume_restores_shots_calibration_step_and_continues_the_numbering(folder, simulated, tmp_path):
    _, images, cal = simulated
    s = Session(tmp_path / "sessions")
    seen = record_events(s)
    r = s.resume(folder)
    assert s.folder == folder and s.step == "plan" and s.started_at == T0
    np.testing.assert_array_equal(s.image("ap").pixels, images["ap1"].pixels)
    np.testing.assert_array_equal(s.image("lat").pixels, images["lat1"].pixels)
    assert s.image("ap").view == "ap" and s.image("lat").view == "lat"
    assert s.to_dict()["current"] == {"ap": "ap-001.dcm", "lat": "lat-001.dcm"}
    assert s.to_dict()["images"] == {"ap": ["ap-001.dcm", "ap-002.dcm"], "lat": ["lat-001.dcm"]}
    # the newest calibration, and it maps pixels to the same cage points as the original
    assert s.calibration.created_utc == cal.created_utc
    ap, lat = sample_pixels(cal)
    p0, g0 = cal.locate_many(ap, lat)
    p1, g1 = s.calibration.locate_many(ap, lat)
    assert np.abs(p1 - p0).max() < 1e-9 and np.abs(g1 - g0).max() < 1e-9
    # every saved shot, in order, with the one on screen
    assert [p.name for p, _ in r.shots["ap"]] == ["ap-001.dcm", "ap-002.dcm"]
    assert r.current == {"ap": 0, "lat": 0} and not r.problems
    np.testing.assert_array_equal(r.shots["ap"][1][1].pixels, images["ap2"].pixels)
    assert r.summary == ("resumed session 20261120-083005: 2 AP shots, 1 LAT shot, "
                         f"calibration {CALIB_NAME}, step plan")
    # every view follows: images first, then the calibration (the 3D view needs both), then the step
    assert seen == [("image", "ap"), ("image", "lat"), ("calibration", True), ("resumed", folder.name),
                    ("step", "plan"), ("changed",)]
    # a shot brought back from the strip (its file read again) is not written again ...
    back = read_image(folder / "ap-002.dcm").with_view("ap")
    assert s.set_image("ap", back) == folder / "ap-002.dcm"
    # ... and a new shot continues the numbering of the folder
    assert s.set_image("ap", images["ap2"].with_view("ap")).name == "ap-003.dcm"
    assert s.set_image("lat", images["ap1"].with_view("lat")).name == "lat-002.dcm"
    rec = json.loads((folder / "session.json").read_text())
    assert rec["images"] == {"ap": ["ap-001.dcm", "ap-002.dcm", "ap-003.dcm"], "lat": ["lat-001.dcm", "lat-002.dcm"]}
    assert sorted(p.name for p in folder.glob("*.dcm")) == ["ap-001.dcm", "ap-002.dcm", "ap-003.dcm",
                                                          "lat-001.dcm", "lat-002.dcm"]
    assert {p.name for p in (tmp_path / "sessions").iterdir()} == {folder.name}   # no folder of its own


def test_the_empty_folder_of_the_new_session_is_removed(folder, tmp_path):
    s = Session(tmp_path / "sessions", started_at=dt.datetime(2026, 11, 21, 7, 0, 0))
    own = s.folder                              # made on first use
    assert own.is_dir()
    s.resume(folder)
    assert not own.exists() and s.folder == folder


def test_a_missing_dicom_leaves_its_view_empty_and_the_rest_resumes(folder, tmp_path):
    (folder / "lat-001.dcm").unlink()
    (folder / "ap-002.dcm").write_bytes(b"DICM broken")
    s = Session(tmp_path / "sessions")
    r = s.resume(folder)
    assert s.image("lat") is None and s.image("ap") is not None and s.calibration is not None
    assert r.problems == [
        "AP: an earlier shot ap-002.dcm cannot be read (ap-002.dcm is not a DICOM, PNG or TIFF image: export the "
        "shot as DICOM or 16-bit PNG)",
        "LAT: the shot on screen lat-001.dcm cannot be read (image file not found: lat-001.dcm): the LAT view "
        "stays empty, take or open it again"]
    assert r.shots["ap"][1][1] is None and r.shots["lat"] == [(folder / "lat-001.dcm", None)]
    assert s.to_dict()["current"] == {"ap": "ap-001.dcm", "lat": None}
    assert s.step == "plan" and "2 problems" in r.summary and "\n" not in r.summary
    # a new LAT shot takes the next free number, never the missing file's
    assert s.set_image("lat", s.image("ap").with_view(None).with_view("lat")).name == "lat-002.dcm"


def test_a_corrupt_calibration_goes_on_uncalibrated_one_step_back(folder, tmp_path):
    (folder / CALIB_NAME).write_text('{"format": "fluoronav.calib/1", "method": "2d2d", "views": {}}')
    s = Session(tmp_path / "sessions")
    r = s.resume(folder)
    assert s.calibration is None and s.image("ap") is not None and s.image("lat") is not None
    assert len(r.problems) == 2
    assert r.problems[0].startswith(f"{CALIB_NAME}: $.views: is incomplete: lacks 'ap', 'lat'")
    assert r.problems[0].endswith("the session continues uncalibrated, calibrate again")
    assert r.problems[1] == "step plan not restored: calibrate the cage first"
    assert s.step == "calibrate" and "calibration" not in ", ".join(r.restored)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "session.json").write_text('{"format": "fluoronav.session/1", "images": '),
     "session.json is corrupt, the session cannot be resumed"),
    (lambda f: (f / "session.json").unlink(), "is not a fluoronav session (it has no session.json)"),
    (lambda f: (f / "session.json").write_text(json.dumps({"format": "fluoronav.session/2", "images": {}})),
     "was written by another fluoronav version (format fluoronav.session/2, this version reads "
     "fluoronav.session/1)"),
    (lambda f: (f / "session.json").write_text(json.dumps({"format": "fluoronav.plan/1"})),
     "is not a fluoronav session file (format 'fluoronav.plan/1')"),
    (lambda f: (f / "session.json").write_text(json.dumps([1, 2])), "is not a fluoronav session file (format None)"),
    (lambda f: (f / "session.json").write_text(json.dumps(
        {"format": "fluoronav.session/1", "images": {"ap": ["../../etc/passwd"]}, "current": {}})),
     "[$.images.ap[0]: must be a shot file name like ap-001.dcm, got '../../etc/passwd']"),
    (lambda f: (f / "session.json").write_text(json.dumps(
        {"format": "fluoronav.session/1", "images": {"ap": ["ap-001.dcm"]}, "current": {"ap": "ap-009.dcm"}})),
     "[current.ap 'ap-009.dcm' is not one of its images]"),
    (lambda f: (f / "session.json").write_text(json.dumps(
        {"format": "fluoronav.session/1", "images": {}, "current": {}, "step": "dance"})), "[$.step: must be one of 'calibrate', 'plan', 'align', 'verify', null, got 'dance']"),
    (lambda f: shutil.rmtree(f), "is not a folder: choose a session folder"),
])
def test_a_bad_folder_is_one_line_and_changes_nothing(folder, tmp_path, simulated, damage, message):
    (folder / "session.json.prev").unlink()    # no good version left (with one: test_session_corruption)
    damage(folder)
    s = Session(tmp_path / "sessions")
    seen = record_events(s)
    with pytest.raises(SessionError) as e:
        s.resume(folder)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert seen == [] and s.is_fresh() and s.step is None and s._folder is None


def test_after_a_refused_resume_a_good_one_works(folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "session.json").write_text("{")
    s = Session(tmp_path / "sessions")
    with pytest.raises(SessionError):
        s.resume(bad)
    r = s.resume(folder)
    assert s.folder == folder and r.current == {"ap": 0, "lat": 0} and s.calibration is not None


def test_a_session_with_shots_refuses_to_resume(folder, tmp_path, simulated):
    _, images, _ = simulated
    s = Session(tmp_path / "sessions")
    s.set_image("ap", images["ap2"])
    with pytest.raises(SessionError, match="already has shots or a calibration: restart fluoronav"):
        s.resume(folder)
    assert s.folder != folder and s.calibration is None


def test_find_session_last_is_the_newest_and_a_folder_is_checked(folder, tmp_path):
    root = tmp_path / "sessions"
    older = root / "20261119-170000"
    older.mkdir()
    (older / "session.json").write_text(json.dumps({"format": "fluoronav.session/1", "images": {}, "current": {}}))
    (root / "20261121-090000").mkdir()          # newer, but no session.json: not a session
    assert find_session("last", root) == folder
    assert find_session(str(older), root) == older
    assert read_session_record(older) == {"images": {"ap": [], "lat": []}, "current": {"ap": None, "lat": None},
                                          "step": None, "started_at": None, "checksums": {}, "invalidated": {}}
    with pytest.raises(SessionError, match=r"no session to resume under .*empty: start a new one"):
        find_session("last", tmp_path / "empty")
    with pytest.raises(SessionError, match="has no session.json"):
        find_session(str(root / "20261121-090000"), root)


def test_gui_resume_argument_bad_folder_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """``fluoronav gui --resume``: checked before any window opens."""
    import app.main
    from app.cli import main
    monkeypatch.setattr(app.main, "run_gui", lambda **kw: pytest.fail("a window would open"))
    assert main(["gui", "--resume", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fluoronav gui: error: cannot resume: ") and "is not a folder" in err
    assert len(err.splitlines()) == 1
    assert main(["gui", "--resume", "last"]) == 2     # XDG_DATA_HOME is a fresh temporary folder
    err = capsys.readouterr().err.strip()
    assert "no session to resume under" in err and err.endswith("start a new one") and len(err.splitlines()) == 1


def test_gui_resume_argument_hands_the_checked_folder_to_run_gui(folder, tmp_path, monkeypatch):
    import app.main
    from app.cli import main
    calls = []
    monkeypatch.setattr(app.main, "run_gui", lambda **kw: calls.append(kw) or 0)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "fluoronav" / "sessions"
    shutil.copytree(folder, root / folder.name)
    assert main(["gui", "--resume", "last"]) == 0
    assert calls == [{"config_path": None, "resume": root / folder.name}]
    assert main(["gui", "--resume", str(folder)]) == 0 and calls[-1]["resume"] == folder
    assert main(["gui"]) == 0 and calls[-1] == {"config_path": None, "resume": None}
