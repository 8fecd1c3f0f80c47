"""The NDI driver against the fake NDI system on loopback (TCP) and a pty (serial): poses as
sent, every status flag, and each misbehaviour ends as a status and message, never an
exception, with frames stopping while it lasts and coming back after."""
import re

import numpy as np
import pytest

from core.navigation.tracking import ToolStatus, usable
from devices.base import DeviceStatus
from devices.ndi import NdiTracker
from devices.ndi.fake import FakeNdiServer, fake_rom
from devices.tracker import TrackerError
from tests.waiting import until

FAST = dict(rate_hz=200.0, reply_timeout_s=0.2, setup_timeout_s=2.0, retry_s=(0.05, 0.2))
TOOLS = ("robot_ref", "patient_ref")


def random_pose(rng, float32_exact=True):
    a = rng.normal(size=3)
    a *= rng.uniform(0.1, 3.0) / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    th = np.linalg.norm(a)
    Kn = K / th
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + np.sin(th) * Kn + (1 - np.cos(th)) * Kn @ Kn
    t = rng.uniform([-400, -400, -2400], [400, 400, -900])
    T[:3, 3] = np.float32(t) if float32_exact else t
    return T


@pytest.fixture
def roms(tmp_path):
    paths = []
    for name in TOOLS:
        p = tmp_path / f"{name}.rom"
        p.write_bytes(fake_rom(name))
        paths.append(str(p))
    return tuple(paths)


@pytest.fixture
def server():
    s = FakeNdiServer(wired=("probe",)).start()
    yield s
    s.close()


@pytest.fixture
def tracker(server, roms):
    t = NdiTracker(host="127.0.0.1", port=server.port, tools=TOOLS + ("probe",), tool_roms=roms + ("",), **FAST)
    t.connect()
    assert until(lambda: t.latest() is not None), t.last_message
    yield t
    t.disconnect()


def newer_than(tracker, frame_number):
    return lambda: tracker.latest() is not None and tracker.latest().frame_number > frame_number


def settled(tracker, server, check):
    """Wait for a frame taken after the fake's state changed, then check it."""
    n = server.frame_number
    assert until(newer_than(tracker, n + 1)), tracker.last_message
    return check(tracker.latest())


def test_bring_up_loads_roms_enables_every_handle_and_starts_tracking(server, tracker):
    cmds = [c.split(":")[0] for c in server.commands]
    assert cmds[:2] == ["INIT", "PHSR"]
    assert cmds.count("PVWR") == 2 * 12            # 752-byte ROMs: 12 chunks of 64 bytes each
    assert cmds.count("PINIT") == 3 and cmds.count("PENA") == 3
    assert "TSTART" in cmds and cmds.index("TSTART") < cmds.index("BX")
    assert sorted(tracker.handles.values()) == sorted(TOOLS + ("probe",))
    assert server.loaded() == ["robot_ref", "patient_ref", "probe"]
    assert tracker.status() is DeviceStatus.CONNECTED


def test_bx_poses_equal_what_the_server_sent(server, tracker):
    rng = np.random.default_rng(7)
    for _ in range(5):
        truth = {name: random_pose(rng) for name in TOOLS + ("probe",)}
        for name, T in truth.items():
            server.set_pose(name, T, error_mm=0.25)
        frame = settled(tracker, server, lambda f: f)
        for name, T in truth.items():
            p = frame.pose(name)
            assert p.status is ToolStatus.OK
            assert np.abs(p.T_tracker_tool[:3, 3] - T[:3, 3]).max() < 1e-6           # mm
            assert np.abs(p.T_tracker_tool[:3, :3] - T[:3, :3]).max() < 1e-6
            assert abs(p.rms_mm - 0.25) < 1e-6
    assert usable(frame, TOOLS, now=frame.timestamp)


def test_tx_poses_equal_the_fixed_point_values_sent(server, roms):
    t = NdiTracker(host="127.0.0.1", port=server.port, tools=TOOLS, tool_roms=roms, reply="tx", **FAST)
    t.connect()
    try:
        rng = np.random.default_rng(3)
        T = random_pose(rng, float32_exact=False)
        server.set_pose("robot_ref", T, error_mm=0.3141)
        frame = settled(t, server, lambda f: f)
        q, trans, err = FakeNdiServer.tx_values(T, 0.3141)
        p = frame.pose("robot_ref")
        assert np.abs(p.T_tracker_tool[:3, 3] - trans).max() < 1e-6          # what TX carried, 0.01 mm
        assert np.abs(p.T_tracker_tool[:3, :3] - T[:3, :3]).max() < 5e-4     # 4-decimal quaternion
        assert abs(p.rms_mm - err) < 1e-9
        assert "TX:0801" in server.commands and not any(c.startswith("BX") for c in server.commands)
    finally:
        t.disconnect()


@pytest.mark.parametrize("state, status", [
    ("out_of_volume", ToolStatus.OUT_OF_VOLUME),
    ("partially_out_of_volume", ToolStatus.PARTIALLY_OUT_OF_VOLUME),
    ("missing", ToolStatus.MISSING),
    ("disabled", ToolStatus.DISABLED)])
def test_each_flag_gives_its_status_a_nan_pose_and_no_control(server, tracker, state, status):
    server.set_pose("patient_ref", np.eye(4))
    server.set_state("patient_ref", state)
    frame = settled(tracker, server, lambda f: f)
    p = frame.pose("patient_ref")
    assert p.status is status and np.isnan(p.T_tracker_tool).all() and np.isnan(p.rms_mm)
    assert frame.pose("robot_ref").ok
    assert not usable(frame, TOOLS, now=frame.timestamp) and usable(frame, ["robot_ref"], now=frame.timestamp)
    assert tracker.status() is DeviceStatus.CONNECTED
    assert f"patient_ref {status.value.replace('_', ' ')}" in tracker.last_message
    server.set_state("patient_ref", "ok")
    assert settled(tracker, server, lambda f: f.pose("patient_ref").ok)


@pytest.mark.parametrize("mode, counter, words", [
    ("bad_crc", "bad_replies", "bad CRC"),
    ("partial", "partial_replies", "stopped after"),
    ("silent", "silences", "no reply to BX"),
    ("error", "error_replies", "ERROR0C"),
    ("garbage", "bad_replies", "CRC"),
])
def test_misbehaviour_is_a_fault_frames_stop_then_recover(server, tracker, mode, counter, words):
    server.misbehave(mode)
    last = tracker.latest().frame_number
    assert until(lambda: tracker.counts[counter] >= 1)
    n0 = server.frame_number                       # frames the fake made before it turned bad
    assert until(lambda: tracker.status() is DeviceStatus.FAULT), tracker.last_message
    assert tracker.latest().frame_number <= n0     # nothing stored since it misbehaves
    assert until(lambda: re.search(words, tracker.last_message)), tracker.last_message
    assert tracker.last_message.startswith("tracker: ")
    assert tracker._thread.is_alive()
    assert until(lambda: not usable(tracker.latest(), TOOLS, now=tracker._clock()))   # 50 ms on
    server.misbehave(None)
    assert until(newer_than(tracker, max(last, n0))), tracker.last_message
    assert until(lambda: tracker.status() is DeviceStatus.CONNECTED), tracker.last_message


def test_a_single_bad_reply_is_dropped_and_tracking_goes_on(server, tracker):
    server.misbehave("bad_crc", count=1)
    assert until(lambda: tracker.counts["bad_replies"] == 1)
    n = server.frame_number
    assert until(newer_than(tracker, n))
    assert tracker.counts["bring_ups"] == 1         # no reconnection for one bad reply


def test_frozen_camera_trips_the_50_ms_watchdog(server, tracker):
    server.misbehave("freeze")
    assert until(lambda: tracker.counts["repeated_frames"] > 5)
    assert until(lambda: tracker.status() is DeviceStatus.FAULT)
    m = re.match(r"tracker: no frame for (\d+) ms", tracker.last_message)
    assert m and int(m.group(1)) >= 50, tracker.last_message     # older than 50 ms, rounded to the ms
    server.misbehave(None)
    assert until(lambda: tracker.status() is DeviceStatus.CONNECTED), tracker.last_message


def test_recovers_when_the_server_comes_back(server, tracker):
    server.stop()
    assert until(lambda: tracker.status() is DeviceStatus.FAULT)
    assert until(lambda: "cannot reach" in tracker.last_message or "closed" in tracker.last_message), \
        tracker.last_message
    server.start()                                  # same port, a fresh INIT and ROM load
    T = np.eye(4)
    T[:3, 3] = [1.25, 2.5, -1000.0]
    server.set_pose("robot_ref", T)
    assert until(lambda: tracker.status() is DeviceStatus.CONNECTED, timeout=10), tracker.last_message
    frame = settled(tracker, server, lambda f: f)
    assert np.abs(frame.pose("robot_ref").T_tracker_tool[:3, 3] - T[:3, 3]).max() < 1e-6
    assert tracker.counts["bring_ups"] >= 2


def test_not_reachable_at_start_is_a_fault_that_keeps_retrying(roms):
    free = FakeNdiServer()
    free.start()
    port = free.port
    free.close()
    t = NdiTracker(host="127.0.0.1", port=port, tools=TOOLS, tool_roms=roms, **FAST)
    t.connect()                                     # no raise: the link retries
    try:
        assert until(lambda: t.status() is DeviceStatus.FAULT)
        assert "cannot reach the NDI system at 127.0.0.1" in t.last_message
        with FakeNdiServer(port=port) as s:
            assert until(lambda: t.status() is DeviceStatus.CONNECTED, timeout=10), t.last_message
            assert s.loaded() == list(TOOLS)
    finally:
        t.disconnect()


def test_serial_link_over_a_pty_changes_baud_and_tracks(roms):
    with FakeNdiServer(serial=True) as s:
        t = NdiTracker(serial_port=s.serial_port, tools=TOOLS, tool_roms=roms, baud=115200, **FAST)
        t.connect()
        try:
            T = np.eye(4)
            T[:3, 3] = [-50.5, 75.25, -1200.0]
            s.set_pose("patient_ref", T)
            assert until(lambda: t.latest() is not None), t.last_message
            frame = settled(t, s, lambda f: f)
            assert np.abs(frame.pose("patient_ref").T_tracker_tool[:3, 3] - T[:3, 3]).max() < 1e-6
            assert "COMM:50000" in s.commands        # 115200 baud, 8N1, no handshake
            assert s.commands.index("COMM:50000") < s.commands.index("TSTART:")
        finally:
            t.disconnect()


def test_configuration_errors_raise_at_connect(tmp_path, roms):
    with pytest.raises(TrackerError, match="cannot read its ROM file"):
        NdiTracker(host="h", tools=("robot_ref",), tool_roms=(str(tmp_path / "nope.rom"),)).connect()
    big = tmp_path / "big.rom"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(TrackerError, match="not an NDI tool definition"):
        NdiTracker(host="h", tools=("robot_ref",), tool_roms=(str(big),)).connect()
    with pytest.raises(TrackerError, match="one ROM file"):
        NdiTracker(host="h", tools=TOOLS, tool_roms=roms[:1]).connect()
    with pytest.raises(TrackerError, match="no NDI address"):
        NdiTracker(tools=TOOLS)
    with pytest.raises(TrackerError, match="serial_baud"):
        NdiTracker(serial_port="/dev/null", baud=12345)


def test_a_tool_without_rom_and_no_wired_tool_is_missing_and_said(roms):
    with FakeNdiServer() as s:
        t = NdiTracker(host="127.0.0.1", port=s.port, tools=TOOLS + ("probe",), tool_roms=roms + ("",), **FAST)
        t.connect()
        try:
            assert until(lambda: t.latest() is not None)
            assert t.latest().pose("probe").status is ToolStatus.MISSING
            assert "probe: no enabled tool on the tracker" in t.last_message
        finally:
            t.disconnect()


def test_a_rom_the_system_refuses_is_a_fault_with_its_error(tmp_path):
    bad = tmp_path / "bad.rom"
    bad.write_bytes(b"not a tool" * 10)
    with FakeNdiServer() as s:
        t = NdiTracker(host="127.0.0.1", port=s.port, tools=("robot_ref",), tool_roms=(str(bad),), **FAST)
        t.connect()
        try:
            assert until(lambda: "ERROR14" in t.last_message), t.last_message
            assert t.status() is DeviceStatus.FAULT and "invalid tool definition" in t.last_message
            n = t.counts["bring_ups"]
            assert until(lambda: t.counts["bring_ups"] >= n + 2)      # it keeps trying, each time anew
            assert until(lambda: "ERROR14" in t.last_message)          # (a leaked link would go silent)
        finally:
            t.disconnect()


class WrongBaudSerial:
    """A serial link to the fake system left at another baud rate by an earlier session: it
    answers nothing until a break resets it to 9600, then says RESET (as NDI systems do)."""
    is_serial = True
    description = "the NDI system on /dev/fake"

    def __init__(self, server):
        self.server, self.out, self.reset, self.breaks, self.bauds = server, bytearray(), False, 0, []
        self._in = bytearray()

    def open(self):
        pass

    def close(self):
        pass

    def write(self, data):
        self._in += data
        while b"\r" in self._in:
            i = self._in.index(b"\r")
            line, self._in = bytes(self._in[:i]), self._in[i + 1:]
            if self.reset:
                self.out += self.server._handle(line) or b""

    def read_some(self, timeout_s):
        data, self.out = bytes(self.out), bytearray()
        return data

    def send_break(self):
        self.breaks += 1
        self.reset = True
        self.out += b"RESETBE6F\r"

    def set_baud(self, baud):
        self.bauds.append(baud)


def test_serial_system_at_another_baud_is_reset_with_a_break(roms):
    server = FakeNdiServer()
    link = WrongBaudSerial(server)
    t = NdiTracker(transport=link, tools=TOOLS, tool_roms=roms, baud=921600, **FAST)
    t.connect()
    try:
        assert until(lambda: t.latest() is not None), t.last_message
        assert link.breaks == 1 and link.bauds == [921600]
        assert server.commands[:2] == ["COMM:60000", "INIT:"]     # the first INIT was lost to the baud rate
    finally:
        t.disconnect()
