"""Pedicle trajectory planning from two calibrated fluoroscopy views.

The surgeon clicks a trajectory's entry and target in the AP and the lateral
image; each pair of clicks becomes a 3D point in the cage frame (the robot
paper's figure 9: an AP click gives a ray through its points P11, P21 on the
two AP planes, a LAT click a ray through P31, P41; the target point lies where
the two rays meet, here the midpoint of their common perpendicular). The
length of that perpendicular, the ray gap, says whether the two clicks show
the same point. The result is the paper's T_path (eq. 23) in the cage
(bi-planar) frame. Pixels are raw (column, row); millimetres and radians.

Conventions for angles (``trajectory_angles``): the trajectory direction is
``d = unit(target - entry)`` (into the bone). Patient axes are given in the
cage frame by ``PatientAxes`` (left, posterior, superior: LPS; by default the
cage's standard mounting over a prone patient). The
transverse angle is measured in the axial plane from the anterior axis
(``-posterior``) towards patient left; the sagittal angle in the sagittal
plane from the anterior axis towards superior. *Medial* angulation is the
transverse angle towards the midline (positive when the tip converges towards
the spinous process: towards the right for a left pedicle); *cranial*
angulation is the sagittal angle (positive when the tip points cranially).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.formats.schema import load_json, validate
from core.geometry.pixels import image_bounds, in_image
from core.geometry.rigid import GeometryError, Ray, triangulate_rays, unit
from core.planning.plausibility import implausibilities

__all__ = [
    "LEVELS", "SIDES", "VIEWS", "POINTS", "MAX_RAY_GAP_MM", "PlanningError", "ClickOutsideImageError",
    "RayGapWarning", "TwoViewCalibration", "ConeBeamPair", "Trajectory", "Located", "PatientAxes",
    "TrajectoryAngles", "ToolBand", "check_click", "epipolar_line", "snap_to_epipolar", "triangulate",
    "locate_trajectory", "trajectory_angles", "image_angles", "tool_band", "clip_polyline", "plan_warnings",
    "PLAN_FORMAT", "plan_from_dict", "read_plan",
]

LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
SIDES = ("left", "right")
VIEWS = ("ap", "lat")
POINTS = ("entry", "target")
MAX_RAY_GAP_MM = 2.0  # above this the two clicks do not show the same point
PLAN_FORMAT = "fluoronav.plan/1"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class PlanningError(ValueError):
    """Bad planning input; the message says what to do."""


class ClickOutsideImageError(PlanningError):
    """A click (or a dragged handle) lies outside the image."""


class RayGapWarning(UserWarning):
    """The two clicks' X-rays miss each other by more than the threshold."""


@runtime_checkable
class TwoViewCalibration(Protocol):
    """What planning needs of a calibration (``core.calibration.CageCalibration``)."""

    def ray(self, view: str, uv_raw) -> Ray:
        """The X-ray through raw pixel ``uv_raw`` of ``view``, in the cage frame."""

    def locate(self, uv_ap, uv_lat) -> tuple[np.ndarray, float]:
        """3D point (cage frame, mm) of a pair of raw clicks and its ray gap (mm)."""

    def project(self, points_mm) -> dict:
        """Raw pixels {"ap": (N, 2), "lat": (N, 2)} of cage-frame points (N, 3)."""


class ConeBeamPair:
    """A two-view calibration from two known ``ConeBeamGeometry`` (same 3D frame).

    The ideal pinhole model: the simulator's ground truth, or a C-arm whose
    geometry is known. Satisfies ``TwoViewCalibration``.
    """

    def __init__(self, ap, lat):
        self.geometry = {"ap": ap, "lat": lat}

    def ray(self, view: str, uv_raw) -> Ray:
        return self.geometry[_view(view)].ray(_uv(uv_raw))

    def locate(self, uv_ap, uv_lat) -> tuple[np.ndarray, float]:
        return triangulate_rays(self.ray("ap", uv_ap), self.ray("lat", uv_lat))

    def project(self, points_mm) -> dict:
        p = np.atleast_2d(np.asarray(points_mm, float))
        return {v: g.project(p) for v, g in self.geometry.items()}

    def image_shape(self, view: str) -> tuple[int, int]:
        return self.geometry[_view(view)].shape


# --- input checks -----------------------------------------------------------
def _view(view) -> str:
    if view not in VIEWS:
        raise PlanningError(f"view must be 'ap' or 'lat', got {view!r}")
    return view


def _uv(uv) -> np.ndarray:
    a = np.asarray(uv, float)
    if a.shape != (2,) or not np.all(np.isfinite(a)):
        raise PlanningError(f"a click must be a finite pixel (u, v), got {uv!r}")
    return a


def _point(p, name: str) -> np.ndarray:
    a = np.asarray(p, float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise PlanningError(f"{name} must be a finite 3D point in mm, got {p!r}")
    return a


def check_click(uv, shape, view: str = "") -> np.ndarray:
    """The click as (2,) float; raises ClickOutsideImageError outside a (rows, cols) image."""
    a = _uv(uv)
    if shape is not None and not in_image(a, shape)[0]:
        rows, cols = shape
        where = f" of the {view.upper()} image" if view else ""
        raise ClickOutsideImageError(f"click at ({a[0]:.0f}, {a[1]:.0f}) is outside the {cols}x{rows} pixels"
                                     f"{where}: click on the image")
    return a


# --- epipolar geometry ----------------------------------------------------------
def epipolar_line(calib: TwoViewCalibration, from_view: str, uv, to_view: str,
                  depth_range_mm=(50.0, 2500.0), n: int = 256, shape=None) -> np.ndarray:
    """The X-ray of pixel ``uv`` of ``from_view`` drawn in ``to_view``: (M, 2) raw pixels.

    The ray is sampled at ``n`` depths (mm along the ray from its origin) and
    each sample projected, so that a distorted view gets its curve, not a line
    (the epipolar constraint of two calibrated views). Samples that do not
    project (behind the source) are dropped. With ``shape`` (rows, cols) of the
    other image the ray is sampled again, ``n`` times, over just the depths
    seen in that image, and clipped to it: (0, 2) when it misses the image.
    """
    _view(from_view), _view(to_view)
    if from_view == to_view:
        raise PlanningError("the epipolar line is drawn in the other view: choose 'ap' and 'lat'")
    d0, d1 = (float(x) for x in depth_range_mm)
    if not (np.isfinite(d0) and np.isfinite(d1) and 0 <= d0 < d1) or n < 2:
        raise PlanningError(f"depth range must be 0 <= near < far mm with n >= 2, got {depth_range_mm}, n={n}")
    ray = calib.ray(from_view, _uv(uv))
    depths, uv_other = _sample_ray(calib, ray, to_view, np.linspace(d0, d1, int(n)))
    if len(uv_other) < 2:
        raise PlanningError(f"the X-ray of this {from_view.upper()} pixel does not cross the "
                            f"{to_view.upper()} view: check the calibration")
    if shape is None:
        return uv_other
    inside = np.flatnonzero(in_image(uv_other, shape))
    if len(inside) == 0:
        return clip_polyline(uv_other, shape)  # a segment may still cross a corner
    lo, hi = depths[max(inside[0] - 1, 0)], depths[min(inside[-1] + 1, len(depths) - 1)]
    _, dense = _sample_ray(calib, ray, to_view, np.linspace(lo, hi, int(n)))
    return clip_polyline(dense, shape)


def _sample_ray(calib, ray: Ray, view: str, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depths, pixels) of the ray's points at ``depths`` that project to finite pixels."""
    uv = np.asarray(calib.project(ray.at(depths))[view], float)
    keep = np.all(np.isfinite(uv), axis=1)
    return depths[keep], uv[keep]


def snap_to_epipolar(uv, polyline) -> tuple[np.ndarray, float]:
    """Closest point of a polyline (M >= 2, 2) to ``uv`` and its distance in pixels."""
    q = _uv(uv)
    p = np.asarray(polyline, float)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2 or not np.all(np.isfinite(p)):
        raise PlanningError(f"an epipolar polyline must be (M >= 2, 2) finite pixels, got shape {p.shape}")
    a, b = p[:-1], p[1:]
    ab = b - a
    L2 = np.einsum("ij,ij->i", ab, ab)
    t = np.clip(np.einsum("ij,ij->i", q - a, ab) / np.where(L2 > 0, L2, 1.0), 0.0, 1.0)
    closest = a + t[:, None] * ab
    dist = np.linalg.norm(closest - q, axis=1)
    i = int(np.argmin(dist))
    return closest[i], float(dist[i])


# --- triangulation -----------------------------------------------------------------
@dataclass(frozen=True)
class Located:
    """A triangulated point (cage frame, mm) with its ray gap (mm) and whether it is trusted."""
    point_mm: np.ndarray
    ray_gap_mm: float
    gap_ok: bool


def triangulate(calib: TwoViewCalibration, uv_ap, uv_lat, max_gap_mm: float = MAX_RAY_GAP_MM,
                shapes: dict | None = None) -> Located:
    """3D point of an AP click and a LAT click; warns ``RayGapWarning`` over ``max_gap_mm``.

    ``shapes`` ({"ap": (rows, cols), "lat": ...}) makes clicks outside the images an error.
    """
    shapes = shapes or {}
    a = check_click(uv_ap, shapes.get("ap"), "ap")
    b = check_click(uv_lat, shapes.get("lat"), "lat")
    if not max_gap_mm > 0:
        raise PlanningError(f"the ray-gap threshold must be positive, got {max_gap_mm}")
    try:
        point, gap = calib.locate(a, b)
    except ValueError as e:  # GeometryError, CalibrationError: e.g. parallel rays
        raise PlanningError(f"cannot triangulate these clicks: {e}") from None
    ok = bool(gap <= max_gap_mm)
    if not ok:
        warnings.warn(RayGapWarning(f"the AP and LAT clicks are {gap:.1f} mm apart in 3D (over {max_gap_mm:g} mm): "
                                    "they do not show the same point; click on the epipolar line"), stacklevel=2)
    return Located(np.asarray(point, float), float(gap), ok)


# --- the trajectory record ----------------------------------------------------------
def _pixel_or_none(uv):
    return None if uv is None else tuple(float(x) for x in _uv(uv))


def _clicks(d) -> dict:
    """{"entry": {"ap": (u, v)|None, "lat": ...}, "target": {...}} validated and normalised."""
    d = d or {}
    if not isinstance(d, dict) or not set(d) <= set(POINTS):
        raise PlanningError(f"clicks must map 'entry'/'target' to views, got {d!r}")
    out = {}
    for kind in POINTS:
        per_view = d.get(kind) or {}
        if not isinstance(per_view, dict) or not set(per_view) <= set(VIEWS):
            raise PlanningError(f"clicks[{kind!r}] must map 'ap'/'lat' to pixels, got {per_view!r}")
        out[kind] = {v: _pixel_or_none(per_view.get(v)) for v in VIEWS}
    return out


@dataclass(frozen=True)
class Trajectory:
    """One planned pedicle trajectory: clicks per view, 3D points in the cage frame.

    Immutable: every edit makes a new record (``with_click``, ``replace``), so
    that an undo step simply puts the old record back. ``entry_mm`` /
    ``target_mm`` are None until the point has a click in both views (then
    ``locate_trajectory`` fills them with their ray gaps).
    """
    name: str
    level: str = "L4"
    side: str = "left"
    colour: str = "#ffb000"
    diameter_mm: float = 6.5
    clicks: dict = field(default_factory=dict)
    entry_mm: tuple | None = None
    target_mm: tuple | None = None
    entry_gap_mm: float | None = None
    target_gap_mm: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise PlanningError("a trajectory needs a name")
        if self.level not in LEVELS:
            raise PlanningError(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.side not in SIDES:
            raise PlanningError(f"side must be 'left' or 'right', got {self.side!r}")
        if not isinstance(self.colour, str) or not _COLOUR.match(self.colour):
            raise PlanningError(f"colour must be '#rrggbb', got {self.colour!r}")
        d = float(self.diameter_mm)
        if not (np.isfinite(d) and 0.5 <= d <= 20.0):
            raise PlanningError(f"tool diameter must be 0.5-20 mm, got {self.diameter_mm!r}")
        object.__setattr__(self, "diameter_mm", d)
        object.__setattr__(self, "clicks", _clicks(self.clicks))
        for name in ("entry_mm", "target_mm"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(x) for x in _point(value, name)))

    def click(self, kind: str, view: str):
        """The raw pixel (u, v) of ``kind`` ('entry'/'target') in ``view``, or None."""
        return self.clicks[_kind(kind)][_view(view)]

    def with_click(self, kind: str, view: str, uv) -> "Trajectory":
        """A copy with one click set (or cleared with None); 3D is recomputed by ``locate_trajectory``."""
        clicks = {k: dict(v) for k, v in self.clicks.items()}
        clicks[_kind(kind)][_view(view)] = _pixel_or_none(uv)
        return replace(self, clicks=clicks)

    @property
    def complete(self) -> bool:
        return self.entry_mm is not None and self.target_mm is not None

    @property
    def length_mm(self) -> float | None:
        if not self.complete:
            return None
        return float(np.linalg.norm(np.subtract(self.target_mm, self.entry_mm)))

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "side": self.side, "colour": self.colour,
                "diameter_mm": self.diameter_mm,
                "clicks": {k: {v: (list(p) if p is not None else None) for v, p in per.items()}
                           for k, per in self.clicks.items()},
                "entry_mm": list(self.entry_mm) if self.entry_mm else None,
                "target_mm": list(self.target_mm) if self.target_mm else None,
                "entry_gap_mm": self.entry_gap_mm, "target_gap_mm": self.target_gap_mm}

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        if not isinstance(d, dict):
            raise PlanningError(f"a trajectory must be an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise PlanningError(f"unknown trajectory field(s): {', '.join(sorted(unknown))}")
        if "name" not in d:
            raise PlanningError("a trajectory needs a name")
        return cls(**d)


def plan_from_dict(d, where: str = "plan") -> tuple[dict, list, str, float]:
    """The trajectories of a ``fluoronav.plan/1`` document, validated by its schema:
    ``({id: Trajectory}, ids in order, selected id or "", max ray gap in mm)``;
    PlanningError (one line with the JSON path) otherwise."""
    validate(d, "plan", where, error=PlanningError)
    items, order = {}, []
    for i, row in enumerate(d["trajectories"]):
        tid = row["id"]
        if tid in items:
            raise PlanningError(f"{where}: $.trajectories[{i}].id: {tid!r} appears twice")
        try:
            items[tid] = Trajectory.from_dict({k: v for k, v in row.items() if k != "id"})
        except PlanningError as e:
            raise PlanningError(f"{where}: $.trajectories[{i}] ({row['name']}): {e}") from None
        order.append(tid)
    return items, order, d.get("selected") or "", float(d.get("max_gap_mm", MAX_RAY_GAP_MM))


def read_plan(path) -> dict:
    """A plan file's document, checked by ``plan_from_dict``; PlanningError (one line) otherwise."""
    d, _ = load_json(path, "plan", error=PlanningError)
    plan_from_dict(d, Path(path).name)
    return d


def _kind(kind) -> str:
    if kind not in POINTS:
        raise PlanningError(f"point must be 'entry' or 'target', got {kind!r}")
    return kind


def locate_trajectory(calib: TwoViewCalibration | None, traj: Trajectory,
                      max_gap_mm: float = MAX_RAY_GAP_MM) -> Trajectory:
    """``traj`` with entry/target 3D points (and gaps) from its clicks; None where a view is missing.

    Never warns: a large gap is kept in ``entry_gap_mm`` / ``target_gap_mm`` for
    the user interface to flag (compare with ``MAX_RAY_GAP_MM``).
    """
    out = {}
    for kind in POINTS:
        ap, lat = traj.clicks[kind]["ap"], traj.clicks[kind]["lat"]
        if calib is None or ap is None or lat is None:
            out[f"{kind}_mm"], out[f"{kind}_gap_mm"] = None, None
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RayGapWarning)
            loc = triangulate(calib, ap, lat, max_gap_mm)
        out[f"{kind}_mm"], out[f"{kind}_gap_mm"] = tuple(loc.point_mm.tolist()), loc.ray_gap_mm
    return replace(traj, **out)


# --- angles -------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientAxes:
    """Patient directions (unit, LPS) expressed in the cage frame.

    The default is the cage mounted as ``resources/cages/README.md`` and the
    simulated operating room place it over a prone patient: cage +x = patient
    left (towards the lateral part), +y = caudal (along the table), +z =
    posterior (up). ``from_rotation(R_cage_lps)`` takes any other mounting: the
    columns of R are left, posterior, superior (with a world in LPS,
    ``R_cage_lps = R_world_cage.T``).
    """
    left: tuple = (1.0, 0.0, 0.0)
    posterior: tuple = (0.0, 0.0, 1.0)
    superior: tuple = (0.0, -1.0, 0.0)

    def __post_init__(self):
        R = np.column_stack([unit(_point(getattr(self, a), a)) for a in ("left", "posterior", "superior")])
        if not (np.allclose(R.T @ R, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0):
            raise PlanningError("patient axes must be orthonormal and right-handed (left x posterior = superior)")
        for i, a in enumerate(("left", "posterior", "superior")):
            object.__setattr__(self, a, tuple(R[:, i]))

    @classmethod
    def from_rotation(cls, R_cage_lps) -> "PatientAxes":
        R = np.asarray(R_cage_lps, float)
        if R.shape != (3, 3):
            raise PlanningError(f"R_cage_lps must be 3x3, got shape {R.shape}")
        return cls(tuple(R[:, 0]), tuple(R[:, 1]), tuple(R[:, 2]))


@dataclass(frozen=True)
class TrajectoryAngles:
    """Length (mm) and angulation (radians); sign conventions in the module docstring."""
    length_mm: float
    transverse_rad: float
    sagittal_rad: float
    medial_rad: float
    cranial_rad: float
    direction: np.ndarray


def trajectory_angles(entry_mm, target_mm, side: str = "left",
                      axes: PatientAxes = PatientAxes()) -> TrajectoryAngles:
    """Length, transverse/sagittal and medial/cranial angulation of entry -> target."""
    e, t = _point(entry_mm, "entry"), _point(target_mm, "target")
    if side not in SIDES:
        raise PlanningError(f"side must be 'left' or 'right', got {side!r}")
    length = float(np.linalg.norm(t - e))
    if length < 1.0:
        raise PlanningError(f"entry and target are {length:.2f} mm apart: place the target deeper")
    d = (t - e) / length
    left, post, sup = (np.asarray(a) for a in (axes.left, axes.posterior, axes.superior))
    anterior = -(d @ post)
    transverse = float(np.arctan2(d @ left, anterior))
    sagittal = float(np.arctan2(d @ sup, anterior))
    medial = -transverse if side == "left" else transverse
    return TrajectoryAngles(length, transverse, sagittal, medial, sagittal, d)


def image_angles(calib: TwoViewCalibration, entry_mm, target_mm) -> dict:
    """Per view, the drawn trajectory's angle from the image +u axis towards +v (radians)
    and its drawn length in pixels: ``{"ap": (angle, length_px), "lat": ...}``."""
    e, t = _point(entry_mm, "entry"), _point(target_mm, "target")
    uv = calib.project(np.stack([e, t]))
    out = {}
    for view in VIEWS:
        du, dv = np.asarray(uv[view][1], float) - np.asarray(uv[view][0], float)
        out[view] = (float(np.arctan2(dv, du)), float(np.hypot(du, dv)))
    return out


# --- the tool drawn in an image ------------------------------------------------------
@dataclass(frozen=True)
class ToolBand:
    """A cylinder drawn in one view, raw pixels: its two silhouette edges and its axis
    ((n, 2) each), and its whole outline (a closed convex polygon, (m, 2)), which
    stays right when the tool is seen end-on (along the beam: a disc, no band)."""
    edge_a: np.ndarray
    edge_b: np.ndarray
    axis: np.ndarray
    outline: np.ndarray


def _perpendiculars(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``a`` to an orthonormal basis."""
    helper = np.eye(3)[int(np.argmin(np.abs(a)))]
    p1 = unit(np.cross(a, helper))
    return p1, np.cross(a, p1)


def _silhouette_offsets(calib, view: str, e, t, a, r) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the axis of the two generator lines whose tangent planes hold the source.

    The source is where the view's rays through the projected entry and target
    meet (for a pinhole exactly; otherwise their closest approach). With w the
    perpendicular from the axis to the source (length L), the generators lie at
    ``(r/L) w/L +/- sqrt(1 - r^2/L^2) m``, m = unit(a x w). Seen end-on (the two
    rays coincide) any perpendicular pair is returned: the outline is then a disc.
    """
    uv = np.asarray(calib.project(np.stack([e, t]))[view], float)
    try:
        source, _ = triangulate_rays(calib.ray(view, uv[0]), calib.ray(view, uv[1]))
    except GeometryError:
        p1, _ = _perpendiculars(a)
        return r * p1, -r * p1
    w = source - e
    w_perp = w - (w @ a) * a
    L = float(np.linalg.norm(w_perp))
    if L <= r:
        raise PlanningError("the tool passes through the X-ray source: check the calibration")
    m = np.cross(a, w_perp) / L
    along, across = (r / L) * w_perp / L * r, r * np.sqrt(1.0 - (r / L) ** 2) * m
    return along + across, along - across


def tool_band(calib: TwoViewCalibration, view: str, entry_mm, target_mm, diameter_mm: float,
              n: int = 16) -> ToolBand:
    """Silhouette of a tool of ``diameter_mm`` along entry -> target, seen in ``view``.

    Edges: the two generator lines of the cylinder whose tangent planes contain
    the X-ray source (``_silhouette_offsets``), sampled and projected, so that
    distortion bends them. Outline: the convex hull of the projected end
    circles (a central projection maps the convex cylinder to a convex set).
    """
    from scipy.spatial import ConvexHull

    _view(view)
    e, t = _point(entry_mm, "entry"), _point(target_mm, "target")
    r = 0.5 * float(diameter_mm)
    if not (np.isfinite(r) and r > 0):
        raise PlanningError(f"tool diameter must be positive, got {diameter_mm!r}")
    if np.linalg.norm(t - e) < 1e-6:
        raise PlanningError("entry and target coincide: the tool has no direction")
    a = unit(t - e)
    p1, p2 = _perpendiculars(a)
    axis3d = e + np.outer(np.linspace(0.0, 1.0, max(2, int(n))), t - e)
    theta = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
    circle = r * (np.outer(np.cos(theta), p1) + np.outer(np.sin(theta), p2))
    off_a, off_b = _silhouette_offsets(calib, view, e, t, a, r)
    k = len(axis3d)
    proj = np.asarray(calib.project(np.vstack([axis3d, axis3d + off_a, axis3d + off_b, e + circle, t + circle]))[view],
                      float)
    ends = proj[3 * k:]
    hull = ends[ConvexHull(ends).vertices]
    return ToolBand(proj[k:2 * k], proj[2 * k:3 * k], proj[:k], np.vstack([hull, hull[:1]]))


def clip_polyline(polyline, shape, margin_px: float = 0.0) -> np.ndarray:
    """The part of a polyline (M, 2) inside a (rows, cols) image (pixel edges, plus a margin).

    Each segment is clipped exactly (Liang-Barsky), so that a sparsely sampled
    epipolar line still reaches the image border. Returns (K, 2), K = 0 when
    the polyline misses the image; only the first inside run is kept.
    """
    p = np.asarray(polyline, float)
    if p.ndim != 2 or p.shape[1] != 2:
        raise PlanningError(f"a polyline must be (M, 2) pixels, got shape {p.shape}")
    lo, hi = image_bounds(shape, -margin_px)
    if len(p) < 2:
        return np.zeros((0, 2))
    a, d = p[:-1], np.diff(p, axis=0)
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    reject = np.zeros(len(a), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(2):
            for q, r in ((-d[:, k], a[:, k] - lo[k]), (d[:, k], hi[k] - a[:, k])):
                ratio = r / q
                t0 = np.where(q < 0, np.maximum(t0, ratio), t0)
                t1 = np.where(q > 0, np.minimum(t1, ratio), t1)
                reject |= (q == 0) & (r < 0)
    inside = ~reject & (t0 <= t1)
    if not inside.any():
        return np.zeros((0, 2))
    i0 = int(np.argmax(inside))
    stop = np.flatnonzero(~inside[i0:])
    i1 = i0 + (int(stop[0]) if len(stop) else len(inside) - i0)  # the first inside run: i0 .. i1-1
    run = slice(i0, i1)
    ends = a[run] + t1[run, None] * d[run]
    return np.vstack([a[i0] + t0[i0] * d[i0], ends])


MIN_LENGTH_MM, MAX_LENGTH_MM = 15.0, 90.0  # outside this a pedicle trajectory is almost surely mis-clicked


def plan_warnings(traj: Trajectory, axes: PatientAxes = PatientAxes(),
                  max_gap_mm: float = MAX_RAY_GAP_MM) -> list[str]:
    """What looks wrong with a trajectory, one line each (empty when nothing does).

    Checks: clicks that disagree (ray gap over ``max_gap_mm``), a target behind
    the entry (swapped points), a length outside 15-90 mm, a tip heading
    away from the midline (negative medial angulation), and angles or a length
    unusual for the trajectory's level (``core.planning.plausibility``, with the
    literature the ranges come from).
    """
    out = []
    for kind in POINTS:
        gap = getattr(traj, f"{kind}_gap_mm")
        if gap is not None and gap > max_gap_mm:
            out.append(f"{kind}: the AP and LAT clicks are {gap:.1f} mm apart (do not show the same point)")
    if not traj.complete:
        return out
    length = traj.length_mm
    if length < 1.0:
        return out + ["entry and target coincide"]
    a = trajectory_angles(traj.entry_mm, traj.target_mm, traj.side, axes)
    if a.direction @ np.asarray(axes.posterior) >= 0:
        out.append("the target is not anterior to the entry: entry and target swapped?")
    mis_clicked = not MIN_LENGTH_MM <= length <= MAX_LENGTH_MM
    if mis_clicked:
        out.append(f"length {length:.0f} mm is outside {MIN_LENGTH_MM:.0f}-{MAX_LENGTH_MM:.0f} mm")
    if a.medial_rad < 0:
        out.append(f"the tip points {np.degrees(-a.medial_rad):.0f}° away from the midline (lateral)")
    unusual = implausibilities(traj.level, a.medial_rad, a.cranial_rad, length)
    return out + [u for u in unusual if not (mis_clicked and "screw length" in u)]
