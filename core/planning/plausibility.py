"""Is a planned pedicle screw trajectory anatomically plausible? Ranges by level.

A warning, never a refusal: the surgeon may mean an unusual trajectory. The ranges
are deliberately wider than the mean anatomy so that a usual plan never warns and
a mis-click or a wrong level (44° cranial, 60° medial at L1) does:

- Medial (transverse) angulation: the pedicle's transverse angle grows from the
  thoraco-lumbar junction to the sacrum, about 10-12° at T12-L2, 14° at L3, 18° at
  L4, 30° at L5 and 30-40° at S1 (Zindrick MR et al., Analysis of the morphometric
  characteristics of the thoracic and lumbar pedicles, Spine 1987;12(2):160-166;
  the same trend in Ebraheim NA et al., Spine 1997;22(3):233-238). Allowed: 0° up
  to that mean plus about 15° (a converging "in-out-in" plan stays inside); a
  lateral (negative) angle is warned by ``two_view.plan_warnings`` already.
- Cranial/caudal (sagittal) angulation: the usual straight-ahead lumbar screw runs
  roughly parallel to the superior endplate (within about ±15°; Zindrick 1987
  sagittal pedicle angles are within a few degrees of the endplate), and the
  cortical-bone trajectory aims about 25° cranially (Santoni BG et al., Cortical
  bone trajectory for lumbar pedicle screws, Spine J 2009;9(5):366-373). Allowed:
  20° caudal to 30° cranial. The operating table's tilt is not known here, so the
  angle is against the cage's superior axis (``PatientAxes``).
- Length (entry to target, the screw's length in bone): lumbar pedicle screws are
  35-55 mm (the pedicle-axis chord length to the anterior cortex is about 45-55 mm
  at L1-L5, Zindrick 1987); S1 screws up to about 60 mm into the promontory.
  Allowed: 25-65 mm (the coarser 15-90 mm mis-click bounds stay in ``plan_warnings``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PlausibleRange", "PLAUSIBLE_RANGES", "implausibilities", "unusual_figures"]


@dataclass(frozen=True)
class PlausibleRange:
    """Bounds for one level: medial and cranial angulation in degrees (cranial > 0,
    caudal < 0), length in mm."""
    medial_deg: tuple[float, float]
    cranial_deg: tuple[float, float]
    length_mm: tuple[float, float]


_SAGITTAL = (-20.0, 30.0)
_LUMBAR_LENGTH = (25.0, 65.0)
# medial upper bound = Zindrick's mean transverse pedicle angle + about 15 degrees
PLAUSIBLE_RANGES = {
    "T12": PlausibleRange((0.0, 25.0), _SAGITTAL, _LUMBAR_LENGTH),
    "L1": PlausibleRange((0.0, 25.0), _SAGITTAL, _LUMBAR_LENGTH),
    "L2": PlausibleRange((0.0, 27.0), _SAGITTAL, _LUMBAR_LENGTH),
    "L3": PlausibleRange((0.0, 30.0), _SAGITTAL, _LUMBAR_LENGTH),
    "L4": PlausibleRange((0.0, 33.0), _SAGITTAL, _LUMBAR_LENGTH),
    "L5": PlausibleRange((0.0, 45.0), _SAGITTAL, _LUMBAR_LENGTH),
    "S1": PlausibleRange((0.0, 50.0), _SAGITTAL, (25.0, 70.0)),
}


def unusual_figures(level: str, medial_rad: float, cranial_rad: float, length_mm: float) -> set[str]:
    """Which of "medial", "cranial", "length" lie outside ``level``'s plausible range
    (what the planning table marks)."""
    _, medial, cranial, length = _checked(level, medial_rad, cranial_rad, length_mm)
    r = PLAUSIBLE_RANGES[level]
    out = set()
    if medial > r.medial_deg[1]:
        out.add("medial")
    if not r.cranial_deg[0] <= cranial <= r.cranial_deg[1]:
        out.add("cranial")
    if not r.length_mm[0] <= length <= r.length_mm[1]:
        out.add("length")
    return out


def _checked(level, medial_rad, cranial_rad, length_mm):
    if level not in PLAUSIBLE_RANGES:
        raise ValueError(f"no plausible ranges for level {level!r} (levels: {', '.join(PLAUSIBLE_RANGES)})")
    values = (medial_rad, cranial_rad, length_mm)
    if not all(np.isfinite(float(v)) for v in values):
        raise ValueError(f"angles and length must be finite numbers, got {values!r}")
    return PLAUSIBLE_RANGES[level], float(np.degrees(medial_rad)), float(np.degrees(cranial_rad)), float(length_mm)


def implausibilities(level: str, medial_rad: float, cranial_rad: float, length_mm: float) -> list[str]:
    """One line per figure outside the plausible range of ``level`` (empty when all are
    inside). Radians and mm in; the lines speak degrees. A negative medial angle is not
    reported here (``plan_warnings`` says "away from the midline")."""
    r, medial, cranial, length = _checked(level, medial_rad, cranial_rad, length_mm)
    which = unusual_figures(level, medial_rad, cranial_rad, length_mm)
    out = []
    if "medial" in which:
        out.append(f"{medial:.0f}° medial is unusual at {level} (expected up to {r.medial_deg[1]:.0f}°): "
                   "check the level and the target")
    if "cranial" in which:
        word = "cranial" if cranial > 0 else "caudal"
        out.append(f"{abs(cranial):.0f}° {word} is unusual at {level} (expected {-r.cranial_deg[0]:.0f}° caudal "
                   f"to {r.cranial_deg[1]:.0f}° cranial): check the target in the LAT image")
    if "length" in which:
        out.append(f"{length:.0f} mm is an unusual screw length at {level} (expected {r.length_mm[0]:.0f}-"
                   f"{r.length_mm[1]:.0f} mm)")
    return out
