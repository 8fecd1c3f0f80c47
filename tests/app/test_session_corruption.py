"""A damaged session folder resumes what is whole: a corrupted file (truncated, a flipped
byte) is detected by its checksum or validation, named in one line, and its previous good
version used where there is one; a calibration invalidated during the case, or made for
images of another size than the shots on screen, is not restored, and the summary says so.
Ground truth: a session written by ``Session`` with a real calibration (simulated 256² shots)."""
from __future__ import annotations

import datetime as dt
import os
import shutil

import numpy as np
import pytest

from app.session import Session
from core.formats.files import remove_stale_temps
from core.imaging.fluoro_image import FluoroImage

T0 = dt.datetime(2026, 12, 3, 10, 0, 0)
SHAPE = (256, 256)


@pytest.fixture(scope="module")
def calibration(flat_panel_calibration):
    return flat_panel_calibration


def shot(view, seed, shape=SHAPE):
    px = np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)
    return FluoroImage(px, view=view, acquired_at=T0 + dt.timedelta(seconds=seed), bits_stored=12)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, calibration):
    """AP 1, LAT 1, AP 2 on screen; calibrated; plan saved with 1 then 2 trajectories (each
    edit is saved as it is made)."""
    s = Session(tmp_path_factory.mktemp("sessions"), started_at=T0)
    s.set_image("ap", shot("ap", 1))
    s.set_image("lat", shot("lat", 2))
    s.set_image("ap", shot("ap", 3))
    calibration.save(s.folder / "calibration-1.json")
    s.set_calibration(calibration, file=s.folder / "calibration-1.json")
    s.plans.add("L4", "left")
    s.plans.add("L4", "right")
    return s.folder, list(s.plans.ids())


@pytest.fixture
def folder(saved, tmp_path):
    return shutil.copytree(saved[0], tmp_path / "sessions" / saved[0].name)


def flip_byte(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def resume(tmp_path, folder):
    s = Session(tmp_path / "new")
    return s, s.resume(folder)


def test_whole_folder_resumes_everything_without_a_problem(folder, tmp_path, saved):
    s, r = resume(tmp_path, folder)
    assert r.problems == []
    assert r.restored == ["2 AP shots", "1 LAT shot", "calibration calibration-1.json", "plan: 2 trajectories"]
    assert s.plans.ids() == saved[1] and s.calibration is not None


def test_a_flipped_byte_in_the_plan_is_detected_and_the_previous_plan_used(folder, tmp_path, saved):
    text = (folder / "plan.json").read_text()
    at = text.index('"name"') + 2          # still valid JSON: only the checksum can tell
    flip_byte(folder / "plan.json", at)
    s, r = resume(tmp_path, folder)
    assert r.problems == ["plan.json is damaged or was not completely saved (its content differs from the checksum "
                          "recorded when it was saved): its previous version plan.json.prev was restored (the last "
                          "edits before the restart may be missing)"]
    assert s.plans.ids() == saved[1][:1]   # the plan as saved before the last save
    assert "; 1 problem: plan.json is damaged" in r.summary


def test_a_truncated_plan_without_previous_version_is_in_the_summary(folder, tmp_path):
    (folder / "plan.json.prev").unlink()
    (folder / "plan.json").write_bytes((folder / "plan.json").read_bytes()[:40])
    s, r = resume(tmp_path, folder)
    assert len(r.problems) == 1 and r.problems[0].startswith("plan.json is damaged") \
        and r.problems[0].endswith(": plan again")
    assert len(s.plans) == 0 and s.calibration is not None and "2 AP shots" in r.restored
    assert "plan.json is damaged" in r.summary


def test_a_truncated_session_json_falls_back_to_its_previous_version(folder, tmp_path):
    raw = (folder / "session.json").read_bytes()
    (folder / "session.json").write_bytes(raw[: len(raw) // 2])
    s, r = resume(tmp_path, folder)
    assert r.problems[0].startswith("session.json is damaged (") and \
        r.problems[0].endswith("its previous version session.json.prev was used (the last save before the restart "
                               "may be missing)")
    assert "\n" not in r.problems[0]
    assert s.image("ap") is not None and s.calibration is not None   # the previous record had both


def test_a_flipped_pixel_in_a_shot_skips_that_shot_by_name(folder, tmp_path):
    flip_byte(folder / "ap-001.dcm", os.path.getsize(folder / "ap-001.dcm") - 100)   # in the pixel data
    s, r = resume(tmp_path, folder)
    assert r.problems == ["AP: an earlier shot ap-001.dcm cannot be read (ap-001.dcm is damaged or was not "
                          "completely saved (its content differs from the checksum recorded when it was saved))"]
    assert r.shots["ap"][0][1] is None and r.shots["ap"][1][1] is not None
    assert s.shots.count("ap") == 1 and s.image("ap") is not None and s.calibration is not None
    assert "1 AP shot" in r.restored


def test_a_damaged_calibration_is_not_restored(folder, tmp_path):
    text = (folder / "calibration-1.json").read_text()
    flip_byte(folder / "calibration-1.json", text.index('"P"') + 8)    # a digit of the projection matrix
    s, r = resume(tmp_path, folder)
    assert s.calibration is None
    assert r.problems[0] == ("calibration-1.json is damaged or was not completely saved (its content differs from "
                             "the checksum recorded when it was saved): the session continues uncalibrated, "
                             "calibrate again")


def test_an_invalidated_calibration_is_not_restored_and_a_new_one_is(saved, tmp_path, calibration):
    folder = shutil.copytree(saved[0], tmp_path / "sessions" / saved[0].name)
    s, _ = resume(tmp_path, folder)
    s.set_calibration(None, why="the C-arm moved 5.0 deg in primary angle")     # e.g. navigation's check
    s2, r = resume(tmp_path / "2", folder)
    assert s2.calibration is None and r.calibration_file is None
    assert ("calibration calibration-1.json not restored: it was invalidated before the restart (the C-arm moved "
            "5.0 deg in primary angle): calibrate again") in r.problems
    assert any("which was not restored" in p for p in r.problems)     # the plan rested on it
    # calibrated again at the new C-arm pose: that one comes back, the old one still not
    calibration.save(folder / "calibration-2.json")
    s2.set_calibration(calibration, file=folder / "calibration-2.json")
    s3, r3 = resume(tmp_path / "3", folder)
    assert r3.calibration_file == "calibration-2.json" and s3.calibration is not None
    assert not any("invalidated" in p for p in r3.problems)


def test_a_shot_of_another_size_than_the_calibration_keeps_the_calibration_out(tmp_path, calibration):
    s = Session(tmp_path / "sessions", started_at=T0)
    s.set_image("ap", shot("ap", 1))
    s.set_image("lat", shot("lat", 2))
    calibration.save(s.folder / "calibration-1.json")
    s.set_calibration(calibration, file=s.folder / "calibration-1.json")
    s.set_image("lat", shot("lat", 3, shape=(64, 64)))       # a small shot on screen
    s2, r = resume(tmp_path, s.folder)
    assert s2.calibration is None and s2.image("lat").pixels.shape == (64, 64)
    assert r.problems == ["calibration calibration-1.json not restored: it was made for 256x256 LAT images and the "
                          "LAT shot on screen is 64x64 (its clicks and 3D points would be wrong): calibrate again"]


def test_stale_temporaries_of_a_dead_process_are_removed_on_resume(folder, tmp_path):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)                                      # a process that is gone
    dead = [f".plan.json.tmp-{pid}", f".ap-004.dcm.tmp-{pid}", f".session.json.prev.tmp-{pid}-2"]
    keep = [f".plan.json.tmp-{os.getpid()}", "notes.tmp", "plan.json.tmp-1", ".hidden"]
    for name in dead + keep:
        (folder / name).write_bytes(b"partial")
    s, r = resume(tmp_path, folder)
    assert sorted(r.removed_temps) == sorted(dead)
    assert sorted(p.name for p in folder.iterdir() if p.name in dead + keep) == sorted(keep)
    assert remove_stale_temps(folder) == []                 # nothing more to remove


def test_find_session_last_accepts_a_folder_its_previous_record_can_resume(folder, tmp_path):
    from app.session import SessionError, find_session
    (folder / "session.json").write_text("{")
    assert find_session("last", folder.parent) == folder
    (folder / "session.json.prev").unlink()
    with pytest.raises(SessionError, match="session.json is corrupt"):
        find_session(str(folder))


def test_a_deleted_trajectory_is_saved_at_once_and_stays_deleted(folder, tmp_path, saved):
    s, _ = resume(tmp_path, folder)
    assert (folder / "plan.json").read_bytes() == (saved[0] / "plan.json").read_bytes()   # resume wrote nothing
    s.plans.remove(saved[1][0])                 # no save_plan: a kill may follow at once
    s2, r = resume(tmp_path / "2", folder)
    assert s2.plans.ids() == saved[1][1:] and r.problems == []
