"""The NDI optical / electromagnetic tracker driver: Polaris Vega over TCP, Polaris and Aurora
over serial, speaking the Combined API itself.

Why not a library: scikit-surgerynditracker hands back poses and a quality number but drops
each handle's port status, so a tool outside the characterised volume looks like a tool in
it; ndicapi's Python module has no BX port-status accessor either. The out-of-volume flags
decide whether a pose may be used for control (robot paper II.C.5, eq. 24 takes measured
poses only), so this driver writes the protocol from NDI's API guides (``protocol.py``).

A reading thread brings the link up (serial: INIT at 9600 baud, else a break and RESET,
then COMM to the configured baud; INIT; free stale handles; PHRQ + PVWR for each passive
tool's ROM file; PINIT and PENA for every handle that needs it; TSTART) and then asks BX
(or TX) at ``rate_hz``. A reply whose frame number moved on becomes the newest
``TrackerFrame``, stamped with this host's ``time.monotonic()`` at receipt. A bad CRC, a reply
cut short, an ERROR reply or silence never leaves the thread: it is counted, becomes the
driver's message, no frame is stored (so the 50 ms watchdog sees the data age), and after
``max_failures`` in a row the link is closed and brought up again with back-off.
"""
from __future__ import annotations

import math
import os
import threading
import time

from core.navigation.tracking import NAN_POSE, ToolPose, ToolStatus, TrackerFrame, frame_age_fault
from devices.base import DeviceStatus
from devices.ndi.link import (BAUD_CODES, NdiLink, NdiLinkDown, NdiLinkError, SerialTransport,
                              TcpTransport, Transport)
from devices.ndi.protocol import (REPLY_OPTION, BxReply, NdiErrorReply, SYSTEM_STATUS_TEXT, parse_phsr,
                                  pose_from_quaternion, tool_status)
from devices.tracker import Tracker, TrackerError

__all__ = ["NdiTracker", "NDI_TCP_PORT", "MAX_ROM_BYTES", "read_rom"]

NDI_TCP_PORT = 8765
MAX_ROM_BYTES = 2048          # the virtual SROM's address range (PVWR 0x0000-0x07C0, 64 bytes each)
PASSIVE_WIRELESS = "*********1****"   # PHRQ: any device, any system, wireless tool, any port


def read_rom(path: str, tool: str) -> bytes:
    """A tool definition (.rom) file's bytes; ``TrackerError`` saying what is wrong."""
    try:
        data = open(os.path.expanduser(path), "rb").read()
    except OSError as e:
        raise TrackerError(f"tracker tool {tool!r}: cannot read its ROM file {path} "
                           f"({e.strerror or e}): check tracker.tool_roms") from None
    if not data or len(data) > MAX_ROM_BYTES:
        raise TrackerError(f"tracker tool {tool!r}: {path} is {len(data)} bytes, not an NDI tool "
                           f"definition (1 to {MAX_ROM_BYTES} bytes): check tracker.tool_roms")
    return data


class NdiTracker(Tracker):
    """``tools`` names the tools in order; ``tool_roms`` gives each a ROM file, or "" for a
    tool the system already knows (a wired tool with its own SROM, matched to the enabled
    handles left over in handle order). ``serial_port`` set: serial link, else TCP to
    ``host``:``port``."""

    def __init__(self, host: str = "", port: int = NDI_TCP_PORT, serial_port: str = "",
                 tools=("robot_ref", "patient_ref"), tool_roms=None, baud: int = 115200,
                 reply: str = "bx", rate_hz: float = 60.0, reply_timeout_s: float = 0.25,
                 setup_timeout_s: float = 5.0, max_failures: int = 3, retry_s=(0.2, 2.0),
                 max_age_s: float = 0.050, clock=time.monotonic, transport: Transport | None = None):
        self.tools = tuple(str(t) for t in tools)
        self.tool_roms = tuple(tool_roms) if tool_roms is not None else ("",) * len(self.tools)
        if reply not in ("bx", "tx"):
            raise TrackerError(f"tracker.reply_format must be \"bx\" or \"tx\", got {reply!r}")
        if baud not in BAUD_CODES:
            raise TrackerError(f"tracker.serial_baud {baud} is not one NDI systems offer "
                               f"({', '.join(map(str, sorted(BAUD_CODES)))})")
        if not serial_port and not host and transport is None:
            raise TrackerError("no NDI address: set tracker.host (Vega, TCP) or tracker.serial_port")
        self.host, self.port, self.serial_port = host, int(port), serial_port
        self.baud, self.reply = int(baud), reply
        self.period_s = 1.0 / float(rate_hz)
        self.reply_timeout_s, self.setup_timeout_s = float(reply_timeout_s), float(setup_timeout_s)
        self.max_failures, self.retry_s = int(max_failures), (float(retry_s[0]), float(retry_s[1]))
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._transport = transport
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: TrackerFrame | None = None
        self._link_up = False
        self._problem = ""           # the newest failure, one line
        self._problem_since_frame = False
        self._t_tracking = 0.0
        self._roms: dict[str, bytes] = {}
        self.handles: dict[int, str] = {}
        self._unmatched: tuple[str, ...] = ()    # tools without a ROM that no enabled handle was left for
        self.system_status = 0
        self.counts = {"frames": 0, "bad_replies": 0, "partial_replies": 0, "silences": 0,
                       "error_replies": 0, "link_downs": 0, "bring_ups": 0, "repeated_frames": 0}

    # -- the Tracker interface -------------------------------------------------------------
    def connect(self) -> None:
        """Check the configuration (raises ``TrackerError``) and start the reading thread,
        which brings the link up and keeps it up; its progress shows in ``status()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        if len(self.tools) != len(self.tool_roms):
            raise TrackerError(f"tracker.tool_names lists {len(self.tools)} tools but tracker.tool_roms "
                               f"{len(self.tool_roms)} files: give one ROM file (or \"\") per tool")
        if len(set(self.tools)) != len(self.tools) or not all(self.tools):
            raise TrackerError(f"tracker.tool_names must be distinct, non-empty names, got {list(self.tools)}")
        self._roms = {name: read_rom(path, name) for name, path in zip(self.tools, self.tool_roms) if path}
        with self._lock:
            self._latest, self._link_up, self._problem = None, False, ""
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="ndi-tracker", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        self._thread = None
        with self._lock:
            self._link_up = False

    def latest(self) -> TrackerFrame | None:
        with self._lock:
            return self._latest

    def status(self) -> DeviceStatus:
        return self._status_and_message()[0]

    @property
    def last_message(self) -> str:
        return self._status_and_message()[1]

    def _status_and_message(self) -> tuple[DeviceStatus, str]:
        with self._lock:
            frame, up, problem, fresh_problem = self._latest, self._link_up, self._problem, self._problem_since_frame
            t_tracking = self._t_tracking
        if self._thread is None:
            return DeviceStatus.DISCONNECTED, "not connected"
        if not up:
            return (DeviceStatus.FAULT, f"tracker: {problem}; retrying") if problem else \
                (DeviceStatus.DISCONNECTED, f"connecting to {self._describe()}…")
        now = self._clock()
        fault = frame_age_fault(frame, now, self.max_age_s, since=t_tracking)
        if fault:
            return DeviceStatus.FAULT, fault + (f" ({problem})" if fresh_problem and problem else "")
        if frame is None:
            return DeviceStatus.CONNECTED, "waiting for the first frame"
        flags = [text for bit, text in SYSTEM_STATUS_TEXT.items() if self.system_status & bit]
        if self.system_status & 0x0010:
            return DeviceStatus.FAULT, "tracker reports a hardware failure: see its status lights and NDI's guide"
        unseen = [f"{n}: no enabled tool on the tracker for it (plug it in, or give its ROM file in "
                  "tracker.tool_roms)" if n in self._unmatched else
                  f"{n} {frame.pose(n).status.value.replace('_', ' ')}" for n in self.tools if not frame.pose(n).ok]
        return DeviceStatus.CONNECTED, "; ".join(unseen + (["tracker reports " + ", ".join(flags)] if flags else []))

    def _describe(self) -> str:
        if self._transport is not None:
            return self._transport.description
        return f"the NDI system on {self.serial_port}" if self.serial_port else \
            f"the NDI system at {self.host}:{self.port}"

    # -- the reading thread ----------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.retry_s[0]
        while self._running.is_set():
            link = None
            try:
                link = NdiLink(self._make_transport())
                self._bring_up(link)
                backoff = self.retry_s[0]
                self._track(link)
            except (NdiLinkError, NdiErrorReply, OSError) as e:
                self._note(str(e), "link_downs" if isinstance(e, NdiLinkDown) else None)
            except Exception as e:   # a bug here must show, not kill the thread silently
                self._note(f"internal error in the NDI driver ({type(e).__name__}: {e})")
            finally:
                with self._lock:
                    self._link_up = False
                if link is not None:
                    self._close(link)
            if not self._running.is_set():
                break
            end = time.monotonic() + backoff
            while self._running.is_set() and time.monotonic() < end:
                time.sleep(0.02)
            backoff = min(backoff * 2, self.retry_s[1])

    def _note(self, problem: str, counter: str | None = None) -> None:
        with self._lock:
            self._problem, self._problem_since_frame = problem, True
            if counter:
                self.counts[counter] += 1

    def _close(self, link: NdiLink) -> None:
        try:
            link.command("TSTOP", timeout_s=0.2)
        except (NdiLinkError, NdiErrorReply, OSError):
            pass    # stopping is a courtesy: the next INIT stops tracking anyway
        link.transport.close()

    def _make_transport(self) -> Transport:
        if self._transport is not None:
            return self._transport
        if self.serial_port:
            return SerialTransport(self.serial_port)
        return TcpTransport(self.host, self.port)

    def _bring_up(self, link: NdiLink) -> None:
        transport = link.transport
        transport.open()
        t = self.setup_timeout_s
        with self._lock:
            self.counts["bring_ups"] += 1
        if transport.is_serial:
            self._serial_reset(link)
        link.command("INIT", timeout_s=t)
        for h, _ in parse_phsr(link.command("PHSR", "01", t)):      # handles waiting to be freed
            link.command("PHF", f"{h:02X}", t)
        handles: dict[int, str] = {}
        for name, rom in self._roms.items():
            h = int(link.command("PHRQ", PASSIVE_WIRELESS, t)[:2], 16)
            for addr in range(0, len(rom), 64):
                chunk = rom[addr:addr + 64].ljust(64, b"\0")
                link.command("PVWR", f"{h:02X}{addr:04X}{chunk.hex().upper()}", t)
            handles[h] = name
        for h, _ in parse_phsr(link.command("PHSR", "02", t)):      # not yet initialised
            link.command("PINIT", f"{h:02X}", t)
        for h, _ in parse_phsr(link.command("PHSR", "03", t)):      # initialised, not enabled
            link.command("PENA", f"{h:02X}D", t)                    # D: dynamic (moving) tool
        enabled = sorted(h for h, _ in parse_phsr(link.command("PHSR", "04", t)))
        spare = [h for h in enabled if h not in handles]
        for name in self.tools:
            if name not in self._roms and spare:
                handles[spare.pop(0)] = name
        missing = [n for n in self.tools if n not in handles.values()]
        link.command("TSTART", timeout_s=t)
        with self._lock:
            self.handles = handles
            self._link_up = True
            self._t_tracking = self._clock()
            self._unmatched = tuple(missing)
            self._problem, self._problem_since_frame = "", False

    def _serial_reset(self, link: NdiLink) -> None:
        """INIT at 9600 baud; if the system is at another rate (an earlier session's COMM),
        a break resets it to 9600 and it answers RESET. Then COMM to the configured baud."""
        try:
            link.command("INIT", timeout_s=1.0)
        except (NdiLinkError, NdiErrorReply):
            link.transport.send_break()
            raw = link.read_ascii("RESET (after a serial break)", self.setup_timeout_s)
            if raw != "RESET":
                raise NdiLinkError(f"{link.transport.description} answered the break with {raw!r}, not RESET")
        if self.baud != 9600:
            link.command("COMM", f"{BAUD_CODES[self.baud]}0000", self.setup_timeout_s)   # 8N1, no handshake
            time.sleep(0.1)        # the system switches 100 ms after its reply
            link.transport.set_baud(self.baud)

    def _track(self, link: NdiLink) -> None:
        failures = 0
        next_t = time.monotonic()
        while self._running.is_set():
            try:
                reply = (link.bx if self.reply == "bx" else link.tx)(self.reply_timeout_s, REPLY_OPTION)
            except NdiLinkDown:
                raise
            except (NdiLinkError, NdiErrorReply) as e:
                failures += 1
                kind = {"NdiBadReply": "bad_replies", "NdiPartialReply": "partial_replies",
                        "NdiSilence": "silences", "NdiErrorReply": "error_replies"}.get(type(e).__name__)
                self._note(f"{e} ({failures} in a row)", kind)
                if failures >= self.max_failures:
                    raise NdiLinkError(f"{e}; {failures} failed replies in a row, reconnecting") from None
                continue
            failures = 0
            self._store(reply, self._clock())
            next_t = max(next_t + self.period_s, time.monotonic())
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _store(self, reply: BxReply, now: float) -> None:
        tools, numbers = {}, []
        for h in reply.handles:
            name = self.handles.get(h.handle)
            if name is None:
                continue          # a handle this configuration does not use
            status = tool_status(h)
            T = pose_from_quaternion(h.quaternion, h.translation_mm) if status is ToolStatus.OK else None
            if status is ToolStatus.OK and T is None:
                status = ToolStatus.MISSING     # a transform that is not a rotation: never used
            rms = h.error_mm if h.error_mm is not None and math.isfinite(h.error_mm) else math.nan
            tools[name] = ToolPose(name, NAN_POSE if T is None else T, rms, status)
            if h.frame_number is not None:
                numbers.append(h.frame_number)
        for name in self.tools:
            tools.setdefault(name, ToolPose(name, NAN_POSE, math.nan, ToolStatus.MISSING))
        with self._lock:
            prev = self._latest
            number = max(numbers) if numbers else (prev.frame_number + 1 if prev else 0)
            self.system_status = reply.system_status
            if prev is not None and number == prev.frame_number:
                self.counts["repeated_frames"] += 1     # the camera has not measured again
                return
            self._latest = TrackerFrame(number, now, tools)
            self.counts["frames"] += 1
            self._problem_since_frame = False

