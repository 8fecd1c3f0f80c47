"""OpenIGTLink link to 3D Slicer (OpenIGTLinkIF): the tool pose, the trajectories and the shots.

One thread owns the socket. As a server (the default: Slicer's OpenIGTLinkIF connects as
a client to port 18944) it waits for one peer, a newer connection replacing the older; as
a client it connects to Slicer's server and retries every ``reconnect_s`` after a drop.

Sent (pyigtl's message classes do the encoding):
- ``TRANSFORM`` "FluoronavTool": the guide's pose (tool frame: tip at the origin, axis +z).
- ``POLYDATA`` one per trajectory, named after it: two points and one line cell. Slicer
  shows a POLYDATA as a model, so the plan appears as lines in its 3D view; a POINT
  message would become loose fiducials and lose which entry goes with which target.
- ``IMAGE`` "AP" / "LAT": each shot, one slice, placed on the detector when the caller
  knows where it is, else at the origin with the pixel spacing.
- ``STATUS`` "Heartbeat" every ``heartbeat_s`` (code 1, OK).

Frames: everything is sent in Slicer's RAS, made from the patient LPS of
``core.planning.markups`` (the plan's cage frame turned by the patient axes) by
``LPS_TO_RAS``; the caller hands poses and points already in RAS (``app.igtl``), so that
the stream and an exported ``.mrk.json`` land on each other in Slicer.

Received: the 58-byte header is read here, the body's CRC-64 (ECMA-182 polynomial, the
one OpenIGTLink uses) is checked before pyigtl decodes it: a bad CRC (pyigtl 0.3.4 would
accept it) rejects that message and counts it, the link stays up because the header's
body size still frames the stream. A body over ``MAX_BODY_BYTES`` cannot be skipped
safely and drops the peer. With ``peer_timeout_s`` > 0 a peer silent that long is
dropped (Slicer itself sends nothing unless asked, hence 0 by default; TCP keep-alive
and failed sends catch a dead peer then).

``state`` is "disabled" (not started), "waiting" (no peer), "connected" or "fault"
(cannot listen or connect: ``message`` says why); ``on_state(state, message)`` is called
from the link's thread. No Qt here.
"""
from __future__ import annotations

import logging
import math
import selectors
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import crcmod
import numpy as np
import pyigtl

__all__ = ["IgtlLink", "IgtlError", "crc64", "HEADER", "HEADER_SIZE", "MAX_BODY_BYTES", "LinkCounters",
           "status_message", "TOOL_DEVICE"]

log = logging.getLogger(__name__)

HEADER = struct.Struct("> H 12s 20s I I Q Q")   # version, type, device, seconds, fraction, body size, CRC
HEADER_SIZE = HEADER.size                        # 58
MAX_BODY_BYTES = 256 * 2 ** 20                   # a 3D volume of a few hundred MB is not what a peer sends us
TOOL_DEVICE = "FluoronavTool"
# CRC-64 ECMA-182 as OpenIGTLink computes it: polynomial 0x42F0E1EBA9EA3693, not reflected, init 0, no final xor
crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)


class IgtlError(ValueError):
    """A request the link cannot honour (bad settings, a message it cannot encode); one line."""


@dataclass
class LinkCounters:
    sent: int = 0
    received: int = 0
    rejected_crc: int = 0
    rejected_other: int = 0     # undecodable body, unknown type
    connections: int = 0
    drops: int = 0
    by_type: dict = field(default_factory=dict)


class _StatusMessage(pyigtl.MessageBase):
    """OpenIGTLink STATUS (pyigtl 0.3.4 has none): code, subcode, error name, text."""

    def __init__(self, code: int = 1, text: str = "", device_name: str = "Heartbeat", timestamp=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "STATUS"
        self.code, self.subcode, self.error_name, self.text = int(code), 0, "", str(text)
        self._valid_message = True

    def _pack_content(self):
        return struct.pack("> H q 20s", self.code, self.subcode, self.error_name.encode()[:20]) \
            + self.text.encode("utf-8") + b"\0"


def status_message(text: str = "fluoronav", code: int = 1) -> pyigtl.MessageBase:
    return _StatusMessage(code, text)


class IgtlLink:
    """OpenIGTLink endpoint in its own thread (module docstring). ``send_*`` may be called from any thread;
    the newest message per (type, device) waits to go, so a slow peer sees the latest pose, not a backlog."""

    def __init__(self, mode: str = "server", host: str = "127.0.0.1", port: int = 18944,
                 heartbeat_s: float = 1.0, peer_timeout_s: float = 0.0, reconnect_s: float = 1.0,
                 send_timeout_s: float = 2.0, on_state=None, on_message=None):
        if mode not in ("server", "client"):
            raise IgtlError(f"OpenIGTLink mode must be 'server' or 'client', got {mode!r}")
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise IgtlError(f"OpenIGTLink port must be 0-65535, got {port!r}")
        for name, v in (("heartbeat_s", heartbeat_s), ("reconnect_s", reconnect_s), ("send_timeout_s", send_timeout_s)):
            if not (math.isfinite(v) and v > 0):
                raise IgtlError(f"{name} must be a positive number of seconds, got {v!r}")
        self.mode, self.host, self.port = mode, host, port
        self.heartbeat_s, self.peer_timeout_s = float(heartbeat_s), float(peer_timeout_s)
        self.reconnect_s, self.send_timeout_s = float(reconnect_s), float(send_timeout_s)
        self.on_state, self.on_message = on_state, on_message
        self.counters = LinkCounters()
        self.state, self.message = "disabled", "not started"
        self.latest: dict[tuple[str, str], pyigtl.MessageBase] = {}   # what the peer sent last, by (type, device)
        self._out: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._listener: socket.socket | None = None
        self._peer: socket.socket | None = None
        self._inbox = bytearray()
        self.bound_port: int | None = None

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self.mode == "server":
            try:
                self._listen()
            except OSError as e:
                self._set_state("fault", f"cannot listen on port {self.port} ({e.strerror or e}): "
                                         f"another program has it, or choose another igtl.port")
                raise IgtlError(self.message) from None
        else:
            self._set_state("waiting", f"connecting to {self.host}:{self.port}")
        self._thread = threading.Thread(target=self._run, name="igtl-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close_peer("stopped", count=False)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._set_state("disabled", "stopped")

    def close(self) -> None:
        self.stop()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    # -- sending (any thread) ------------------------------------------------------------------
    def send(self, message: pyigtl.MessageBase) -> bool:
        """Queue ``message`` (replacing an unsent one of the same type and device); False with no peer."""
        if not isinstance(message, pyigtl.MessageBase) or not message.is_valid:
            raise IgtlError(f"not an OpenIGTLink message: {type(message).__name__}")
        if self._peer is None:
            return False
        data = message.pack()
        key = (message.message_type, message.device_name)
        with self._lock:
            self._out.pop(key, None)
            self._out[key] = data
        self._wake()
        return True

    def send_pose(self, T_ras_tool, device: str = TOOL_DEVICE, timestamp: float | None = None) -> bool:
        T = np.asarray(T_ras_tool, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise IgtlError(f"a pose must be a finite 4x4 matrix, got shape {T.shape}")
        return self.send(pyigtl.TransformMessage(T, timestamp=timestamp, device_name=device))

    def send_line(self, device: str, start_ras, end_ras) -> bool:
        pts = np.asarray([start_ras, end_ras], np.float32)
        if pts.shape != (2, 3) or not np.all(np.isfinite(pts)):
            raise IgtlError(f"a trajectory line needs two finite 3D points, got shape {pts.shape}")
        return self.send(pyigtl.PolyDataMessage(points=pts, lines=[2, 0, 1], device_name=_device(device)))

    def send_image(self, device: str, pixels, ijk_to_ras) -> bool:
        """One shot: ``pixels`` (rows, cols), ``ijk_to_ras`` 4x4 (column, row, slice -> RAS mm)."""
        a = np.asarray(pixels)
        if a.ndim != 2 or a.size == 0:
            raise IgtlError(f"a shot must be a 2D image, got shape {a.shape}")
        if a.dtype not in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64):
            a = a.astype(np.float32)
        M = np.asarray(ijk_to_ras, float)
        if M.shape != (4, 4) or not np.all(np.isfinite(M)):
            raise IgtlError("an image's placement must be a finite 4x4 matrix")
        return self.send(pyigtl.ImageMessage(a[None, :, :], ijk_to_world_matrix=M, world_coordinate_system="ras",
                                             device_name=_device(device)))

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass      # already awake (the pipe is full) or closed

    # -- the thread ----------------------------------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(2)
        s.setblocking(False)
        self._listener = s
        self.bound_port = s.getsockname()[1]
        self._set_state("waiting", f"waiting for Slicer on port {self.bound_port}")

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self._listener is not None:
            sel.register(self._listener, selectors.EVENT_READ, "listen")
        next_connect = 0.0
        last_beat = last_heard = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.mode == "client" and self._peer is None and now >= next_connect:
                    if self._connect():
                        sel.register(self._peer, selectors.EVENT_READ, "peer")
                        last_heard = last_beat = now
                        self._send_raw(status_message().pack())
                    else:
                        next_connect = now + self.reconnect_s
                timeout = self.heartbeat_s if self._peer is not None else self.reconnect_s
                for key, _ in sel.select(timeout=min(timeout, 0.25)):
                    if key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    elif key.data == "listen":
                        self._accept(sel)
                        last_heard = last_beat = time.monotonic()
                    elif key.data == "peer":
                        if self._read(sel):
                            last_heard = time.monotonic()
                if self._peer is not None:
                    self._flush(sel)
                now = time.monotonic()
                if self._peer is not None and now - last_beat >= self.heartbeat_s:
                    last_beat = now
                    if self._send_raw(status_message().pack()) is False:
                        self._drop(sel, "the peer stopped taking data")
                if self._peer is not None and self.peer_timeout_s > 0 and now - last_heard > self.peer_timeout_s:
                    self._drop(sel, f"the peer was silent for over {self.peer_timeout_s:g} s")
        except Exception as e:       # a bug here must not die silently: the pill says it
            log.exception("OpenIGTLink link thread failed")
            self._set_state("fault", f"the link stopped: {type(e).__name__}: {e}")
        finally:
            sel.close()

    def _connect(self) -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(min(self.reconnect_s, 2.0))
        try:
            s.connect((self.host, self.port))
        except OSError as e:
            s.close()
            self._set_state("waiting", f"no Slicer at {self.host}:{self.port} ({e.strerror or e}); retrying")
            return False
        self._adopt(s, f"{self.host}:{self.port}")
        return True

    def _accept(self, sel) -> None:
        try:
            s, addr = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        if self._peer is not None:
            self._drop(sel, "a new connection replaced it", wait=False)
        self._adopt(s, f"{addr[0]}:{addr[1]}")
        sel.register(self._peer, selectors.EVENT_READ, "peer")
        self._send_raw(status_message().pack())

    def _adopt(self, s: socket.socket, who: str) -> None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # a pose must not wait for Nagle
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.settimeout(self.send_timeout_s)
        self._inbox = bytearray()
        with self._lock:
            self._out.clear()         # what was queued for the previous peer is stale
        self._peer = s
        self.counters.connections += 1
        self._set_state("connected", f"Slicer connected ({who})")

    def _drop(self, sel, why: str, wait: bool = True) -> None:
        if self._peer is not None:
            try:
                sel.unregister(self._peer)
            except (KeyError, ValueError):
                pass
        self._close_peer(why)
        if wait:
            where = f"port {self.bound_port}" if self.mode == "server" else f"{self.host}:{self.port}"
            self._set_state("waiting", f"{why}; waiting for Slicer on {where}")

    def _close_peer(self, why: str, count: bool = True) -> None:
        if self._peer is None:
            return
        log.info("OpenIGTLink peer dropped: %s", why)
        try:
            self._peer.close()
        except OSError:
            pass
        self._peer = None
        if count:
            self.counters.drops += 1

    def _send_raw(self, data: bytes) -> bool | None:
        try:
            self._peer.sendall(data)
            self.counters.sent += 1
            return True
        except (OSError, AttributeError):
            return False

    def _flush(self, sel) -> None:
        while True:
            with self._lock:
                if not self._out:
                    return
                _, data = self._out.popitem(last=False)
            if not self._send_raw(data):
                self._drop(sel, "sending to the peer failed (it closed or stopped reading)")
                return

    def _read(self, sel) -> bool:
        try:
            chunk = self._peer.recv(1 << 16)
        except (BlockingIOError, socket.timeout):
            return False
        except OSError as e:
            self._drop(sel, f"the connection broke ({e.strerror or e})")
            return False
        if not chunk:
            self._drop(sel, "the peer closed the connection")
            return False
        self._inbox += chunk
        while len(self._inbox) >= HEADER_SIZE:
            version, mtype, device, sec, frac, size, crc = HEADER.unpack_from(self._inbox)
            if size > MAX_BODY_BYTES:
                self.counters.rejected_other += 1
                self._drop(sel, f"the peer sent a {size}-byte message (over {MAX_BODY_BYTES}): not OpenIGTLink?")
                return True
            if len(self._inbox) < HEADER_SIZE + size:
                break
            header = bytes(self._inbox[:HEADER_SIZE])
            body = bytes(self._inbox[HEADER_SIZE:HEADER_SIZE + size])
            del self._inbox[:HEADER_SIZE + size]
            self._receive(header, body, crc)
        return True

    def _receive(self, header: bytes, body: bytes, crc: int) -> None:
        fields = pyigtl.MessageBase.parse_header(header)
        if crc64(body) != crc:
            self.counters.rejected_crc += 1
            log.warning("OpenIGTLink %s %r from the peer rejected: bad CRC", fields["message_type"],
                        fields["device_name"])
            return
        message = pyigtl.MessageBase.create_message(fields["message_type"]) \
            if fields["message_type"] != "STATUS" else _StatusMessage()
        if message is None:
            self.counters.rejected_other += 1
            return
        try:
            if isinstance(message, _StatusMessage):
                message.device_name, message.timestamp = fields["device_name"], fields["timestamp"]
                code, _, _ = struct.unpack_from("> H q 20s", body)
                message.code, message.text = code, body[30:].split(b"\0", 1)[0].decode("utf-8", "replace")
            else:
                message.unpack(fields, body)
        except Exception as e:        # pyigtl raises what struct/numpy raise on a malformed body
            self.counters.rejected_other += 1
            log.warning("OpenIGTLink %s from the peer could not be decoded: %s", fields["message_type"], e)
            return
        self.counters.received += 1
        t = fields["message_type"]
        self.counters.by_type[t] = self.counters.by_type.get(t, 0) + 1
        self.latest[(t, fields["device_name"])] = message
        if self.on_message is not None:
            self.on_message(message)

    def _set_state(self, state: str, message: str) -> None:
        if (state, message) == (self.state, self.message):
            return
        self.state, self.message = state, message
        if self.on_state is not None:
            try:
                self.on_state(state, message)
            except Exception:
                log.exception("OpenIGTLink state listener failed")


def _device(name: str) -> str:
    """An OpenIGTLink device name: at most 20 bytes of ASCII."""
    text = "".join(c if 32 <= ord(c) < 127 else "_" for c in str(name)).strip() or "Unnamed"
    return text.encode("ascii")[:20].decode("ascii")
