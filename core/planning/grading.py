"""Gertzbein-Robbins grading of a straight pedicle screw against the phantom's pedicle.

Gertzbein SD, Robbins SE. Accuracy of pedicular screw placement in vivo.
Spine 1990;15(1):11-14; as used in the robot paper (robot-spine-2d-fluoro-
navigation-2020, "Results": grade I fully within the pedicle, II < 2 mm,
III 2-4 mm, IV > 4 mm), extended to the usual A-E scale: A no breach,
B < 2 mm, C 2-4 mm, D 4-6 mm, E > 6 mm. Grades A and B are clinically acceptable.

Breach = how far the screw's surface goes beyond the pedicle's OUTER cortex,
measured in the pedicle's cross-section (perpendicular to its axis, as read on
a CT slice across the pedicle), over the pedicle proper (from its junction with
the posterior arch to the posterior wall of the body; see
``core.simulation.phantom.truth``). The screw is a cylinder of the given diameter from
entry to target; its surface is sampled every 0.1 mm along the axis and every
5 degrees around it, then finely (41 x 41) around the worst sample: the breach
is found to ~0.001 mm.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.simulation.phantom.truth import PedicleTruth

__all__ = ["GradeResult", "GradingError", "grade_trajectory", "grade_plan", "gr_grade", "GR_LIMITS_MM"]

GR_LIMITS_MM = (("A", 0.0), ("B", 2.0), ("C", 4.0), ("D", 6.0))   # grade while breach < limit (A: none)
_AXIAL_STEP_MM = 0.1
_ANGLES = np.radians(np.arange(0.0, 360.0, 5.0))


class GradingError(ValueError):
    """A trajectory that cannot be graded (bad input, or it does not pass through the pedicle)."""


@dataclass(frozen=True, eq=False)
class GradeResult:
    grade: str                        # "A".."E"
    breach_mm: float                  # 0 when the screw stays inside the outer cortex
    breach_side: str | None           # "medial", "lateral", "superior", "inferior" or None
    clearance_mm: float               # smallest distance from the screw surface to the outer cortex (<0: breach)
    breach_point_mm: np.ndarray | None  # screw surface point farthest beyond the cortex (world mm)
    length_in_pedicle_mm: float       # length of the screw axis within the pedicle proper
    level: str = ""
    side: str = ""
    body_breach_mm: float | None = None   # grade_plan only: how far the screw leaves the vertebra's bone

    @property
    def acceptable(self) -> bool:
        """Clinically acceptable placement (grade A or B)."""
        return self.grade in ("A", "B")


def gr_grade(breach_mm: float) -> str:
    """Gertzbein-Robbins grade of a breach distance in mm."""
    b = float(breach_mm)
    if not np.isfinite(b):
        raise GradingError(f"breach distance must be finite, got {breach_mm}")
    if b <= 0.0:
        return "A"
    for grade, limit in GR_LIMITS_MM[1:]:
        if b < limit:
            return grade
    return "E"


def _check(entry_mm, target_mm, diameter_mm, pedicle) -> tuple[np.ndarray, np.ndarray, float]:
    if not isinstance(pedicle, PedicleTruth):
        raise GradingError(f"pedicle must be a PedicleTruth from the phantom, got {type(pedicle).__name__}")
    pts = []
    for name, p in (("entry", entry_mm), ("target", target_mm)):
        a = np.asarray(p, dtype=float)
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise GradingError(f"{name} must be a finite (x, y, z) point in mm, got {p!r}")
        pts.append(a)
    if np.linalg.norm(pts[1] - pts[0]) < 1.0:
        raise GradingError("entry and target are less than 1 mm apart: plan a trajectory through the pedicle")
    d = float(diameter_mm)
    if not np.isfinite(d) or not 1.0 <= d <= 12.0:
        raise GradingError(f"screw diameter must be 1-12 mm, got {diameter_mm}")
    return pts[0], pts[1], d


class _Screw:
    """A cylinder of radius r along entry -> target; surface points by (axial t, angle phi)."""

    def __init__(self, entry, target, radius):
        self.entry, self.radius = entry, radius
        self.length = float(np.linalg.norm(target - entry))
        self.axis = (target - entry) / self.length
        u = np.cross(self.axis, [1.0, 0.0, 0.0] if abs(self.axis[0]) < 0.9 else [0.0, 1.0, 0.0])
        self.u = u / np.linalg.norm(u)
        self.v = np.cross(self.axis, self.u)

    def surface(self, t, phi) -> np.ndarray:
        """Points (len(t) * len(phi), 3) for every pair of axial position and angle."""
        t, phi = np.clip(np.asarray(t, float), 0.0, self.length), np.asarray(phi, float)
        ring = self.radius * (np.cos(phi)[:, None] * self.u + np.sin(phi)[:, None] * self.v)
        return (self.entry + t[:, None, None] * self.axis + ring[None]).reshape(-1, 3)


def _max_distance(screw: _Screw, pedicle: PedicleTruth, t, phi):
    """(distance, t, phi, point) of the sample farthest outside the cortex within the pedicle proper."""
    pts = screw.surface(t, phi)
    ok = pedicle.in_pedicle_range(pts)
    if not ok.any():
        return None
    d = np.where(ok, pedicle.signed_distance(pts), -np.inf)
    i = int(np.argmax(d))
    return float(d[i]), t[i // len(phi)], phi[i % len(phi)], pts[i]


def _worst_point(screw: _Screw, pedicle: PedicleTruth):
    """Coarse grid over the surface, then 41 x 41 samples around its best (+-1 step, +-5 deg)."""
    t = np.linspace(0.0, screw.length, int(np.ceil(screw.length / _AXIAL_STEP_MM)) + 1)
    coarse = _max_distance(screw, pedicle, t, _ANGLES)
    if coarse is None:
        return None
    d0, t0, p0, point0 = coarse
    step = t[1] - t[0] if t.size > 1 else 0.0
    fine = _max_distance(screw, pedicle, np.linspace(t0 - step, t0 + step, 41),
                         np.linspace(p0 - np.radians(5.0), p0 + np.radians(5.0), 41))
    if fine is not None and fine[0] > d0:
        return fine[0], fine[3]
    return d0, point0


def _breach_side(pedicle: PedicleTruth, point) -> str:
    """Side of the cortex crossed, from the outward ellipse normal at the point's cross-section."""
    w, h, s = pedicle.pedicle_coordinates(point)
    aw, ah = pedicle.half_axes(s)
    nw, nh = w / aw ** 2, h / ah ** 2
    if abs(nw) >= abs(nh):
        return "lateral" if nw > 0 else "medial"
    return "superior" if nh > 0 else "inferior"


def grade_trajectory(entry_mm, target_mm, diameter_mm: float, pedicle: PedicleTruth) -> GradeResult:
    """Gertzbein-Robbins grade of a screw from ``entry_mm`` to ``target_mm`` (module docstring)."""
    entry, target, diameter = _check(entry_mm, target_mm, diameter_mm, pedicle)
    screw = _Screw(entry, target, 0.5 * diameter)
    t = np.arange(0.0, screw.length, 0.05)
    length_in = float(pedicle.in_pedicle_range(entry + t[:, None] * screw.axis).sum() * 0.05)
    worst = _worst_point(screw, pedicle) if length_in >= 1.0 else None
    if worst is None:
        raise GradingError(f"the trajectory does not pass through the {pedicle.level} {pedicle.side} pedicle: "
                           "check the level and side, or the entry point")
    d, point = worst
    breach = max(d, 0.0)
    point = point if breach > 0 else None
    return GradeResult(grade=gr_grade(breach), breach_mm=breach,
                       breach_side=_breach_side(pedicle, point) if point is not None else None,
                       clearance_mm=-d, breach_point_mm=point, length_in_pedicle_mm=length_in,
                       level=pedicle.level, side=pedicle.side)


def grade_plan(phantom, level: str, side: str, entry_mm, target_mm, diameter_mm: float) -> GradeResult:
    """Grade a planned screw on ``phantom.levels[level]``'s ``side`` pedicle ("left"/"right").

    Also reports ``body_breach_mm``: how far the screw's surface anterior of the pedicle goes
    outside the vertebra's drawn bone (anterior or lateral wall of the body perforated; 0 when
    contained). Not part of the Gertzbein-Robbins grade.
    """
    try:
        pedicle = phantom.pedicle(level, side)
    except ValueError as e:
        raise GradingError(str(e)) from e
    result = grade_trajectory(entry_mm, target_mm, diameter_mm, pedicle)
    vertebra = phantom.levels[level]
    if vertebra.bone_sdf is None:
        return result
    screw = _Screw(*_check(entry_mm, target_mm, diameter_mm, pedicle)[:2], 0.5 * float(diameter_mm))
    t = np.linspace(0.0, screw.length, int(np.ceil(screw.length / _AXIAL_STEP_MM)) + 1)
    pts = screw.surface(t, _ANGLES)
    beyond = pedicle.pedicle_coordinates(pts)[:, 2] > pedicle.half_length_mm
    d = vertebra.bone_signed_distance(pts[beyond]) if beyond.any() else np.array([0.0])
    return replace(result, body_breach_mm=max(float(d.max()), 0.0))
