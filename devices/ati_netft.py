"""ATI Net F/T over its UDP Raw Data Transfer (RDT) protocol (ATI Net F/T manual, section 9).

Request (8 bytes, network order): uint16 header 0x1234, uint16 command, uint32 sample
count (0 = stream until stopped). Commands: 0 stop, 2 start high-speed real-time
streaming, 0x42 set software bias. Response records (36 bytes): uint32 rdt_sequence,
uint32 ft_sequence, uint32 status, int32 Fx Fy Fz Tx Ty Tz (counts). Forces are
counts / counts_per_force (N), torques counts / counts_per_torque (N*m); the default
1,000,000 counts per unit is ATI's, but read the sensor's calibration page.

A receiver thread keeps the newest sample; gaps in ``rdt_sequence`` count lost packets.
``read()`` raises ``DeviceError`` when no packet came for ``timeout_s``.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from devices.base import DeviceError, DeviceStatus
from devices.force_sensor import ForceSensor, WrenchSample

__all__ = ["RDT_PORT", "AtiNetFt", "pack_request", "parse_records", "RECORD"]

RDT_PORT = 49152
HEADER = 0x1234
CMD_STOP, CMD_START_STREAMING, CMD_SET_BIAS = 0x0000, 0x0002, 0x0042
REQUEST = struct.Struct("!HHI")
RECORD = struct.Struct("!III6i")


def pack_request(command: int, count: int = 0) -> bytes:
    return REQUEST.pack(HEADER, command, count)


def parse_records(payload: bytes):
    """(rdt_sequence, ft_sequence, status, counts[6]) for each 36-byte record of a datagram."""
    if len(payload) == 0 or len(payload) % RECORD.size:
        raise DeviceError(f"Net F/T sent a {len(payload)}-byte datagram, not whole 36-byte "
                          "records: check that the address is a Net F/T")
    out = []
    for off in range(0, len(payload), RECORD.size):
        r = RECORD.unpack_from(payload, off)
        out.append((r[0], r[1], r[2], np.array(r[3:], float)))
    return out


class AtiNetFt(ForceSensor):
    """Streaming client: ``connect()`` starts the stream, ``read()`` gives the newest sample."""

    def __init__(self, host: str, port: int = RDT_PORT, counts_per_force: float = 1e6,
                 counts_per_torque: float = 1e6, timeout_s: float = 0.05, clock=time.perf_counter):
        self.address = (host, int(port))
        self.scale = np.array([counts_per_force] * 3 + [counts_per_torque] * 3, float)
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._latest: WrenchSample | None = None
        self._last_rdt: int | None = None
        self.packets_received = 0
        self.packets_lost = 0
        self.bad_datagrams = 0
        self._t_connect = 0.0

    def connect(self) -> None:
        if self._thread is not None:
            return
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.settimeout(0.1)
        try:
            self._sock.connect(self.address)
            self._sock.send(pack_request(CMD_START_STREAMING, 0))
        except OSError as e:
            self._sock.close()
            self._sock = None
            raise DeviceError(f"cannot reach the Net F/T at {self.address[0]}:{self.address[1]} "
                              f"({e.strerror or e}): check its network cable and IP address") from e
        self._t_connect = self._clock()
        self._running.set()
        self._thread = threading.Thread(target=self._receive, name="netft-rx", daemon=True)
        self._thread.start()
        self.status = DeviceStatus.CONNECTED

    def disconnect(self) -> None:
        self._running.clear()
        if self._sock is not None:
            try:
                self._sock.send(pack_request(CMD_STOP, 0))
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._sock is not None:
            self._sock.close()
        self._sock, self._thread = None, None
        self.status = DeviceStatus.DISCONNECTED

    def bias(self) -> None:
        """Ask the sensor to zero its readings (software bias)."""
        if self._sock is None:
            raise DeviceError("Net F/T not connected: connect it first")
        self._sock.send(pack_request(CMD_SET_BIAS, 0))

    def _receive(self) -> None:
        while self._running.is_set():
            try:
                payload = self._sock.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                break
            now = self._clock()
            try:
                records = parse_records(payload)
            except DeviceError:
                self.bad_datagrams += 1
                continue
            with self._lock:
                for rdt, ft, status, counts in records:
                    if self._last_rdt is not None:
                        gap = (rdt - self._last_rdt) & 0xFFFFFFFF
                        if gap == 0 or gap > 0x7FFFFFFF:
                            continue            # duplicate or reordered: keep the newer one
                        self.packets_lost += gap - 1
                    self._last_rdt = rdt
                    self.packets_received += 1
                    self._latest = WrenchSample(now, counts / self.scale, rdt, status)

    def read(self) -> WrenchSample:
        if self._thread is None:
            raise DeviceError("Net F/T not connected: connect it first")
        with self._lock:
            s = self._latest
        now = self._clock()
        last = s.t if s is not None else self._t_connect
        if now - last > self.timeout_s:
            raise DeviceError(
                f"no data from the Net F/T for {1000 * (now - last):.0f} ms: check its network "
                "cable and power, then reset the fault")
        if s is None:
            raise DeviceError("the Net F/T has not sent data yet: wait a moment and retry")
        if s.status & 0x80000000:
            raise DeviceError(f"the Net F/T reports status 0x{s.status:08x}: see its web page "
                              "for the cause (saturation or a strain-gauge fault)")
        return s

    @property
    def loss_ratio(self) -> float:
        n = self.packets_received + self.packets_lost
        return self.packets_lost / n if n else 0.0
