"""The session model: events, workflow rules, and where its files go."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest

from psygnal import EmitLoopError

from app.session import Session, SessionError, sessions_root
from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import read_image
from devices.base import DeviceStatus

T0 = dt.datetime(2026, 11, 20, 8, 30, 5)


def shot(view=None, value=1000):
    px = np.full((32, 48), value, np.uint16)
    px[5, 7] = 4000
    return FluoroImage(px, pixel_spacing_mm=(0.3, 0.3), sid_mm=1000.0,
                       primary_angle_deg=0.0, secondary_angle_deg=0.0, view=view)


def test_folder_is_under_xdg_data_home_named_by_start_time(isolated_user_dirs):
    s = Session(started_at=T0)
    assert s.folder == isolated_user_dirs / "data" / "fluoronav" / "sessions" / "20261120-083005"
    assert s.folder.is_dir()


def test_two_sessions_started_the_same_second_get_two_folders(tmp_path):
    a, b = Session(tmp_path, started_at=T0), Session(tmp_path, started_at=T0)
    assert a.folder != b.folder and b.folder.name == "20261120-083005-1"


def test_set_image_emits_saves_dicom_with_geometry_and_records_it(tmp_path):
    s = Session(tmp_path, started_at=T0)
    seen = []
    s.image_changed.connect(lambda v, im: seen.append((v, im.view)))
    path = s.set_image("ap", shot())
    assert seen == [("ap", "ap")] and s.image("ap").view == "ap" and s.image("lat") is None
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, shot().pixels)
    assert back.pixel_spacing_mm == pytest.approx((0.3, 0.3)) and back.sid_mm == pytest.approx(1000.0)
    s.set_image("ap", shot(value=1200))
    record = json.loads((s.folder / "session.json").read_text())
    assert record["format"] == "fluoronav.session/1"
    assert record["images"] == {"ap": ["ap-001.dcm", "ap-002.dcm"], "lat": []}
    assert record["current"] == {"ap": "ap-002.dcm", "lat": None}


def test_a_shot_brought_back_is_not_saved_again(tmp_path):
    s = Session(tmp_path, started_at=T0)
    first = s.set_image("ap", shot())
    second = s.set_image("ap", shot(value=1200))
    assert s.set_image("ap", shot()) == first                 # the same pixels, the same moment
    assert sorted(p.name for p in s.folder.glob("*.dcm")) == ["ap-001.dcm", "ap-002.dcm"]
    record = json.loads((s.folder / "session.json").read_text())
    assert record["images"]["ap"] == ["ap-001.dcm", "ap-002.dcm"] and record["current"]["ap"] == "ap-001.dcm"
    later = dataclasses.replace(shot(), acquired_at=dt.datetime(2026, 11, 20, 9, 0, 0))  # looks the same
    assert s.set_image("ap", later).name == "ap-003.dcm"
    second.unlink()                                            # a deleted copy is written again
    assert s.set_image("ap", shot(value=1200)).name == "ap-004.dcm"


def test_save_images_off_writes_nothing(tmp_path):
    s = Session(tmp_path, save_images=False)
    assert s.set_image("lat", shot()) is None
    assert list(tmp_path.iterdir()) == []


def test_set_image_refuses_an_unknown_view(tmp_path):
    with pytest.raises(SessionError, match="unknown view"):
        Session(tmp_path).set_image("axial", shot())


def test_set_image_refuses_a_raw_array(tmp_path):
    with pytest.raises(SessionError, match="must be a FluoroImage"):
        Session(tmp_path).set_image("ap", np.zeros((4, 4), np.uint16))


def test_set_image_refuses_the_other_views_shot(tmp_path):
    with pytest.raises(SessionError, match="this is a lat image"):
        Session(tmp_path).set_image("ap", shot(view="lat"))


def test_workflow_steps_open_as_the_session_fills(tmp_path):
    s = Session(tmp_path, save_images=False)
    assert s.allowed_steps() == ("calibrate",)
    assert s.step_blocker("plan") == "calibrate the cage first"
    s.set_calibration(object())
    assert s.allowed_steps() == ("calibrate", "plan")
    tid = s.plans.add("L3", "left")
    assert s.step_blocker("align") == "the robot is not connected"
    s.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")
    # Align only for a complete selected trajectory
    assert s.step_blocker("align") == "L3 left has no 3D entry and target: click it in both the AP and the LAT image"
    s.plans._put(tid, dataclasses.replace(s.plans.get(tid), entry_mm=(0.0, 0.0, 0.0), target_mm=(0.0, 0.0, 40.0)))
    assert s.allowed_steps() == ("calibrate", "plan", "align")
    s.plans.select("")   # none selected: Align takes the first complete one
    assert s.step_blocker("align") is None
    s.plans.select(s.plans.add("L3", "right"))
    assert s.step_blocker("align").startswith("L3 right has no 3D entry and target")
    s.plans.select("")
    s.plans.remove(tid)
    assert s.step_blocker("align") == ("no trajectory is complete: click its entry and target in both the AP "
                                       "and the LAT image")
    s.plans._put(tid, dataclasses.replace(s.plans.get(s.plans.ids()[0]), name="L3 left", entry_mm=(0.0, 0.0, 0.0),
                                          target_mm=(0.0, 0.0, 40.0)))
    s.set_alignment({"error_mm": 0.4})
    s.set_device_status("carm", DeviceStatus.CONNECTED)
    assert s.allowed_steps() == ("calibrate", "plan", "align", "verify")


def test_go_to_step_emits_once_and_refuses_a_blocked_step(tmp_path):
    s = Session(tmp_path, save_images=False)
    steps = []
    s.step_changed.connect(steps.append)
    s.go_to_step("calibrate")
    s.go_to_step("calibrate")
    assert steps == ["calibrate"] and s.step == "calibrate"
    with pytest.raises(SessionError, match="cannot start plan: calibrate the cage first"):
        s.go_to_step("plan")
    assert s.step == "calibrate"


def test_unknown_step(tmp_path):
    with pytest.raises(SessionError, match="unknown workflow step"):
        Session(tmp_path).go_to_step("navigate")


def test_device_status_events_only_on_change(tmp_path):
    s = Session(tmp_path)
    seen = []
    s.device_status_changed.connect(lambda *a: seen.append(a))
    s.set_device_status("tracker", DeviceStatus.FAULT, "no markers visible")
    s.set_device_status("tracker", DeviceStatus.FAULT, "no markers visible")
    assert seen == [("tracker", DeviceStatus.FAULT, "no markers visible")]
    assert s.device_status("tracker") == (DeviceStatus.FAULT, "no markers visible")


def test_device_status_refuses_unknown_device_and_bad_status(tmp_path):
    s = Session(tmp_path)
    with pytest.raises(SessionError, match="unknown device"):
        s.set_device_status("laser", DeviceStatus.CONNECTED)
    with pytest.raises(SessionError, match="must be a DeviceStatus"):
        s.set_device_status("robot", "connected")


def test_a_failing_listener_is_raised_to_the_writer_after_the_state_changed(tmp_path):
    """A broken listener is a bug: the writer's call raises EmitLoopError (the listener's
    error as its cause), the session already holds the new state, and the next change
    reaches the listeners again."""
    s = Session(tmp_path, save_images=False)
    got = []
    s.device_status_changed.connect(lambda *a: got.append(a))
    broken = s.device_status_changed.connect(lambda device, status, message: 1 / 0 if device == "robot" else None)
    with pytest.raises(EmitLoopError) as e:
        s.set_device_status("robot", DeviceStatus.FAULT, "emergency stop pressed")
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert s.device_status("robot") == (DeviceStatus.FAULT, "emergency stop pressed")
    assert got == [("robot", DeviceStatus.FAULT, "emergency stop pressed")]   # connected first: it ran
    s.set_device_status("carm", DeviceStatus.SIMULATED, "simulated C-arm")
    assert got[-1] == ("carm", DeviceStatus.SIMULATED, "simulated C-arm")
    s.device_status_changed.disconnect(broken)
    s.set_device_status("robot", DeviceStatus.CONNECTED, "")
    assert got[-1] == ("robot", DeviceStatus.CONNECTED, "") and s.device_ready("robot")


def test_plan_edits_are_session_changes(tmp_path):
    s = Session(tmp_path, save_images=False)
    changes = []
    s.changed.connect(lambda: changes.append(len(s.plans)))
    tid = s.plans.add("L2", "right")
    assert changes and changes[-1] == 1 and s.plans.get(tid).name == "L2 right"
    s.plans.history.undo()
    assert changes[-1] == 0 and not s.is_fresh() is False


def test_sessions_root_honours_explicit_dir(tmp_path):
    assert sessions_root(tmp_path / "x") == tmp_path / "x"
