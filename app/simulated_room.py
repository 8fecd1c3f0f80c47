"""The simulated operating room, wired: the robot holds the cage, the C-arm sees it there.

Only meaningful in simulation (simulated C-arm). The mechanism that holds the cage is a
``core.simulation.robot_truth.TrueRobot``: the controller's nominal model plus seeded
errors (links, joint zeros, backlash, compliance, the cage's mount), so the cage and the
tool sit where the TRUE kinematics put them while the controller and the app compute
with the nominal model. The robot base is placed so that at the robot's home pose the
truly held cage coincides with the simulator's cage pose; afterwards every robot move
gives the C-arm driver ``T_world_cage = T_world_base @ T_base_cage_true(q)`` (in the
C-arm's thread, before any later shot).

A robot motion keeps the calibration (and the plan): the C-arm did not move, and the
calibration taken at the shots' joints ``q0`` is fixed in the robot base frame
(``core.navigation.frames.BaseFrameCalibration``, ``base_calibration``). A C-arm move
invalidates it: a new shot whose angle tags disagree with the calibration's shots, or a
C-arm pose set through ``set_carm_pose`` that does, clears the session's calibration
and says why and what to do (``calibration_invalidated``, for the GUI's banner).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.geometry.rigid import invert, rotation_angle
from core.navigation.frames import ANGLE_TOLERANCE_DEG, BaseFrameCalibration, FrameError

__all__ = ["SimulatedRoom", "T_world_base_holding", "cage_pose_change", "robot_home_q", "MOVE_TOLERANCE",
           "carm_moved_reason"]

log = logging.getLogger(__name__)

MOVE_TOLERANCE = (0.05, 0.02)   # mm, degrees: the cage did not move between the AP and LAT shots


def T_world_base_holding(kinematics, q, T_world_cage) -> np.ndarray:
    """The robot base pose for which the cage held at joints ``q`` lies at ``T_world_cage``:
    ``T_world_base = T_world_cage @ inv(T_base_flange(q) @ T_flange_cage)``."""
    T = np.asarray(T_world_cage, float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError("T_world_cage must be a finite 4x4 transform")
    return T @ invert(kinematics.cage(np.asarray(q, float)))


def carm_moved_reason(calibration_angles: dict, view: str | None, primary_deg, secondary_deg,
                      tolerance_deg: float = ANGLE_TOLERANCE_DEG) -> str | None:
    """One line saying the C-arm moved, or None: the pose (degrees) compared with the angle tags
    of the calibration's shot of ``view`` (every view's when ``view`` is None, a pose set
    without a shot). Views without tags, or a pose without angles, are not compared."""
    if primary_deg is None or secondary_deg is None:
        return None
    new = (float(primary_deg), float(secondary_deg))
    for v in ((view,) if view else ("ap", "lat")):
        ref = calibration_angles.get(v)
        if ref is None:
            continue
        dp, ds = ((a - b + 180.0) % 360.0 - 180.0 for a, b in zip(new, ref))
        if abs(dp) > tolerance_deg or abs(ds) > tolerance_deg:
            what = f"the new {v.upper()} shot is" if view else "the C-arm was set"
            return (f"the C-arm moved: {what} at {new[0]:+.1f}°/{new[1]:+.1f}°, the calibration's {v.upper()} "
                    f"shot at {ref[0]:+.1f}°/{ref[1]:+.1f}°: the calibration and the plan no longer hold; "
                    "acquire AP and LAT again, calibrate, and check the plan")
    return None


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
    is built (keys ``T_world_cage``, ``cage``, ``mesh``); ``cage_moved(T_world_cage)``;
    ``calibration_invalidated(str)`` when the C-arm moved (one line: why, what to do).

    ``kinematics`` is the controller's nominal model; the cage moves with ``true_robot``
    (``robot_errors``, default ``sample_robot_errors(robot_seed)``; ``RobotErrors()`` for a
    robot exactly as modelled)."""

    scene_ready = Signal(dict)
    cage_moved = Signal(object)
    calibration_invalidated = Signal(str)

    def __init__(self, devices, session, kinematics=None, home_q=None, parent=None, robot_seed: int = 0,
                 robot_errors=None):
        super().__init__(parent)
        self.devices, self.session = devices, session
        self.kinematics, self.home_q = kinematics, None if home_q is None else np.asarray(home_q, float)
        self.true_robot = None
        if kinematics is not None:
            from core.simulation.robot_truth import TrueRobot, sample_robot_errors
            errors = robot_errors if robot_errors is not None else sample_robot_errors(robot_seed, nominal=kinematics)
            self.true_robot = TrueRobot(kinematics, errors)
            if self.home_q is not None:
                self.true_robot.move(self.home_q)
        self.T_world_base: np.ndarray | None = None
        self.T_world_cage: np.ndarray | None = None     # where the cage is now
        self.T_world_cage_calibrated: np.ndarray | None = None  # where it was in the calibration's shots
        self.base_calibration: BaseFrameCalibration | None = None
        self.calibration_angles: dict = {}             # view -> (primary, secondary) of the calibration's shots
        self.shot_cage: dict[str, np.ndarray] = {}
        self.shot_q: dict[str, np.ndarray] = {}        # the robot's joints at each view's last shot
        self.shot_angles: dict[str, tuple | None] = {}
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
            from widgets.scene.anatomy import bone_levels, bone_surface
            scene = driver.scene
            levels = None
            try:
                mesh = bone_surface(scene.volume, bone_hu, step_mm)
                levels = bone_levels(mesh)     # here, not on the GUI thread (seconds for a spine)
            except ValueError as e:
                log.warning("no bone surface in the 3D view: %s", e)
                mesh = None
            return {"T_world_cage": np.array(scene.T_world_cage, float), "cage": scene.cage, "mesh": mesh,
                    "mesh_levels": levels}
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
                # the truly held cage (direction of the last motion: none yet) is the simulator's
                self.T_world_base = T_world_base_holding(self.true_robot, q, self.T_world_cage)
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
        """The robot's encoders read ``q``: the true mechanism moves there (its backlash side set
        by the direction of motion) and the cage with it. The calibration stays valid."""
        self._q = np.asarray(q, float)
        if self.true_robot is not None:
            self.true_robot.move(self._q)
        if self.T_world_base is None or self.kinematics is None:
            return
        T = self.T_world_base @ self.true_robot.cage(self._q)
        if self.T_world_cage is not None and max(
                a / b for a, b in zip(cage_pose_change(self.T_world_cage, T), (1e-4, 1e-4))) < 1:
            return  # no motion worth a message to the C-arm
        self.set_cage_pose(T)

    def set_cage_pose(self, T_world_cage) -> None:
        """Move the simulated cage (the next shot shows it there)."""
        T = np.array(T_world_cage, float)
        self.T_world_cage = T
        self.devices.call("carm", lambda d: d.set_cage_pose(T), self._on_cage_pose_set)
        self.cage_moved.emit(T)

    def _on_cage_pose_set(self, _result, error: str) -> None:
        if error:
            log.error("the simulated C-arm did not take the cage pose: %s", error)

    def current_q(self) -> np.ndarray | None:
        return self._q if self._q is not None else self.home_q

    def true_tool_pose(self) -> np.ndarray | None:
        """``T_world_tool``: the tool as the TRUE robot holds it now, in the C-arm's world frame
        (None before the scene is ready)."""
        q = self.current_q()
        if self.T_world_base is None or self.true_robot is None or q is None:
            return None
        return self.T_world_base @ self.true_robot.forward(q)

    def true_T_base_cage(self) -> np.ndarray | None:
        q = self.current_q()
        return None if self.true_robot is None or q is None else self.true_robot.cage(q)

    # -- the C-arm ------------------------------------------------------------------------
    def set_carm_pose(self, primary_deg: float, secondary_deg: float, done=None) -> int:
        """Orbit the C-arm (``DevicesController.set_carm_pose``); once it took the pose, a pose
        other than the calibration's invalidates the calibration."""
        def taken(result, error):
            if not error:
                self.carm_pose_set(primary_deg, secondary_deg)
            if done is not None:
                done(result, error)
        return self.devices.set_carm_pose(primary_deg, secondary_deg, taken)

    def carm_pose_set(self, primary_deg: float, secondary_deg: float) -> None:
        """The C-arm is now at these angles (degrees)."""
        self._check_carm(None, primary_deg, secondary_deg)

    # -- calibration bookkeeping ----------------------------------------------------------------
    def _on_shot(self, view: str, truth: dict) -> None:
        shot = truth["shot"]
        self.shot_cage[view] = np.array(shot.T_world_cage, float)
        q = self.current_q()
        self.shot_q[view] = None if q is None else q.copy()
        img = getattr(shot, "image", None)
        p, s = getattr(img, "primary_angle_deg", None), getattr(img, "secondary_angle_deg", None)
        self.shot_angles[view] = None if p is None or s is None else (float(p), float(s))
        other = self.shot_cage.get("lat" if view == "ap" else "ap")
        # a pair for calibrating must see one cage pose; after the calibration the robot moves the
        # cage on purpose (closed-loop and verification shots) and the warning would be noise
        if self.session.calibration is None and other is not None and not self._same(other, self.shot_cage[view]):
            log.warning("the cage moved between the AP and LAT shots: take the other view again "
                        "before calibrating")
        self._check_carm(view, p, s)

    def _check_carm(self, view, primary_deg, secondary_deg) -> None:
        if self.session.calibration is None or not self.calibration_angles:
            return
        why = carm_moved_reason(self.calibration_angles, view, primary_deg, secondary_deg)
        if why is None:
            return
        log.warning("%s", why)
        self.session.set_calibration(None, why=why)     # -> _on_calibration(None) clears the frames
        self.calibration_invalidated.emit(why)

    def _on_calibration(self, calibration) -> None:
        """A new calibration: where the cage and the robot were at its shots, its C-arm angles,
        and (for a ``CageCalibration``) the same calibration in the robot base frame."""
        if calibration is None:
            self.T_world_cage_calibrated = self.base_calibration = None
            self.calibration_angles = {}
            return
        shots = [self.shot_cage[v] for v in ("ap", "lat") if v in self.shot_cage]
        self.T_world_cage_calibrated = shots[0] if shots else self.T_world_cage
        angles = {}
        for v in ("ap", "lat"):
            img = self.session.image(v) if hasattr(self.session, "image") else None
            p, s = getattr(img, "primary_angle_deg", None), getattr(img, "secondary_angle_deg", None)
            a = (float(p), float(s)) if p is not None and s is not None else self.shot_angles.get(v)
            if a is not None:
                angles[v] = a
        self.calibration_angles = angles
        q0 = next((self.shot_q[v] for v in ("ap", "lat") if self.shot_q.get(v) is not None), self.current_q())
        self.base_calibration = None
        if self.kinematics is not None and q0 is not None:
            try:
                self.base_calibration = BaseFrameCalibration(calibration, self.kinematics, q0, angles)
            except FrameError:
                pass                               # not a CageCalibration (a record without geometry)

    def _same(self, T_a, T_b) -> bool:
        mm, deg = cage_pose_change(T_a, T_b)
        return mm <= MOVE_TOLERANCE[0] and deg <= MOVE_TOLERANCE[1]
