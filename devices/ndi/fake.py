"""A fake NDI system on loopback TCP (or a pty, as a serial port) for tests, the tracker
panel's screenshots and trying the driver without a camera.

It speaks enough of the Combined API: INIT, COMM, PHSR, PHF, PHRQ, PVWR, PINIT, PENA,
TSTART, TSTOP, BX and TX (reply option 0x0001 / 0x0801), VER, BEEP, with the CRC16 checked
on every command (ERROR04 when wrong) and sent on every reply. A passive tool is named by
its ROM: the bytes ``FAKEROM:<name>`` at the start of the file (``fake_rom(name)``); wired
tools listed at construction are on handles 0x0A, 0x0B, … from the start.

Tests move tools (``set_pose``), change what the camera sees (``set_state``: "ok",
"missing", "out_of_volume", "partially_out_of_volume", "disabled") and make it misbehave on
tracking replies (``misbehave``: "bad_crc", "partial", "silent", "error", "freeze",
"garbage"; optionally for the next ``count`` replies only); ``stop()``/``start()`` take it
off the network and back on the same port.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import numpy as np

from devices.ndi.protocol import (BX_START, HANDLE_DISABLED, HANDLE_MISSING, HANDLE_VALID,
                                  PORT_ENABLED, PORT_OUT_OF_VOLUME, PORT_PARTIALLY_OUT_OF_VOLUME, crc16)

__all__ = ["FakeNdiServer", "fake_rom", "quaternion_from_matrix", "STATES", "MISBEHAVIOURS"]

STATES = ("ok", "missing", "out_of_volume", "partially_out_of_volume", "disabled")
MISBEHAVIOURS = ("bad_crc", "partial", "silent", "error", "freeze", "garbage")
ROM_TAG = b"FAKEROM:"
WIRED_FIRST_HANDLE = 0x0A


def fake_rom(name: str, size: int = 752) -> bytes:
    """A stand-in tool definition file the fake recognises (752 bytes, as a passive .rom)."""
    return (ROM_TAG + name.encode("ascii")).ljust(size, b"\x5a")


def quaternion_from_matrix(R) -> np.ndarray:
    """(q0, qx, qy, qz), q0 >= 0, of a rotation matrix (Shepperd's method)."""
    R = np.asarray(R, float)[:3, :3]
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0] * 4
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.array(q)
    return q if q[0] >= 0 else -q


class _Tool:
    def __init__(self, handle: int, name: str, wired: bool):
        self.handle, self.name, self.wired = handle, name, wired
        self.rom = bytearray()
        self.initialised = self.enabled = False


class _Seen:
    """What the camera sees of one tool, kept by name across INITs and reconnections."""

    def __init__(self):
        self.q = np.array([1.0, 0.0, 0.0, 0.0])
        self.t = np.zeros(3)
        self.error_mm = 0.1
        self.state = "ok"


class FakeNdiServer:
    """See the module docstring. ``FakeNdiServer(serial=True)`` listens on a pty instead:
    ``server.serial_port`` is the device path to give the driver."""

    def __init__(self, wired=(), port: int = 0, serial: bool = False, system_status: int = 0):
        self.serial = serial
        self.lock = threading.Lock()
        self.tools: dict[int, _Tool] = {}
        self.seen: dict[str, _Seen] = {}
        for i, name in enumerate(wired):
            self.tools[WIRED_FIRST_HANDLE + i] = _Tool(WIRED_FIRST_HANDLE + i, name, wired=True)
        self._next_handle = 1
        self.tracking = self.initialised = False
        self.frame_number = 1000
        self.system_status = system_status
        self.commands: list[str] = []       # every command received, CRC stripped
        self.replies_sent = 0
        self._mode: str | None = None
        self._mode_count: int | None = None
        self._running = False
        self._listener: socket.socket | None = None
        self._client = None
        self._thread: threading.Thread | None = None
        self._port = port
        self._master = self._slave = None
        self.serial_port = ""
        if serial:
            self._master, self._slave = os.openpty()
            self.serial_port = os.ttyname(self._slave)

    # -- control -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "FakeNdiServer":
        self._running = True
        if not self.serial:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", self._port))
            ls.listen(1)
            ls.settimeout(0.05)
            self._port = ls.getsockname()[1]
            self._listener = ls
        self._thread = threading.Thread(target=self._serve, name="fake-ndi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Off the network: the listener and any connection closed (the port can be reused)."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._thread = None
        for s in (self._client, self._listener):
            if s is not None and not self.serial:
                try:
                    s.close()
                except OSError:
                    pass
        self._client = self._listener = None
        with self.lock:
            self.tracking = False

    def close(self) -> None:
        self.stop()
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _seen(self, name: str) -> _Seen:
        return self.seen.setdefault(name, _Seen())

    def loaded(self) -> list[str]:
        """Names of the tools enabled now (passive ones once their ROM is loaded)."""
        with self.lock:
            return [t.name for _, t in sorted(self.tools.items()) if t.enabled]

    def set_pose(self, name: str, T, error_mm: float = 0.1) -> None:
        """Where the camera sees tool ``name`` (also before it is loaded)."""
        T = np.asarray(T, float)
        with self.lock:
            s = self._seen(name)
            s.q, s.t, s.error_mm = quaternion_from_matrix(T), T[:3, 3].copy(), float(error_mm)

    def set_state(self, name: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        with self.lock:
            self._seen(name).state = state

    def misbehave(self, mode: str | None, count: int | None = None) -> None:
        """Misbehave on tracking replies (``None``: behave); for ``count`` replies, or until told."""
        if mode is not None and mode not in MISBEHAVIOURS:
            raise ValueError(f"misbehaviour must be one of {MISBEHAVIOURS}, got {mode!r}")
        with self.lock:
            self._mode, self._mode_count = mode, count

    # -- serving -------------------------------------------------------------------------
    def _serve(self) -> None:
        buf = bytearray()
        while self._running:
            try:
                data = self._recv()
            except OSError:
                data = None
            if data is None:          # connection gone: wait for the next one
                self._drop_client()
                buf.clear()
                continue
            buf += data
            while b"\r" in buf:
                i = buf.index(b"\r")
                line, buf = bytes(buf[:i]), buf[i + 1:]
                reply = self._handle(line)
                if reply:
                    try:
                        self._send(reply)
                    except OSError:
                        self._drop_client()

    def _recv(self) -> bytes | None:
        """Bytes received (b"" when none yet); None when the connection closed."""
        if self.serial:
            import select
            r, _, _ = select.select([self._master], [], [], 0.05)
            return os.read(self._master, 4096) if r else b""
        if self._client is None:
            try:
                self._client, _ = self._listener.accept()
                self._client.settimeout(0.05)
            except (socket.timeout, OSError):
                return b""
        try:
            data = self._client.recv(4096)
        except socket.timeout:
            return b""
        return data if data else None

    def _send(self, data: bytes) -> None:
        if self.serial:
            os.write(self._master, data)
        elif self._client is not None:
            self._client.sendall(data)
        self.replies_sent += 1

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
        self._client = None

    # -- the commands ----------------------------------------------------------------------
    def _handle(self, line: bytes) -> bytes | None:
        text = line.decode("ascii", "replace")
        if ":" not in text:
            return _ascii("ERROR01")
        body, _, rest = text.partition(":")
        params, crc_hex = rest[:-4], rest[-4:]
        if len(rest) < 4 or f"{crc16((body + ':' + params).encode('ascii')):04X}" != crc_hex:
            return _ascii("ERROR04")
        with self.lock:
            self.commands.append(f"{body}:{params}")
            fn = getattr(self, "_cmd_" + body, None)
            if fn is None:
                return _ascii("ERROR01")
            return fn(params)

    def _cmd_INIT(self, p):
        """A reset: passive tools' handles are gone, wired tools need PINIT and PENA again."""
        self.initialised, self.tracking = True, False
        self.tools = {h: t for h, t in self.tools.items() if t.wired}
        for t in self.tools.values():
            t.initialised = t.enabled = False
        self._next_handle = 1
        return _ascii("OKAY")

    def _cmd_COMM(self, p):
        return _ascii("OKAY") if len(p) == 5 else _ascii("ERROR07")

    def _cmd_VER(self, p):
        return _ascii("Fake NDI Combined API system\nAPI revision: G.001.005")

    def _cmd_BEEP(self, p):
        return _ascii("1")

    def _cmd_PHSR(self, p):
        want = int(p or "0", 16)
        pick = {0: lambda t: True, 1: lambda t: False, 2: lambda t: not t.initialised,
                3: lambda t: t.initialised and not t.enabled, 4: lambda t: t.enabled}.get(want)
        if pick is None:
            return _ascii("ERROR07")
        hs = [t for h, t in sorted(self.tools.items()) if pick(t)]
        return _ascii(f"{len(hs):02X}" + "".join(f"{t.handle:02X}{self._port_bits(t):03X}" for t in hs))

    def _cmd_PHF(self, p):
        return _ascii("OKAY")

    def _cmd_PHRQ(self, p):
        if len(p) != 14:
            return _ascii("ERROR07")
        while self._next_handle in self.tools:
            self._next_handle += 1
        h = self._next_handle
        self.tools[h] = _Tool(h, f"handle_{h:02X}", wired=False)
        return _ascii(f"{h:02X}")

    def _cmd_PVWR(self, p):
        try:
            h, addr, data = int(p[:2], 16), int(p[2:6], 16), bytes.fromhex(p[6:])
        except ValueError:
            return _ascii("ERROR07")
        tool = self.tools.get(h)
        if tool is None:
            return _ascii("ERROR08")
        if len(data) != 64 or addr % 64:
            return _ascii("ERROR07")
        tool.rom[addr:addr + 64] = data.ljust(64, b"\0")
        if tool.rom.startswith(ROM_TAG):
            tool.name = bytes(tool.rom[len(ROM_TAG):]).split(b"\x5a")[0].split(b"\0")[0].decode("ascii")
        return _ascii("OKAY")

    def _cmd_PINIT(self, p):
        tool = self.tools.get(int(p or "0", 16))
        if tool is None:
            return _ascii("ERROR08")
        if not tool.wired and not tool.rom.startswith(ROM_TAG):
            return _ascii("ERROR14")       # no valid tool definition loaded
        tool.initialised = True
        return _ascii("OKAY")

    def _cmd_PENA(self, p):
        tool = self.tools.get(int(p[:2] or "0", 16))
        if tool is None:
            return _ascii("ERROR08")
        if not tool.initialised:
            return _ascii("ERROR0E")
        if p[2:] not in ("S", "D", "B"):
            return _ascii("ERROR09")
        tool.enabled = True
        return _ascii("OKAY")

    def _cmd_TSTART(self, p):
        if not self.initialised:
            return _ascii("ERROR10")
        self.tracking = True
        return _ascii("OKAY")

    def _cmd_TSTOP(self, p):
        self.tracking = False
        return _ascii("OKAY")

    def _port_bits(self, t: _Tool) -> int:
        bits = 0x01 | (0x10 if t.initialised else 0) | (PORT_ENABLED if t.enabled else 0)
        state = self._seen(t.name).state
        if t.enabled and state == "out_of_volume":
            bits |= PORT_OUT_OF_VOLUME
        elif t.enabled and state == "partially_out_of_volume":
            bits |= PORT_PARTIALLY_OUT_OF_VOLUME
        return bits

    def _tracked(self):
        """[(tool, handle status)] in handle order, the frame number moved on (unless frozen)."""
        if self._mode != "freeze":
            self.frame_number += 1
        out = []
        for h, t in sorted(self.tools.items()):
            state = self._seen(t.name).state
            if not t.enabled or state == "disabled":
                out.append((t, HANDLE_DISABLED))
            elif state == "missing":
                out.append((t, HANDLE_MISSING))
            else:    # out of volume still reported, with its flag: reply option 0x0800
                out.append((t, HANDLE_VALID))
        return out

    def _misbehaviour(self) -> str | None:
        mode = self._mode
        if mode is not None and self._mode_count is not None:
            self._mode_count -= 1
            if self._mode_count <= 0:
                self._mode, self._mode_count = None, None
        return mode

    def _tracking_reply(self, reply: bytes, crc_len: int) -> bytes | None:
        mode = self._misbehaviour()
        if mode == "silent":
            return None
        if mode == "error":
            return _ascii("ERROR0C")
        if mode == "bad_crc":
            return reply[:-crc_len - 1] + bytes([reply[-crc_len - 1] ^ 0x01]) + reply[-crc_len:]
        if mode == "partial":
            return reply[:len(reply) // 2]
        if mode == "garbage":
            return bytes(range(0x40, 0x40 + 20)) + b"\r"     # a wrong baud rate looks like this
        return reply

    def _cmd_BX(self, p):
        if not self.tracking:
            return _ascii("ERROR0C")
        body = bytearray()
        tracked = self._tracked()
        body.append(len(tracked))
        for t, hs in tracked:
            body += bytes([t.handle, hs])
            if hs == HANDLE_DISABLED:
                continue
            if hs == HANDLE_VALID:
                v = self._seen(t.name)
                body += struct.pack("<8f", *v.q, *v.t, v.error_mm)
            body += struct.pack("<II", self._port_bits(t), self.frame_number)
        body += struct.pack("<H", self.system_status)
        header = struct.pack("<HH", BX_START, len(body))
        reply = header + struct.pack("<H", crc16(header)) + bytes(body) + struct.pack("<H", crc16(bytes(body)))
        # a corrupted body byte before the 2-byte CRC; "partial" cuts the reply in half
        return self._tracking_reply(reply, 2)

    def _cmd_TX(self, p):
        if not self.tracking:
            return _ascii("ERROR0C")
        tracked = self._tracked()
        rows = []
        for t, hs in tracked:
            row = f"{t.handle:02X}"
            if hs == HANDLE_DISABLED:
                rows.append(row + "DISABLED")
                continue
            if hs == HANDLE_VALID:
                v = self._seen(t.name)
                row += "".join(_fixed(x, 4, 5) for x in v.q) + "".join(_fixed(x, 2, 6) for x in v.t)
                row += _fixed(v.error_mm, 4, 5)
            else:
                row += "MISSING"
            rows.append(row + f"{self._port_bits(t):08X}{self.frame_number:08X}")
        text = f"{len(rows):02X}" + "".join(r + "\n" for r in rows) + f"{self.system_status:04X}"
        return self._tracking_reply(_ascii(text), 5)

    @staticmethod
    def tx_values(T, error_mm: float = 0.1):
        """What a TX reply carries for pose ``T``: (quaternion, translation, error) rounded as sent."""
        q = quaternion_from_matrix(T)
        return (np.round(q, 4), np.round(np.asarray(T, float)[:3, 3], 2), round(error_mm, 4))


def _fixed(v: float, decimals: int, digits: int) -> str:
    n = int(round(v * 10 ** decimals))
    n = max(-(10 ** digits - 1), min(10 ** digits - 1, n))
    return f"{'+' if n >= 0 else '-'}{abs(n):0{digits}d}"


def _ascii(text: str) -> bytes:
    b = text.encode("ascii")
    return b + f"{crc16(b):04X}\r".encode("ascii")
