"""What the engine fits: a model with ``n_params`` parameters that renders itself through a view.

The engine only needs the ``RegistrationModel`` protocol, so a CT volume (6 pose
parameters, ``RigidVolumeModel``) and a statistical shape model (pose + shape modes)
plug into the same optimiser, similarity and refusal logic.

Pose parameters x = (r, t): ``T_calib_model(x) = T_start · Tr(c + t) · R(r) · Tr(-c)``,
r a rotation vector (rad) and t a translation (mm), both in the model frame, about the
model's centre c (the vertebra), so rotating does not swing the model through the image.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import from_rotvec, invert, is_rigid
from core.imaging.volume import Volume, mu_water
from core.registration.errors import RegistrationError
from core.simulation.drr import DrrError, DrrRenderer, MuGrid

__all__ = ["RegistrationModel", "RigidVolumeModel", "POSE_SCALES", "pose_delta"]

# One unit of the optimiser's normalised space: 5 degrees, 10 mm (the start's expected error).
POSE_SCALES = np.array([np.radians(5.0)] * 3 + [10.0] * 3)


class RegistrationModel(Protocol):
    """A model the engine can fit to calibrated shots."""
    n_params: int
    scales: np.ndarray            # (n_params,) native units per normalised unit

    def render(self, geometry: ConeBeamGeometry, x: np.ndarray) -> np.ndarray:
        """(rows, cols) line integrals of the model at parameters x through ``geometry`` (calibration frame)."""

    def check_points(self, x: np.ndarray) -> np.ndarray:
        """(N, 3) calibration-frame points that the fit must place (restart agreement)."""

    def footprint(self, x: np.ndarray) -> np.ndarray:
        """(N, 3) calibration-frame points bounding the model (the image region compared)."""


def pose_delta(x, centre) -> np.ndarray:
    """4x4 ``Tr(c + t) R(r) Tr(-c)`` of pose parameters x = (rx, ry, rz [rad], tx, ty, tz [mm])."""
    x = np.asarray(x, float)
    c = np.asarray(centre, float)
    T = from_rotvec(x[:3])
    T[:3, 3] = c + x[3:6] - T[:3, :3] @ c
    return T


class RigidVolumeModel:
    """A CT (or one vertebra's box of it) as bone attenuation, with 6 pose parameters.

    ``volume``: the CT, its ``T_world_voxel`` in the model frame (the CT's own frame);
    ``box_min_mm`` / ``box_max_mm``: the model-frame box kept (one level; None keeps all);
    ``T_calib_model_start``: the starting pose in the calibration frame; ``centre_mm``:
    rotation centre in the model frame (default: the box centre); ``bone_hu``: attenuation
    above this HU's is kept (soft tissue, which the shot shows too but the box cuts off,
    would otherwise draw the box's own edges); ``check_points_mm``: model-frame points whose
    placement decides whether restarts agree (default: the box's corners halfway in).
    """
    n_params = 6
    scales = POSE_SCALES

    def __init__(self, volume: Volume, T_calib_model_start, box_min_mm=None, box_max_mm=None, centre_mm=None,
                 bone_hu: float = 100.0, check_points_mm=None, device: str = "cpu"):
        if not isinstance(volume, Volume):
            raise RegistrationError("the CT must be a core.imaging.volume.Volume")
        T0 = np.asarray(T_calib_model_start, float)
        if T0.shape != (4, 4) or not np.all(np.isfinite(T0)) or not is_rigid(T0, 1e-5):
            raise RegistrationError("the start pose must be a finite rigid 4x4 transform")
        if box_min_mm is not None or box_max_mm is not None:
            lo, hi = (np.asarray(b, float) for b in (box_min_mm, box_max_mm))
            if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo + hi)) or np.any(hi - lo < 5.0):
                raise RegistrationError("the level's box must be finite (x, y, z) min and max at least 5 mm apart")
            try:
                volume = volume.cropped_to_world_box(lo, hi)
            except ValueError:
                raise RegistrationError("the level's box lies outside the CT") from None
        self.volume = volume
        mu = np.clip(volume.mu() - np.float32(mu_water() * (1 + bone_hu / 1000.0)), 0.0, None)
        if not np.any(mu > 0):
            raise RegistrationError(f"the CT box holds no bone (nothing above {bone_hu:.0f} HU)")
        try:
            self.grid = MuGrid(mu.astype(np.float32), volume.T_world_voxel)
            self.renderer = DrrRenderer(self.grid, device)
        except DrrError as e:
            raise RegistrationError(f"the CT cannot be rendered: {e}") from None
        lo_w, hi_w = volume.extent_world()
        self.centre_mm = 0.5 * (lo_w + hi_w) if centre_mm is None else np.asarray(centre_mm, float)
        self.T_start = T0
        if check_points_mm is None:
            c, h = self.centre_mm, 0.25 * (hi_w - lo_w)
            check_points_mm = np.array([c + h * np.array([sx, sy, sz]) for sx in (-1, 1) for sy in (-1, 1)
                                        for sz in (-1, 1)])
        self._check = np.atleast_2d(np.asarray(check_points_mm, float))
        if self._check.shape[1] != 3 or not np.all(np.isfinite(self._check)):
            raise RegistrationError("check points must be finite (N, 3) in mm")
        self._corners = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1])
                                  for z in (lo_w[2], hi_w[2])])

    def pose(self, x) -> np.ndarray:
        """``T_calib_model`` at parameters x."""
        return self.T_start @ pose_delta(x, self.centre_mm)

    def render(self, geometry: ConeBeamGeometry, x) -> np.ndarray:
        # Moving the model by T is rendering the fixed grid through the geometry moved by T⁻¹.
        try:
            return self.renderer.render(geometry.transformed(invert(self.pose(x))))
        except DrrError as e:
            raise RegistrationError(f"the DRR failed at this pose: {e}") from None

    def check_points(self, x) -> np.ndarray:
        return self.map_points(self._check, x)

    def footprint(self, x) -> np.ndarray:
        return self.map_points(self._corners, x)

    def map_points(self, points_model_mm, x) -> np.ndarray:
        """Model-frame points (N, 3) in the calibration frame at parameters x (e.g. the CT plan)."""
        T = self.pose(x)
        p = np.atleast_2d(np.asarray(points_model_mm, float))
        return p @ T[:3, :3].T + T[:3, 3]
