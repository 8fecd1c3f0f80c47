"""The Tracker panel fed by TrackerMonitor: from a fake Tracker object (what the panel says for
each flag, stale data, a driver that fails) and from the NDI driver against the fake NDI system."""
import math

import numpy as np
import pytest

from app.tracker import TrackerMonitor
from core.navigation.tracking import NAN_POSE, ToolPose, ToolStatus, TrackerFrame
from devices.base import DeviceStatus
from devices.tracker import Tracker
from widgets.panels.tracker_panel import TrackerPanel

pytestmark = pytest.mark.gui
CONTROL = ("robot_ref", "patient_ref")


class FakeTracker(Tracker):
    tools = ("robot_ref", "patient_ref", "probe")

    def __init__(self):
        self.frame, self.state, self.message = None, DeviceStatus.CONNECTED, ""

    def connect(self):
        pass

    def disconnect(self):
        pass

    def status(self):
        return self.state

    @property
    def last_message(self):
        return self.message

    def latest(self):
        if isinstance(self.frame, Exception):
            raise self.frame
        return self.frame


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def make_frame(n, t, **status):
    return TrackerFrame(n, t, {k: ToolPose(k, np.eye(4) if s is ToolStatus.OK else NAN_POSE, 0.18, s)
                               for k, s in status.items()})


@pytest.fixture
def setup(qtbot):
    panel = TrackerPanel()
    qtbot.addWidget(panel)
    tracker, clock = FakeTracker(), Clock()
    monitor = TrackerMonitor(panel, lambda: tracker, FakeTracker.tools, CONTROL, clock=clock)
    return panel, tracker, clock, monitor


def test_rows_flags_rms_and_frame_line(setup):
    panel, tracker, clock, monitor = setup
    tracker.frame = make_frame(4000, 99.99, robot_ref=ToolStatus.OK, patient_ref=ToolStatus.OUT_OF_VOLUME,
                               probe=ToolStatus.PARTIALLY_OUT_OF_VOLUME)
    monitor.refresh()
    assert panel.row_texts() == [("robot_ref  (control)", "seen", "0.18 mm"),
                                 ("patient_ref  (control)", "out of volume", "—"),
                                 ("probe", "partly out of volume", "—")]
    assert panel.banner.isVisibleTo(panel) and "patient_ref out of the camera's volume" in panel.banner.text()
    assert panel.frame_label.text().startswith("frame 4000") and "10 ms old" in panel.frame_label.text()
    assert panel.status_label.text() == "● Tracker: connected"


def test_all_seen_hides_the_banner_and_rate_is_measured(setup):
    panel, tracker, clock, monitor = setup
    for i in range(31):
        clock.t = 100.0 + i / 30.0
        tracker.frame = make_frame(1000 + 2 * i, clock.t - 0.004, robot_ref=ToolStatus.OK,
                                   patient_ref=ToolStatus.OK, probe=ToolStatus.OK)
        monitor.refresh()
    assert not panel.banner.isVisibleTo(panel)
    assert "60 frames/s" in panel.frame_label.text() and "4 ms old" in panel.frame_label.text()


def test_stale_frame_turns_the_status_to_fault_within_the_watchdog(setup):
    panel, tracker, clock, monitor = setup
    tracker.frame = make_frame(7, 100.0, robot_ref=ToolStatus.OK, patient_ref=ToolStatus.OK, probe=ToolStatus.OK)
    clock.t = 100.030
    assert monitor.refresh().status is DeviceStatus.CONNECTED
    clock.t = 100.080
    v = monitor.refresh()
    assert v.status is DeviceStatus.FAULT
    assert panel.status_label.text() == "● Tracker: fault — no frame for 80 ms"
    assert panel.banner.text().startswith("Tracking lost")
    assert [r[1:] for r in panel.row_texts()] == [("no data", "—")] * 3      # never "seen" from old data
    assert "rate —" in panel.frame_label.text() and "80 ms old" in panel.frame_label.text()


def test_a_failing_driver_shows_as_a_fault_and_the_timer_goes_on(setup, qtbot):
    panel, tracker, clock, monitor = setup
    tracker.frame = RuntimeError("socket exploded")
    monitor.refresh()
    assert "tracker driver failed: socket exploded" in panel.status_label.text()
    tracker.state, tracker.message = DeviceStatus.FAULT, "tracker: bad CRC on the BX reply (2 in a row)"
    tracker.frame = None
    monitor.refresh()
    assert panel.status_label.text().endswith("bad CRC on the BX reply (2 in a row)")


def test_no_driver_running_shows_the_session_status(qtbot):
    panel = TrackerPanel()
    qtbot.addWidget(panel)
    monitor = TrackerMonitor(panel, lambda: None, CONTROL, CONTROL,
                             device_status=lambda: (DeviceStatus.FAULT, "driver missing from this installation"))
    monitor.refresh()
    assert "driver missing" in panel.status_label.text()
    assert [r[1] for r in panel.row_texts()] == ["not seen", "not seen"]
    assert panel.frame_label.text() == "no frame yet"


def test_fed_by_the_ndi_driver_and_the_fake_ndi_system(qtbot, tmp_path):
    from devices.ndi import NdiTracker
    from devices.ndi.fake import FakeNdiServer, fake_rom
    roms = []
    for name in CONTROL:
        p = tmp_path / f"{name}.rom"
        p.write_bytes(fake_rom(name))
        roms.append(str(p))
    panel = TrackerPanel()
    qtbot.addWidget(panel)
    with FakeNdiServer() as server:
        server.set_pose("robot_ref", np.eye(4), error_mm=0.22)
        server.set_state("patient_ref", "out_of_volume")
        t = NdiTracker(host="127.0.0.1", port=server.port, tools=CONTROL, tool_roms=roms, rate_hz=100.0,
                       reply_timeout_s=0.1, retry_s=(0.05, 0.2))
        t.connect()
        try:
            monitor = TrackerMonitor(panel, lambda: t, CONTROL, CONTROL)
            monitor.start()
            qtbot.waitUntil(lambda: panel.row_texts()[:1] == [("robot_ref  (control)", "seen", "0.22 mm")],
                            timeout=10000)
            assert panel.row_texts()[1][1] == "out of volume" and panel.banner.isVisibleTo(panel)
            server.misbehave("silent")
            qtbot.waitUntil(lambda: "no frame for" in panel.status_label.text(), timeout=10000)
            server.misbehave(None)
            qtbot.waitUntil(lambda: panel.status_label.text().startswith("● Tracker: connected"), timeout=10000)
            assert "unanswered request" in panel.health_label.text() and panel.health_label.isVisibleTo(panel)
            monitor.stop()
        finally:
            t.disconnect()
