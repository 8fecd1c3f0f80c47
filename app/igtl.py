"""What the session streams to 3D Slicer over OpenIGTLink (``devices.igtl_link``), Qt-free.

- The tool pose (TRANSFORM "FluoronavTool"): the guide's pose by the robot's kinematics at
  its reported joints, carried into the plan's cage frame by the calibration held in the
  robot base frame (``NavigationController.frames``), at most ``pose_rate_hz`` and only when
  it moved. Without that calibration there is no frame to put it in that matches the plan:
  nothing is sent and ``status`` says so. In the app the joints come from the control
  process's shared memory on a feed thread of its own (``start_feed``), ticking at
  ``pose_rate_hz``: the robot state the GUI drains arrives at about 50 Hz and waits for the
  GUI thread, which a software-rendered 3D frame holds for 100 ms and more. Without a feed
  (a script, a test) each session robot state is the source.
- The trajectories (POLYDATA, one per trajectory, named after it) when the plan changes;
  a deleted or incomplete one is sent empty so that Slicer's model of it disappears.
- Each new shot (IMAGE "AP" / "LAT"): on its detector by the view's calibration (the
  affine fit of the calibrated frustum's grid, distortion left out), else at the origin
  with its pixel spacing.

Frame: patient RAS = ``LPS_TO_RAS @ T_lps_cage`` (``core.planning.markups``) of the cage
frame, the frame the exported ``.mrk.json`` holds in LPS: in Slicer the stream and the
markups land on each other. A newly connected peer gets everything again at the next
``poll`` (called by the GUI's timer, or a script).
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from core.planning.markups import LPS_TO_RAS, T_lps_cage
from core.planning.two_view import PatientAxes
from devices.base import DeviceStatus

__all__ = ["SlicerStream", "link_from_config", "LINK_STATUS", "POSE_EPS"]

log = logging.getLogger(__name__)

# the link's state -> (status pill colour, pill text)
LINK_STATUS = {"disabled": (DeviceStatus.DISCONNECTED, "disabled"), "waiting": (DeviceStatus.DISCONNECTED, "waiting"),
               "connected": (DeviceStatus.CONNECTED, "connected"), "fault": (DeviceStatus.FAULT, "fault")}
POSE_EPS = 1e-6          # mm / rad-ish: a pose closer than this to the last one sent is not sent again


def link_from_config(config):
    """An ``IgtlLink`` from the ``[igtl]`` section (not started), or None when disabled."""
    from devices.igtl_link import IgtlLink
    c = config.igtl
    if not c.enabled:
        return None
    return IgtlLink(c.mode, c.host, int(c.port), heartbeat_s=c.heartbeat_s, peer_timeout_s=c.peer_timeout_s)


class SlicerStream:
    """Session -> link. ``frames()``: the base-frame calibration (``T_cage0_base``) or None;
    ``kinematics``: ``forward(q) -> T_base_tool``. ``status`` is (state, message) for the pill."""

    def __init__(self, session, link, kinematics=None, frames=lambda: None, pose_rate_hz: float = 60.0,
                 send_images: bool = True, axes: PatientAxes = PatientAxes(), clock=time.monotonic):
        self.session, self.link, self.kinematics, self.frames = session, link, kinematics, frames
        self.min_period = 1.0 / float(pose_rate_hz)
        self.send_images = bool(send_images)
        self.T_ras_cage = LPS_TO_RAS @ T_lps_cage(axes)
        self.clock = clock
        self._last_pose: np.ndarray | None = None
        self._last_pose_t = -np.inf
        self._pending_pose: np.ndarray | None = None
        self._lines: dict[str, str] = {}          # trajectory id -> device name sent
        self._connections = 0
        self._pose_lock = threading.Lock()        # the feed thread and the GUI thread both send
        self._feed: threading.Thread | None = None
        self._feed_stop = threading.Event()
        self.feed_error = ""
        self.note = ""                            # why the pose is not streamed, when it is not
        self.poses_sent = 0
        session.robot_state_changed.connect(self.robot_state)
        session.plans.changed.connect(self.send_trajectories)
        session.image_changed.connect(self.send_shot)
        session.calibration_changed.connect(lambda *_: self.send_trajectories())

    # -- the pill ----------------------------------------------------------------------------
    @property
    def status(self) -> tuple[str, str]:
        state, message = self.link.state, self.link.message
        if state == "connected" and self.note:
            message = f"{message}; {self.note}"
        if self.feed_error:
            message += f"; {self.feed_error}"
        c = self.link.counters
        if c.rejected_crc:
            message += f"; {c.rejected_crc} message(s) with a bad CRC rejected"
        return state, message

    # -- pose --------------------------------------------------------------------------------
    def tool_pose_ras(self, q) -> np.ndarray | None:
        """The guide's pose in patient RAS for joints ``q``, or None (``note`` says why)."""
        if self.kinematics is None:
            self.note = "no robot model: the tool pose is not streamed"
            return None
        frames = self.frames()
        if frames is None:
            self.note = "calibrate to stream the tool pose (it needs the plan's frame)"
            return None
        self.note = ""
        T_base_tool = np.asarray(self.kinematics.forward(np.asarray(q, float)), float)
        return self.T_ras_cage @ np.asarray(frames.T_cage0_base, float) @ T_base_tool

    def robot_state(self, state: dict) -> None:
        if self._feed is not None:
            return                   # the feed thread streams the pose from the newest joints
        q = (state or {}).get("q")
        if q is not None:
            self._offer(q)

    def _offer(self, q, force: bool = False, source_t: float | None = None) -> bool:
        """The pose at joints ``q`` becomes the pending one (unless it did not move) and goes
        now if the rate limit allows; True when sent."""
        T = self.tool_pose_ras(q)
        if T is None:
            return False
        with self._pose_lock:
            if self._last_pose is not None and np.max(np.abs(T - self._last_pose)) < POSE_EPS:
                return False
            self._pending_pose = T
            return self._send_pose_if_due(force, source_t)

    def _send_pose_if_due(self, force: bool = False, source_t: float | None = None) -> bool:
        T = self._pending_pose
        now = self.clock()
        if T is None or (not force and now - self._last_pose_t < self.min_period):
            return False     # the next state or poll sends the newest
        if self.link.send_pose(T):
            self._last_pose, self._last_pose_t, self._pending_pose = T, now, None
            self.poses_sent += 1
            self.on_pose_sent(T, source_t)
            return True
        return False

    def on_pose_sent(self, T_ras_tool, source_t) -> None:
        """Called (on the sending thread) for each pose handed to the link, with the time of the
        robot state it came from when known; the benchmark measures latency through it."""

    # -- the feed thread -----------------------------------------------------------------------
    def start_feed(self, joints, clock=time.perf_counter) -> None:
        """Stream the pose from ``joints() -> (t_state, q) | None`` (the control process's
        newest state, ``t_state`` on ``clock``) on a thread of its own, one read per period
        of ``pose_rate_hz``: a fixed tick, so a 100 Hz state source does not alias a 60 Hz
        limit down to 50 Hz. An exception in the source is logged once and the feed stops."""
        if self._feed is not None:
            return
        self._feed_stop.clear()

        def run():
            period = self.min_period
            next_t = clock()
            last_t = None
            while not self._feed_stop.is_set():
                try:
                    s = joints()
                    if s is not None and s[0] != last_t:
                        last_t = s[0]
                        self._offer(s[1], force=True, source_t=s[0])
                except Exception as e:          # a dead source must not end the app; say it once
                    self.feed_error = f"the tool pose stream stopped: {type(e).__name__}: {e}"
                    log.error("Slicer link: %s", self.feed_error)
                    return
                next_t += period
                delay = next_t - clock()
                if delay < -period:            # fell a whole period behind: resynchronise
                    next_t, delay = clock(), 0.0
                self._feed_stop.wait(max(0.0, delay))

        self._feed = threading.Thread(target=run, name="fluoronav-igtl-pose", daemon=True)
        self._feed.start()

    def stop_feed(self) -> None:
        t, self._feed = self._feed, None
        if t is not None:
            self._feed_stop.set()
            t.join(1.0)

    # -- plan and shots ------------------------------------------------------------------------
    def send_trajectories(self) -> None:
        from devices.igtl_link import _device
        book = self.session.plans
        live = {}
        for tid in book.ids():
            t = book.get(tid)
            name = _device(t.name)
            live[tid] = name
            if t.complete:
                e, g = (self.T_ras_cage[:3, :3] @ np.asarray(p, float) + self.T_ras_cage[:3, 3]
                        for p in (t.entry_mm, t.target_mm))
                self.link.send_line(name, e, g)
            else:
                self._send_empty(name)
        for tid, name in self._lines.items():
            if live.get(tid) != name and name not in live.values():
                self._send_empty(name)       # deleted or renamed: its old model empties
        self._lines = live

    def _send_empty(self, name: str) -> None:
        import pyigtl
        self.link.send(pyigtl.PolyDataMessage(points=np.zeros((0, 3), np.float32), device_name=name))

    def image_to_ras(self, view: str, image) -> np.ndarray:
        """4x4 (column, row, slice) -> RAS mm of a shot of ``view`` (module docstring)."""
        M = np.eye(4)
        calib = self.session.calibration
        vc = getattr(calib, "views", {}).get(view) if calib is not None else None
        if vc is not None and hasattr(vc, "P") and tuple(getattr(vc, "image_shape", ())) == tuple(image.shape):
            from core.calibration.frustum import ShotGeometryError, frustum_from_view
            try:
                f = frustum_from_view(vc, image.sid_mm, image.pixel_spacing_mm, None, 9)
                ok = f.valid.ravel()
                uv = f.uv_raw.reshape(-1, 2)[ok]
                X = f.points_mm.reshape(-1, 3)[ok]
                A = np.column_stack([uv, np.ones(len(uv))])
                coef, *_ = np.linalg.lstsq(A, X, rcond=None)      # X = u * c_u + v * c_v + origin
                M[:3, 0], M[:3, 1], M[:3, 3] = coef[0], coef[1], coef[2]
                M[:3, 2] = np.asarray(f.plane_normal, float)
                return self.T_ras_cage @ M
            except (ShotGeometryError, ValueError, np.linalg.LinAlgError) as e:
                log.info("the %s shot goes to Slicer without its place: %s", view.upper(), e)
        sx, sy = image.pixel_spacing_mm or (1.0, 1.0)
        M[0, 0], M[1, 1] = float(sx), float(sy)
        return M

    def send_shot(self, view: str, image) -> None:
        if not self.send_images or image is None:
            return
        self.link.send_image(view.upper(), np.asarray(image.pixels), self.image_to_ras(view, image))

    # -- the GUI's timer ---------------------------------------------------------------------
    def poll(self) -> tuple[str, str]:
        """A newly connected peer gets the pose, the plan and the current shots; a pose held back by the
        rate limit goes now. Returns ``status``."""
        c = self.link.counters.connections
        if self.link.connected and c != self._connections:
            self._connections = c
            with self._pose_lock:
                if self._last_pose is not None and self._pending_pose is None:
                    self._pending_pose = self._last_pose
                self._send_pose_if_due(force=True)
            self._lines = {}
            self.send_trajectories()
            for view in ("ap", "lat"):
                self.send_shot(view, self.session.image(view))
        elif self._feed is None:
            with self._pose_lock:
                self._send_pose_if_due()
        return self.status
