"""A simulated optical tracker (NDI Polaris Vega-like), pure: marker noise, the measurement
volume's edge, line-of-sight loss, and each rigid body's pose from a marker fit.

What the tracker measures is the markers, not the poses: every rigid body (``robot_ref`` on
the robot's flange, ``patient_ref`` clamped to the patient, optionally the tool) is a few
retro-reflective spheres at known positions in its own frame (``MarkerBody``). Per frame each
marker is seen at its true position plus Gaussian noise whose RMS grows with the distance from
the camera (stereo triangulation: depth error ~ z^2 / baseline), ``rms_mm`` at ``ref_depth_mm``.
A marker is seen only when both cameras have a clear line of sight to it (``Occluder``:
capsules for the C-arm's source and detector housings and the surgeon), and counts as in the
volume when it lies in the characterised pyramid (``MeasurementVolume``). The pose is then the
least-squares rigid fit (Kabsch) of the body's definition to the seen markers, with its RMS, the
way the tracker itself reports it (robot paper II.C.5: the tool's pose from an NDI Polaris).

Status as NDI reports it, spelt as ``core.navigation.tracking.ToolStatus``'s values (this room is
below navigation: ``core.navigation.tracker_sim.frame_from`` makes the ``TrackerFrame``): fewer
than 3 markers seen -> "missing"; every seen marker outside the volume -> "out_of_volume"; some ->
"partially_out_of_volume"; only "ok" carries a pose (the others are NaN).

Frames: ``tracker`` is the camera's frame (origin between the two cameras, +z the viewing
direction, +x along the baseline). Millimetres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


__all__ = ["TrackerSimError", "BodyMeasurement", "OK", "MISSING", "OUT_OF_VOLUME", "PARTIALLY_OUT", "MarkerBody", "MeasurementVolume", "Occluder", "TrackerModel", "kabsch",
           "ROBOT_REF", "PATIENT_REF", "TOOL_REF", "MIN_MARKERS", "marker_rms_mm",
           "T_world_tracker_looking_at", "carm_occluders"]

MIN_MARKERS = 3          # a rigid body's pose needs three non-collinear markers
OK, MISSING, OUT_OF_VOLUME, PARTIALLY_OUT = "ok", "missing", "out_of_volume", "partially_out_of_volume"
_NAN = np.full((4, 4), np.nan)


class TrackerSimError(ValueError):
    """Bad input to the simulated tracker (shapes, a body with too few markers)."""


def _points(a, name) -> np.ndarray:
    p = np.asarray(a, float)
    if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
        raise TrackerSimError(f"{name} must be finite (N, 3) mm, got shape {np.shape(a)}")
    return p


@dataclass(frozen=True)
class BodyMeasurement:
    """One body in one frame: status (``OK`` ...), ``T_tracker_body`` (NaN unless OK), fit RMS (mm)."""
    name: str
    status: str
    T_tracker_body: np.ndarray
    rms_mm: float

    @property
    def ok(self) -> bool:
        return self.status == OK


def _lost(name, status) -> BodyMeasurement:
    return BodyMeasurement(name, status, _NAN.copy(), float("nan"))


def kabsch(src, dst) -> tuple[np.ndarray, float]:
    """``(T, rms_mm)`` with ``dst ~ T @ src`` in least squares (Kabsch/Umeyama without scale) and
    the RMS of the residual distances; needs >= 3 non-collinear points."""
    src, dst = _points(src, "model points"), _points(dst, "measured points")
    if len(src) != len(dst) or len(src) < MIN_MARKERS:
        raise TrackerSimError(f"a rigid fit needs >= {MIN_MARKERS} paired points, got {len(src)} and {len(dst)}")
    cs, cd = src.mean(0), dst.mean(0)
    H = (src - cs).T @ (dst - cd)
    U, s, Vt = np.linalg.svd(H)
    if s[1] < 1e-9 * max(s[0], 1e-12):
        raise TrackerSimError("the points are collinear: their pose about that line is undetermined")
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, cd - R @ cs
    r = dst - (src @ R.T + T[:3, 3])
    return T, float(np.sqrt(np.mean(np.sum(r ** 2, 1))))


@dataclass(frozen=True)
class MarkerBody:
    """A rigid body's marker spheres (their centres, mm, in the body's own frame)."""
    name: str
    markers_mm: np.ndarray

    def __post_init__(self):
        m = _points(self.markers_mm, f"the {self.name} markers").copy()
        if len(m) < MIN_MARKERS:
            raise TrackerSimError(f"{self.name}: a rigid body needs >= {MIN_MARKERS} markers, got {len(m)}")
        m.setflags(write=False)
        object.__setattr__(self, "markers_mm", m)


# NDI-style passive bodies: four coplanar spheres, no two distances alike (the tracker tells them
# apart by their distances); robot_ref and the tool of the size of NDI's 8700339/8700340 frames
ROBOT_REF = MarkerBody("robot_ref", np.array([[0.0, 0.0, 0.0], [0.0, 50.0, 0.0], [-25.0, 100.0, 0.0],
                                              [35.0, 135.0, 0.0]]))
PATIENT_REF = MarkerBody("patient_ref", np.array([[0.0, 0.0, 0.0], [70.0, 52.0, 0.0], [150.0, 0.0, 0.0],
                                                  [62.0, -68.0, 0.0]]))   # a large frame: its turn noise
                                                                        # has a 100-150 mm lever to the site
TOOL_REF = MarkerBody("tool", np.array([[0.0, 0.0, 0.0], [-30.0, 45.0, 0.0], [25.0, 70.0, 0.0],
                                        [-10.0, 110.0, 0.0]]))


@dataclass(frozen=True)
class MeasurementVolume:
    """The characterised volume, a truncated pyramid along the tracker's +z: depth
    ``[near_mm, far_mm]``, half-angles (rad) across (x) and up (y). The defaults approximate a
    Polaris Vega's pyramid volume (950-2400 mm, about 1.3 x 1.1 m wide at its far end)."""
    near_mm: float = 950.0
    far_mm: float = 2400.0
    half_angle_x: float = math.radians(15.5)
    half_angle_y: float = math.radians(13.0)

    def contains(self, p_tracker) -> np.ndarray:
        """(N,) bool: the points (tracker frame) inside the volume."""
        p = np.atleast_2d(np.asarray(p_tracker, float))
        z = p[:, 2]
        return ((z >= self.near_mm) & (z <= self.far_mm) & (np.abs(p[:, 0]) <= z * math.tan(self.half_angle_x))
                & (np.abs(p[:, 1]) <= z * math.tan(self.half_angle_y)))


@dataclass(frozen=True)
class Occluder:
    """Something opaque between the cameras and the markers: a capsule (segment ``a``-``b`` of
    radius ``radius_mm``), in the tracker frame. The C-arm's image intensifier and source
    housing, or a surgeon's head and shoulders, are each one or two of these."""
    a: np.ndarray
    b: np.ndarray
    radius_mm: float
    name: str = "occluder"

    def blocks(self, origin, points) -> np.ndarray:
        """(N,) bool: the sight line from ``origin`` to each point passes within the radius."""
        o = np.asarray(origin, float)
        P = np.atleast_2d(np.asarray(points, float))
        a, b = np.asarray(self.a, float), np.asarray(self.b, float)
        return np.array([_segment_distance(o, p, a, b) < self.radius_mm for p in P], bool)


def _segment_distance(p0, p1, q0, q1) -> float:
    """The shortest distance between segments p0-p1 and q0-q1 (sampled exactly enough for a
    sight line against a capsule: the closed-form with clamping)."""
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
    return float(np.linalg.norm((p0 + s * d1) - (q0 + t * d2)))


def marker_rms_mm(depth_mm, rms_mm: float = 0.25, ref_depth_mm: float = 1500.0) -> np.ndarray:
    """The 3D RMS error of one marker at ``depth_mm`` from the cameras: ``rms_mm`` at
    ``ref_depth_mm``, growing as depth squared (triangulation over a fixed baseline)."""
    z = np.asarray(depth_mm, float)
    return rms_mm * (np.maximum(z, 1.0) / ref_depth_mm) ** 2


@dataclass
class TrackerModel:
    """The simulated tracker: bodies, volume, noise law, cameras (``baseline_mm`` apart along x)
    and a seeded generator. ``measure(poses, occluders, ...)`` is one frame."""
    bodies: dict = field(default_factory=lambda: {b.name: b for b in (ROBOT_REF, PATIENT_REF)})
    volume: MeasurementVolume = field(default_factory=MeasurementVolume)
    rms_mm: float = 0.25
    ref_depth_mm: float = 1500.0
    baseline_mm: float = 540.0
    seed: int = 0

    def __post_init__(self):
        if not (self.rms_mm >= 0 and self.ref_depth_mm > 0 and self.baseline_mm > 0):
            raise TrackerSimError("the marker noise must be >= 0, the reference depth and the baseline > 0")
        self.rng = np.random.default_rng(self.seed)

    @property
    def cameras(self) -> np.ndarray:
        """(2, 3) the two cameras' centres in the tracker frame."""
        h = 0.5 * self.baseline_mm
        return np.array([[-h, 0.0, 0.0], [h, 0.0, 0.0]])

    def observe(self, name: str, T_tracker_body, occluders=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(true marker positions (N, 3), seen (N,) bool, in volume (N,) bool) for one body."""
        body = self.bodies[name]
        T = np.asarray(T_tracker_body, float)
        P = body.markers_mm @ T[:3, :3].T + T[:3, 3]
        seen = P[:, 2] > 0                              # in front of the cameras
        for occ in occluders:
            for cam in self.cameras:
                seen &= ~occ.blocks(cam, P)
        return P, seen, self.volume.contains(P)

    def measure_markers(self, name: str, T_tracker_body, occluders=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(measured marker positions (N, 3): truth plus noise of ``marker_rms_mm`` at each one's
        depth, isotropic; seen (N,); in volume (N,)). Noise is drawn for every marker, seen or not,
        so the stream of one body does not depend on what hides another."""
        P, seen, inside = self.observe(name, T_tracker_body, occluders)
        sigma = marker_rms_mm(P[:, 2], self.rms_mm, self.ref_depth_mm) / math.sqrt(3.0)
        return P + self.rng.standard_normal(P.shape) * sigma[:, None], seen, inside

    def measure_body(self, name: str, T_tracker_body, occluders=()) -> BodyMeasurement:
        """One body's measurement for this frame (noise drawn from the model's generator)."""
        if name not in self.bodies:
            raise TrackerSimError(f"no marker body named {name!r}: known {sorted(self.bodies)}")
        T = np.asarray(T_tracker_body, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return _lost(name, MISSING)
        noisy, seen, inside = self.measure_markers(name, T, occluders)
        if seen.sum() < MIN_MARKERS:
            return _lost(name, MISSING)
        if not inside[seen].any():
            return _lost(name, OUT_OF_VOLUME)
        if not inside[seen].all():
            return _lost(name, PARTIALLY_OUT)
        try:
            T_fit, rms = kabsch(self.bodies[name].markers_mm[seen], noisy[seen])
        except TrackerSimError:
            return _lost(name, MISSING)
        return BodyMeasurement(name, OK, T_fit, rms)

    def measure(self, poses: dict, occluders=()) -> dict:
        """name -> ``BodyMeasurement`` of every body in ``self.bodies``, measured in name order
        (the noise stream does not depend on the dict's order); one absent from ``poses`` is missing."""
        return {name: (self.measure_body(name, poses[name], occluders) if poses.get(name) is not None
                       else _lost(name, MISSING)) for name in sorted(self.bodies)}


# -- the room: where the camera stands, what can come between --------------------------------

def T_world_tracker_looking_at(target_mm, from_direction, distance_mm: float = 1600.0,
                               up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The camera placed ``distance_mm`` from ``target_mm`` along ``from_direction`` (world),
    its +z towards the target and its y as close to ``-up`` as the view allows (image rows down)."""
    t = np.asarray(target_mm, float)
    d = np.asarray(from_direction, float)
    if t.shape != (3,) or d.shape != (3,) or not (np.linalg.norm(d) > 0 and distance_mm > 0):
        raise TrackerSimError("the camera needs a target point, a direction to it and a positive distance")
    z = -d / np.linalg.norm(d)
    y = -np.asarray(up, float) + (np.asarray(up, float) @ z) * z
    if np.linalg.norm(y) < 1e-6:
        y = np.cross(z, [1.0, 0.0, 0.0])
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = t - distance_mm * z
    return T


def carm_occluders(source_mm, detector_centre_mm, T_tracker_world, detector_radius_mm: float = 160.0,
                   source_radius_mm: float = 110.0, depth_mm: float = 250.0) -> list:
    """The C-arm's two housings as capsules in the tracker frame: the image intensifier (a
    cylinder ``depth_mm`` deep behind the detector plane) and the tube housing behind the source."""
    s = np.asarray(source_mm, float)
    c = np.asarray(detector_centre_mm, float)
    beam = (c - s) / np.linalg.norm(c - s)
    to_tr = lambda p: np.asarray(T_tracker_world, float)[:3, :3] @ p + np.asarray(T_tracker_world, float)[:3, 3]
    return [Occluder(to_tr(c), to_tr(c + depth_mm * beam), detector_radius_mm, "C-arm detector"),
            Occluder(to_tr(s - 0.5 * depth_mm * beam), to_tr(s), source_radius_mm, "C-arm source")]
