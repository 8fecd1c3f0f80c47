"""The simulated operating room, wired: the robot holds the cage, the C-arm sees it there.

Only meaningful in simulation (simulated C-arm). The robot base is placed so that at
the robot's home pose the flange-held cage (``T_base_cage = kinematics.cage(q)``)
coincides with the simulator's cage pose; afterwards every robot move gives the C-arm
driver ``T_world_cage = T_world_base @ T_base_cage(q)`` (in the C-arm's thread, before
any later shot). A cage that moves away from where it was when the calibration's shots
were taken invalidates the calibration: the session's calibration is cleared (the Plan
step then asks for a new calibration) and the log says why.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.geometry.rigid import invert, rotation_angle

__all__ = ["SimulatedRoom", "T_world_base_holding", "cage_pose_change", "robot_home_q", "MOVE_TOLERANCE"]

log = logging.getLogger(__name__)

MOVE_TOLERANCE = (0.05, 0.02)   # mm, degrees: a smaller cage motion keeps the calibration


def T_world_base_holding(kinematics, q, T_world_cage) -> np.ndarray:
    """The robot base pose for which the cage held at joints ``q`` lies at ``T_world_cage``:
    ``T_world_base = T_world_cage @ inv(T_base_flange(q) @ T_flange_cage)``."""
    T = np.asarray(T_world_cage, float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError("T_world_cage must be a finite 4x4 transform")
    return T @ invert(kinematics.cage(np.asarray(q, float)))


def robot_home_q(kinematics, controller_config=None) -> np.ndarray:
    """Joints of the pose the robot control process starts in (its config, else the robot file)."""
    import json

    from resources import path as resource_path
    home = getattr(controller_config, "home_pose", None)
    if home is None:
        file = getattr(controller_config, "robot_file", None) or resource_path("robots", "hybrid5.json")
        with open(file) as f:
            doc = json.load(f)["home_pose"]
        home = [*doc["xyz_mm"], *np.radians(doc["theta_xy_deg"])]
    return kinematics.joints_for_pose(home)


def cage_pose_change(T_a, T_b) -> tuple[float, float]:
    """(translation in mm, rotation in degrees) between two cage poses."""
    d = invert(T_a) @ np.asarray(T_b, float)
    return float(np.linalg.norm(d[:3, 3])), math.degrees(rotation_angle(d))


class SimulatedRoom(QObject):
    """Robot ↔ cage ↔ C-arm in simulation. ``scene_ready(dict)`` once the C-arm's scene
    is built (keys ``T_world_cage``, ``cage``, ``mesh``); ``cage_moved(T_world_cage)``."""

    scene_ready = Signal(dict)
    cage_moved = Signal(object)
    calibration_invalidated = Signal(str)

    def __init__(self, devices, session, kinematics=None, home_q=None, parent=None):
        super().__init__(parent)
        self.devices, self.session = devices, session
        self.kinematics, self.home_q = kinematics, None if home_q is None else np.asarray(home_q, float)
        self.T_world_base: np.ndarray | None = None
        self.T_world_cage: np.ndarray | None = None     # where the cage is now
        self.T_world_cage_calibrated: np.ndarray | None = None  # where it was in the calibration's shots
        self.shot_cage: dict[str, np.ndarray] = {}
        self.scene: dict | None = None
        self._q = None
        self.scene_requested = False
        devices.simulated_shot.connect(self._on_shot)
        session.calibration_changed.connect(self._on_calibration)

    # -- the C-arm's scene ----------------------------------------------------------------
    def request_scene(self, bone_hu: float = 225.0, step_mm: float = 2.0) -> int:
        """Ask the C-arm worker for its cage, cage pose and bone surface (built there)."""
        self.scene_requested = True
        def describe(driver):
            from widgets.scene.anatomy import bone_surface
            scene = driver.scene
            try:
                mesh = bone_surface(scene.volume, bone_hu, step_mm)
            except ValueError as e:
                log.warning("no bone surface in the 3D view: %s", e)
                mesh = None
            return {"T_world_cage": np.array(scene.T_world_cage, float), "cage": scene.cage, "mesh": mesh}
        return self.devices.call("carm", describe, self._on_scene)

    def _on_scene(self, scene, error: str) -> None:
        if error:
            log.error("the simulated room could not be described: %s", error)
            return
        self.scene = scene
        self.T_world_cage = scene["T_world_cage"]
        if self.kinematics is not None:
            q = self.home_q if self.home_q is not None else self._q
            if q is not None:
                self.T_world_base = T_world_base_holding(self.kinematics, q, self.T_world_cage)
            if self._q is not None:  # the robot already moved: the cage follows it
                self.robot_moved(self._q)
        if scene.get("mesh") is not None:
            m = scene["mesh"]
            log.info("bone surface: %d triangles in %.2f s", len(m), m.seconds)
        self.scene_ready.emit(scene)

    # -- the robot ------------------------------------------------------------------------
    def robot_state(self, state: dict) -> None:
        """The robot client's ``state_changed``: the cage follows the flange."""
        if "q" in state:
            self.robot_moved(state["q"])

    def robot_moved(self, q) -> None:
        self._q = np.asarray(q, float)
        if self.T_world_base is None or self.kinematics is None:
            return
        T = self.T_world_base @ self.kinematics.cage(self._q)
        if self.T_world_cage is not None and max(
                a / b for a, b in zip(cage_pose_change(self.T_world_cage, T), (1e-4, 1e-4))) < 1:
            return  # no motion worth a message to the C-arm
        self.set_cage_pose(T)

    def set_cage_pose(self, T_world_cage) -> None:
        """Move the simulated cage (the next shot shows it there) and check the calibration."""
        T = np.array(T_world_cage, float)
        self.T_world_cage = T
        self.devices.call("carm", lambda d: d.set_cage_pose(T), self._on_cage_pose_set)
        self.cage_moved.emit(T)
        self._check_calibration()

    def _on_cage_pose_set(self, _result, error: str) -> None:
        if error:
            log.error("the simulated C-arm did not take the cage pose: %s", error)

    # -- calibration bookkeeping ----------------------------------------------------------------
    def _on_shot(self, view: str, truth: dict) -> None:
        self.shot_cage[view] = np.array(truth["shot"].T_world_cage, float)
        other = self.shot_cage.get("lat" if view == "ap" else "ap")
        if other is not None and not self._same(other, self.shot_cage[view]):
            log.warning("the cage moved between the AP and LAT shots: take the other view again "
                        "before calibrating")

    def _on_calibration(self, calibration) -> None:
        if calibration is None:
            self.T_world_cage_calibrated = None
            return
        shots = [self.shot_cage[v] for v in ("ap", "lat") if v in self.shot_cage]
        self.T_world_cage_calibrated = shots[0] if shots else self.T_world_cage
        self._check_calibration()

    def _same(self, T_a, T_b) -> bool:
        mm, deg = cage_pose_change(T_a, T_b)
        return mm <= MOVE_TOLERANCE[0] and deg <= MOVE_TOLERANCE[1]

    def _check_calibration(self) -> None:
        ref, now = self.T_world_cage_calibrated, self.T_world_cage
        if self.session.calibration is None or ref is None or now is None or self._same(ref, now):
            return
        mm, deg = cage_pose_change(ref, now)
        message = (f"the robot moved the cage by {mm:.1f} mm / {deg:.1f}° since the calibration shots: "
                   "the calibration no longer matches; acquire AP and LAT and calibrate again "
                   "(the plan stays in the old cage frame: check it after calibrating)")
        log.warning("%s", message)
        self.T_world_cage_calibrated = None
        self.session.set_calibration(None)
        self.calibration_invalidated.emit(message)
