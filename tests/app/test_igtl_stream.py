"""The session streamed to a Slicer stand-in peer (app.igtl): the tool pose in patient RAS, rate-limited;
the plan as lines in the same frame as the exported markups; shots; everything again on reconnect."""
from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from types import SimpleNamespace

import numpy as np
import pyigtl
import pytest

from app.config import load_defaults
from app.igtl import SlicerStream, link_from_config
from app.session import Session
from core.planning.markups import LPS_TO_RAS, markups_from_trajectories
from core.imaging.fluoro_image import FluoroImage
from core.robot.kinematics.hybrid5 import load_hybrid5
from devices.igtl_link import HEADER, HEADER_SIZE, IgtlLink
from waiting import until as _until


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _rigid(seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    T = np.eye(4)
    T[:3, :3] = Q * np.sign(np.linalg.det(Q))
    T[:3, 3] = rng.uniform(-300, 300, 3)
    return T


@pytest.fixture(scope="module")
def kin():
    return load_hybrid5()


class Peer:
    """A Slicer stand-in on a raw socket: its thread keeps every message, decoded with pyigtl where
    pyigtl can (TRANSFORM, IMAGE) and by hand for POLYDATA (pyigtl 0.3.4 cannot decode it)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        self.sock.settimeout(0.05)
        self.messages, self.alive = [], True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf = b""
        while self.alive:
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= HEADER_SIZE:
                size = HEADER.unpack_from(buf)[5]
                if len(buf) < HEADER_SIZE + size:
                    break
                fields = pyigtl.MessageBase.parse_header(buf[:HEADER_SIZE])
                body = buf[HEADER_SIZE:HEADER_SIZE + size]
                buf = buf[HEADER_SIZE + size:]
                self.messages.append((fields["message_type"], fields["device_name"], fields, body))

    def wait(self, mtype, device, timeout=3.0, after=0):
        """The newest message of ``mtype`` from ``device`` among those after index ``after``, decoded."""
        def matching():
            return [m for m in self.messages[after:] if m[:2] == (mtype, device)]
        _until(lambda: bool(matching()), timeout)
        hits = matching()
        if not hits:
            return None
        _, _, fields, body = hits[-1]
        if mtype == "POLYDATA":
            n, _, _, nl, lsize = struct.unpack_from("> 10I", body)[:5]
            pts = np.frombuffer(body, ">f4", 3 * n, 40).reshape(n, 3)
            lines = np.frombuffer(body, ">u4", lsize // 4, 40 + 12 * n)
            return SimpleNamespace(points=pts, lines=lines.tolist())
        msg = pyigtl.MessageBase.create_message(mtype)
        msg.unpack(fields, body)
        return msg

    def close(self):
        self.alive = False
        self.sock.close()
        self.thread.join()


@pytest.fixture
def rig(tmp_path, kin):
    link = IgtlLink("server", port=0, heartbeat_s=0.5)
    link.start()
    peer = Peer(link.bound_port)
    session = Session(tmp_path, save_images=False)
    frames = SimpleNamespace(T_cage0_base=_rigid(1))
    clock = Clock()
    stream = SlicerStream(session, link, kin, frames=lambda: frames, pose_rate_hz=60.0, clock=clock)
    assert _until(lambda: link.connected)
    stream.poll()
    yield SimpleNamespace(link=link, peer=peer, session=session, frames=frames, stream=stream, clock=clock)
    peer.close()
    link.close()


def _q(kin, dx=0.0):
    return kin.joints_for_pose([625.0 + dx, 475.0, -135.0, 0.0, 0.0])


def test_tool_pose_reaches_the_peer_in_patient_ras(rig, kin):
    q = _q(kin)
    rig.session.set_robot_state({"q": q.tolist()})
    msg = rig.peer.wait("TRANSFORM", "FluoronavTool")
    assert msg is not None
    # cage +x = left, +z = posterior, -y = superior (PatientAxes) and LPS -> RAS
    T_ras_cage = LPS_TO_RAS @ np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    expected = T_ras_cage @ rig.frames.T_cage0_base @ kin.forward(q)
    assert np.allclose(msg.matrix, expected, atol=1e-3)
    assert rig.stream.status[0] == "connected"


def test_pose_is_rate_limited_and_not_resent_unchanged(rig, kin):
    rig.session.set_robot_state({"q": _q(kin).tolist()})
    assert rig.stream.poses_sent == 1
    rig.session.set_robot_state({"q": _q(kin).tolist()})          # the same pose: nothing to send
    rig.clock.t += 0.005
    rig.session.set_robot_state({"q": _q(kin, 1.0).tolist()})     # 5 ms later: held back (60 Hz)
    assert rig.stream.poses_sent == 1
    rig.clock.t += 0.012
    rig.stream.poll()                                             # 17 ms: the held-back pose goes
    assert rig.stream.poses_sent == 2
    assert _until(lambda: (m := rig.peer.wait("TRANSFORM", "FluoronavTool", 0.1)) is not None
                  and abs(m.matrix[:3, 3] - rig.stream._last_pose[:3, 3]).max() < 1e-3)


def test_no_calibration_no_pose_and_the_pill_says_why(tmp_path, kin):
    link = IgtlLink("server", port=0)
    session = Session(tmp_path, save_images=False)
    stream = SlicerStream(session, link, kin, frames=lambda: None)
    session.set_robot_state({"q": _q(kin).tolist()})
    assert stream.poses_sent == 0 and "calibrate" in stream.note
    assert stream.status == ("disabled", "not started")
    link.close()


def test_trajectories_land_where_the_markups_put_them(rig):
    tid = rig.session.plans.add("L4", "left")
    first = rig.peer.wait("POLYDATA", "L4 left")
    assert first is not None and len(first.points) == 0        # no 3D yet: an empty model
    t = rig.session.plans.get(tid)
    seen = len(rig.peer.messages)
    rig.session.plans._put(tid, dataclasses.replace(t, entry_mm=(10.0, -20.0, 30.0), target_mm=(15.0, 5.0, -10.0)))
    msg = rig.peer.wait("POLYDATA", "L4 left", after=seen)
    assert msg is not None
    doc, _ = markups_from_trajectories(rig.session.plans.trajectories())
    lps = np.array([cp["position"] for cp in doc["markups"][0]["controlPoints"]])
    assert np.allclose(np.asarray(msg.points), lps @ LPS_TO_RAS[:3, :3].T, atol=1e-4)
    assert list(msg.lines) == [2, 0, 1]
    seen = len(rig.peer.messages)
    rig.session.plans.remove(tid)
    gone = rig.peer.wait("POLYDATA", "L4 left", after=seen)
    assert gone is not None and len(gone.points) == 0


def test_shot_goes_as_an_image_with_its_spacing(rig):
    pixels = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64))
    rig.session.set_image("ap", FluoroImage(pixels, pixel_spacing_mm=(0.25, 0.3)))
    msg = rig.peer.wait("IMAGE", "AP")
    assert msg is not None
    assert msg.image.shape[-2:] == (48, 64) and np.array_equal(msg.image.reshape(48, 64), pixels)
    assert np.allclose(np.linalg.norm(msg.ijk_to_world_matrix[:3, :2], axis=0), [0.25, 0.3], atol=1e-6)


def test_a_new_peer_gets_everything_again(rig, kin):
    rig.session.set_robot_state({"q": _q(kin).tolist()})
    tid = rig.session.plans.add("L5", "right")
    t = rig.session.plans.get(tid)
    rig.session.plans._put(tid, dataclasses.replace(t, entry_mm=(0.0, 0.0, 0.0), target_mm=(1.0, 40.0, 2.0)))
    rig.peer.close()
    assert _until(lambda: rig.link.state == "waiting")
    again = Peer(rig.link.bound_port)
    try:
        assert _until(lambda: rig.link.connected)
        rig.stream.poll()
        assert again.wait("TRANSFORM", "FluoronavTool") is not None
        line = again.wait("POLYDATA", "L5 right")
        assert line is not None and len(line.points) == 2
    finally:
        again.close()


def test_config_disabled_by_default_and_builds_a_link():
    assert link_from_config(load_defaults()) is None
    from app.config import Config
    values = load_defaults().as_dict()
    values["igtl"].update(enabled=True, mode="client", port=18945)
    link = link_from_config(Config(values))
    assert (link.mode, link.port, link.state) == ("client", 18945, "disabled")
    link.close()


def test_a_calibrated_shot_is_placed_on_its_detector(tmp_path):
    """With the view's camera known, (column, row) -> RAS is where the true C-arm's detector has that pixel."""
    from core.calibration.calibration import ViewCalibration
    from core.calibration.distortion import NoDistortion
    from core.simulation.scene import carm_geometry
    g = carm_geometry("ap", 12.0, -7.0, (0.0, 10.0, -5.0), 1000.0, 625.0, (0.5, 0.5), (120, 160))
    session = Session(tmp_path, save_images=False)
    session.calibration = SimpleNamespace(views={"ap": ViewCalibration("ap", g.shape, NoDistortion(),
                                                                       g.projection_matrix, [])})
    link = IgtlLink("server", port=0)
    stream = SlicerStream(session, link)
    image = FluoroImage(np.zeros(g.shape, np.uint16), pixel_spacing_mm=(0.5, 0.5), sid_mm=1000.0)
    M = stream.image_to_ras("ap", image)
    uv = np.array([[0.0, 0.0], [159.0, 0.0], [0.0, 119.0], [80.5, 60.25]])
    got = (M @ np.column_stack([uv, np.zeros(4), np.ones(4)]).T).T[:, :3]
    truth = g.pixel_to_detector_mm(uv) @ stream.T_ras_cage[:3, :3].T + stream.T_ras_cage[:3, 3]
    assert np.abs(got - truth).max() < 1e-3
    assert np.linalg.norm(M[:3, 0]) == pytest.approx(0.5, abs=1e-6)
    # another image size than the calibrated one: not placed, only its spacing
    small = FluoroImage(np.zeros((10, 20), np.uint16), pixel_spacing_mm=(0.3, 0.4))
    assert np.allclose(stream.image_to_ras("ap", small), np.diag([0.3, 0.4, 1.0, 1.0]))
    link.close()


class Joints:
    """A control process stand-in: each read is a new control cycle, the guide moving 0.1 mm per read."""

    def __init__(self, kin, fail_after=None):
        self.kin, self.reads, self.fail_after = kin, 0, fail_after
        self.lock = threading.Lock()
        self.given: dict[float, np.ndarray] = {}

    def __call__(self):
        with self.lock:
            self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                raise OSError("shared memory gone")
            t, q = 1000.0 + self.reads, _q(self.kin, 0.1 * self.reads)
            self.given[t] = q
            return t, q


def test_feed_streams_each_new_control_cycle_on_its_own_thread(rig, kin):
    rig.session.set_robot_state({"q": _q(kin, -5.0).tolist()})       # before the feed: the state path
    assert rig.stream.poses_sent == 1
    sent = []
    rig.stream.on_pose_sent = lambda T, t: sent.append((t, T))
    joints = Joints(kin)
    rig.stream.start_feed(joints)
    try:
        assert _until(lambda: len(sent) >= 5)
        rig.session.set_robot_state({"q": _q(kin, -9.0).tolist()})   # ignored while the feed runs
    finally:
        rig.stream.stop_feed()
    n = len(sent)
    assert all(t is not None for t, _ in sent[:n])
    T_ras_cage = rig.stream.T_ras_cage
    for t, T in sent[:n]:       # each pose is the guide at the joints of the cycle it names
        assert np.allclose(T, T_ras_cage @ rig.frames.T_cage0_base @ kin.forward(joints.given[t]), atol=1e-9)
    assert sorted(t for t, _ in sent) == [t for t, _ in sent]        # in cycle order
    last = rig.peer.wait("TRANSFORM", "FluoronavTool")
    assert last is not None
    # the last pose the peer got is one of the feed's, not the ignored -9 mm state
    assert min(np.abs(last.matrix[:3, 3] - T[:3, 3]).max() for _, T in sent) < 1e-3
    reads = joints.reads
    time.sleep(0.1)
    assert joints.reads == reads                                    # stopped means stopped
    rig.clock.t += 1.0
    rig.session.set_robot_state({"q": _q(kin, -9.0).tolist()})       # the state path again
    assert rig.stream.poses_sent == n + 2


def test_feed_source_that_fails_stops_the_feed_and_the_pill_says_so(rig, kin):
    joints = Joints(kin, fail_after=3)
    rig.stream.start_feed(joints)
    try:
        assert _until(lambda: rig.stream.feed_error != "")
    finally:
        rig.stream.stop_feed()
    assert "shared memory gone" in rig.stream.status[1]
    assert rig.stream.poses_sent == 3          # the three good cycles went, nothing after
