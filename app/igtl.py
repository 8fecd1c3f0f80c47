"""What the session streams to 3D Slicer over OpenIGTLink (``devices.igtl_link``), Qt-free.

- The tool pose (TRANSFORM "FluoronavTool") from each robot state: the guide's pose by the
  robot's kinematics at its reported joints, carried into the plan's cage frame by the
  calibration held in the robot base frame (``NavigationController.frames``), at most
  ``pose_rate_hz`` and only when it moved. Without that calibration there is no frame to
  put it in that matches the plan: nothing is sent and ``status`` says so.
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
        q = (state or {}).get("q")
        if q is None:
            return
        T = self.tool_pose_ras(q)
        if T is None:
            return
        if self._last_pose is not None and np.max(np.abs(T - self._last_pose)) < POSE_EPS:
            return
        self._pending_pose = T
        self._send_pose_if_due()

    def _send_pose_if_due(self, force: bool = False) -> None:
        T = self._pending_pose
        now = self.clock()
        if T is None or (not force and now - self._last_pose_t < self.min_period):
            return      # the next state or poll sends the newest
        if self.link.send_pose(T):
            self._last_pose, self._last_pose_t, self._pending_pose = T, now, None
            self.poses_sent += 1

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
            if self._last_pose is not None and self._pending_pose is None:
                self._pending_pose = self._last_pose
            self._send_pose_if_due(force=True)
            self._lines = {}
            self.send_trajectories()
            for view in ("ap", "lat"):
                self.send_shot(view, self.session.image(view))
        else:
            self._send_pose_if_due()
        return self.status
