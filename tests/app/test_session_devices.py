"""Device status and robot state reach the session through its one adapter (app.device_state)."""
from __future__ import annotations

import pytest
from psygnal import Signal

from app.device_state import device_state
from app.session import Session, SessionError
from devices.base import DeviceStatus


class FakeRobotClient:
    """What the adapter needs of a robot client: its two signals."""
    device_status = Signal(str, object, str)
    state_changed = Signal(dict)


class FakeDevices:
    device_status_changed = Signal(str, object, str)


def test_robot_state_and_statuses_reach_the_session(tmp_path):
    s = Session(tmp_path, save_images=False)
    adapter = device_state(s)
    assert device_state(s) is adapter                    # one per session
    client, devices = FakeRobotClient(), FakeDevices()
    adapter.connect_robot(client)
    adapter.connect_devices(devices)
    states, changes = [], []
    s.robot_state_changed.connect(states.append)
    s.changed.connect(lambda: changes.append(s.device_status("robot")))
    client.device_status.emit("robot", DeviceStatus.SIMULATED, "simulated hybrid robot")
    assert s.device_ready("robot") and len(changes) == 1
    msg = {"t": 1.25, "q": [0.1, 0.2, 0.3, 0.0, 0.0], "fault": None}
    client.state_changed.emit(msg)
    assert s.robot_state is msg and states == [msg]
    assert len(changes) == 1                             # 50 Hz state is not a workflow change
    client.device_status.emit("force_sensor", DeviceStatus.FAULT, "Net F/T: no data for 0.1 s")
    assert s.device_status("force_sensor") == (DeviceStatus.FAULT, "Net F/T: no data for 0.1 s")
    devices.device_status_changed.emit("carm", DeviceStatus.CONNECTED, "Ziehm, SID 1000 mm")
    assert s.device_ready("carm")


def test_a_device_the_session_does_not_know_is_announced_not_stored(tmp_path):
    s = Session(tmp_path, save_images=False)
    adapter = device_state(s)
    seen = []
    adapter.other_status_changed.connect(lambda *a: seen.append(a))
    adapter.status("pedal", DeviceStatus.CONNECTED, "foot pedal")
    adapter.status("pedal", DeviceStatus.CONNECTED, "foot pedal")
    assert seen == [("pedal", DeviceStatus.CONNECTED, "foot pedal")]
    assert adapter.others == {"pedal": (DeviceStatus.CONNECTED, "foot pedal")}
    with pytest.raises(SessionError, match="must be a DeviceStatus"):
        adapter.status("robot", "connected")
    with pytest.raises(SessionError, match="a robot state must be a dict"):
        adapter.robot_state([0.0, 1.0])


def test_verification_is_a_session_record(tmp_path):
    s = Session(tmp_path, save_images=False)
    got = []
    s.verification_changed.connect(got.append)
    s.set_verification({"tip_error_mm": 0.8, "angle_error_deg": 0.6})
    assert s.verification == {"tip_error_mm": 0.8, "angle_error_deg": 0.6} and got == [s.verification]


def test_a_failing_listener_of_a_device_signal_is_one_error_line(tmp_path, caplog):
    s = Session(tmp_path, save_images=False)
    client = FakeRobotClient()
    device_state(s).connect_robot(client)
    s.device_status_changed.connect(lambda device, status, message: {}["pill"])
    client.device_status.emit("robot", DeviceStatus.FAULT, "joint 2 following error")
    assert s.device_status("robot") == (DeviceStatus.FAULT, "joint 2 following error")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["showing a robot status: done, but a display of it failed (KeyError: 'pill'); the session "
                      "holds the change, the log has the details"]
