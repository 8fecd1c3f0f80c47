"""Align: a planned trajectory (base frame) becomes a tool pose, its joints and a motion.

The tool frame has its tip at the origin and +z along the tool, into the patient
(core/robot/kinematics/base.py). The guide is put on the planned line with its tip
at a stand-off above the entry (``Hybrid5.pose_for_axis`` and the closed-form
inverse, robot paper eq. 11; the path in base is eq. 23's ``T_path^base``); the
insertion from the stand-off to the planned depth is a separate segment that only
the insertion axis travels (a separate hold-to-run).

The motion from the current joints is a straight line in joint space on one
synchronised trapezoidal time law (every joint starts and stops together), whose
speed and acceleration keep each joint's limits and the tool tip's Cartesian speed
limits; sampled, it is what the control loop follows and what a 3D preview shows.

A plan is refused, with a typed error and one line saying why and what to do,
when the trajectory is incomplete, the pose is outside the workspace box or out of
reach, a joint would leave its range (named), the pose or the way there passes near a
singularity, or a robot body (guide, cage) comes within the clearance of the
envelope (C-arm housings, the patient's surface). Millimetres, radians, seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from core.geometry.rigid import apply, invert
from core.robot.kinematics.base import KinematicsError, ReachabilityError

__all__ = ["AlignmentError", "IncompleteTrajectoryError", "UnreachableError", "WorkspaceError",
           "AlignJointLimitError", "SingularityRefusal", "CollisionError",
           "Capsule", "Box", "HalfSpace", "Body", "guide_body", "cage_bodies", "carm_envelope",
           "patient_surface", "distance", "MotionProfile", "InsertionSegment", "AlignmentPlan",
           "plan_alignment", "alignment_for_trajectory", "correction_motion", "default_cartesian_limits",
           "TASK_AXES"]

TASK_AXES = ("x", "y", "z", "theta_x", "theta_y")


class AlignmentError(ValueError):
    """Align refused; the message is one line: what stands in the way and what to do."""


class IncompleteTrajectoryError(AlignmentError):
    """The trajectory lacks its entry or target in 3D."""


class UnreachableError(AlignmentError):
    """The mechanism cannot put the tool on the line."""


class WorkspaceError(UnreachableError):
    """The pose (or the way to it) leaves the workspace box or orientation range."""


class AlignJointLimitError(AlignmentError):
    """A joint would leave its range; the message names it."""


class SingularityRefusal(AlignmentError):
    """The pose, or the motion to it, comes near a singular configuration."""


class CollisionError(AlignmentError):
    """A robot body would come within the clearance of an envelope part."""


# --- shapes -----------------------------------------------------------------------
def _vec(x, name) -> np.ndarray:
    a = np.asarray(x, float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise AlignmentError(f"{name} must be a finite 3-vector in mm")
    return a


@dataclass(frozen=True)
class Capsule:
    """Points within ``radius`` of the segment p0-p1 (mm)."""
    p0: np.ndarray
    p1: np.ndarray
    radius: float
    name: str = "capsule"

    def __post_init__(self):
        object.__setattr__(self, "p0", _vec(self.p0, f"{self.name} end"))
        object.__setattr__(self, "p1", _vec(self.p1, f"{self.name} end"))
        if not (self.radius >= 0 and math.isfinite(self.radius)):
            raise AlignmentError(f"{self.name}: a capsule radius must be >= 0 mm")

    def moved(self, T) -> "Capsule":
        return Capsule(apply(T, self.p0), apply(T, self.p1), self.radius, self.name)


@dataclass(frozen=True)
class Box:
    """An oriented box: ``T_frame_box`` places its centre and axes, ``half_mm`` its half sizes."""
    T: np.ndarray
    half_mm: np.ndarray
    name: str = "box"

    def __post_init__(self):
        T = np.asarray(self.T, float)
        h = np.asarray(self.half_mm, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)) or h.shape != (3,) or np.any(h < 0):
            raise AlignmentError(f"{self.name}: a box is a 4x4 pose and three half sizes >= 0 mm")
        object.__setattr__(self, "T", T)
        object.__setattr__(self, "half_mm", h)

    def moved(self, T) -> "Box":
        return Box(np.asarray(T, float) @ self.T, self.half_mm, self.name)

    def corners(self) -> np.ndarray:
        s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
        return apply(self.T, s * self.half_mm)


@dataclass(frozen=True)
class HalfSpace:
    """Everything behind the plane through ``point`` (``normal`` points to the free side).
    ``applies_to``: names of the robot bodies it is checked against (None: all)."""
    point: np.ndarray
    normal: np.ndarray
    name: str = "patient surface"
    applies_to: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "point", _vec(self.point, f"{self.name} point"))
        n = _vec(self.normal, f"{self.name} normal")
        if np.linalg.norm(n) < 1e-9:
            raise AlignmentError(f"{self.name}: the normal must be non-zero")
        object.__setattr__(self, "normal", n / np.linalg.norm(n))


@dataclass(frozen=True)
class Body:
    """A robot body: ``shape`` in the frame it rides in, "tool", "flange" or "cage"."""
    shape: object
    frame: str = "tool"

    def __post_init__(self):
        if self.frame not in ("tool", "flange", "cage"):
            raise AlignmentError(f"a robot body rides in 'tool', 'flange' or 'cage', not {self.frame!r}")
        if not isinstance(self.shape, (Capsule, Box)):
            raise AlignmentError("a robot body is a Capsule or a Box")

    @property
    def name(self) -> str:
        return self.shape.name


def guide_body(kinematics, radius_mm: float = 8.0) -> Body:
    """The tool guide as a capsule from the tool tip back to the flange (tool frame)."""
    flange_in_tool = apply(invert(kinematics.T_flange_tool), np.zeros(3))
    return Body(Capsule(np.zeros(3), flange_in_tool, radius_mm, "tool guide"), "tool")


def cage_bodies(cage, margin_mm: float = 5.0) -> list[Body]:
    """One box per part of the cage (its AP planes, its LAT planes), axis-aligned in the cage
    frame around the balls, grown by the ball radius and ``margin_mm`` (the frame carrying them)."""
    out = []
    for view in ("ap", "lat"):
        planes = [p for p in cage.planes if p.view == view]
        if not planes:
            continue
        b = np.concatenate([p.balls_mm for p in planes])
        lo, hi = b.min(0), b.max(0)
        T = np.eye(4)
        T[:3, 3] = 0.5 * (lo + hi)
        out.append(Body(Box(T, 0.5 * (hi - lo) + cage.ball_diameter_mm / 2 + margin_mm,
                            f"cage {view.upper()} part"), "cage"))
    return out


def _frame_along(origin, axis) -> np.ndarray:
    z = axis / np.linalg.norm(axis)
    x = np.cross(z, [1.0, 0, 0] if abs(z[0]) < 0.9 else [0, 1.0, 0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = origin
    return T


def carm_envelope(source_mm, direction, sid_mm: float = 1000.0, name: str = "C-arm",
                  detector_half_mm: float = 170.0, detector_depth_mm: float = 120.0,
                  source_half_mm: float = 130.0, source_depth_mm: float = 220.0) -> list[Box]:
    """A simple C-arm envelope for one view: the detector housing (a box behind the detector
    plane, ``sid_mm`` from the source along ``direction``) and the source housing (a box
    around the source). ``source_mm``/``direction`` from ``BaseFrameCalibration.beam_axis``."""
    s, d = _vec(source_mm, "source"), _vec(direction, "beam direction")
    if np.linalg.norm(d) < 1e-9 or not sid_mm > 0:
        raise AlignmentError("a C-arm envelope needs a beam direction and a positive SID")
    d = d / np.linalg.norm(d)
    det = Box(_frame_along(s + (sid_mm + detector_depth_mm / 2) * d, d),
              [detector_half_mm, detector_half_mm, detector_depth_mm / 2], f"{name} detector housing")
    src = Box(_frame_along(s - 0.25 * source_depth_mm * d, d),
              [source_half_mm, source_half_mm, source_depth_mm / 2], f"{name} source housing")
    return [det, src]


def patient_surface(point_mm, outward_normal, applies_to=("tool guide",)) -> HalfSpace:
    """The patient's surface as a plane; by default only the guide is held above it (the cage's
    lateral part hangs beside the patient, below the plane of the back)."""
    return HalfSpace(point_mm, outward_normal, "patient surface", applies_to)


# --- distances ----------------------------------------------------------------------
def _seg_seg(p0, p1, q0, q1) -> float:
    """Shortest distance between segments p0-p1 and q0-q1."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e, f = d1 @ d1, d2 @ d2, d2 @ r
    if a < 1e-12 and e < 1e-12:
        return float(np.linalg.norm(r))
    if a < 1e-12:
        s, t = 0.0, np.clip(f / e, 0, 1)
    else:
        c = d1 @ r
        if e < 1e-12:
            s, t = np.clip(-c / a, 0, 1), 0.0
        else:
            b = d1 @ d2
            den = a * e - b * b
            s = np.clip((b * f - c * e) / den, 0, 1) if den > 1e-12 else 0.0
            t = (b * s + f) / e
            if t < 0:
                s, t = np.clip(-c / a, 0, 1), 0.0
            elif t > 1:
                s, t = np.clip((b - c) / a, 0, 1), 1.0
    return float(np.linalg.norm(p0 + d1 * s - (q0 + d2 * t)))


def _point_box(p, box: Box) -> float:
    local = apply(invert(box.T), p)
    return float(np.linalg.norm(local - np.clip(local, -box.half_mm, box.half_mm)))


def _seg_box(p0, p1, box: Box) -> float:
    """Distance from a segment to a box: convex in the segment parameter, so a bounded 1-D
    minimisation finds it; dense samples guard the flat zero region of a crossing segment."""
    Ti = invert(box.T)
    a, b = apply(Ti, p0), apply(Ti, p1)
    h = box.half_mm

    def f(t):
        x = a + t * (b - a)
        return float(np.linalg.norm(x - np.clip(x, -h, h)))
    ts = np.linspace(0, 1, 33)
    best = min(f(t) for t in ts)
    r = minimize_scalar(f, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-9})
    return min(best, float(r.fun))


def _box_box(A: Box, B: Box) -> float:
    """A lower bound on the gap between two boxes: the largest separation over the 15
    separating axes (0 when they overlap). Exact for face-separated boxes, conservative else."""
    Ra, Rb = A.T[:3, :3], B.T[:3, :3]
    t = B.T[:3, 3] - A.T[:3, 3]
    axes = [Ra[:, i] for i in range(3)] + [Rb[:, i] for i in range(3)]
    axes += [np.cross(Ra[:, i], Rb[:, j]) for i in range(3) for j in range(3)]
    gap = 0.0
    for L in axes:
        n = np.linalg.norm(L)
        if n < 1e-9:
            continue
        L = L / n
        ra = np.sum(A.half_mm * np.abs(Ra.T @ L))
        rb = np.sum(B.half_mm * np.abs(Rb.T @ L))
        gap = max(gap, abs(t @ L) - ra - rb)
    return float(gap)


def distance(body_shape, obstacle) -> float:
    """Clearance (mm, <= 0 when touching or inside) between a placed robot shape and an obstacle."""
    if isinstance(obstacle, HalfSpace):
        if isinstance(body_shape, Capsule):
            pts, r = np.stack([body_shape.p0, body_shape.p1]), body_shape.radius
        else:
            pts, r = body_shape.corners(), 0.0
        return float(np.min((pts - obstacle.point) @ obstacle.normal) - r)
    if isinstance(body_shape, Capsule) and isinstance(obstacle, Capsule):
        return _seg_seg(body_shape.p0, body_shape.p1, obstacle.p0, obstacle.p1) - body_shape.radius - obstacle.radius
    if isinstance(body_shape, Capsule) and isinstance(obstacle, Box):
        return _seg_box(body_shape.p0, body_shape.p1, obstacle) - body_shape.radius
    if isinstance(body_shape, Box) and isinstance(obstacle, Capsule):
        return _seg_box(obstacle.p0, obstacle.p1, body_shape) - obstacle.radius
    if isinstance(body_shape, Box) and isinstance(obstacle, Box):
        return _box_box(body_shape, obstacle)
    raise AlignmentError(f"no distance between {type(body_shape).__name__} and {type(obstacle).__name__}")


# --- motion -------------------------------------------------------------------------
@dataclass(frozen=True)
class MotionProfile:
    """``q(t) = q_start + s(t) (q_goal - q_start)`` with ``s`` a trapezoid (or triangle) of
    peak rate ``s_rate`` (1/s) and acceleration ``s_accel`` (1/s^2); every joint synchronised."""
    q_start: np.ndarray
    q_goal: np.ndarray
    s_rate: float
    s_accel: float
    duration_s: float
    accel_time_s: float
    limited_by: str = ""

    def _s(self, t):
        t = np.clip(np.asarray(t, float), 0.0, self.duration_s)
        A, V, ta, T = self.s_accel, self.s_rate, self.accel_time_s, self.duration_s
        if T == 0:
            return np.ones_like(t), np.zeros_like(t), np.zeros_like(t)
        s = np.where(t < ta, 0.5 * A * t ** 2,
                     np.where(t <= T - ta, 0.5 * A * ta ** 2 + V * (t - ta), 1.0 - 0.5 * A * (T - t) ** 2))
        sd = np.where(t < ta, A * t, np.where(t <= T - ta, V, A * (T - t)))
        sdd = np.where(t < ta, A, np.where(t <= T - ta, 0.0, -A))
        return s, sd, sdd

    def sample(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, qd, qdd) at time(s) ``t`` (s): shapes (n,) for a scalar, (N, n) for an array."""
        s, sd, sdd = self._s(t)
        dq = self.q_goal - self.q_start
        return (self.q_start + np.multiply.outer(s, dq), np.multiply.outer(sd, dq), np.multiply.outer(sdd, dq))

    def samples(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, q, qd) every ``dt`` seconds, the goal last: the control loop's references."""
        if not dt > 0:
            raise AlignmentError("the sampling period must be positive")
        n = max(1, int(math.ceil(self.duration_s / dt)))
        t = np.minimum(np.arange(n + 1) * dt, self.duration_s)
        q, qd, _ = self.sample(t)
        return t, q, qd


def _trapezoid(V: float, A: float) -> tuple[float, float, float]:
    """(peak rate, duration, acceleration time) of a 0 -> 1 trapezoid within V and A."""
    if V * V >= A:                     # the peak is never reached: a triangle
        ta = math.sqrt(1.0 / A)
        return A * ta, 2 * ta, ta
    return V, 1.0 / V + V / A, V / A


@dataclass(frozen=True)
class InsertionSegment:
    """What the insertion axis travels, along the planned line, on its own hold-to-run:
    the tool tip from the stand-off (``start_mm``) to the planned depth (``end_mm``)."""
    start_mm: np.ndarray
    end_mm: np.ndarray
    direction: np.ndarray
    length_mm: float

    def tip_at(self, depth_mm) -> np.ndarray:
        """Tip position after advancing ``depth_mm`` (clamped to the segment)."""
        return self.start_mm + np.clip(depth_mm, 0.0, self.length_mm) * self.direction


@dataclass(frozen=True)
class AlignmentPlan:
    """The aligned pose, its joints, the motion there and the insertion that follows."""
    name: str
    entry_mm: np.ndarray
    target_mm: np.ndarray
    direction: np.ndarray
    stand_off_mm: float
    task_pose: np.ndarray           # [x, y, z, theta_x, theta_y] of the tool tip
    T_base_tool: np.ndarray
    q_goal: np.ndarray
    motion: MotionProfile
    insertion: InsertionSegment
    singularity_margin: float       # smallest along the motion (1 = far)
    clearance_mm: float             # smallest body-envelope clearance along the motion (inf: no envelope)
    nearest: str = ""               # which body and envelope part that clearance is between
    kinematics: object = field(default=None, repr=False, compare=False)

    def preview_poses(self, n: int = 32) -> dict:
        """For a 3D preview before any motion: ``n`` times along the motion and the tool and cage
        poses there, {"t_s": (n,), "q": (n, 5), "T_base_tool": (n, 4, 4), "T_base_cage": (n, 4, 4)}."""
        if n < 2:
            raise AlignmentError("a preview needs at least 2 poses")
        t = np.linspace(0.0, self.motion.duration_s, n)
        q, _, _ = self.motion.sample(t)
        k = self.kinematics
        return {"t_s": t, "q": q, "T_base_tool": np.stack([k.forward(x) for x in q]),
                "T_base_cage": np.stack([k.cage(x) for x in q])}


def default_cartesian_limits():
    """The workspace box and Cartesian limits of ``resources/robots/hybrid5.json``."""
    from core.robot.kinematics.hybrid5 import load_robot_file
    from core.robot.limits import cartesian_limits_from_doc
    from resources import path as resource_path
    return cartesian_limits_from_doc(load_robot_file(resource_path("robots", "hybrid5.json"), "hybrid5"))


def _body_pose(kinematics, q, frame):
    if frame == "tool":
        return kinematics.forward(q)
    if frame == "flange":
        return kinematics.flange(q)
    return kinematics.cage(q)


def _clearance(kinematics, q, bodies, envelope):
    """(smallest clearance, body name, obstacle name) at joints q."""
    best = (math.inf, "", "")
    for body in bodies:
        placed = body.shape.moved(_body_pose(kinematics, q, body.frame))
        for obs in envelope:
            if isinstance(obs, HalfSpace) and obs.applies_to is not None and body.name not in obs.applies_to:
                continue
            d = distance(placed, obs)
            if d < best[0]:
                best = (d, body.name, obs.name)
    return best


def _near(body, gap, obstacle) -> str:
    if gap >= 0:
        return f"the {body} would be {gap:.1f} mm from the {obstacle}"
    return f"the {body} would reach {-gap:.1f} mm into the {obstacle}"


def _fmt_axis(i, v) -> str:
    return f"{TASK_AXES[i]} = {v:.1f} mm" if i < 3 else f"{TASK_AXES[i]} = {math.degrees(v):.1f}°"


def _fmt_range(i, lo, hi) -> str:
    return f"[{lo:.0f}, {hi:.0f}] mm" if i < 3 else f"[{math.degrees(lo):.0f}, {math.degrees(hi):.0f}]°"


def plan_alignment(entry_mm, target_mm, kinematics, stand_off_mm: float = 20.0, limits=None,
                   envelope=(), q_current=None, bodies=None, clearance_mm: float = 5.0,
                   max_insertion_mm: float | None = None, path_samples: int = 48,
                   name: str = "the trajectory") -> AlignmentPlan:
    """Plan Align for one trajectory (entry and target in base mm, entry -> target into the bone).

    ``limits``: a ``CartesianLimits`` (default: the robot file's); ``envelope``: obstacles in
    base (``Box``, ``Capsule``, ``HalfSpace``; see ``carm_envelope``, ``patient_surface``);
    ``bodies``: robot bodies (default: the guide; add ``cage_bodies(cage)``); ``q_current``:
    joints now (default: the goal, no motion). Raises an ``AlignmentError`` subclass."""
    if entry_mm is None or target_mm is None:
        missing = " and ".join(k for k, v in (("entry", entry_mm), ("target", target_mm)) if v is None)
        raise IncompleteTrajectoryError(f"{name} has no 3D {missing}: click it in both the AP and the LAT image")
    e, t = _vec(entry_mm, "entry"), _vec(target_mm, "target")
    length = float(np.linalg.norm(t - e))
    if length < 1.0:
        raise IncompleteTrajectoryError(f"{name}: entry and target are {length:.2f} mm apart: place the target deeper")
    if not (math.isfinite(stand_off_mm) and stand_off_mm >= 0):
        raise AlignmentError(f"the stand-off must be >= 0 mm, got {stand_off_mm!r}")
    if limits is None:
        limits = default_cartesian_limits()
    d = (t - e) / length
    tip = e - stand_off_mm * d
    travel = stand_off_mm + length
    if max_insertion_mm is not None and travel > max_insertion_mm:
        raise UnreachableError(f"{name}: the insertion from the stand-off to the planned depth is {travel:.1f} mm, "
                               f"beyond the insertion axis's {max_insertion_mm:.0f} mm: reduce the stand-off")
    X = np.asarray(kinematics.pose_for_axis(tip, d), float)
    lo, hi = np.asarray(limits.box_lower, float), np.asarray(limits.box_upper, float)
    out = np.flatnonzero((X < lo) | (X > hi))
    if out.size:
        i = int(out[0])
        raise WorkspaceError(f"{name}: the tool at the stand-off would be at {_fmt_axis(i, X[i])}, outside the "
                             f"workspace {_fmt_range(i, lo[i], hi[i])}: move the robot base or the patient so "
                             "the trajectory lies inside the workspace")
    try:
        q_goal = kinematics.joints_for_pose(X, check_limits=False)
    except ReachabilityError as err:
        raise UnreachableError(f"{name}: {err}") from None
    except KinematicsError as err:
        raise UnreachableError(f"{name}: no joint solution ({err})") from None
    bad = kinematics.joint_limits.violated(q_goal, 1e-9)
    if bad.size:
        j = int(bad[0])
        jl, rev = kinematics.joint_limits, bool(kinematics.revolute[j])
        f = (lambda v: f"{math.degrees(v):.1f}°") if rev else (lambda v: f"{v:.1f} mm")
        raise AlignJointLimitError(f"{name}: joint {kinematics.joint_names[j]} would be at {f(q_goal[j])}, outside "
                                   f"[{f(jl.lower[j])}, {f(jl.upper[j])}]: move the robot base so the "
                                   "trajectory lies nearer the middle of the workspace")
    T_goal = kinematics.forward(q_goal)
    if bodies is None:
        bodies = [guide_body(kinematics)]
    envelope = list(envelope)
    min_margin = float(limits.min_singularity_margin)

    def margin(q):
        try:
            return float(kinematics.singularity_margin(q))
        except KinematicsError:
            return 0.0
    m_goal = margin(q_goal)
    if m_goal < min_margin:
        raise SingularityRefusal(f"{name}: the aligned pose is near a singularity (margin {m_goal:.3f}, needs "
                                 f"{min_margin:.2f}): move the robot base so the tool meets the line less steeply")
    c_goal = _clearance(kinematics, q_goal, bodies, envelope)
    if c_goal[0] < clearance_mm:
        extra = ""
        if c_goal[2] == "patient surface":
            extra = f" (raise the stand-off by {clearance_mm - c_goal[0]:.0f} mm or more)"
        raise CollisionError(f"{name}: {_near(c_goal[1], c_goal[0], c_goal[2])} "
                             f"at the aligned pose, under the {clearance_mm:.0f} mm clearance{extra}: "
                             "move the C-arm or the robot base, or change the trajectory")

    q_now = q_goal.copy() if q_current is None else kinematics._q(q_current)
    bad = kinematics.joint_limits.violated(q_now, 1e-6)
    if bad.size:
        j = int(bad[0])
        raise AlignJointLimitError(f"{name}: the robot is now outside the range of {kinematics.joint_names[j]} "
                                   f"({q_now[j]:.4g}): jog it back into its range first")
    dq = q_goal - q_now
    worst_m, worst_c = m_goal, c_goal
    if np.any(np.abs(dq) > 1e-12):
        for s in np.linspace(0.0, 1.0, max(2, int(path_samples)))[:-1]:
            q = q_now + s * dq
            m = margin(q)
            if m < min_margin:
                raise SingularityRefusal(f"{name}: the way to the aligned pose passes near a singularity "
                                         f"(margin {m:.3f} at {100 * s:.0f} % of the motion): jog the robot nearer "
                                         "the trajectory first")
            Xs = kinematics.pose(q)
            out = np.flatnonzero((Xs < lo - 1e-6) | (Xs > hi + 1e-6))
            if out.size:
                i = int(out[0])
                where = "now" if s == 0 else f"at {100 * s:.0f} % of the motion"
                raise WorkspaceError(f"{name}: the tool would be {where} at {_fmt_axis(i, Xs[i])}, outside the "
                                     f"workspace {_fmt_range(i, lo[i], hi[i])}: jog the robot nearer the "
                                     "trajectory first")
            c = _clearance(kinematics, q, bodies, envelope)
            if c[0] < clearance_mm:
                raise CollisionError(f"{name}: on the way to the aligned pose ({100 * s:.0f} % of the motion) the "
                                     f"{_near(c[1], c[0], c[2])[4:]}, under the "
                                     f"{clearance_mm:.0f} mm clearance: jog the robot clear first")
            worst_m, worst_c = min(worst_m, m), min(worst_c, c, key=lambda x: x[0])
    motion = _profile(kinematics, q_now, q_goal, limits)
    insertion = InsertionSegment(tip, t.copy(), d, travel)
    return AlignmentPlan(name, e, t, d, float(stand_off_mm), X, T_goal, q_goal, motion, insertion,
                         worst_m, float(worst_c[0]),
                         f"{worst_c[1]} - {worst_c[2]}" if worst_c[1] else "", kinematics)


def _profile(kinematics, q0, q1, limits, n: int = 65) -> MotionProfile:
    """The synchronised trapezoid: rate and acceleration of s bounded by every joint's speed and
    acceleration and by the tip's linear and angular speed and acceleration along the path
    (tip velocity ``J dq s'``, acceleration ``J dq s'' + d(J dq)/ds s'^2``)."""
    jl = kinematics.joint_limits
    dq = q1 - q0
    a = np.abs(dq)
    if not np.any(a > 1e-12):
        return MotionProfile(q0.copy(), q1.copy(), 0.0, 0.0, 0.0, 0.0, "no motion")
    nz = a > 1e-12
    V_j, A_j = np.min(jl.velocity[nz] / a[nz]), np.min(jl.acceleration[nz] / a[nz])
    s = np.linspace(0, 1, n)
    Jv = np.stack([kinematics.jacobian(q0 + si * dq) @ dq for si in s])    # per unit s'
    dJv = np.gradient(Jv, s, axis=0)
    k1l, k1a = np.max(np.linalg.norm(Jv[:, :3], axis=1)), np.max(np.linalg.norm(Jv[:, 3:], axis=1))
    k2l, k2a = np.max(np.linalg.norm(dJv[:, :3], axis=1)), np.max(np.linalg.norm(dJv[:, 3:], axis=1))
    cands = {"joint speed": V_j}
    if k1l > 0:
        cands["tool speed"] = limits.linear_speed / k1l
    if k1a > 0:
        cands["tool turn rate"] = limits.angular_speed / k1a
    # the path's curvature term must leave at least half the Cartesian acceleration to s''
    if k2l > 0:
        cands["tool acceleration"] = math.sqrt(0.5 * limits.linear_accel / k2l)
    if k2a > 0:
        cands["tool angular acceleration"] = math.sqrt(0.5 * limits.angular_accel / k2a)
    why = min(cands, key=cands.get)
    V = 0.98 * cands[why]              # a margin for the curvature sampled at n points
    A = A_j
    if k1l > 0:
        A = min(A, (limits.linear_accel - k2l * V * V) / k1l)
    if k1a > 0:
        A = min(A, (limits.angular_accel - k2a * V * V) / k1a)
    A *= 0.98
    peak, T, ta = _trapezoid(V, A)
    return MotionProfile(q0.copy(), q1.copy(), peak, A, T, ta, why)


def correction_motion(kinematics, q_from, q_to, limits=None) -> MotionProfile:
    """The closed loop's correction (tenths of a mm, a few at most): the same synchronised, limited
    trapezoid as the approach, from the joints now to the corrected ones; out-of-range joints refused."""
    q0, q1 = np.asarray(q_from, float), np.asarray(q_to, float)
    jl = kinematics.joint_limits
    if q0.shape != q1.shape or not (np.all(np.isfinite(q0)) and np.all(np.isfinite(q1))):
        raise AlignmentError("the correction's joints must be two finite joint vectors of the same size")
    bad = [kinematics.joint_names[i] for i in range(len(q1)) if not jl.lower[i] <= q1[i] <= jl.upper[i]]
    if bad:
        raise AlignJointLimitError(f"the corrected pose puts {', '.join(bad)} outside its range")
    return _profile(kinematics, q0, q1, limits if limits is not None else default_cartesian_limits())


def alignment_for_trajectory(trajectory, frames, kinematics, **kw) -> AlignmentPlan:
    """``plan_alignment`` for a planned ``Trajectory`` (cage frame at the shots), carried into base
    by a ``BaseFrameCalibration``; an incomplete one is refused by name."""
    name = getattr(trajectory, "name", "the trajectory")
    if not getattr(trajectory, "complete", False):
        raise IncompleteTrajectoryError(f"{name} has no 3D entry and target yet: click both points in both "
                                        "the AP and the LAT image")
    entry, target = frames.trajectory_in_base(trajectory)
    return plan_alignment(entry, target, kinematics, name=name, **kw)
