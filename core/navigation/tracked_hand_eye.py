"""The robot's tracker marker on the flange measured by hand-eye calibration (AX = XB), and the
marker's relation to the cage and the tool: what the tracked closed loop (eq. 24) needs.

The tracker stands still while the robot moves its marker (``robot_ref``, on the flange). At
each pose ``i`` the robot reports ``T_base_flange_i`` (nominal kinematics at the encoders) and
the tracker ``T_tracker_robotref_i``; the tracker's pose in base is the same at every pose,

    T_base_tracker = T_base_flange_i @ X @ inv(T_tracker_robotref_i),    X = T_flange_robotref,

which is ``core.navigation.hand_eye.estimate_T_flange_cage`` with the tracker as the fixed
"camera" and the marker as the "cage": OpenCV's ``calibrateHandEye`` methods (Tsai, Park, Horaud,
Andreff, Daniilidis) compared on how well the fixed tracker agrees with itself across the poses.

The poses are chosen automatically (``choose_poses``): tilts about the robot's x and y axes in
golden-angle directions with alternating magnitudes and small translations, so that no two
motions turn about one axis, each inside the joint limits and the workspace, and each keeping
the marker inside the tracker's volume and in its line of sight as predicted from the first
pose's measurement and the marker's nominal mount.

Frames: ``T_flange_robotref`` (marker on the flange), ``T_robotref_cage`` and
``T_robotref_tool`` follow from it and the cage mount / tool offset. Millimetres, radians.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert, make_transform
from core.navigation.hand_eye import GOLDEN_DEG, HandEyeError, HandEyeResult, estimate_T_flange_cage
from core.navigation.tracking import TrackerFrame

__all__ = ["TrackedHandEyeError", "MIN_TRACKED_POSES", "NOMINAL_T_FLANGE_ROBOTREF", "TRACKER_DIRECTION_BASE",
           "average_pose", "choose_poses", "TrackedHandEye", "calibrate_robot_marker", "robot_marker_to_cage",
           "robot_marker_to_tool"]

MIN_TRACKED_POSES = 8


class TrackedHandEyeError(HandEyeError):
    """The tracked hand-eye cannot be done: too few poses, the marker not seen, bad input."""


# where the robot marker is designed to sit: on the guide holder, about 110 mm from the tool tip (a
# shorter lever for its rotation noise), its marker plane
# turned towards the tracker, which stands at the foot end, above and opposite the C-arm's detector
TRACKER_DIRECTION_BASE = np.array([-0.35, -0.55, 0.75]) / np.linalg.norm([-0.35, -0.55, 0.75])


def _facing(normal) -> np.ndarray:
    z = np.asarray(normal, float) / np.linalg.norm(normal)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], 1)


NOMINAL_T_FLANGE_ROBOTREF = make_transform(_facing(TRACKER_DIRECTION_BASE), [-60.0, -70.0, -90.0])


def average_pose(Ts) -> np.ndarray:
    """The mean rigid pose of a list of 4x4 (chordal mean rotation, mean translation)."""
    Ts = [np.asarray(T, float) for T in Ts]
    if not Ts or any(T.shape != (4, 4) or not np.all(np.isfinite(T)) for T in Ts):
        raise TrackedHandEyeError("averaging needs at least one finite 4x4 pose")
    R = Rotation.from_matrix(np.stack([T[:3, :3] for T in Ts])).mean().as_matrix()
    return make_transform(R, np.mean([T[:3, 3] for T in Ts], 0))


def frames_pose(frames, name: str, min_frames: int = 5) -> tuple[np.ndarray, int]:
    """(averaged ``T_tracker_<name>``, frames used) over the frames in which the tool is OK only
    (tracking.ToolPose.ok); TrackedHandEyeError when fewer than ``min_frames`` saw it."""
    ok = [f.pose(name).T_tracker_tool for f in frames if isinstance(f, TrackerFrame) and f.pose(name).ok]
    if len(ok) < min_frames:
        raise TrackedHandEyeError(f"the tracker saw {name} in {len(ok)} of {len(frames)} frames (need "
                                  f">= {min_frames}): clear the line of sight between the camera and the marker")
    return average_pose(ok), len(ok)


def choose_poses(kinematics, q0, T_tracker_robotref0, n: int = 10, tilt_deg: float = 20.0, shift_mm: float = 25.0,
                 T_flange_robotref=NOMINAL_T_FLANGE_ROBOTREF, visible=None) -> list:
    """``n`` encoder readings, ``q0`` first: tilts about the base x and y axes of magnitude
    alternating between ``tilt_deg`` and half of it, in golden-angle directions, with the
    flange shifted up to ``shift_mm``. Each must be reachable (joint limits, workspace) and
    ``visible(T_tracker_robotref_predicted) -> bool`` (the volume and line of sight; the
    prediction uses the first measurement and the marker's nominal mount). A pose that fails is
    retried at 3/4 and 1/2 of its tilt; TrackedHandEyeError when still too few."""
    from core.robot.kinematics.base import KinematicsError
    n = int(n)
    if n < MIN_TRACKED_POSES:
        raise TrackedHandEyeError(f"the tracked hand-eye needs >= {MIN_TRACKED_POSES} robot poses, got {n}")
    if not (0 < tilt_deg <= 35 and shift_mm >= 0):
        raise TrackedHandEyeError(f"the tilt must be in (0, 35] deg and the shift >= 0, got {tilt_deg}, {shift_mm}")
    q0 = np.asarray(q0, float)
    X0 = kinematics.pose(q0)
    F0 = kinematics.flange(q0)
    T_tr_base = np.asarray(T_tracker_robotref0, float) @ invert(T_flange_robotref) @ invert(F0)
    out = [q0]
    k = 0
    while len(out) < n and k < 6 * n:
        k += 1
        phi = math.radians(GOLDEN_DEG * k)
        mag = tilt_deg if k % 2 else 0.5 * tilt_deg
        shift = shift_mm * np.array([math.cos(1.7 * k), math.sin(1.3 * k), math.cos(2.3 * k)])
        for scale in (1.0, 0.75, 0.5):
            a, b = (math.radians(mag * scale) * c for c in (math.cos(phi), math.sin(phi)))
            X = np.array([*(X0[:3] + scale * shift), X0[3] + a, X0[4] + b])
            try:
                q = kinematics.joints_for_pose(X)
            except KinematicsError:
                continue
            if kinematics.workspace_mm is not None:
                p = kinematics.pose(q)[:3]
                ws = kinematics.workspace_mm
                if np.any(p < ws[:, 0]) or np.any(p > ws[:, 1]):
                    continue
            if visible is not None and not visible(T_tr_base @ kinematics.flange(q) @ T_flange_robotref):
                continue
            out.append(q)
            break
    if len(out) < n:
        raise TrackedHandEyeError(f"only {len(out)} of {n} poses are reachable with the marker in the tracker's "
                                  "view: move the tracker so that it sees the robot's marker from the foot end, "
                                  "or start nearer the robot's home pose")
    return out


@dataclass(frozen=True)
class TrackedHandEye:
    """``T_flange_robotref`` with the method comparison (``hand_eye``: ``HandEyeResult``, whose
    ``T_flange_cage`` field is this ``X``), and the fixed tracker in base ``T_base_tracker``."""
    T_flange_robotref: np.ndarray
    T_base_tracker: np.ndarray
    hand_eye: HandEyeResult
    frames_used: tuple = ()

    @property
    def residuals(self) -> dict:
        return self.hand_eye.residuals

    def table(self) -> str:
        return self.hand_eye.table()


def calibrate_robot_marker(T_base_flange_list, T_tracker_robotref_list, frames_used=()) -> TrackedHandEye:
    """AX = XB for the robot's marker (module docstring) from >= 8 poses."""
    F, M = list(T_base_flange_list), list(T_tracker_robotref_list)
    if len(F) != len(M):
        raise TrackedHandEyeError(f"{len(F)} robot poses but {len(M)} marker poses: one of each per pose")
    if len(F) < MIN_TRACKED_POSES:
        raise TrackedHandEyeError(f"the tracked hand-eye needs >= {MIN_TRACKED_POSES} robot poses, got {len(F)}")
    try:
        r = estimate_T_flange_cage(F, M)
    except HandEyeError as e:
        raise TrackedHandEyeError(str(e).replace("cage", "robot marker")) from None
    X = r.T_flange_cage
    T_bt = average_pose([f @ X @ invert(m) for f, m in zip(F, M)])
    return TrackedHandEye(X.copy(), T_bt, r, tuple(frames_used))


def robot_marker_to_cage(T_flange_robotref, T_flange_cage) -> np.ndarray:
    """``T_robotref_cage = inv(T_flange_robotref) @ T_flange_cage``: the cage seen from the marker."""
    return invert(T_flange_robotref) @ np.asarray(T_flange_cage, float)


def robot_marker_to_tool(T_flange_robotref, T_flange_tool) -> np.ndarray:
    """``T_robotref_tool = inv(T_flange_robotref) @ T_flange_tool`` (eq. 24's ``T_tool_real^mark_robot``)."""
    return invert(T_flange_robotref) @ np.asarray(T_flange_tool, float)
