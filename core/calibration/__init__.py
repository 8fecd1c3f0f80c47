"""Cage calibration: raw pixels of the AP and LAT shots <-> rays in the cage frame.

Modules: ``beads`` and ``bead_pairs`` (steel-ball detection, touching pairs), ``cage`` and
``plate`` (their files), ``labelling`` (which blob is which ball), ``distortion`` (image-
intensifier correction), ``models`` (2D-2D and 3D-2D camera models), ``calibration`` (the
result and its file), ``pipeline`` (shots -> calibration), ``manual`` (the technician's fixes), ``frustum`` (where a calibrated shot's image lies in 3D).

``calibrate(cage, images, distortions)`` builds a ``CageCalibration``;
``CageCalibration.load(path)`` reads one back (``fluoronav.calib/1``).

May import: ``core.geometry``, ``core.imaging``, ``core.formats``.
"""
from core.calibration.calibration import (CageCalibration, CalibrationError, CalibrationFileError,
                                          PlaneFit, ViewCalibration, METHODS, FORMAT)
from core.calibration.pipeline import DEFAULT_METHOD, calibrate, calibrate_view

__all__ = ["CageCalibration", "CalibrationError", "CalibrationFileError", "PlaneFit", "ViewCalibration",
           "METHODS", "FORMAT", "DEFAULT_METHOD", "calibrate", "calibrate_view"]
