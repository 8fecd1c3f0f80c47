"""The byte link to an NDI system, TCP (Polaris Vega, port 8765) or serial (Polaris, Aurora),
and one command/reply exchange over it with the reply's framing and CRC checked.

Every failure is an ``NdiLinkError`` subclass or ``NdiErrorReply`` with a one-line message:
silence (``NdiSilence``), a reply cut short (``NdiPartialReply``), a garbled or bad-CRC reply
(``NdiBadReply``), the link itself gone (``NdiLinkDown``). The driver decides what to do.
"""
from __future__ import annotations

import abc
import socket
import time

from devices.ndi.protocol import (BX_START, BxReply, bx_header, NdiErrorReply, NdiProtocolError, encode_command,
                                  parse_ascii_reply, parse_bx, parse_tx)

__all__ = ["Transport", "TcpTransport", "SerialTransport", "NdiLink", "NdiLinkError", "NdiSilence",
           "NdiPartialReply", "NdiBadReply", "NdiLinkDown", "BAUD_CODES"]

# COMM's baud-rate digit (API guides, COMM): 9600 is what the system starts at after a reset
BAUD_CODES = {9600: "0", 14400: "1", 19200: "2", 38400: "3", 57600: "4", 115200: "5",
              921600: "6", 1228739: "7", 230400: "A"}


class NdiLinkError(RuntimeError):
    """The exchange with the NDI system failed; the message says how."""


class NdiSilence(NdiLinkError):
    """No byte of the reply came in time."""


class NdiPartialReply(NdiLinkError):
    """The reply began and stopped before its end."""


class NdiBadReply(NdiLinkError):
    """A whole reply came but its CRC or its fields are wrong."""


class NdiLinkDown(NdiLinkError):
    """The connection is closed or the port is gone."""


class Transport(abc.ABC):
    """Bytes in and out; ``read_some`` returns b"" on a time-out, raises ``NdiLinkDown`` when closed."""
    description = "the NDI system"
    is_serial = False

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def read_some(self, timeout_s: float) -> bytes: ...

    def send_break(self) -> None:
        """Serial only: a break resets the system to 9600 baud."""

    def set_baud(self, baud: int) -> None:
        """Serial only: the host side follows a COMM command."""


class TcpTransport(Transport):
    def __init__(self, host: str, port: int, connect_timeout_s: float = 3.0):
        self.host, self.port = host, int(port)
        self.connect_timeout_s = connect_timeout_s
        self.description = f"the NDI system at {host}:{port}"
        self._sock: socket.socket | None = None

    def open(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as e:
            raise NdiLinkDown(f"cannot reach {self.description} ({_why(e)}): check that it is on, "
                              "its network cable and the address in [tracker]") from e
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def write(self, data: bytes) -> None:
        if self._sock is None:
            raise NdiLinkDown(f"not connected to {self.description}")
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise NdiLinkDown(f"lost the connection to {self.description} ({_why(e)})") from e

    def read_some(self, timeout_s: float) -> bytes:
        if self._sock is None:
            raise NdiLinkDown(f"not connected to {self.description}")
        try:
            self._sock.settimeout(max(timeout_s, 1e-4))
            data = self._sock.recv(4096)
        except socket.timeout:
            return b""
        except OSError as e:
            raise NdiLinkDown(f"lost the connection to {self.description} ({_why(e)})") from e
        if not data:
            raise NdiLinkDown(f"{self.description} closed the connection")
        return data


class SerialTransport(Transport):
    """pyserial; ``port`` is a device path (/dev/ttyUSB0, COM3) or a pyserial URL."""
    is_serial = True

    def __init__(self, port: str):
        self.port = port
        self.description = f"the NDI system on {port}"
        self._ser = None

    def open(self) -> None:
        import serial   # pyserial: only needed for a serial tracker
        try:
            self._ser = serial.serial_for_url(self.port, baudrate=9600, bytesize=8, parity="N",
                                              stopbits=1, timeout=0.05, rtscts=False)
        except (serial.SerialException, ValueError, OSError) as e:
            raise NdiLinkDown(f"cannot open {self.port} ({e}): check the cable and "
                              "tracker.serial_port") from e

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:       # closing a vanished USB adapter may fail any way; it is gone
                pass
        self._ser = None

    def _port(self):
        if self._ser is None:
            raise NdiLinkDown(f"{self.port} is not open")
        return self._ser

    def write(self, data: bytes) -> None:
        import serial
        try:
            self._port().write(data)
        except (serial.SerialException, OSError) as e:
            raise NdiLinkDown(f"cannot write to {self.port} ({e})") from e

    def read_some(self, timeout_s: float) -> bytes:
        import serial
        ser = self._port()
        try:
            ser.timeout = max(timeout_s, 1e-4)
            return ser.read(max(1, ser.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise NdiLinkDown(f"cannot read from {self.port} ({e})") from e

    def send_break(self) -> None:
        import serial
        try:
            self._port().send_break(0.25)
        except (serial.SerialException, OSError):
            pass      # a port without break support (a pty, some adapters): INIT tells

    def set_baud(self, baud: int) -> None:
        self._port().baudrate = baud


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


class NdiLink:
    """Commands and their replies over a ``Transport``, one at a time."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self._buf = bytearray()

    def flush_input(self) -> None:
        """Drop whatever is left of an earlier reply (a late remainder would garble the next)."""
        self._buf.clear()
        while self.transport.read_some(0.0):
            pass

    def send(self, name: str, params: str = "") -> None:
        self.flush_input()
        self.transport.write(encode_command(name, params))

    def command(self, name: str, params: str = "", timeout_s: float = 1.0) -> str:
        """Send ``NAME:params``; the reply's text (CRC checked). ``NdiErrorReply`` on ERRORxx."""
        self.send(name, params)
        return self.read_ascii(name, timeout_s)

    def read_ascii(self, name: str, timeout_s: float) -> str:
        raw = self._read_until_cr(name, time.monotonic() + timeout_s)
        return self._checked(raw, name)

    def bx(self, timeout_s: float, option: int) -> BxReply:
        """BX with ``option``: the parsed binary reply (or an ERROR reply raised)."""
        name = "BX"
        self.send(name, f"{option:04X}")
        deadline = time.monotonic() + timeout_s
        self._fill(2, deadline, name)
        if self._buf[:2] != BX_START.to_bytes(2, "little"):
            # not binary: an ASCII reply (ERRORxx, raised here) or garbage; either ends at a CR
            text = self._checked(self._read_until_cr(name, deadline), name)
            raise NdiBadReply(f"BX answered with text {text[:24]!r}, not a binary reply")
        self._fill(6, deadline, name)
        try:
            length = bx_header(bytes(self._buf[:6]))
        except NdiProtocolError as e:
            self._buf.clear()
            raise NdiBadReply(str(e)) from None
        self._fill(6 + length + 2, deadline, name)
        raw = bytes(self._buf[:6 + length + 2])
        del self._buf[:6 + length + 2]
        try:
            return parse_bx(raw)
        except NdiProtocolError as e:
            raise NdiBadReply(str(e)) from None

    def tx(self, timeout_s: float, option: int) -> BxReply:
        text = self.command("TX", f"{option:04X}", timeout_s)
        try:
            return parse_tx(text)
        except NdiProtocolError as e:
            raise NdiBadReply(str(e)) from None

    def _checked(self, raw: bytes, name: str) -> str:
        try:
            return parse_ascii_reply(raw, name)
        except NdiProtocolError as e:
            raise NdiBadReply(str(e)) from None

    def _fill(self, n: int, deadline: float, name: str) -> None:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self._no_reply(name, deadline, n)
            self._buf += self.transport.read_some(min(left, 0.05))

    def _read_until_cr(self, name: str, deadline: float) -> bytes:
        while True:
            i = self._buf.find(b"\r")
            if i >= 0:
                raw = bytes(self._buf[:i + 1])
                del self._buf[:i + 1]
                return raw
            left = deadline - time.monotonic()
            if left <= 0:
                self._no_reply(name, deadline, None)
            self._buf += self.transport.read_some(min(left, 0.05))

    def _no_reply(self, name: str, deadline: float, expected: int | None):
        got = len(self._buf)
        self._buf.clear()
        if got == 0:
            raise NdiSilence(f"no reply to {name} from {self.transport.description}")
        of = f" of {expected}" if expected else ""
        raise NdiPartialReply(f"reply to {name} from {self.transport.description} stopped after {got}{of} bytes")
