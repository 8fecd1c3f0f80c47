"""2D/3D registration: a 3D model fitted to the calibrated AP and LAT shots by rendering and comparing.

- ``engine.register``: any ``models.RegistrationModel`` (a CT volume with 6 pose parameters
  now; a shape model with pose and shape modes plugs in the same way), CMA-ES over coarse
  to fine stages, a verification restart, ``RegistrationRefused`` when it did not converge.
- ``similarity``: global NCC and patch gradient-NCC.
- ``views``: a calibrated shot as line integrals on its ideal grid; ``ConeBeamGeometry``
  from a calibration's 3x4 projection.
- ``ct_to_fluoro``: one vertebral level of a pre-op CT onto the shots.
- ``simulated``: seeded cases with their truth (tests and ``fluoronav bench register``).

May import: ``core.geometry``, ``core.imaging``, ``core.calibration``, ``core.simulation``
(the DRR renderer; ``simulated`` also the phantom and the room).
"""
from core.registration.errors import RegistrationError, RegistrationRefused
from core.registration.engine import DEFAULT_STAGES, RegistrationResult, RegistrationSettings, Stage, register
from core.registration.models import POSE_SCALES, RegistrationModel, RigidVolumeModel, pose_delta
from core.registration.views import ShotView, geometry_from_projection, line_integral_image, views_from_calibration
from core.registration.ct_to_fluoro import LEVEL_BOX_MM, level_model, register_ct_level, target_errors_mm

__all__ = ["RegistrationError", "RegistrationRefused", "register", "RegistrationSettings", "RegistrationResult",
           "Stage", "DEFAULT_STAGES", "RegistrationModel", "RigidVolumeModel", "POSE_SCALES", "pose_delta",
           "ShotView", "geometry_from_projection", "line_integral_image", "views_from_calibration",
           "LEVEL_BOX_MM", "level_model", "register_ct_level", "target_errors_mm"]
