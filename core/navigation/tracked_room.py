"""The simulated room as the optical tracker sees it: the true robot carrying its marker, the
patient's marker (moving with the patient), the camera, and what may stand in the way.

The controller knows the nominal robot and the marker's nominal mount
(``tracked_hand_eye.NOMINAL_T_FLANGE_ROBOTREF``); the truth is a ``TrueRobot`` and a marker
mounted a few mm and about a degree off its drawing. The camera stands ``distance_mm`` from the
surgical site along ``TRACKER_DIRECTION_BASE`` (the foot end, above). The patient's marker is
clamped 110 mm from the site towards the camera (``patient_offset_base``, base axes); the patient's motion (``motion(t) -> T_world_world``, identity when
still) moves it, and the plan, with the patient. Times in seconds, millimetres.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert, make_transform
from core.navigation.tracked_hand_eye import (NOMINAL_T_FLANGE_ROBOTREF, TRACKER_DIRECTION_BASE, TrackedHandEye,
                                              calibrate_robot_marker, choose_poses, frames_pose)
from core.navigation.tracker_sim import frame_from
from core.navigation.tracking import TrackerFrame
from core.simulation.tracker import PATIENT_REF, ROBOT_REF, TrackerModel, T_world_tracker_looking_at

__all__ = ["TrackedRoom", "sample_marker_mount", "hand_eye_in_room"]


def sample_marker_mount(seed: int) -> np.ndarray:
    """The marker's true mount: the nominal one composed with 1-3 mm per axis and 0.5-1.5 deg."""
    rng = np.random.default_rng([int(seed), 13])
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    d = make_transform(Rotation.from_rotvec(axis * math.radians(rng.uniform(0.5, 1.5))).as_matrix(),
                       rng.uniform(1.0, 3.0, 3) * rng.choice([-1.0, 1.0], 3))
    return NOMINAL_T_FLANGE_ROBOTREF @ d


class TrackedRoom:
    """``truth`` (``TrueRobot``, moved by the caller), ``T_world_base``, the camera and marker
    poses. ``frame(t)`` measures the current truth at time ``t`` (one ``TrackerFrame``)."""

    def __init__(self, truth, T_world_base, site_world, seed: int = 0, distance_mm: float = 1600.0,
                 model: TrackerModel | None = None, T_flange_robotref=None, patient_offset_base=(-20.0, -110.0, 20.0),
                 motion=None, occluders=None):
        self.truth = truth
        self.T_world_base = np.asarray(T_world_base, float)
        site = np.asarray(site_world, float)
        direction_world = self.T_world_base[:3, :3] @ TRACKER_DIRECTION_BASE
        self.T_world_tracker = T_world_tracker_looking_at(site, direction_world, distance_mm,
                                                          up=self.T_world_base[:3, 2])
        self.T_tracker_world = invert(self.T_world_tracker)
        self.model = model or TrackerModel(seed=int(seed))
        self.T_flange_robotref = (sample_marker_mount(seed) if T_flange_robotref is None
                                  else np.asarray(T_flange_robotref, float))
        # the patient's marker beside the site, its markers' plane facing the camera
        R = self.T_world_tracker[:3, :3] @ np.diag([1.0, -1.0, -1.0])
        self.T_world_patientref0 = make_transform(R, site + self.T_world_base[:3, :3] @ np.asarray(patient_offset_base, float))
        self.motion = motion or (lambda t: np.eye(4))
        self.occluders = occluders or (lambda t: [])
        self._n = 0

    def patient_motion(self, t: float) -> np.ndarray:
        """``M(t)``: the patient's rigid motion in the world since the start (identity: still)."""
        return np.asarray(self.motion(t), float)

    def true_poses(self, t: float) -> dict:
        """name -> true ``T_tracker_body`` now (the robot at its last ``truth.move``)."""
        q = self.truth.q
        poses = {PATIENT_REF.name: self.T_tracker_world @ self.patient_motion(t) @ self.T_world_patientref0}
        if q is not None:
            poses[ROBOT_REF.name] = (self.T_tracker_world @ self.T_world_base @ self.truth.flange(q)
                                     @ self.T_flange_robotref)
        return poses

    def frame(self, t: float) -> TrackerFrame:
        self._n += 1
        return frame_from(self.model.measure(self.true_poses(t), list(self.occluders(t))), self._n, t)

    def visible(self, T_tracker_robotref) -> bool:
        """Would the robot's marker at this pose be seen whole, inside the volume (no noise drawn)?"""
        P = ROBOT_REF.markers_mm @ T_tracker_robotref[:3, :3].T + T_tracker_robotref[:3, 3]
        inside = self.model.volume.contains(P).all()
        seen = all(not occ.blocks(c, P).any() for occ in self.occluders(0.0) for c in self.model.cameras)
        return bool(inside and seen)


def hand_eye_in_room(room: TrackedRoom, kinematics, q0, n_poses: int = 10, tilt_deg: float = 20.0,
                     frames_per_pose: int = 30, rate_hz: float = 60.0, t0: float = 0.0) -> tuple[TrackedHandEye, list]:
    """The tracked hand-eye procedure in the room: poses chosen from the first measurement,
    ``frames_per_pose`` frames averaged at each (the robot at rest), AX = XB solved. Returns the
    result and the joints used. The room's patient must be still meanwhile (it does not matter
    to this step: only the robot's marker is used)."""
    t = float(t0)

    def settle_and_measure(q):
        nonlocal t
        room.truth.move(q)
        frames = []
        for _ in range(int(frames_per_pose)):
            t += 1.0 / rate_hz
            frames.append(room.frame(t))
        return frames_pose(frames, ROBOT_REF.name)

    M0, used0 = settle_and_measure(q0)
    Q = choose_poses(kinematics, q0, M0, n_poses, tilt_deg, visible=room.visible)
    F, M, used = [kinematics.flange(q0)], [M0], [used0]
    for q in Q[1:]:
        T, k = settle_and_measure(q)
        F.append(kinematics.flange(q))
        M.append(T)
        used.append(k)
    return calibrate_robot_marker(F, M, used), Q
