"""CT-to-fluoroscopy registration of one vertebral level: the pre-op CT onto the AP and LAT shots.

The CT's frame is its DICOM patient frame (LPS: x left, y posterior, z superior). A
level is registered on its own (the spine bends between the CT table and the OR
table): the CT is cut to a box around the level's body centre, wide enough for the
transverse processes and long enough posteriorly for the laminae and the spinous
process (``LEVEL_BOX_MM``), and fitted with 6 pose parameters by the engine.
"""
from __future__ import annotations

import numpy as np

from core.imaging.volume import Volume
from core.registration.engine import RegistrationResult, RegistrationSettings, register
from core.registration.errors import RegistrationError
from core.registration.models import RigidVolumeModel

__all__ = ["LEVEL_BOX_MM", "level_model", "register_ct_level", "target_errors_mm"]

# Around the body centre, LPS mm: lateral to the transverse processes, posterior to the
# spinous process, about the body's height (the neighbours' end-plates stay out).
LEVEL_BOX_MM = (np.array([-42.0, -26.0, -21.0]), np.array([42.0, 66.0, 21.0]))


def level_model(ct: Volume, level_centre_ct, T_calib_ct_start, check_points_ct=None,
                box=LEVEL_BOX_MM, device: str = "cpu") -> RigidVolumeModel:
    """The CT cut to the box around ``level_centre_ct`` (mm, CT frame), rotating about that centre."""
    c = np.asarray(level_centre_ct, float)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise RegistrationError(f"the level centre must be a finite (x, y, z) in mm, got {level_centre_ct}")
    lo, hi = c + box[0], c + box[1]
    return RigidVolumeModel(ct, T_calib_ct_start, lo, hi, centre_mm=c, check_points_mm=check_points_ct,
                            device=device)


def register_ct_level(ct: Volume, level_centre_ct, views, T_calib_ct_start, check_points_ct=None,
                      settings: RegistrationSettings = RegistrationSettings(),
                      device: str = "cpu") -> RegistrationResult:
    """``T_calib_ct`` of one level (``result.T_calib_model``) from a start pose; see ``engine.register``.

    ``check_points_ct``: the points the surgeon cares about (the plan's pedicle targets);
    restarts must agree on where they land.
    """
    model = level_model(ct, level_centre_ct, T_calib_ct_start, check_points_ct, device=device)
    return register(model, views, settings)


def target_errors_mm(T_found, T_truth, targets_ct) -> np.ndarray:
    """|T_found p - T_truth p| (N,) for CT-frame targets p (N, 3): the target registration error."""
    p = np.atleast_2d(np.asarray(targets_ct, float))
    a = p @ np.asarray(T_found)[:3, :3].T + np.asarray(T_found)[:3, 3]
    b = p @ np.asarray(T_truth)[:3, :3].T + np.asarray(T_truth)[:3, 3]
    return np.linalg.norm(a - b, axis=1)
