"""OpenIGTLink link against pyigtl peers on 127.0.0.1: poses, CRC rejection, heartbeats, drops and reconnects."""
import socket
import struct
import time

import numpy as np
import pyigtl
import pytest

from devices.igtl_link import HEADER, HEADER_SIZE, IgtlError, IgtlLink, crc64
from waiting import until as _until


def _pose(i):
    a = 0.1 * i
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = [10.0 + i, -20.5, 33.25]
    return T


@pytest.fixture
def link():
    lk = IgtlLink("server", port=0, heartbeat_s=0.2)
    lk.start()
    yield lk
    lk.close()


def _client(port):
    return pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=True)


def _raw_peer(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    return s


def _read_messages(sock, seconds=0.5, enough=None):
    """(type, device, body) of every message that arrives in ``seconds``; with ``enough`` (a
    test on the messages so far) as soon as it holds, ``seconds`` then being only the deadline."""
    buf, out, end = b"", [], time.monotonic() + seconds
    sock.settimeout(0.05)
    while time.monotonic() < end and not (enough and enough(out)):
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= HEADER_SIZE:
            _, t, d, _, _, size, crc = HEADER.unpack_from(buf)
            if len(buf) < HEADER_SIZE + size:
                break
            body = buf[HEADER_SIZE:HEADER_SIZE + size]
            assert crc64(body) == crc
            out.append((t.rstrip(b"\0").decode(), d.rstrip(b"\0").decode(), body))
            buf = buf[HEADER_SIZE + size:]
    return out


def test_crc64_is_ecma182_as_openigtlink_uses_it():
    assert crc64(b"123456789") == 0x6C40DF5F0B497347        # the CRC-64/ECMA-182 check value
    data = pyigtl.TransformMessage(_pose(3), device_name="T").pack()
    assert struct.unpack_from("> Q", data, 50)[0] == crc64(data[HEADER_SIZE:])


def test_pyigtl_client_receives_the_pose(link):
    client = _client(link.bound_port)
    try:
        assert _until(lambda: link.connected)
        for i in range(5):
            assert link.send_pose(_pose(i))
            msg = client.wait_for_message("FluoronavTool", timeout=10)
            assert msg is not None
            assert np.allclose(msg.matrix, _pose(i), atol=1e-5)   # float32 on the wire
    finally:
        client.stop()


def test_heartbeat_line_and_image_reach_the_peer(link):
    peer = _raw_peer(link.bound_port)
    try:
        assert _until(lambda: link.connected)
        link.send_line("L4 left", [1, 2, 3], [4, 5, 6])
        img = (np.arange(12, dtype=np.uint16).reshape(3, 4))
        link.send_image("AP", img, np.diag([0.2, 0.3, 1.0, 1.0]))
        got = _read_messages(peer, 10.0, enough=lambda m: [t for t, _, _ in m].count("STATUS") >= 2
                             and {"POLYDATA", "IMAGE"} <= {t for t, _, _ in m})
        types = [t for t, _, _ in got]
        assert types.count("STATUS") >= 2          # the first on connect, then every 0.2 s
        line = next(b for t, d, b in got if t == "POLYDATA" and d == "L4 left")
        npoints = struct.unpack_from("> I", line)[0]
        assert npoints == 2
        image = next(b for t, d, b in got if t == "IMAGE" and d == "AP")
        assert struct.unpack_from("> H H H", image, 6) == (4, 3, 1)     # columns, rows, one slice
        assert image[-24:] == img.astype("<u2").tobytes()
    finally:
        peer.close()


def test_bad_crc_is_rejected_and_the_link_keeps_working(link):
    peer = _raw_peer(link.bound_port)
    try:
        assert _until(lambda: link.connected)
        bad = bytearray(pyigtl.TransformMessage(_pose(1), device_name="FromSlicer").pack())
        bad[-1] ^= 0x40                      # one bit of the body flipped after the CRC was computed
        good = pyigtl.TransformMessage(_pose(2), device_name="FromSlicer").pack()
        peer.sendall(bytes(bad) + good)
        assert _until(lambda: link.counters.received >= 1)
        assert link.counters.rejected_crc == 1
        assert np.allclose(link.latest[("TRANSFORM", "FromSlicer")].matrix, _pose(2), atol=1e-5)
        assert link.connected
        link.send_pose(_pose(7))
        got = [b for t, d, b in _read_messages(peer, 10.0, enough=lambda m: any(t == "TRANSFORM" for t, _, _ in m))
               if t == "TRANSFORM"]
        assert len(got) == 1 and np.allclose(struct.unpack("> 12f", got[0])[9:], _pose(7)[:3, 3], atol=1e-5)
    finally:
        peer.close()


def test_peer_drops_and_comes_back_the_stream_resumes(link):
    first = _client(link.bound_port)
    assert _until(lambda: link.connected)
    first.stop()
    assert _until(lambda: link.state == "waiting")
    assert not link.send_pose(_pose(1))             # nobody to send to: said, not queued
    second = _client(link.bound_port)
    try:
        assert _until(lambda: link.connected)
        assert link.counters.connections == 2 and link.counters.drops == 1
        assert _until(lambda: (link.send_pose(_pose(4)) and
                               (m := second.wait_for_message("FluoronavTool", timeout=0.2)) is not None
                               and np.allclose(m.matrix, _pose(4), atol=1e-5)))
    finally:
        second.stop()


def test_a_silent_peer_is_dropped_after_the_timeout():
    lk = IgtlLink("server", port=0, heartbeat_s=0.1, peer_timeout_s=0.3)
    lk.start()
    peer = _raw_peer(lk.bound_port)
    try:
        assert _until(lambda: lk.connected)
        assert _until(lambda: lk.state == "waiting")
        assert "silent" in lk.message and lk.counters.drops == 1
    finally:
        peer.close()
        lk.close()


class _RestartableServer:
    """A bare OpenIGTLink peer that listens, collects what arrives, and can be killed and started again."""

    def __init__(self):
        self.port = None
        self.sock = None
        self.listen()

    def listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port or 0))
        s.listen(1)
        s.settimeout(3.0)
        self.port, self.sock = s.getsockname()[1], s

    def accept(self):
        conn, _ = self.sock.accept()
        return conn

    def close(self):
        self.sock.close()


def test_client_mode_reconnects_after_the_server_restarts():
    server = _RestartableServer()
    lk = IgtlLink("client", host="127.0.0.1", port=server.port, heartbeat_s=0.2, reconnect_s=0.1)
    lk.start()
    try:
        conn = server.accept()
        assert _until(lambda: lk.connected)
        conn.close()
        server.close()                               # Slicer quits
        assert _until(lambda: lk.state == "waiting")
        assert _until(lambda: "retrying" in lk.message)   # attempts fail while it is gone
        server.listen()                              # Slicer is back on the same port
        conn = server.accept()
        assert _until(lambda: lk.connected)
        assert _until(lambda: lk.send_pose(_pose(5)))
        got = [b for t, _, b in _read_messages(conn, 10.0, enough=lambda m: any(t == "TRANSFORM" for t, _, _ in m))
               if t == "TRANSFORM"]
        assert got and np.allclose(struct.unpack("> 12f", got[-1])[9:], _pose(5)[:3, 3], atol=1e-5)
        conn.close()
    finally:
        lk.close()
        server.close()


def test_bad_settings_and_input_are_one_line():
    with pytest.raises(IgtlError, match="mode"):
        IgtlLink("both")
    with pytest.raises(IgtlError, match="port"):
        IgtlLink(port=70000)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        lk = IgtlLink(port=taken.getsockname()[1])
        with pytest.raises(IgtlError, match="cannot listen"):
            lk.start()
        assert lk.state == "fault"
    finally:
        taken.close()
    lk = IgtlLink(port=0)
    with pytest.raises(IgtlError, match="4x4"):
        lk.send_pose(np.eye(3))
    with pytest.raises(IgtlError, match="2D image"):
        lk.send_image("AP", np.zeros((2, 2, 2)), np.eye(4))
    lk.close()


def test_oversized_header_drops_the_peer_but_not_the_link(link):
    peer = _raw_peer(link.bound_port)
    try:
        assert _until(lambda: link.connected)
        peer.sendall(HEADER.pack(1, b"TRANSFORM", b"x", 0, 0, 2 ** 40, 0))
        assert _until(lambda: link.state == "waiting")
        assert link.counters.rejected_other == 1
        again = _raw_peer(link.bound_port)
        assert _until(lambda: link.connected)
        again.close()
    finally:
        peer.close()
