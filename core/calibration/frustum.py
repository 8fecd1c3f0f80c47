"""Where a shot's image lies in 3D: the C-arm source and the image on its detector plane.

A ``ShotFrustum`` is the X-ray source and a grid of 3D points on the detector plane,
each with the RAW pixel (u, v) whose X-ray meets the plane there. A view draws the
raw image as a texture on that grid (texture coordinates ``(u + 0.5) / cols``,
``(v + 0.5) / rows``), so an image-intensifier image lands undistorted: the
distortion correction is applied to the grid's vertices, not to the pixels.

Two sources of geometry:
- ``frustum_from_geometry``: a ``core.geometry.cone_beam.ConeBeamGeometry`` (the simulator's
  truth) and optionally its distortion (ideal -> raw); exact on the true detector.
- ``frustum_from_view``: a calibrated view (``ViewCalibration``: ``P`` cage mm ->
  ideal px, ``distortion``). The source is the camera centre of ``P``; the plane is
  perpendicular to the principal axis at ``sid_mm`` (the image's Distance Source to
  Detector) when known, else at the distance where one ideal pixel is the image's
  pixel spacing (``focal_px * spacing``), else ``DEFAULT_SID_MM``.

An image intensifier's round field limits the grid (``FieldCircle``; a calibrated
distortion is only known inside the field and extrapolates badly outside): the grid is
then a disc (concentric square-to-disc map), clipped to the image. Vertices whose rays
are not finite or do not reach the plane in front of the source are NaN (dropped).
Units: mm and raw pixels, the centre of the top-left pixel is (0, 0) (DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShotFrustum", "FieldCircle", "ShotGeometryError", "GRID_N", "DEFAULT_SID_MM",
           "raw_grid", "frustum_from_geometry", "frustum_from_view", "field_from_distortion",
           "field_from_image", "focal_length_px"]

GRID_N = 17                 # vertices per side of the detector grid
DEFAULT_SID_MM = 1000.0     # a typical C-arm's source-to-image distance


class ShotGeometryError(ValueError):
    """A shot's 3D geometry cannot be built from what was given."""


@dataclass(frozen=True)
class FieldCircle:
    """The round exposed field of an image intensifier, in raw pixels."""
    centre_px: tuple[float, float]
    radius_px: float

    def __post_init__(self):
        c = np.asarray(self.centre_px, float)
        if c.shape != (2,) or not np.all(np.isfinite(c)) or not (np.isfinite(self.radius_px) and self.radius_px > 0):
            raise ShotGeometryError(f"a field circle needs a finite centre and a positive radius, "
                                    f"got {self.centre_px}, {self.radius_px}")


@dataclass(frozen=True)
class ShotFrustum:
    """Source, detector-plane grid (NaN = dropped vertex) and the raw pixel of each vertex."""
    source_mm: np.ndarray          # (3,)
    points_mm: np.ndarray          # (n, m, 3) on the detector plane; NaN where dropped
    uv_raw: np.ndarray             # (n, m, 2) raw pixel of each vertex
    image_shape: tuple[int, int]   # (rows, cols) of the raw image
    plane_point_mm: np.ndarray     # (3,) a point of the detector plane
    plane_normal: np.ndarray       # (3,) unit, from the source towards the detector
    note: str = ""                 # how the detector distance was chosen

    @property
    def valid(self) -> np.ndarray:
        """(n, m) True where the vertex is kept."""
        return np.all(np.isfinite(self.points_mm), axis=-1)

    @property
    def source_to_detector_mm(self) -> float:
        return float((self.plane_point_mm - self.source_mm) @ self.plane_normal)

    def texture_coords(self) -> np.ndarray:
        """(n, m, 2) texture coordinates (s, t) in [0, 1]: s along columns, t along rows
        (t = 0 at the top edge of the image's first row)."""
        rows, cols = self.image_shape
        return (self.uv_raw + 0.5) / np.array([cols, rows], float)

    def corners_mm(self) -> np.ndarray:
        """(4, 3) the grid's corner vertices: (0, 0), (0, -1), (-1, -1), (-1, 0)."""
        p = self.points_mm
        return np.array([p[0, 0], p[0, -1], p[-1, -1], p[-1, 0]])

    def outline_mm(self) -> np.ndarray:
        """(K, 3) the kept vertices of the grid's border, in order around it (closed: last = first)."""
        p = self.points_mm
        ring = np.concatenate([p[0, :-1], p[:-1, -1], p[-1, :0:-1], p[:0:-1, 0]])
        ring = ring[np.all(np.isfinite(ring), axis=1)]
        return np.vstack([ring, ring[:1]]) if len(ring) else ring

    def triangles(self) -> np.ndarray:
        """(T, 3) vertex indices (into the flattened grid) of the kept triangles, two per
        quad whose four vertices are kept, wound so that their normal faces the source."""
        n, m = self.valid.shape
        i, j = np.meshgrid(np.arange(n - 1), np.arange(m - 1), indexing="ij")
        a, b, c, d = i * m + j, i * m + j + 1, (i + 1) * m + j + 1, (i + 1) * m + j
        ok = self.valid.ravel()
        tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
        tris = tris[ok[tris].all(axis=1)]
        p = self.points_mm.reshape(-1, 3)
        normal = np.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]])
        away = normal @ self.plane_normal > 0      # faces away from the source: flip
        tris[away] = tris[away][:, ::-1]
        return tris

    def pixel_at(self, points_mm) -> np.ndarray:
        """Raw pixels (N, 2) where the lines source -> ``points_mm`` (N, 3) meet the textured
        grid (interpolated like the texture, linearly per triangle); NaN off the grid."""
        X = np.atleast_2d(np.asarray(points_mm, float))
        if X.shape[1] != 3:
            raise ShotGeometryError(f"points must have shape (N, 3), got {X.shape}")
        d = X - self.source_mm
        dn = d @ self.plane_normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.plane_point_mm - self.source_mm) @ self.plane_normal) / dn
        hit = self.source_mm + t[:, None] * d
        hit[~(dn > 1e-12)] = np.nan
        e1, e2 = _plane_basis(self.plane_normal)
        q = np.stack([(hit - self.plane_point_mm) @ e1, (hit - self.plane_point_mm) @ e2], -1)
        g = self.points_mm.reshape(-1, 3) - self.plane_point_mm
        g2 = np.stack([g @ e1, g @ e2], -1)
        uv = self.uv_raw.reshape(-1, 2)
        tris = self.triangles()
        out = np.full((len(X), 2), np.nan)
        if not len(tris):
            return out
        A, B, C = g2[tris[:, 0]], g2[tris[:, 1]], g2[tris[:, 2]]
        v0, v1 = B - A, C - A
        den = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
        live = np.abs(den) > 1e-9        # clipped disc grids have degenerate triangles
        for k, p in enumerate(q):
            if not np.all(np.isfinite(p)):
                continue
            w = p - A
            with np.errstate(divide="ignore", invalid="ignore"):
                b1 = (w[:, 0] * v1[:, 1] - w[:, 1] * v1[:, 0]) / den
                b2 = (v0[:, 0] * w[:, 1] - v0[:, 1] * w[:, 0]) / den
            inside = live & (b1 >= -1e-9) & (b2 >= -1e-9) & (b1 + b2 <= 1 + 1e-9)
            if inside.any():
                f = int(np.argmax(inside))
                out[k] = (1 - b1[f] - b2[f]) * uv[tris[f, 0]] + b1[f] * uv[tris[f, 1]] + b2[f] * uv[tris[f, 2]]
        return out

    def transformed(self, T_a_b) -> "ShotFrustum":
        """This frustum (given in frame b) in frame a."""
        T = np.asarray(T_a_b, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ShotGeometryError(f"a transform must be a finite 4x4 matrix, got shape {T.shape}")
        R, t = T[:3, :3], T[:3, 3]
        return ShotFrustum(R @ self.source_mm + t, self.points_mm @ R.T + t, self.uv_raw.copy(),
                           self.image_shape, R @ self.plane_point_mm + t, R @ self.plane_normal, self.note)


def _plane_basis(normal):
    a = np.array([1.0, 0, 0]) if abs(normal[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(normal, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def _shape(image_shape) -> tuple[int, int]:
    try:
        rows, cols = (int(x) for x in image_shape)
    except (TypeError, ValueError):
        raise ShotGeometryError(f"an image shape must be (rows, cols), got {image_shape!r}") from None
    if rows < 1 or cols < 1:
        raise ShotGeometryError(f"an image shape must be positive, got {image_shape!r}")
    return rows, cols


def raw_grid(image_shape, n: int = GRID_N, field: FieldCircle | None = None) -> np.ndarray:
    """(n, n, 2) raw pixels (u, v): the image rectangle from edge to edge (-0.5 .. cols - 0.5),
    or, with a ``field``, the disc of the field (concentric square-to-disc map: rows of the grid
    run along v, columns along u) clipped to the image."""
    rows, cols = _shape(image_shape)
    if int(n) < 2:
        raise ShotGeometryError(f"a detector grid needs at least 2 vertices per side, got {n}")
    s = np.linspace(-1.0, 1.0, int(n))
    a, b = np.meshgrid(s, s)              # a along columns (u), b along rows (v)
    if field is None:
        return np.stack([(a + 1) * cols / 2 - 0.5, (b + 1) * rows / 2 - 0.5], -1)
    # Shirley & Chiu's concentric map: square rings -> circles, no degenerate cells
    with np.errstate(divide="ignore", invalid="ignore"):
        horiz = np.abs(a) > np.abs(b)
        r = np.where(horiz, a, b)
        phi = np.where(horiz, np.pi / 4 * b / a, np.pi / 2 - np.pi / 4 * a / b)
    phi = np.where(r == 0, 0.0, phi)
    cu, cv = (float(x) for x in field.centre_px)
    uv = np.stack([cu + field.radius_px * r * np.cos(phi), cv + field.radius_px * r * np.sin(phi)], -1)
    return np.stack([np.clip(uv[..., 0], -0.5, cols - 0.5), np.clip(uv[..., 1], -0.5, rows - 0.5)], -1)


def _frustum(source, plane_point, normal, directions, uv, image_shape, note="") -> ShotFrustum:
    """Intersect the rays source + t d (d: (n, m, 3)) with the plane; NaN where they do not
    reach it in front of the source."""
    dn = directions @ normal
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = ((plane_point - source) @ normal) / dn
        pts = source + t[..., None] * directions
    bad = ~(np.isfinite(dn) & (dn > 1e-9) & np.all(np.isfinite(pts), axis=-1))
    pts[bad] = np.nan
    if bad.all():
        raise ShotGeometryError("no X-ray of the image reaches the detector plane: the geometry is invalid")
    return ShotFrustum(np.asarray(source, float), pts, np.asarray(uv, float), _shape(image_shape),
                       np.asarray(plane_point, float), np.asarray(normal, float), note)


def field_from_distortion(distortion) -> FieldCircle | None:
    """The round field of a distortion model that has one (``centre_px``, ``radius_px``:
    the simulator's image intensifier), else None."""
    c, r = getattr(distortion, "centre_px", None), getattr(distortion, "radius_px", None)
    if c is None or r is None:
        return None
    return FieldCircle(tuple(float(x) for x in c), float(r))


def frustum_from_geometry(geometry, distortion=None, field: FieldCircle | None = None,
                          n: int = GRID_N) -> ShotFrustum:
    """The exact frustum of a ``ConeBeamGeometry``; ``distortion`` maps raw <-> ideal pixels
    (``raw_to_ideal``) and, when it has a round field, limits the grid to it (unless ``field``)."""
    source = np.asarray(geometry.source_mm, float)
    normal = -np.asarray(geometry.detector_normal, float)    # source -> detector
    if field is None and distortion is not None:
        field = field_from_distortion(distortion)
    uv = raw_grid(geometry.shape, n, field)
    ideal = uv if distortion is None else np.asarray(distortion.raw_to_ideal(uv), float).reshape(uv.shape)
    d = geometry.pixel_to_detector_mm(ideal) - source
    return _frustum(source, np.asarray(geometry.detector_origin_mm, float), normal, d, uv, geometry.shape,
                    "the simulated C-arm's detector")


def focal_length_px(P) -> float:
    """The focal length in ideal pixels of a finite camera P (3x4): the mean of
    |m1 x m3| and |m2 x m3| of its left 3x3 with |m3| = 1 (= fx, fy without skew)."""
    M = np.asarray(P, float)[:, :3]
    M = M / np.linalg.norm(M[2])
    return 0.5 * float(np.linalg.norm(np.cross(M[0], M[2])) + np.linalg.norm(np.cross(M[1], M[2])))


def frustum_from_view(view_calibration, sid_mm: float | None = None, pixel_spacing_mm=None,
                      field: FieldCircle | None = None, n: int = GRID_N) -> ShotFrustum:
    """The frustum of a calibrated view (cage frame): source at P's camera centre, the plane
    perpendicular to the principal axis at ``sid_mm``, else at ``focal_px * pixel spacing``,
    else at ``DEFAULT_SID_MM``; vertices = rays of raw pixels (through the view's distortion)."""
    from core.calibration.models import ModelError, camera_centre, p_rays
    vc = view_calibration
    P = np.asarray(vc.P, float)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise ShotGeometryError(f"the {vc.view} calibration has no finite 3x4 camera")
    try:
        C = camera_centre(P)
    except ModelError as e:
        raise ShotGeometryError(f"the {vc.view} calibration: {e}") from None
    towards = np.mean([p.origin_mm for p in vc.planes], axis=0) if vc.planes else C + P[2, :3]
    axis = P[2, :3] / np.linalg.norm(P[2, :3])
    axis = axis if axis @ (towards - C) > 0 else -axis
    spacing = None if pixel_spacing_mm is None else float(np.mean(np.asarray(pixel_spacing_mm, float)))
    if sid_mm is not None and np.isfinite(sid_mm) and sid_mm > 0:
        dist, note = float(sid_mm), f"detector at the image's SID {float(sid_mm):.0f} mm"
    elif spacing is not None and np.isfinite(spacing) and spacing > 0:
        dist = focal_length_px(P) * spacing
        note = f"detector at {dist:.0f} mm (focal length x the image's pixel spacing; no SID)"
    else:
        dist, note = DEFAULT_SID_MM, f"detector at the default {DEFAULT_SID_MM:.0f} mm (no SID nor pixel spacing)"
    uv = raw_grid(vc.image_shape, n, field)
    flat = uv.reshape(-1, 2)
    with np.errstate(all="ignore"):
        ideal = np.asarray(vc.distortion.raw_to_ideal(flat), float).reshape(-1, 2)
        _, d = p_rays(P, np.where(np.isfinite(ideal), ideal, 0.0), towards)
    d[~np.all(np.isfinite(ideal), axis=1)] = np.nan
    return _frustum(C, C + dist * axis, axis, d.reshape(uv.shape[:2] + (3,)), uv, vc.image_shape, note)


def field_from_image(display, min_fill: float = 0.9, max_px: int = 256) -> FieldCircle | None:
    """The round exposed field of an image-intensifier image (display array: brighter = less
    dense), or None when the whole image is exposed or the exposed part is not a disc (a
    collimator's rectangle). The circle fitted to the field's sharp edge when there is one
    (``beads.round_field``), else the circle with the exposed area and centroid; ``min_fill``:
    the fraction of the circle that must be exposed and of the exposed part inside it."""
    from core.calibration.beads import field_mask, round_field
    a = np.asarray(display, np.float32)
    if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ShotGeometryError("the field of an image needs a finite 2-D display array")
    step = max(1, int(np.ceil(max(a.shape) / max_px)))
    small = a[::step, ::step]
    disc = round_field(small, 1)
    if disc is not None:               # fitted to the field's sharp edge: dark anatomy at it counts
        (cu, cv), r = disc
        return FieldCircle((float(cu * step), float(cv * step)), float(r * step))
    mask = field_mask(small, 1)
    if mask.all() or mask.mean() < 0.05:
        return None
    vv, uu = np.nonzero(mask)
    area = float(len(uu)) + 2.0 * (2 * np.pi * np.sqrt(len(uu) / np.pi))   # undo the 2 px erosion
    r = np.sqrt(area / np.pi)
    cu, cv = uu.mean(), vv.mean()
    rows, cols = small.shape
    gv, gu = np.mgrid[0:rows, 0:cols]
    disc = (gu - cu) ** 2 + (gv - cv) ** 2 <= r * r
    both = float((disc & mask).sum())
    if both < min_fill * disc.sum() or both < min_fill * mask.sum():
        return None
    return FieldCircle((float(cu * step), float(cv * step)), float(r * step))
