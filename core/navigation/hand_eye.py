"""``T_flange_cage`` measured: cage shots at several robot poses solved as AX = XB.

The C-arm stands still while the robot moves the cage. At each pose ``i`` the robot
reports ``T_base_flange_i`` (its nominal kinematics at the encoder readings) and the
pose's calibration gives the cage in a frame fixed to the C-arm, ``T_camera_cage_i``.
The C-arm's pose in the base frame is then the same at every pose,

    T_base_camera = T_base_flange_i @ X @ inv(T_camera_cage_i),    X = T_flange_cage,

so for every pair ``A X = X B`` with ``A = inv(T_base_flange_j) T_base_flange_i`` and
``B = inv(T_camera_cage_j) T_camera_cage_i``: OpenCV's ``calibrateHandEye`` in its
eye-in-hand form (gripper = flange, "camera" = cage, target = the C-arm). Every method
(Tsai, Park, Horaud, Andreff, Daniilidis) is solved and graded by how well the fixed
C-arm agrees with itself across the poses; the best one is kept.

The C-arm frame comes from a calibration in one of two ways:
- ``carm_pose_in_cage``: one view's 3x4 ``P`` decomposed (``P ~ K [R | t]``): the source
  and the detector axes. Its depth along the beam is as uncertain as the focal length.
- ``room_pose_in_cage``: points fixed in the room by pixel pairs of both views
  (``room_marks``), triangulated by each pose's calibration and fitted rigidly: the
  two-view accuracy of ``locate`` (tenths of a mm), with its origin near the isocentre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert, is_rigid, make_transform
from core.robot.cage_mount import cage_mount_path  # re-exported: where --write stores the mount

__all__ = ["HandEyeError", "CarmPose", "carm_pose_in_cage", "RoomMarks", "room_marks", "room_pose_in_cage",
           "HandEyeResult", "estimate_T_flange_cage", "METHODS", "FORMAT", "MIN_POSES",
           "MIN_ROTATION_DEG", "MIN_AXIS_ANGLE_DEG", "MAX_ANGLE_MISMATCH_DEG", "hand_eye_poses", "check_pose_plan",
           "solve_from_calibrations", "cage_mount_path", "save_cage_mount", "load_cage_mount"]

FORMAT = "fluoronav.hand_eye/1"
METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis")
MIN_POSES = 3
MIN_ROTATION_DEG = 5.0        # the largest rotation between two poses
MIN_AXIS_ANGLE_DEG = 15.0     # the widest angle between two rotation axes
MAX_ANGLE_MISMATCH_DEG = 1.0  # robot vs images: the same motion turns both by the same angle
REACH_MM = 100.0              # a rotation spread counts as this lever's displacement when grading
_BASE_AXES = ("x", "y", "z")


class HandEyeError(ValueError):
    """The poses cannot determine ``T_flange_cage`` (too few, degenerate, inconsistent, bad input)."""


# -- the C-arm seen from the cage ---------------------------------------------------------------

@dataclass(frozen=True)
class CarmPose:
    """One view's camera: ``T_cage_carm`` (origin at the X-ray source, z along the beam
    towards the detector, x and y along the image's u and v) and intrinsics ``K`` (ideal px,
    ``K[2, 2] = 1``)."""
    T_cage_carm: np.ndarray
    K: np.ndarray

    @property
    def T_carm_cage(self) -> np.ndarray:
        return invert(self.T_cage_carm)

    @property
    def source_mm(self) -> np.ndarray:
        return self.T_cage_carm[:3, 3].copy()


def carm_pose_in_cage(view_calibration) -> CarmPose:
    """The C-arm camera of one view in the cage frame from its 3x4 ``P`` (cage mm -> ideal
    px), by RQ decomposition ``P = s K [R | t]`` with K upper triangular, positive diagonal.
    Accepts a ``ViewCalibration`` (its ``.P``) or the 3x4 array itself."""
    from scipy.linalg import rq
    P = np.asarray(getattr(view_calibration, "P", view_calibration), float)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise HandEyeError(f"a projection matrix is 3x4 and finite, got shape {P.shape}")
    M = P[:, :3]
    det = np.linalg.det(M)
    if not abs(det) > 1e-12 * np.abs(M).max() ** 3:
        raise HandEyeError("the projection matrix is singular: it is not a camera (recalibrate the view)")
    P = P * np.sign(det)          # the sign that puts the points in front of the source
    K, R = rq(P[:, :3])
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R           # D @ D = I: positive focal lengths, R stays proper (det M > 0)
    t = np.linalg.solve(K, P[:, 3])   # P = K [R | t]: K's scale is P's
    return CarmPose(invert(make_transform(R, t)), K / K[2, 2])


@dataclass(frozen=True)
class RoomMarks:
    """Points fixed in the room, defined by their raw pixels in both views (the C-arm does
    not move): ``uv_ap``, ``uv_lat`` (N, 2) and their coordinates ``points_mm`` (N, 3) in the
    room frame (the cage frame of the calibration they were made from)."""
    uv_ap: np.ndarray
    uv_lat: np.ndarray
    points_mm: np.ndarray


def room_marks(calibration, half_mm: float = 40.0, n: int = 3) -> RoomMarks:
    """An ``n`` x ``n`` x ``n`` grid of room points ``half_mm`` about where the two views'
    central rays meet (the isocentre), projected into both views of ``calibration``."""
    if not (half_mm > 0 and int(n) >= 2):
        raise HandEyeError("room marks need a positive half size and >= 2 points per axis")
    centre_px = {v: np.array([(vc.image_shape[1] - 1) / 2, (vc.image_shape[0] - 1) / 2])
                 for v, vc in calibration.views.items()}
    iso, _ = calibration.locate(centre_px["ap"], centre_px["lat"])
    g = np.linspace(-half_mm, half_mm, int(n))
    pts = iso + np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    uv = calibration.project(pts)
    ok = np.all(np.isfinite(uv["ap"]), 1) & np.all(np.isfinite(uv["lat"]), 1)
    if ok.sum() < 4:
        raise HandEyeError("the room marks do not project into both views: check the calibration")
    return RoomMarks(uv["ap"][ok], uv["lat"][ok], pts[ok])


def _kabsch(src, dst):
    """Rigid T with dst ~ T @ src (least squares)."""
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ S @ U.T
    return make_transform(R, cd - R @ cs)


def room_pose_in_cage(calibration, marks: RoomMarks) -> tuple[np.ndarray, float]:
    """``(T_room_cage, rms_mm)``: the room marks triangulated by this pose's calibration
    (``locate``: AP and LAT rays' closest points), fitted rigidly to their room coordinates."""
    X, _ = calibration.locate_many(marks.uv_ap, marks.uv_lat)
    if not np.all(np.isfinite(X)):
        raise HandEyeError("the room marks could not be triangulated: check the calibration")
    T_cage_room = _kabsch(marks.points_mm, X)
    r = X - (marks.points_mm @ T_cage_room[:3, :3].T + T_cage_room[:3, 3])
    return invert(T_cage_room), float(np.sqrt(np.mean(np.sum(r ** 2, 1))))


# -- AX = XB --------------------------------------------------------------------------------

@dataclass
class HandEyeResult:
    """The chosen ``T_flange_cage`` and how every method did.

    ``residuals``: method -> {"translation_mm", "rotation_deg"}: RMS spread about their mean
    of the fixed C-arm's poses in the base frame, ``T_base_flange_i X inv(T_camera_cage_i)``;
    ``estimates``: method -> its X; ``failed``: method -> why it gave no answer.
    """
    T_flange_cage: np.ndarray
    method: str
    residuals: dict
    estimates: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    n_poses: int = 0
    max_rotation_deg: float = float("nan")
    axis_spread_deg: float = float("nan")

    def table(self) -> str:
        """The method comparison, one line per method (the chosen one marked)."""
        lines = []
        for m in METHODS:
            if m in self.residuals:
                r = self.residuals[m]
                mark = " <- chosen" if m == self.method else ""
                lines.append(f"{m:<11} {r['translation_mm']:8.3f} mm {r['rotation_deg']:8.4f} deg{mark}")
            elif m in self.failed:
                lines.append(f"{m:<11} failed: {self.failed[m]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "T_flange_cage": np.asarray(self.T_flange_cage, float).tolist(),
                "method": self.method, "n_poses": int(self.n_poses),
                "max_rotation_deg": float(self.max_rotation_deg), "axis_spread_deg": float(self.axis_spread_deg),
                "residuals": {m: {k: float(v) for k, v in r.items()} for m, r in self.residuals.items()},
                "failed": dict(self.failed)}

    @classmethod
    def from_dict(cls, d) -> "HandEyeResult":
        """Validated: format, a rigid 4x4, a known method with its residuals; HandEyeError otherwise."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise HandEyeError(f"hand-eye record: format is {got!r}, expected {FORMAT!r}")
        try:
            T = np.asarray(d["T_flange_cage"], float)
            method = str(d["method"])
            residuals = {str(m): {"translation_mm": float(r["translation_mm"]),
                                  "rotation_deg": float(r["rotation_deg"])} for m, r in d["residuals"].items()}
            n = int(d["n_poses"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HandEyeError(f"hand-eye record: missing or malformed field ({e})") from None
        if not is_rigid(T, 1e-6):
            raise HandEyeError("hand-eye record: T_flange_cage is not a finite rigid 4x4 transform")
        if method not in METHODS or method not in residuals:
            raise HandEyeError(f"hand-eye record: method {method!r} is not one of {METHODS} with residuals")
        return cls(T, method, residuals, {}, {str(k): str(v) for k, v in d.get("failed", {}).items()}, n,
                   float(d.get("max_rotation_deg", "nan")), float(d.get("axis_spread_deg", "nan")))


def _check_transforms(Ts, name) -> list:
    out = []
    for i, T in enumerate(Ts):
        a = np.asarray(T, float)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise HandEyeError(f"pose {i + 1}: {name} is not a finite 4x4 transform")
        if not is_rigid(a, 1e-5):
            raise HandEyeError(f"pose {i + 1}: {name} is not a rigid transform (rotation not orthonormal)")
        out.append(a)
    return out


def _angle_deg(R) -> float:
    return math.degrees(np.linalg.norm(Rotation.from_matrix(R).as_rotvec()))


def _check_motions(F, C, min_rotation_deg, min_axis_angle_deg, max_mismatch_deg):
    """Refuse poses that cannot determine X: rotations too small, all about one axis, or the
    robot's and the images' rotation angles disagreeing. Returns (max rotation, axis spread)."""
    n = len(F)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    rv = {p: Rotation.from_matrix(F[p[1]][:3, :3] @ F[p[0]][:3, :3].T).as_rotvec() for p in pairs}  # base frame
    ang = {p: math.degrees(np.linalg.norm(v)) for p, v in rv.items()}
    biggest = max(ang.values())
    if biggest < min_rotation_deg:
        raise HandEyeError(f"the robot turns the cage at most {biggest:.1f} deg between poses (need >= "
                           f"{min_rotation_deg:.0f}): add poses tilted 10-20 deg about the robot's x and y axes")
    # per pose, the median disagreement of its rotation angles with every other pose
    mis = np.zeros((n, n))
    for i, j in pairs:
        b = _angle_deg(C[j][:3, :3].T @ C[i][:3, :3])
        mis[i, j] = mis[j, i] = abs(ang[(i, j)] - b)
    score = [float(np.median(np.delete(mis[i], i))) for i in range(n)]
    worst = int(np.argmax(score))
    if score[worst] > max_mismatch_deg:
        raise HandEyeError(f"pose {worst + 1}: the robot's rotation to the other poses and the cage's in the "
                           f"images differ by {score[worst]:.2f} deg (median; allowed {max_mismatch_deg:.1f}): the "
                           "C-arm or the cage on its mount moved, or the pose lists are out of step: retake it")
    axes = [rv[p] / np.linalg.norm(rv[p]) for p in pairs if ang[p] >= 0.5 * min_rotation_deg]
    spread = 0.0
    for a in range(len(axes)):
        for b in range(a + 1, len(axes)):
            spread = max(spread, math.degrees(math.acos(min(1.0, abs(float(axes[a] @ axes[b]))))))
    if spread < min_axis_angle_deg:
        ax = axes[0]
        other = _BASE_AXES[int(np.argmin(np.abs(ax[:2])))]   # the robot's tilt axis (x or y) least used
        raise HandEyeError(f"all the robot's rotations are about one axis (~[{ax[0]:.2f}, {ax[1]:.2f}, "
                           f"{ax[2]:.2f}] in the base frame; axes at most {spread:.1f} deg apart, need >= "
                           f"{min_axis_angle_deg:.0f}): add a pose tilted 10-20 deg about the robot's {other} axis")
    return biggest, spread


def _spread(F, X, C) -> tuple[float, float]:
    """RMS translation (mm) and rotation (deg) of ``F_i X inv(C_i)`` about their mean."""
    T = [f @ X @ invert(c) for f, c in zip(F, C)]
    rots = Rotation.from_matrix(np.stack([t[:3, :3] for t in T]))
    mean = rots.mean()
    dr = np.degrees(np.linalg.norm((mean.inv() * rots).as_rotvec(), axis=1))
    p = np.stack([t[:3, 3] for t in T])
    dt = np.linalg.norm(p - p.mean(0), axis=1)
    return float(np.sqrt(np.mean(dt ** 2))), float(np.sqrt(np.mean(dr ** 2)))


def _cv_reason(e) -> str:
    """OpenCV's error without its source path: ``error: (-7:Iterations do not converge) Rotation
    ...`` -> ``Iterations do not converge: Rotation ...`` (one line, at most 120 characters)."""
    import re
    text = " ".join(str(e).split())
    m = re.search(r"error: \(-?\d+:([^)]*)\)\s*(.*)", text)
    out = f"{m.group(1).strip()}: {m.group(2).split(' in function')[0].strip()}".rstrip(": ") if m else text
    return out[:120]


def _score(r) -> float:
    """A method's grade: the C-arm frame's spread as a displacement within ``REACH_MM`` of its origin."""
    return r["translation_mm"] + math.radians(r["rotation_deg"]) * REACH_MM


def estimate_T_flange_cage(T_base_flange_list, T_camera_cage_list, methods=METHODS,
                           min_rotation_deg: float = MIN_ROTATION_DEG,
                           min_axis_angle_deg: float = MIN_AXIS_ANGLE_DEG,
                           max_angle_mismatch_deg: float = MAX_ANGLE_MISMATCH_DEG) -> HandEyeResult:
    """``T_flange_cage`` from >= 3 poses: the robot's ``T_base_flange_i`` and the cage in the
    fixed C-arm's (or room's) frame ``T_camera_cage_i`` (``CarmPose.T_carm_cage`` or
    ``room_pose_in_cage``). Every method in ``methods`` is solved with ``cv2.calibrateHandEye``
    and graded (``HandEyeResult.residuals``); the one whose fixed C-arm spreads least is chosen
    (translation RMS plus rotation RMS times ``REACH_MM``; ties: the order of ``METHODS``)."""
    import cv2
    F = _check_transforms(list(T_base_flange_list), "T_base_flange")
    C = _check_transforms(list(T_camera_cage_list), "T_camera_cage")
    if len(F) != len(C):
        raise HandEyeError(f"{len(F)} robot poses but {len(C)} cage poses: give one of each per pose")
    if len(F) < MIN_POSES:
        raise HandEyeError(f"hand-eye calibration needs cage shots at >= {MIN_POSES} robot poses, got {len(F)}: "
                           "add poses tilted 10-20 deg about the robot's x and y axes")
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise HandEyeError(f"unknown hand-eye method(s) {unknown}: choose from {METHODS}")
    biggest, spread = _check_motions(F, C, min_rotation_deg, min_axis_angle_deg, max_angle_mismatch_deg)
    flags = {"tsai": cv2.CALIB_HAND_EYE_TSAI, "park": cv2.CALIB_HAND_EYE_PARK, "horaud": cv2.CALIB_HAND_EYE_HORAUD,
             "andreff": cv2.CALIB_HAND_EYE_ANDREFF, "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}
    Ci = [invert(c) for c in C]                       # target (C-arm) -> "camera" (cage)
    residuals, estimates, failed = {}, {}, {}
    for m in methods:
        try:
            R, t = cv2.calibrateHandEye([f[:3, :3] for f in F], [f[:3, 3].reshape(3, 1) for f in F],
                                        [c[:3, :3] for c in Ci], [c[:3, 3].reshape(3, 1) for c in Ci],
                                        method=flags[m])
        except cv2.error as e:
            failed[m] = _cv_reason(e)
            continue
        R, t = np.asarray(R, float), np.asarray(t, float).reshape(3)
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            failed[m] = "no finite solution"
            continue
        U, _, Vt = np.linalg.svd(R)                   # the nearest rotation (some methods drift off it)
        R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
        X = make_transform(R, t)
        estimates[m] = X
        tr, rot = _spread(F, X, C)
        residuals[m] = {"translation_mm": tr, "rotation_deg": rot}
    if not residuals:
        raise HandEyeError("no hand-eye method found a solution: "
                           + "; ".join(f"{m}: {why}" for m, why in failed.items()))
    best = min(residuals, key=lambda m: (_score(residuals[m]), METHODS.index(m)))
    return HandEyeResult(estimates[best].copy(), best, residuals, estimates, failed, len(F), biggest, spread)


# -- the procedure: poses, calibrated shots -> X ---------------------------------------------

GOLDEN_DEG = 137.50776405     # successive tilt directions: no two poses turn about one axis


def check_pose_plan(n, tilt_deg) -> int:
    """``n`` as an int when ``n`` poses tilted by ``tilt_deg`` can be planned; HandEyeError otherwise."""
    n = int(n)
    if n < MIN_POSES:
        raise HandEyeError(f"hand-eye calibration needs cage shots at >= {MIN_POSES} robot poses, got {n}")
    if not (0 < tilt_deg <= 35):
        raise HandEyeError(f"the tilt between poses must be in (0, 35] deg, got {tilt_deg}")
    return n


def hand_eye_poses(kinematics, q0, pivot_base_mm, n: int = 5, tilt_deg: float = 15.0) -> list:
    """``n`` encoder readings for cage shots: ``q0`` first, then the cage tilted by
    ``tilt_deg`` about ``pivot_base_mm`` (the isocentre, so the cage stays in both fields),
    each in a new direction (golden-angle steps: the tilt axes spread over the robot's x and
    y). A pose out of the joint limits or the mechanism's reach is tried again at 3/4 and 1/2
    of the tilt; HandEyeError when one still cannot be reached."""
    from core.robot.kinematics.base import KinematicsError
    n = check_pose_plan(n, tilt_deg)
    q0 = np.asarray(q0, float)
    X0 = kinematics.pose(q0)
    F0 = kinematics.flange(q0)
    pivot = np.asarray(pivot_base_mm, float)
    p_f = (invert(F0) @ np.append(pivot, 1.0))[:3]              # the pivot in the flange frame
    tip_f = kinematics.T_flange_tool[:3, 3]
    out = [q0]
    for k in range(1, n):
        phi = math.radians(GOLDEN_DEG * (k - 1))
        why = ""
        for scale in (1.0, 0.75, 0.5):
            a, b = (math.radians(tilt_deg * scale) * c for c in (math.cos(phi), math.sin(phi)))
            tx, ty = X0[3] + a, X0[4] + b
            R = Rotation.from_euler("XY", [tx, ty]).as_matrix()  # intrinsic: Rx(theta_x) @ Ry(theta_y), eq. 10
            F = make_transform(R, pivot - R @ p_f)
            tip = (F @ np.append(tip_f, 1.0))[:3]
            try:
                out.append(kinematics.joints_for_pose([*tip, tx, ty]))
                break
            except KinematicsError as e:
                why = str(e)
        else:
            raise HandEyeError(f"pose {k + 1} (tilt {tilt_deg:.0f} deg towards {math.degrees(phi) % 360:.0f} deg) "
                               f"cannot be reached: {why}; start nearer the robot's home pose or tilt less")
    return out


def solve_from_calibrations(T_base_flange_list, calibrations, **kwargs) -> tuple[HandEyeResult, list]:
    """``(result, marks_rms_mm)``: room marks from the first pose's calibration, the room's
    pose in each pose's cage frame (``room_pose_in_cage``), then ``estimate_T_flange_cage``."""
    cals = list(calibrations)
    if len(cals) < MIN_POSES:
        raise HandEyeError(f"hand-eye calibration needs cage shots at >= {MIN_POSES} robot poses, got {len(cals)}: "
                           "add poses tilted 10-20 deg about the robot's x and y axes")
    marks = room_marks(cals[0])
    C, rms = [], []
    for i, cal in enumerate(cals):
        try:
            T, r = room_pose_in_cage(cal, marks)
        except HandEyeError as e:
            raise HandEyeError(f"pose {i + 1}: {e}") from None
        C.append(T)
        rms.append(r)
    return estimate_T_flange_cage(T_base_flange_list, C, **kwargs), rms


# -- stored with the robot's configuration (core.robot.cage_mount: where, and how it is loaded) ----


def save_cage_mount(result: HandEyeResult, path, **info) -> "Path":
    """Write the measured mount (atomically): the record of ``to_dict`` plus ``measured_at``
    (UTC, ISO 8601) and ``info`` (poses used, robot file, source ...)."""
    import datetime as _dt
    from core.formats.files import write_json_atomic
    doc = {**result.to_dict(), "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           **info}
    return write_json_atomic(path, doc)


def load_cage_mount(path) -> tuple[HandEyeResult, dict]:
    """``(result, document)`` of a stored mount; HandEyeError (one line naming the file) when
    it cannot be read, is not JSON or is not a valid ``fluoronav.hand_eye/1`` record."""
    from core.robot.cage_mount import read_cage_mount
    from core.robot.kinematics.base import KinematicsError
    try:
        doc = read_cage_mount(path)
    except KinematicsError as e:
        raise HandEyeError(str(e)) from None
    try:
        return HandEyeResult.from_dict({**doc, "T_flange_cage": doc["T_flange_cage"].tolist()}), doc
    except HandEyeError as e:
        raise HandEyeError(f"{path}: {e}: measure the mount again (fluoronav handeye ... --write) or delete "
                           "the file to use the nominal one") from None
