"""NDI Combined API framing and replies, as the Polaris / Vega / Aurora API guides describe them.

Pure functions over bytes: no I/O, no threads (the link and the driver do those).

- A command is ASCII ``NAME:params`` followed by the CRC16 of those characters as four
  upper-case hex digits and a carriage return (``INIT:`` -> ``b"INIT:E3A5\\r"``); the colon
  asks the system to check the CRC.
- An ASCII reply is ``text`` + CRC16 (four hex digits) + CR: ``OKAYA896\\r``, ``ERRORxx``…,
  ``WARNINGxx``…, or the reply data (TX, PHSR, PHRQ).
- A BX reply is binary, little-endian: start sequence 0xA5C4, reply length (uint16), header
  CRC16 (over the first four bytes), the body of ``length`` bytes, then the body's CRC16.
  Per handle: handle, handle status (0x01 valid, 0x02 missing, 0x04 disabled); unless
  disabled, for a valid handle Q0 Qx Qy Qz Tx Ty Tz error (float32), then for valid and
  missing handles the port status (uint32) and the frame number (uint32); after all the
  handles the system status (uint16).
- CRC16 is NDI's: polynomial x^16 + x^15 + x^2 + 1 (0x8005), bits reflected, initial value 0
  and no final xor (the "CRC-16/ARC" of CRC catalogues; ``RESET`` -> 0xBE6F, ``OKAY`` -> 0xA896).

Port status bits used here: 0x20 enabled, 0x40 out of volume, 0x80 partially out of volume.
BX and TX are asked with reply option 0x0801: transforms and status (0x0001) plus the
transforms not normally reported (0x0800), so that a tool outside the characterised volume
comes back with its flags instead of as merely "missing".
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import crcmod.predefined
import numpy as np

from core.navigation.tracking import ToolStatus

__all__ = ["crc16", "encode_command", "parse_ascii_reply", "parse_bx", "parse_tx", "parse_phsr",
           "BxHandle", "BxReply", "NdiProtocolError", "NdiErrorReply", "tool_status",
           "pose_from_quaternion", "REPLY_OPTION", "BX_START", "HANDLE_VALID", "HANDLE_MISSING",
           "HANDLE_DISABLED", "PORT_ENABLED", "PORT_OUT_OF_VOLUME", "PORT_PARTIALLY_OUT_OF_VOLUME",
           "ERROR_TEXT", "SYSTEM_STATUS_TEXT"]

crc16 = crcmod.predefined.mkCrcFun("crc-16")   # poly 0x8005 reflected, init 0, no xor out

BX_START = 0xA5C4
REPLY_OPTION = 0x0801
HANDLE_VALID, HANDLE_MISSING, HANDLE_DISABLED = 0x01, 0x02, 0x04
PORT_ENABLED, PORT_OUT_OF_VOLUME, PORT_PARTIALLY_OUT_OF_VOLUME = 0x20, 0x40, 0x80
_HEADER = struct.Struct("<HHH")
_TRANSFORM = struct.Struct("<8f")
_PORT_FRAME = struct.Struct("<II")
MAX_REPLY_BYTES = 16384     # far beyond any BX reply for a few tools: a larger length is noise

# The error codes a technician can act on (API guides, "Error codes"); others print their number.
ERROR_TEXT = {
    0x01: "invalid command", 0x02: "command too long", 0x03: "command too short",
    0x04: "invalid CRC in the command", 0x05: "command timed out", 0x06: "bad COMM settings",
    0x07: "incorrect number of parameters", 0x08: "invalid port handle",
    0x09: "invalid tracking priority", 0x0A: "invalid LED", 0x0B: "invalid LED state",
    0x0C: "command not valid in this mode", 0x0D: "no tool on that port handle",
    0x0E: "port not initialised", 0x0F: "port not enabled", 0x10: "system not initialised",
    0x11: "unable to stop tracking", 0x12: "unable to start tracking",
    0x13: "hardware error during tool initialisation", 0x14: "invalid tool definition (ROM)",
    0x16: "tool already enabled (too many tools of that kind)", 0x23: "invalid reply option",
    0x2A: "not enough memory for the tool definition", 0x2B: "port handle not allocated",
    0x2C: "port handle became unoccupied", 0x2D: "no more port handles available",
    0x31: "invalid input or output state", 0x41: "tool definition file error",
    0x42: "tool characteristics not supported",
}

SYSTEM_STATUS_TEXT = {0x0001: "communication sync error", 0x0002: "too much external infrared",
                      0x0004: "CRC error on a command it received", 0x0010: "hardware failure",
                      0x0020: "hardware configuration changed"}


class NdiProtocolError(ValueError):
    """The bytes are not a well-formed reply (bad CRC, wrong length, garbled fields)."""


class NdiErrorReply(RuntimeError):
    """The system answered ``ERRORxx``: ``code`` is xx."""

    def __init__(self, command: str, code: int):
        self.command, self.code = command, code
        what = ERROR_TEXT.get(code, "see the NDI API guide's error table")
        super().__init__(f"NDI refused {command} (ERROR{code:02X}: {what})")


def encode_command(name: str, params: str = "") -> bytes:
    """``NAME:params`` + its CRC16 as four hex digits + CR (the API guides' command format)."""
    if not name.isalnum() or not name.isupper():
        raise ValueError(f"an NDI command name is upper-case letters and digits, got {name!r}")
    body = f"{name}:{params}".encode("ascii")
    return body + f"{crc16(body):04X}\r".encode("ascii")


def parse_ascii_reply(raw: bytes, command: str = "command") -> str:
    """The text of one ASCII reply (``text`` + CRC16 in hex + CR), CRC checked.

    Raises ``NdiProtocolError`` on a bad frame or CRC and ``NdiErrorReply`` on ``ERRORxx``."""
    if not raw.endswith(b"\r") or len(raw) < 5:
        raise NdiProtocolError(f"incomplete reply to {command} ({len(raw)} bytes, no CR at the end)")
    text, crc_hex = raw[:-5], raw[-5:-1]
    try:
        sent = int(crc_hex.decode("ascii"), 16)
    except ValueError:
        raise NdiProtocolError(f"reply to {command} ends without a CRC") from None
    if crc16(text) != sent:
        raise NdiProtocolError(f"bad CRC on the reply to {command}")
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise NdiProtocolError(f"reply to {command} is not ASCII") from None
    if s.startswith("ERROR"):
        try:
            code = int(s[5:7], 16)
        except ValueError:
            raise NdiProtocolError(f"garbled ERROR reply to {command}: {s!r}") from None
        raise NdiErrorReply(command, code)
    return s


@dataclass(frozen=True)
class BxHandle:
    """One port handle of a BX (or TX) reply; transform values are None unless VALID."""
    handle: int
    handle_status: int
    quaternion: tuple[float, float, float, float] | None = None   # q0 (scalar), qx, qy, qz
    translation_mm: tuple[float, float, float] | None = None
    error_mm: float | None = None
    port_status: int = 0
    frame_number: int | None = None


@dataclass(frozen=True)
class BxReply:
    handles: tuple[BxHandle, ...]
    system_status: int


def bx_header(raw: bytes) -> int:
    """The body length announced by a BX header (six bytes), header CRC checked."""
    if len(raw) < 6:
        raise NdiProtocolError(f"BX header cut short ({len(raw)} of 6 bytes)")
    start, length, crc = _HEADER.unpack_from(raw, 0)
    if start != BX_START:
        raise NdiProtocolError(f"BX reply does not start with A5C4 (got {start:04X})")
    if crc16(raw[:4]) != crc:
        raise NdiProtocolError("bad CRC on the BX header")
    if length > MAX_REPLY_BYTES:
        raise NdiProtocolError(f"BX reply announces {length} bytes, more than any tracker sends")
    return length


def parse_bx(raw: bytes) -> BxReply:
    """A whole BX reply (header + body + body CRC) for reply option 0x0001/0x0801."""
    length = bx_header(raw)
    if len(raw) != 6 + length + 2:
        raise NdiProtocolError(f"BX reply is {len(raw)} bytes, its header announces {6 + length + 2}")
    body = raw[6:6 + length]
    (crc,) = struct.unpack_from("<H", raw, 6 + length)
    if crc16(body) != crc:
        raise NdiProtocolError("bad CRC on the BX reply")
    try:
        return _bx_body(body)
    except struct.error:
        raise NdiProtocolError("BX reply body shorter than its handles need") from None


def _bx_body(body: bytes) -> BxReply:
    n, off = body[0], 1
    handles = []
    for _ in range(n):
        handle, status = body[off], body[off + 1]
        off += 2
        if status == HANDLE_DISABLED:
            handles.append(BxHandle(handle, status))
            continue
        if status not in (HANDLE_VALID, HANDLE_MISSING):
            raise NdiProtocolError(f"BX handle {handle:02X} has an unknown status {status:02X}")
        q = t = err = None
        if status == HANDLE_VALID:
            v = _TRANSFORM.unpack_from(body, off)
            off += _TRANSFORM.size
            q, t, err = tuple(v[:4]), tuple(v[4:7]), v[7]
        port, frame = _PORT_FRAME.unpack_from(body, off)
        off += _PORT_FRAME.size
        handles.append(BxHandle(handle, status, q, t, err, port, frame))
    (system,) = struct.unpack_from("<H", body, off)
    if off + 2 != len(body):
        raise NdiProtocolError(f"BX reply has {len(body) - off - 2} bytes beyond its handles")
    return BxReply(tuple(handles), system)


def _signed(field: str, decimals: int) -> float:
    if len(field) < 2 or field[0] not in "+-" or not field[1:].isdigit():
        raise NdiProtocolError(f"garbled TX number {field!r}")
    return int(field) / 10 ** decimals


def parse_tx(text: str) -> BxReply:
    """A TX reply's text (CRC already checked) for reply option 0x0001/0x0801.

    Per handle, on its own line: handle (2 hex), then ``MISSING``, ``DISABLED`` or the
    transform Q0 Qx Qy Qz (sign + 5 digits, 4 decimals), Tx Ty Tz (sign + 6 digits, 2 decimals,
    mm), error (sign + 5 digits, 4 decimals); then port status and frame number (8 hex each),
    except after DISABLED. The last line is the system status (4 hex)."""
    lines = text.split("\n")
    try:
        n = int(lines[0][:2], 16)
        first = lines[0][2:]
        rows = [first] + lines[1:]
        handles = []
        for row in rows[:n]:
            handle, rest = int(row[:2], 16), row[2:]
            if rest.startswith("DISABLED"):
                handles.append(BxHandle(handle, HANDLE_DISABLED))
                continue
            if rest.startswith("UNOCCUPIED"):    # a wired tool unplugged
                handles.append(BxHandle(handle, HANDLE_MISSING))
                continue
            if rest.startswith("MISSING"):
                status, q, t, err, rest = HANDLE_MISSING, None, None, None, rest[7:]
            else:
                status = HANDLE_VALID
                q = tuple(_signed(rest[i:i + 6], 4) for i in range(0, 24, 6))
                t = tuple(_signed(rest[24 + i:31 + i], 2) for i in range(0, 21, 7))
                err, rest = _signed(rest[45:51], 4), rest[51:]
            if len(rest) != 16:
                raise NdiProtocolError(f"TX handle {handle:02X}: port status and frame number garbled")
            handles.append(BxHandle(handle, status, q, t, err, int(rest[:8], 16), int(rest[8:], 16)))
        if len(rows) != n + 1 or len(rows[n]) != 4:
            raise NdiProtocolError("TX reply has the wrong number of lines for its handles")
        return BxReply(tuple(handles), int(rows[n], 16))
    except (ValueError, IndexError):
        raise NdiProtocolError("garbled TX reply") from None


def parse_phsr(text: str) -> list[tuple[int, int]]:
    """PHSR's reply: [(handle, status bits)], from ``nn`` then ``hhsss`` per handle."""
    try:
        n = int(text[:2], 16)
        if len(text) != 2 + 5 * n:
            raise ValueError
        return [(int(text[2 + 5 * i:4 + 5 * i], 16), int(text[4 + 5 * i:7 + 5 * i], 16)) for i in range(n)]
    except ValueError:
        raise NdiProtocolError(f"garbled PHSR reply {text!r}") from None


def tool_status(h: BxHandle) -> ToolStatus:
    """The tool's status from its handle status and port status bits: out-of-volume flags
    win over a transform (a pose outside the characterised volume is never used)."""
    if h.handle_status == HANDLE_DISABLED:
        return ToolStatus.DISABLED
    if h.port_status & PORT_OUT_OF_VOLUME:
        return ToolStatus.OUT_OF_VOLUME
    if h.port_status & PORT_PARTIALLY_OUT_OF_VOLUME:
        return ToolStatus.PARTIALLY_OUT_OF_VOLUME
    if h.handle_status == HANDLE_VALID:
        return ToolStatus.OK
    return ToolStatus.MISSING


def pose_from_quaternion(q, t) -> np.ndarray | None:
    """4x4 ``T_tracker_tool`` from NDI's unit quaternion (q0 scalar first) and translation (mm);
    None when the quaternion is not close to unit length (a garbled transform)."""
    q = np.asarray(q, dtype=float)
    norm = float(np.linalg.norm(q))
    if not all(math.isfinite(x) for x in (*q, *t)) or abs(norm - 1.0) > 0.01:
        return None
    w, x, y, z = q / norm
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                 [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                 [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = t
    return T
