"""A two-view calibration in the robot base frame, valid while the robot moves.

The cage rides on the robot; the C-arm does not move when the robot does. A
``CageCalibration`` maps raw pixels to rays in the cage frame *as the cage was at
the shots* (robot joints ``q0``). Through ``T_base_cage(q0)`` from forward
kinematics (robot paper eq. 23: ``T_path^base = T_biplanar^base T_image^biplanar
T_path^image``) the same rays are fixed in the robot base frame, and stay right
whatever the robot does afterwards, as long as the C-arm and the patient stay put.

A C-arm move is what invalidates it: ``check_shot`` compares a new shot's C-arm
angle tags, and the cage balls it shows, with what the calibration predicts at the
robot's current pose, and says in one line what moved and what to do.
Millimetres and radians; raw pixels (u = column, v = row); angles in degrees only
where they come from or go to DICOM tags and people.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.calibration.models import camera_centre
from core.geometry.pixels import in_image
from core.geometry.rigid import Ray, apply, invert

__all__ = ["FrameError", "CArmMovedError", "ShotCheck", "BaseFrameCalibration",
           "ANGLE_TOLERANCE_DEG", "BALL_TOLERANCE_PX"]

ANGLE_TOLERANCE_DEG = 0.5   # DICOM positioner angles are written to 0.1 deg; a C-arm re-positioned by hand is off by more
BALL_TOLERANCE_PX = 2.0     # median ball offset: the calibration's own residuals are a fraction of a pixel
_VIEWS = ("ap", "lat")


class FrameError(ValueError):
    """Bad input to a base-frame calibration (shapes, views, missing trajectory points)."""


class CArmMovedError(FrameError):
    """A new shot disagrees with the calibration: the C-arm (or the cage on the flange) moved."""


@dataclass(frozen=True)
class ShotCheck:
    """Whether a new shot agrees with the calibration, and the figures behind the verdict.

    ``checked`` is False when nothing could be compared (no angle tags, no balls in view):
    ``agrees`` is then True but means "not contradicted". ``reason`` is one line."""
    agrees: bool
    checked: bool
    reason: str
    view: str
    angle_change_deg: float | None = None
    ball_offset_px: float | None = None     # median over the compared balls
    balls_compared: int = 0

    def raise_if_moved(self) -> None:
        if not self.agrees:
            raise CArmMovedError(self.reason)


def _view(view) -> str:
    if view not in _VIEWS:
        raise FrameError(f"view must be 'ap' or 'lat', got {view!r}")
    return view


def _points(p, name="points") -> tuple[np.ndarray, bool]:
    a = np.asarray(p, float)
    single = a.ndim == 1
    a = np.atleast_2d(a)
    if a.ndim != 2 or a.shape[1] != 3 or not np.all(np.isfinite(a)):
        raise FrameError(f"{name} must be finite (N, 3) or (3,) in mm, got shape {np.shape(p)}")
    return a, single


def _angle_diff_deg(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


class BaseFrameCalibration:
    """``CageCalibration`` taken at joints ``q0``, re-expressed in the robot base frame.

    ``ray``, ``locate``, ``locate_many`` and ``project`` speak base-frame mm (so this is a
    ``TwoViewCalibration`` in the base frame); ``to_base`` / ``to_calibration_frame`` move
    cage(q0)-frame points (plans made on the calibration) to base and back;
    ``cage_frame_at(q)`` is ``T_base_cage(q)`` for the current pose. ``carm_angles_deg``
    ({"ap": (primary, secondary), "lat": ...}) are the shots' DICOM positioner angles,
    None where the shots carried none."""

    def __init__(self, calibration, kinematics, q0, carm_angles_deg: dict | None = None,
                 angle_tolerance_deg: float = ANGLE_TOLERANCE_DEG,
                 ball_tolerance_px: float = BALL_TOLERANCE_PX):
        if not all(hasattr(calibration, k) for k in ("ray", "locate_many", "project", "views")):
            raise FrameError("a base-frame calibration wraps a CageCalibration (ray, locate_many, project, views)")
        if not (angle_tolerance_deg > 0 and ball_tolerance_px > 0):
            raise FrameError("the angle and ball tolerances must be positive")
        self.calibration = calibration
        self.kinematics = kinematics
        self.q0 = kinematics._q(q0).copy()
        self.q0.setflags(write=False)
        self.T_base_cage0 = np.asarray(kinematics.cage(self.q0), float)
        self.T_cage0_base = invert(self.T_base_cage0)
        self.carm_angles_deg = {}
        for v, ang in (carm_angles_deg or {}).items():
            _view(v)
            if ang is not None:
                a = tuple(float(x) for x in ang)
                if len(a) != 2 or not all(math.isfinite(x) for x in a):
                    raise FrameError(f"the {v.upper()} C-arm angles must be (primary, secondary) in degrees")
                self.carm_angles_deg[v] = a
        self.angle_tolerance_deg = float(angle_tolerance_deg)
        self.ball_tolerance_px = float(ball_tolerance_px)

    @classmethod
    def from_shots(cls, calibration, kinematics, q0, images: dict, **kw) -> "BaseFrameCalibration":
        """As the constructor, with the angle tags read from the calibration's two ``FluoroImage``s."""
        angles = {}
        for v, img in images.items():
            p, s = getattr(img, "primary_angle_deg", None), getattr(img, "secondary_angle_deg", None)
            angles[_view(v)] = None if p is None or s is None else (p, s)
        return cls(calibration, kinematics, q0, angles, **kw)

    # --- frames ------------------------------------------------------------------
    def to_base(self, points_cage0) -> np.ndarray:
        """Points (N, 3) or (3,) in the cage frame at the shots -> base frame (eq. 23)."""
        p, single = _points(points_cage0)
        out = apply(self.T_base_cage0, p)
        return out[0] if single else out

    def to_calibration_frame(self, points_base) -> np.ndarray:
        """Base-frame points -> the cage frame at the shots (where the calibration lives)."""
        p, single = _points(points_base)
        out = apply(self.T_cage0_base, p)
        return out[0] if single else out

    def cage_frame_at(self, q) -> np.ndarray:
        """``T_base_cage(q)``: where the cage is now, by forward kinematics."""
        return np.asarray(self.kinematics.cage(q), float)

    def in_cage_at(self, q, points_cage0) -> np.ndarray:
        """Cage(q0)-frame points (a plan) expressed in the cage frame at joints ``q``: the same
        fixed points in space, seen from where the cage has moved to."""
        p, single = _points(points_cage0)
        out = apply(invert(self.cage_frame_at(q)) @ self.T_base_cage0, p)
        return out[0] if single else out

    def trajectory_in_base(self, trajectory) -> tuple[np.ndarray, np.ndarray]:
        """(entry, target) in base mm of a planned ``Trajectory`` (cage(q0) frame)."""
        if not getattr(trajectory, "complete", False):
            name = getattr(trajectory, "name", "the trajectory")
            raise FrameError(f"{name} has no 3D entry and target yet: click both points in both views")
        return self.to_base(trajectory.entry_mm), self.to_base(trajectory.target_mm)

    # --- the two-view calibration, in base ------------------------------------------
    def ray(self, view: str, uv_raw) -> Ray:
        """The X-ray through raw pixel ``uv_raw`` of ``view``, in the base frame."""
        return self.calibration.ray(_view(view), uv_raw).transformed(self.T_base_cage0)

    def locate_many(self, uv_ap, uv_lat) -> tuple[np.ndarray, np.ndarray]:
        p, gap = self.calibration.locate_many(uv_ap, uv_lat)
        return apply(self.T_base_cage0, p), gap

    def locate(self, uv_ap, uv_lat) -> tuple[np.ndarray, float]:
        """Base-frame point of a pair of raw clicks and its ray gap (mm; a rigid map keeps it)."""
        p, gap = self.calibration.locate(uv_ap, uv_lat)
        return apply(self.T_base_cage0, p), float(gap)

    def project(self, points_base) -> dict:
        """Raw pixels {"ap", "lat"} of base-frame points (N, 3) or (3,)."""
        p, single = _points(points_base)
        out = self.calibration.project(apply(self.T_cage0_base, p))
        return {v: (uv[0] if single else uv) for v, uv in out.items()}

    def source_mm(self, view: str) -> np.ndarray:
        """The view's X-ray source (the 3D-2D camera's centre), in base mm."""
        return apply(self.T_base_cage0, camera_centre(self.calibration.views[_view(view)].P))

    def beam_axis(self, view: str) -> tuple[np.ndarray, np.ndarray]:
        """(source, unit principal direction towards the detector), in base: for the C-arm's envelope."""
        vc = self.calibration.views[_view(view)]
        c = camera_centre(vc.P)
        d = vc.P[2, :3] / np.linalg.norm(vc.P[2, :3])
        centre = np.mean([p.origin_mm for p in vc.planes], axis=0) if vc.planes else c + d
        if (centre - c) @ d < 0:
            d = -d
        return apply(self.T_base_cage0, c), self.T_base_cage0[:3, :3] @ d

    # --- does a new shot agree? ----------------------------------------------------
    def check_angles(self, view: str, primary_deg, secondary_deg) -> ShotCheck:
        """Compare a new shot's positioner angles (deg) with the calibration's shot of ``view``."""
        view = _view(view)
        ref = self.carm_angles_deg.get(view)
        if ref is None or primary_deg is None or secondary_deg is None:
            why = "the calibration's shot" if ref is None else "the new shot"
            return ShotCheck(True, False, f"{view.upper()} angles not compared: {why} carries no "
                                          "C-arm angle tags", view)
        new = (float(primary_deg), float(secondary_deg))
        if not all(math.isfinite(x) for x in new):
            raise FrameError("C-arm angles must be finite degrees")
        dp, ds = _angle_diff_deg(new[0], ref[0]), _angle_diff_deg(new[1], ref[1])
        change = math.hypot(dp, ds)
        if abs(dp) > self.angle_tolerance_deg or abs(ds) > self.angle_tolerance_deg:
            return ShotCheck(False, True,
                             f"the C-arm moved: the new {view.upper()} shot is at primary {new[0]:.1f}°, "
                             f"secondary {new[1]:.1f}°, the calibration's at {ref[0]:.1f}°, {ref[1]:.1f}° "
                             f"({change:.1f}° apart): calibrate again with new AP and LAT shots",
                             view, angle_change_deg=change)
        return ShotCheck(True, True, f"{view.upper()} C-arm angles agree within {change:.2f}°", view,
                         angle_change_deg=change)

    def check_image(self, view: str, image) -> ShotCheck:
        """``check_angles`` with the tags of a ``FluoroImage``."""
        return self.check_angles(view, getattr(image, "primary_angle_deg", None),
                                 getattr(image, "secondary_angle_deg", None))

    def predicted_balls(self, view: str, q, balls_cage_mm) -> np.ndarray:
        """Raw pixels (N, 2) where the calibration puts cage balls (cage frame) with the robot
        at ``q``: the balls moved with the cage, the C-arm did not. NaN outside the image."""
        view = _view(view)
        b, _ = _points(balls_cage_mm, "ball centres")
        in_base = apply(self.cage_frame_at(q), b)
        uv = np.asarray(self.project(in_base)[view], float).reshape(-1, 2)
        uv[~in_image(uv, self.calibration.views[view].image_shape)] = np.nan
        return uv

    def check_balls(self, view: str, q, uv_detected, balls_cage_mm, matched: bool = True,
                    min_balls: int = 4, gate_px: float | None = None,
                    tolerance_px: float | None = None) -> ShotCheck:
        """Compare the cage balls detected in a new shot (raw px) with their predicted pixels
        at the current robot pose ``q``.

        ``matched``: row i of ``uv_detected`` is ball ``balls_cage_mm[i]`` (a labelled shot);
        otherwise ``balls_cage_mm`` are all the view's balls and each predicted ball in the image
        is paired with one detection (optimal assignment), pairs further than ``gate_px``
        (default 8x the tolerance) counting as not found."""
        view = _view(view)
        uv = np.asarray(uv_detected, float)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise FrameError(f"detected balls must be (N, 2) raw pixels, got shape {uv.shape}")
        pred = self.predicted_balls(view, q, balls_cage_mm)
        tol = self.ball_tolerance_px if tolerance_px is None else max(self.ball_tolerance_px, float(tolerance_px))
        gate = 8.0 * tol if gate_px is None else float(gate_px)
        V = view.upper()
        if matched:
            if len(uv) != len(pred):
                raise FrameError(f"{len(uv)} detected balls for {len(pred)} ball centres: give one per ball")
            ok = np.all(np.isfinite(uv), 1) & np.all(np.isfinite(pred), 1)
            dist = np.linalg.norm(uv[ok] - pred[ok], axis=1)
            expected = int(ok.sum())
        else:
            ok_p = np.all(np.isfinite(pred), 1)
            ok_d = np.all(np.isfinite(uv), 1)
            P, D = pred[ok_p], uv[ok_d]
            expected = len(P)
            dist = np.zeros(0)
            if len(P) and len(D):
                C = np.linalg.norm(P[:, None] - D[None], axis=2)
                from scipy.optimize import linear_sum_assignment   # lazy: seconds of the GUI's start-up
                r, c = linear_sum_assignment(C)
                dist = C[r, c]
        if expected < min_balls:
            return ShotCheck(True, False, f"{V} balls not compared: {expected} predicted in the image "
                                          f"(need {min_balls})", view, balls_compared=expected)
        near = dist[dist <= gate]
        # balls the detector missed (hidden in dense anatomy, behind the tool) are no evidence of a
        # move; a move shows as the seen balls lying consistently off (the median test below), or,
        # beyond the gate, as balls seen in the field with none where the calibration puts them
        if len(near) < min_balls and (not matched and len(uv) < min_balls):
            return ShotCheck(True, False, f"{V} balls not compared: {len(uv)} detected (need {min_balls})", view,
                             balls_compared=len(near))
        if len(near) < min_balls:
            return ShotCheck(False, True,
                             f"the C-arm moved: only {len(near)} of the {expected} cage balls expected in "
                             f"the new {V} shot lie within {gate:.0f} px of where the calibration puts them: "
                             "calibrate again with new AP and LAT shots", view,
                             ball_offset_px=float(np.median(dist)) if len(dist) else None,
                             balls_compared=len(near))
        med = float(np.median(near))
        if med > tol:
            return ShotCheck(False, True,
                             f"the C-arm moved: the cage balls of the new {V} shot lie {med:.1f} px (median of "
                             f"{len(near)}) from where the calibration puts them at the robot's pose, above "
                             f"{tol:.1f} px: calibrate again with new AP and LAT shots", view,
                             ball_offset_px=med, balls_compared=len(near))
        return ShotCheck(True, True, f"{V} cage balls agree: {med:.2f} px median over {len(near)}", view,
                         ball_offset_px=med, balls_compared=len(near))

    def px_per_mm(self, view: str, q, balls_cage_mm) -> float:
        """Largest pixel shift of the view for 1 mm of cage motion (any direction) at the balls'
        centre with the robot at ``q``: turns a millimetre error budget into pixels."""
        b, _ = _points(balls_cage_mm, "ball centres")
        c = apply(self.cage_frame_at(q), b.mean(axis=0))
        pts = np.vstack([c, c + np.eye(3)])
        uv = np.asarray(self.project(pts)[_view(view)], float).reshape(-1, 2)
        d = np.linalg.norm(uv[1:] - uv[0], axis=1)
        return float(np.nanmax(d)) if np.any(np.isfinite(d)) else float("nan")

    def check_shot(self, view: str, q=None, image=None, uv_detected=None, balls_cage_mm=None,
                   matched: bool = True) -> ShotCheck:
        """Angles first (cheap, decisive), then balls; the first disagreement is the verdict.
        ``checked`` is True when either comparison could be made."""
        checks = []
        if image is not None:
            checks.append(self.check_image(view, image))
        if uv_detected is not None:
            if q is None or balls_cage_mm is None:
                raise FrameError("a ball check needs the robot joints at the shot and the balls' cage coordinates")
            checks.append(self.check_balls(view, q, uv_detected, balls_cage_mm, matched))
        if not checks:
            raise FrameError("give the new shot's image (angle tags) or its detected balls")
        for c in checks:
            if not c.agrees:
                return c
        done = [c for c in checks if c.checked]
        if not done:
            return checks[0]
        return ShotCheck(True, True, "; ".join(c.reason for c in done), _view(view),
                         next((c.angle_change_deg for c in done if c.angle_change_deg is not None), None),
                         next((c.ball_offset_px for c in done if c.ball_offset_px is not None), None),
                         sum(c.balls_compared for c in done))

    def to_dict(self) -> dict:
        """The frame part (the calibration is saved by itself): joints and cage pose at the shots."""
        return {"q0": self.q0.tolist(), "T_base_cage0": self.T_base_cage0.tolist(),
                "carm_angles_deg": {v: list(a) for v, a in self.carm_angles_deg.items()},
                "angle_tolerance_deg": self.angle_tolerance_deg, "ball_tolerance_px": self.ball_tolerance_px}
