"""ATI Net F/T over its UDP Raw Data Transfer (RDT) protocol (ATI Net F/T manual, section 9).

Request (8 bytes, network order): uint16 header 0x1234, uint16 command, uint32 sample
count (0 = stream until stopped). Commands: 0 stop, 2 start high-speed real-time
streaming, 0x42 set software bias. Response records (36 bytes): uint32 rdt_sequence,
uint32 ft_sequence, uint32 status, int32 Fx Fy Fz Tx Ty Tz (counts). Forces are
counts / counts_per_force (N), torques counts / counts_per_torque (N*m); the default
1,000,000 counts per unit is ATI's, but read the sensor's calibration page.

A receiver thread keeps the newest sample and the stream alive: when no record came
for a while (sensor rebooted, cable out, sensor not yet reachable) it sends the start
request again with back-off (``resend_s``: first and longest interval), and it survives
socket errors (ICMP "unreachable" included), so the stream comes back by itself once
the sensor answers. ``rdt_sequence`` gaps count lost packets; a record a few numbers
behind the newest is a reordered one and dropped; a sequence that starts again (far
behind, or behind for several records in a row) is a sensor restart and accepted.
``read()`` raises ``DeviceError`` (with its ``FaultKind``) when no record came for
``timeout_s``, on the sensor's status bit, and beyond the rated range (latched from the
first such record on, even if newer ones look right); ``reset()`` reconnects. ``FakeNetFtServer`` is a sensor on loopback for tests and benchmarks.
"""
from __future__ import annotations

import random
import socket
import struct
import threading
import time

import numpy as np

from devices.base import DeviceError, DeviceStatus, FaultKind
from devices.force_sensor import MINI45_RATED, ForceSensor, WrenchSample

__all__ = ["RDT_PORT", "AtiNetFt", "FakeNetFtServer", "pack_request", "parse_records", "RECORD"]

RDT_PORT = 49152
HEADER = 0x1234
CMD_STOP, CMD_START_STREAMING, CMD_SET_BIAS = 0x0000, 0x0002, 0x0042
REQUEST = struct.Struct("!HHI")
RECORD = struct.Struct("!III6i")
REORDER_WINDOW = 64          # a record at most this far behind the newest is a late one
RESTART_AFTER = 3            # ... unless this many in a row are: then the sequence restarted


def pack_request(command: int, count: int = 0) -> bytes:
    return REQUEST.pack(HEADER, command, count)


def parse_records(payload: bytes):
    """(rdt_sequence, ft_sequence, status, counts[6]) for each 36-byte record of a datagram."""
    if len(payload) == 0 or len(payload) % RECORD.size:
        raise DeviceError(f"Net F/T sent a {len(payload)}-byte datagram, not whole 36-byte "
                          "records: check that the address is a Net F/T", FaultKind.SENSOR_STATUS)
    out = []
    for off in range(0, len(payload), RECORD.size):
        r = RECORD.unpack_from(payload, off)
        out.append((r[0], r[1], r[2], np.array(r[3:], float)))
    return out


class AtiNetFt(ForceSensor):
    """Streaming client: ``connect()`` starts the receiver, ``read()`` gives the newest sample."""

    def __init__(self, host: str, port: int = RDT_PORT, counts_per_force: float = 1e6,
                 counts_per_torque: float = 1e6, timeout_s: float = 0.05, clock=time.perf_counter,
                 rated_range=MINI45_RATED, resend_s=(0.05, 0.25)):
        self.address = (host, int(port))
        self.scale = np.array([counts_per_force] * 3 + [counts_per_torque] * 3, float)
        self.timeout_s = float(timeout_s)
        self.rated_range = np.asarray(rated_range, float)
        self.resend_s = (float(resend_s[0]), float(resend_s[1]))
        self._clock = clock
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._latest: WrenchSample | None = None
        self._last_rdt: int | None = None
        self._behind = 0
        self._implausible: DeviceError | None = None     # latched until reset
        self.last_error: str | None = None
        self.packets_received = 0
        self.packets_lost = 0
        self.packets_reordered = 0
        self.bad_datagrams = 0
        self.restarts = 0             # sequence restarts seen (sensor reboots)
        self.start_requests = 0
        self._t_connect = 0.0

    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._close_socket()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(0.01)
            sock.connect(self.address)
        except OSError as e:           # a bad address (name, family): a configuration error
            raise DeviceError(f"cannot use the Net F/T address {self.address[0]}:{self.address[1]} "
                              f"({e.strerror or e}): check the address in the configuration",
                              FaultKind.SENSOR_UNREACHABLE) from e
        with self._lock:
            self._sock = sock
            self._latest, self._last_rdt, self._behind, self.last_error = None, None, 0, None
            self._implausible = None
        self._t_connect = self._clock()
        self._running.set()
        self._thread = threading.Thread(target=self._receive, name="netft-rx", daemon=True)
        self._thread.start()
        self.status = DeviceStatus.CONNECTED

    def disconnect(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._sock is not None:
            try:
                self._sock.send(pack_request(CMD_STOP, 0))
            except OSError:
                pass
        self._close_socket()
        self._thread = None
        self.status = DeviceStatus.DISCONNECTED

    def _close_socket(self):
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def bias(self) -> None:
        """Ask the sensor to zero its readings (software bias)."""
        if self._sock is None:
            raise DeviceError("Net F/T not connected: connect it first", FaultKind.SENSOR_UNREACHABLE)
        try:
            self._sock.send(pack_request(CMD_SET_BIAS, 0))
        except OSError as e:
            raise DeviceError(f"the Net F/T at {self.address[0]} did not take the bias request "
                              f"({e.strerror or e}): check its network cable and power, then "
                              "bias again", FaultKind.SENSOR_UNREACHABLE) from e

    def _send_start(self) -> None:
        try:
            self._sock.send(pack_request(CMD_START_STREAMING, 0))
            self.start_requests += 1
        except OSError as e:
            self.last_error = e.strerror or str(e)

    def _receive(self) -> None:
        """Receive until disconnected; (re)send the start request while nothing arrives."""
        first, longest = self.resend_s
        wait, last_heard = first, time.monotonic()
        self._send_start()
        next_start = time.monotonic() + wait
        while self._running.is_set():
            now_m = time.monotonic()
            if now_m >= next_start:
                self._send_start()             # silent: rebooted, unplugged or not yet up
                wait = min(2 * wait, longest)
                next_start = now_m + wait
            try:
                payload = self._sock.recv(2048)
            except socket.timeout:
                continue
            except OSError as e:               # ICMP unreachable and the like: keep trying
                self.last_error = e.strerror or str(e)
                time.sleep(0.005)
                continue
            now = self._clock()
            try:
                records = parse_records(payload)
            except DeviceError:
                self.bad_datagrams += 1
                continue
            last_heard = time.monotonic()
            wait, next_start = first, last_heard + first
            self._accept(records, now)

    def _accept(self, records, now) -> None:
        with self._lock:
            for rdt, ft, status, counts in records:
                if self._implausible is None:       # one corrupt record is enough: latch it,
                    try:                            # late or not
                        self.check_plausible(WrenchSample(now, counts / self.scale, rdt, status))
                    except DeviceError as e:
                        self._implausible = e
                if self._last_rdt is not None:
                    gap = (rdt - self._last_rdt) & 0xFFFFFFFF
                    if gap == 0:
                        continue                        # a duplicate
                    if gap > 0x7FFFFFFF:                # behind the newest
                        behind = 0x100000000 - gap
                        self._behind += 1
                        if behind <= REORDER_WINDOW and self._behind < RESTART_AFTER:
                            self.packets_reordered += 1
                            continue                    # late: keep the newer one
                        self.restarts += 1              # the sequence started again
                    else:
                        self.packets_lost += gap - 1 if gap <= 0xFFFF else 0
                self._behind = 0
                self._last_rdt = rdt
                self.packets_received += 1
                self.last_error = None
                self._latest = WrenchSample(now, counts / self.scale, rdt, status)

    def read(self) -> WrenchSample:
        if self._thread is None:
            raise DeviceError("Net F/T not connected: connect it first", FaultKind.SENSOR_UNREACHABLE)
        with self._lock:
            s, bad = self._latest, self._implausible
        if bad is not None:
            raise bad
        now = self._clock()
        last = s.t if s is not None else self._t_connect
        if now - last > self.timeout_s:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            kind = FaultKind.SENSOR_UNREACHABLE if self.last_error else FaultKind.SENSOR_STALE
            raise DeviceError(
                f"no data from the Net F/T for {1000 * (now - last):.0f} ms{why}: check its "
                "network cable and power, then reset the fault", kind)
        if s is None:
            raise DeviceError("the Net F/T has not sent data yet: wait a moment and retry",
                              FaultKind.SENSOR_NOT_READY)
        if s.status & 0x80000000:
            raise DeviceError(f"the Net F/T reports status 0x{s.status:08x}: see its web page "
                              "for the cause (saturation or a strain-gauge fault)",
                              FaultKind.SENSOR_STATUS)
        return self.check_plausible(s)

    @property
    def loss_ratio(self) -> float:
        n = self.packets_received + self.packets_lost
        return self.packets_lost / n if n else 0.0


class FakeNetFtServer:
    """A Net F/T on 127.0.0.1 for tests and benchmarks: streams records at ``rate_hz`` to
    whoever sent the start request, until a stop request, with failures on demand:
    ``restart_sequence()`` (the sequence begins again at 1), ``reboot(s)`` (silent for
    ``s``, then waits for a new start request), ``unplug(s)`` (the port closed for ``s``:
    unreachable), ``spike(wrench)`` (one record of these values), and random ``drop`` and
    ``reorder`` fractions. ``port`` may be given (to come up later on a known port)."""

    def __init__(self, port: int = 0, rate_hz: float = 1000.0,
                 wrench=(1.5, -2.0, 30.0, 0.1, -0.2, 0.03), counts: float = 1e6,
                 drop: float = 0.0, reorder: float = 0.0, seed: int = 0, n: int | None = None):
        self.rate_hz, self.counts_per_unit = float(rate_hz), float(counts)
        self.wrench = np.asarray(wrench, float)
        self.drop, self.reorder, self.n = float(drop), float(reorder), n
        self._rng = random.Random(seed)
        self.requests: list = []
        self.sent = 0
        self.seq = 0
        self._client = None
        self._down_until = 0.0
        self._reboot = False
        self._spike = None
        self._held = None                       # a record held back to be sent late
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._sock = None
        self.port = int(port)
        self._bind()
        self._thread = threading.Thread(target=self._run, name="fake-netft", daemon=True)

    def _bind(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self._sock = s

    def start(self) -> "FakeNetFtServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._quit.set()
        self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()

    # -- failures on demand --------------------------------------------------------
    def restart_sequence(self) -> None:
        with self._lock:
            self.seq = 0

    def reboot(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self._reboot, self._client, self.seq = True, None, 0

    def unplug(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self._reboot = False
            self._sock.close()
            self._sock = None

    def spike(self, wrench) -> None:
        with self._lock:
            self._spike = np.asarray(wrench, float)

    @property
    def streaming(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    # -- the server --------------------------------------------------------------------
    def _record(self, values) -> bytes:
        c = np.clip(np.round(np.asarray(values) * self.counts_per_unit), -2**31, 2**31 - 1)
        return RECORD.pack(self.seq, 3 * self.seq, 0, *(int(x) for x in c))

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        while not self._quit.is_set():
            now = time.monotonic()
            with self._lock:
                down = now < self._down_until
                if self._sock is None and not down:
                    self._bind()                 # plugged back in, same port
                sock = self._sock
            if sock is None:
                time.sleep(0.002)
                continue
            try:
                data, addr = sock.recvfrom(64)
                req = REQUEST.unpack(data[:8]) if len(data) >= 8 else None
                if req is not None and not down:
                    self.requests.append(req)
                    if req[1] == CMD_START_STREAMING:
                        self._client = addr
                    elif req[1] == CMD_STOP:
                        self._client = None
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                time.sleep(0.002)
                continue
            if down or self._client is None or now < next_t:
                time.sleep(0.0005 if self._client is not None else 0.002)
                continue
            next_t = max(next_t + period, now - period)
            if self.n is not None and self.seq >= self.n:
                continue
            with self._lock:
                self.seq += 1
                spiked = self._spike is not None
                values = self.wrench if not spiked else self._spike
                self._spike = None
                rec = self._record(values)
            if not spiked and self._rng.random() < self.drop:   # an injected failure always
                continue                                           # arrives
            out = [rec]
            if self._held is not None:
                out.append(self._held)           # the held record arrives after a newer one
                self._held = None
            elif self._rng.random() < self.reorder and not spiked:
                self._held, out = rec, []
            for r in out:
                try:
                    sock.sendto(r, self._client)
                    self.sent += 1
                except OSError:
                    pass
