"""Each view's current shot in the 3D view: its C-arm source, beam and the image on its detector.

Per view the actor ``shot_<view>`` (``widgets.scene.shots.ShotActor``) shows the session's
current image of that view where it was taken:
- the view is calibrated (``session.calibration.views[view]``): the calibration's camera
  (``core.calibration.frustum.frustum_from_view``), placed in the scene with ``T_scene_cage``
  as the planning trajectories are (in simulation the cage pose of the calibration shots);
  unless the image was taken at other C-arm angles than the images current when the
  calibration came (a verification shot after an orbit is not where the calibration says);
- else, on the simulated C-arm, the simulator's true geometry of that very shot;
- else nothing (a loaded image without a calibration has no place in 3D: said once, at
  info level; ``status[view]`` says why).
Changes (a new image, a calibration, a simulated shot) are gathered into one update and
one render when control returns to the event loop.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer

from core.calibration.frustum import (GRID_N, ShotFrustum, ShotGeometryError, field_from_image, frustum_from_geometry,
                                frustum_from_view)
from widgets.scene.shots import ShotActor, texture_array

__all__ = ["ShotFrustums", "install_shot_frustums", "actor_name", "BEAM_COLOURS", "grid_n"]

log = logging.getLogger(__name__)

VIEWS = ("ap", "lat")
BEAM_COLOURS = {"ap": (0.37, 0.69, 0.94), "lat": (0.95, 0.76, 0.3)}
TRUTHS_KEPT = 8      # simulated shots remembered per view (a thumbnail may bring one back)


def actor_name(view: str) -> str:
    return f"shot_{view}"


def grid_n(image_shape) -> int:
    """Grid vertices per side: one every ~32 px (the texture is linear in between), 17 to 33."""
    return int(np.clip(max(image_shape) // 32 + 1, GRID_N, 33))


class ShotFrustums(QObject):
    """Keeps ``shot_ap`` / ``shot_lat`` in ``scene_view`` in step with the session.

    ``T_scene_cage``: a callable returning the 4x4 placing the calibration's cage frame in
    the scene (None = identity). ``set_truth(view, truth)`` takes the simulated C-arm's
    ``{"shot": SimulatedShot}`` (``DevicesController.simulated_shot``).
    ``status[view]`` says where the view's image is drawn from, or why it is not.
    """

    def __init__(self, scene_view, session, T_scene_cage: Callable[[], np.ndarray | None] | None = None,
                 parent=None):
        super().__init__(parent)
        self.scene_view, self.session = scene_view, session
        self._T_scene_cage = T_scene_cage or (lambda: None)
        self.actors: dict[str, ShotActor] = {}
        self.frustums: dict[str, ShotFrustum | None] = {v: None for v in VIEWS}
        self.status: dict[str, str] = {v: "no image" for v in VIEWS}
        self._truths: dict[str, list] = {v: [] for v in VIEWS}
        self._texture: dict[str, tuple] = {}       # view -> (pixels, uint8 texture)
        self._field: dict[str, tuple] = {}         # view -> (pixels, FieldCircle | None)
        self._said: dict[str, str] = {}
        self.images_visible = True
        self._pending = False
        session.image_changed.connect(lambda view, _image: self.update_soon())
        self._calibrated_pose: dict[str, tuple | None] = {v: None for v in VIEWS}
        session.calibration_changed.connect(self._calibration_changed)

    # -- inputs ---------------------------------------------------------------------------
    def set_truth(self, view: str, truth: dict) -> None:
        """The simulated C-arm's ground truth of its latest ``view`` shot."""
        shot = truth.get("shot") if isinstance(truth, dict) else None
        if view not in VIEWS or shot is None or getattr(shot, "image", None) is None:
            return
        kept = self._truths[view]
        kept.append(shot)
        del kept[:-TRUTHS_KEPT]
        self.update_soon()

    def _calibration_changed(self, calibration) -> None:
        """Remember the C-arm angles of the images the calibration was made with: a later shot
        taken at other angles is not where the calibration says."""
        for view in VIEWS:
            image = self.session.image(view) if calibration is not None else None
            self._calibrated_pose[view] = None if image is None else _pose(image)
        self.update_soon()

    def set_images_visible(self, on: bool) -> None:
        """Show or hide the images on the detectors (the beam lines stay)."""
        self.images_visible = bool(on)
        for actor in self.actors.values():
            actor.set_image_visible(self.images_visible)
        self.scene_view.render()

    def update_soon(self) -> None:
        if not self._pending:
            self._pending = True
            QTimer.singleShot(0, self, self.update_now)

    # -- the update -------------------------------------------------------------------------
    def update_now(self) -> None:
        """Rebuild both views' frustums from the session (cheap: 17-33² rays), one render."""
        self._pending = False
        changed = False
        for view in VIEWS:
            changed |= self._update_view(view)
        if changed:
            self.scene_view.render()

    def _update_view(self, view: str) -> bool:
        image = self.session.image(view)
        frustum, why = (None, "no image") if image is None else self._frustum(view, image)
        self.frustums[view] = frustum
        self.status[view] = why
        if frustum is None:
            if image is not None and self._said.get(view) != why:
                log.info("the %s image is not shown in 3D: %s", view.upper(), why)
            self._said[view] = why
            if view in self.actors:
                del self.actors[view]
                self.scene_view.remove_actor(actor_name(view))
            return False
        self._said.pop(view, None)
        actor = self.actors.get(view)
        new = actor is None
        if new:
            actor = ShotActor(BEAM_COLOURS[view])
        try:
            actor.set_frustum(frustum)
            actor.set_image(self._texture_of(view, image))
        except ValueError as e:
            log.warning("the %s shot cannot be drawn in 3D: %s", view.upper(), e)
            self.status[view] = f"cannot be drawn: {e}"
            if not new:
                del self.actors[view]
                self.scene_view.remove_actor(actor_name(view))
            return False
        actor.set_image_visible(self.images_visible)
        if new:
            self.actors[view] = actor
            self.scene_view.set_actor(actor_name(view), actor.assembly, render=False)
        return True

    def _frustum(self, view: str, image) -> tuple[ShotFrustum | None, str]:
        calib = self.session.calibration
        vc = getattr(calib, "views", {}).get(view) if calib is not None else None
        n = grid_n(image.shape)
        why = "it is not calibrated: calibrate to place it in 3D"
        try:
            moved = _moved(self._calibrated_pose[view], _pose(image))
            if vc is not None and hasattr(vc, "P") and moved:
                why = f"it was taken at other C-arm angles ({moved}) than the calibration shots"
            elif vc is not None and hasattr(vc, "P"):
                if tuple(vc.image_shape) != tuple(image.shape):
                    return None, (f"the image ({image.shape[1]}x{image.shape[0]}) is not the size of the "
                                  f"calibrated one ({vc.image_shape[1]}x{vc.image_shape[0]})")
                f = frustum_from_view(vc, image.sid_mm, image.pixel_spacing_mm, self._field_of(view, image), n)
                T = self._T_scene_cage()
                return (f if T is None else f.transformed(T)), f"calibration ({f.note})"
            shot = self._truth_of(view, image)
            if shot is not None:
                return frustum_from_geometry(shot.geometry_world, shot.distortion, n=n), "the simulated C-arm"
        except (ShotGeometryError, ValueError) as e:
            return None, f"its geometry is invalid ({e})"
        return None, why

    def _truth_of(self, view: str, image):
        """The simulated shot of ``image`` (same pixels, or the same acquisition time and size)."""
        for shot in reversed(self._truths[view]):
            s = shot.image
            if s.pixels is image.pixels or (image.acquired_at is not None and s.acquired_at == image.acquired_at
                                            and s.shape == image.shape):
                return shot
        return None

    def _texture_of(self, view: str, image) -> np.ndarray:
        cached = self._texture.get(view)
        if cached is None or cached[0] is not image.pixels:
            cached = self._texture[view] = (image.pixels, texture_array(image))
        return cached[1]

    def _field_of(self, view: str, image):
        cached = self._field.get(view)
        if cached is None or cached[0] is not image.pixels:
            cached = self._field[view] = (image.pixels, field_from_image(image.display()))
        return cached[1]


POSE_TOLERANCE_DEG = 0.5


def _pose(image) -> tuple | None:
    """(primary, secondary) C-arm angles of an image, in degrees, when it has them."""
    p, q = image.primary_angle_deg, image.secondary_angle_deg
    return None if p is None else (float(p), float(q or 0.0))


def _moved(calibrated, now) -> str:
    """How the C-arm angles of ``now`` differ from those of the calibration shots ('' = the same
    or unknown)."""
    if calibrated is None or now is None:
        return ""
    d = [b - a for a, b in zip(calibrated, now)]
    if max(abs(x) for x in d) <= POSE_TOLERANCE_DEG:
        return ""
    return f"{d[0]:+.1f}° / {d[1]:+.1f}°"


def install_shot_frustums(station) -> ShotFrustums:
    """Wire the shots' frustums into a ``app.main.Workstation``: the session's images and
    calibration, the simulated C-arm's truth, the simulated room's cage pose; adds the
    checkable "Images in 3D" to the window's Panels menu."""
    from PySide6.QtGui import QAction

    window, room = station.window, station.room

    def T_scene_cage():
        if room is None:
            return None
        for T in (room.T_world_cage_calibrated, room.T_world_cage):
            if T is not None:
                return T
        return None

    shots = ShotFrustums(window.scene_view, station.session, T_scene_cage, parent=window)
    station.devices.simulated_shot.connect(shots.set_truth)
    if room is not None:
        room.scene_ready.connect(lambda _scene: shots.update_soon())
    act = QAction("Images in 3D", window, objectName="images_in_3d", checkable=True, checked=True)
    act.setToolTip("Show each shot's image on its detector in the 3D view")
    act.toggled.connect(shots.set_images_visible)
    menu = getattr(window, "panels_menu", None)
    if menu is not None:
        menu.addSeparator()
        menu.addAction(act)
    shots.images_action = act
    return shots
