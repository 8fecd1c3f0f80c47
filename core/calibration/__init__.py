"""Cage calibration: raw pixels of the AP and LAT shots <-> rays in the cage frame.

``calibrate(cage, images, distortions)`` builds a ``CageCalibration``;
``CageCalibration.load(path)`` reads one back (``fluoronav.calib/1``).
"""
from core.calibration.calibration import (CageCalibration, CalibrationError, CalibrationFileError,
                                          PlaneFit, ViewCalibration, METHODS, FORMAT)
from core.calibration.pipeline import DEFAULT_METHOD, calibrate, calibrate_view

__all__ = ["CageCalibration", "CalibrationError", "CalibrationFileError", "PlaneFit", "ViewCalibration",
           "METHODS", "FORMAT", "DEFAULT_METHOD", "calibrate", "calibrate_view"]
