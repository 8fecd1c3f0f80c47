"""Verification of a placed K-wire or tool against its plan (issue 12, "Verify").

``verify`` compares the tool's measured 3D line and tip (``core.navigation.tool_line``) with the
planned entry and target, all in the cage frame (mm):
- entry deviation: distance from the planned entry to the measured line;
- tip deviation: distance from the measured tip to the planned target;
- angle: between the measured direction and the plan's axis;
- depth error: (measured tip - planned target) along the plan's axis, positive = too deep;
and, in simulation or wherever the pedicle's truth is known, the Gertzbein-Robbins grade of a
screw following the measured line (``core.planning.grading.grade_trajectory``). The result is a
``VerificationRecord`` that ``to_dict`` writes for the case file (degrees there, for people).

``verify_shots`` runs the whole check from the two verification shots: the plan's line
projected as the hint, detection in both views, triangulation, ``verify``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.navigation.tool_line import (ToolLineError, ToolPose, detect_tool_line, expected_width_px, plan_hint,
                                       tip_offset_mm, triangulate_tool)
from core.planning.grading import GradingError, grade_trajectory

__all__ = ["VerificationError", "VerificationRecord", "verify", "verify_shots", "FORMAT"]

FORMAT = "fluoronav.verification/1"


class VerificationError(ValueError):
    """A verification could not be computed from its input; the message says why."""


def _point(p, name):
    a = np.asarray(p, float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise VerificationError(f"{name} must be a finite (x, y, z) point in mm, got {p!r}")
    return a


@dataclass(frozen=True, eq=False)
class VerificationRecord:
    """Measured vs planned, cage frame, mm and radians (module docstring)."""
    plan_entry_mm: np.ndarray
    plan_target_mm: np.ndarray
    tip_mm: np.ndarray                 # measured tip
    direction: np.ndarray              # measured unit direction (toward the tip)
    entry_deviation_mm: float
    tip_deviation_mm: float
    angle_rad: float
    depth_error_mm: float
    entry_on_line_mm: np.ndarray       # the measured line's point nearest the planned entry
    quality: dict = field(default_factory=dict)    # the triangulation's figures (plane angle, residuals)
    grade: dict | None = None          # Gertzbein-Robbins grade of a screw on the measured line
    name: str = ""

    @property
    def angle_deg(self) -> float:
        return math.degrees(self.angle_rad)

    @property
    def lateral_tip_mm(self) -> float:
        """The tip's distance from the planned axis (across it)."""
        a = _axis(self.plan_entry_mm, self.plan_target_mm)
        w = self.tip_mm - self.plan_target_mm
        return float(np.linalg.norm(w - (w @ a) * a))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name,
                "plan_entry_mm": self.plan_entry_mm.tolist(), "plan_target_mm": self.plan_target_mm.tolist(),
                "tip_mm": self.tip_mm.tolist(), "direction": self.direction.tolist(),
                "entry_deviation_mm": self.entry_deviation_mm, "tip_deviation_mm": self.tip_deviation_mm,
                "angle_deg": self.angle_deg, "depth_error_mm": self.depth_error_mm,
                "lateral_tip_mm": self.lateral_tip_mm, "entry_on_line_mm": self.entry_on_line_mm.tolist(),
                "quality": dict(self.quality), "grade": None if self.grade is None else dict(self.grade)}

    @classmethod
    def from_dict(cls, d: dict) -> "VerificationRecord":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise VerificationError(f"a verification record must have format {FORMAT}")
        try:
            return cls(_point(d["plan_entry_mm"], "plan_entry_mm"), _point(d["plan_target_mm"], "plan_target_mm"),
                       _point(d["tip_mm"], "tip_mm"), _point(d["direction"], "direction"),
                       float(d["entry_deviation_mm"]), float(d["tip_deviation_mm"]),
                       math.radians(float(d["angle_deg"])), float(d["depth_error_mm"]),
                       _point(d["entry_on_line_mm"], "entry_on_line_mm"), dict(d.get("quality", {})),
                       None if d.get("grade") is None else dict(d["grade"]), str(d.get("name", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise VerificationError(f"verification record: {type(e).__name__}: {e}") from None


def _axis(entry, target):
    v = np.asarray(target, float) - np.asarray(entry, float)
    n = float(np.linalg.norm(v))
    if n < 1.0:
        raise VerificationError("the plan's entry and target are less than 1 mm apart")
    return v / n


def _measured(measured):
    """(tip, unit direction, quality figures) of a ``ToolPose`` or a (tip_mm, direction) pair."""
    if isinstance(measured, ToolPose):
        q = {"plane_angle_deg": measured.plane_angle_deg, "rms_px": measured.rms_px,
             "residual_px": dict(measured.residual_px), "tip_gap_mm": measured.tip_gap_mm,
             "ill_conditioned": measured.ill_conditioned}
        tip, d = measured.tip_mm, measured.direction
    else:
        try:
            tip, d = measured
        except (TypeError, ValueError):
            raise VerificationError("the measured tool must be a ToolPose or a (tip_mm, direction) pair") from None
        q = {}
    tip, d = _point(tip, "measured tip"), _point(d, "measured direction")
    n = float(np.linalg.norm(d))
    if n < 1e-9:
        raise VerificationError("the measured direction is a zero vector")
    return tip, d / n, q


def verify(plan_entry_mm, plan_target_mm, measured, *, pedicle=None, T_pedicle_cage=None,
           screw_diameter_mm: float = 6.5, name: str = "") -> VerificationRecord:
    """Deviation of the measured tool from the plan (module docstring).

    ``measured``: a ``ToolPose`` (``triangulate_tool``) or a (tip_mm, direction) pair, cage frame.
    ``pedicle``: a ``PedicleTruth`` (simulation): grade a ``screw_diameter_mm`` screw from the
    measured line's point at the planned entry to the measured tip, after ``T_pedicle_cage``
    (cage -> the pedicle's frame, e.g. the scene's world; identity when None).
    """
    e, t = _point(plan_entry_mm, "planned entry"), _point(plan_target_mm, "planned target")
    a = _axis(e, t)
    tip, d, quality = _measured(measured)
    if d @ a < 0:            # a line has no sense of its own: the plan's gives it
        d = -d
    w = e - tip
    on_line = tip + (w @ d) * d
    entry_dev = float(np.linalg.norm(e - on_line))
    angle = math.acos(min(1.0, abs(float(d @ a))))
    rec_grade = None
    if pedicle is not None:
        T = np.eye(4) if T_pedicle_cage is None else np.asarray(T_pedicle_cage, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise VerificationError("T_pedicle_cage must be a finite 4x4 transform")
        to = lambda p: T[:3, :3] @ p + T[:3, 3]
        try:
            g = grade_trajectory(to(on_line), to(tip), screw_diameter_mm, pedicle)
            rec_grade = {"grade": g.grade, "breach_mm": g.breach_mm, "breach_side": g.breach_side,
                         "acceptable": g.acceptable, "level": g.level, "side": g.side,
                         "screw_diameter_mm": float(screw_diameter_mm)}
        except GradingError as err:
            rec_grade = {"grade": None, "reason": str(err), "level": getattr(pedicle, "level", ""),
                         "side": getattr(pedicle, "side", ""), "screw_diameter_mm": float(screw_diameter_mm)}
    return VerificationRecord(plan_entry_mm=e, plan_target_mm=t, tip_mm=tip, direction=d,
                              entry_deviation_mm=entry_dev, tip_deviation_mm=float(np.linalg.norm(tip - t)),
                              angle_rad=angle, depth_error_mm=float((tip - t) @ a), entry_on_line_mm=on_line,
                              quality=quality, grade=rec_grade, name=name)


def verify_shots(calibration, image_ap, image_lat, plan_entry_mm, plan_target_mm, *, tip: str = "flat",
                 cone_length_mm: float = 0.0, tool_diameter_mm: float = 2.0, width_px=None,
                 hint_radius_px: float = 30.0,
                 pedicle=None, T_pedicle_cage=None, screw_diameter_mm: float = 6.5, name: str = ""):
    """The verification from the two new shots: (record, AP detection, LAT detection, 3D pose).

    ``image_ap`` / ``image_lat``: raw pixels or ``FluoroImage`` of the shots the calibration maps;
    ``tip`` / ``cone_length_mm``: the tool's tip shape (``tool_line.tip_offset_mm``);
    ``width_px``: the detector's width range per view, by default 0.6-1.5 times the width a
    ``tool_diameter_mm`` cylinder on the plan projects to (other metal of other widths is passed over). Raises
    ``ToolLineError`` (not found, ill-conditioned) or ``VerificationError``.
    """
    e, t = _point(plan_entry_mm, "planned entry"), _point(plan_target_mm, "planned target")
    hint = plan_hint(calibration, e, t)
    dets = {}
    for v, img in (("ap", image_ap), ("lat", image_lat)):
        if width_px is None:
            w = expected_width_px(calibration, v, e, t, tool_diameter_mm)
            wr = (max(0.6 * w, 1.0), max(1.5 * w, 2.5))
        else:
            wr = width_px
        try:
            dets[v] = detect_tool_line(img, calibration=calibration, view=v, hint=hint[v],
                                       hint_radius_px=hint_radius_px, width_px=wr)
        except ToolLineError as err:
            raise type(err)(f"{v.upper()} shot: {err}") from None
    pose = triangulate_tool(calibration, dets["ap"], dets["lat"], tip_offset_mm=tip_offset_mm(tip, cone_length_mm))
    rec = verify(e, t, pose, pedicle=pedicle, T_pedicle_cage=T_pedicle_cage, screw_diameter_mm=screw_diameter_mm,
                 name=name)
    return rec, dets["ap"], dets["lat"], pose
