"""A K-wire or tool found in the verification shots, and its 3D line from AP + LAT (issue 12).

Detection (``detect_tool_line``), on a raw shot (dense = dark in MONOCHROME2):

1. log-attenuation density (Beer-Lambert: a steel wire adds its chord times mu), the exposed
   field found as ``core.calibration.beads`` does, the surround filled by normalised convolution
   so that the field's edge is no ridge;
2. a multi-scale Hessian ridge filter (scale-normalised largest negative curvature across, the
   curvature along small: balls and other blobs are damped);
3. line hypotheses by seeded RANSAC over the ridge points in ideal pixels (an image intensifier
   bends straight lines in raw pixels, so the points are mapped by the distortion correction
   first), inliers agreeing in orientation; the longest continuous run of a hypothesis is the
   object; a hint (the plan's line projected by the calibration) limits the search to a band;
4. sub-pixel centreline samples every pixel along the run: a profile across the line in the raw
   image, its two outermost strong edges (extrema of the derivative, parabola-refined; a linear
   background does not move them), their midpoint mapped to ideal pixels; samples whose width
   or contrast disagree with the rest (a ball on the wire, a crossing object) are dropped; a
   total-least-squares line through the rest, refused when they scatter over ``MAX_RMS_PX``;
5. both ends along the fitted line where the cross-section falls to half; the tip is the end
   toward the hint's target, else the end inside the body (denser background) or off the edge;
   samples next to a blob denser than the wire (a cage ball) leave the fit, and a tip end with
   such a blob on it is flagged ``tip_occluded`` (the end found may be the ball's far side).

Triangulation (``triangulate_tool``): each view's line back-projects to a plane through its
source (pi = P^T l for the ideal-pixel line l and the 3x4 camera P); the tool lies on both, so
the 3D line is their intersection, then refined by minimising the raw-pixel distance of all
centreline samples to the line reprojected by the calibration's own ``project``. The tip is the
point of the 3D line nearest each view's tip ray, combined with weights sin^2 of the ray-line
angle; when the views' tips disagree, a view whose tip end a ball may hide
(``ToolLine2D.tip_occluded``) is left out (``_tip_views``; ``ToolPose.tip_views`` names the
views used). A line near the epipolar plane (both planes nearly the same) is ill-conditioned:
the angle between the planes is reported (``plane_angle_deg`` predicts it for a plan), and below
``min_plane_angle_deg`` refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from core.calibration.beads import density_of, field_mask
from core.geometry.rigid import GeometryError, closest_points_between_lines

__all__ = ["ToolLineError", "ToolTriangulationError", "ToolLine2D", "ToolPose", "detect_tool_line",
           "triangulate_tool", "plan_hint", "tip_offset_mm", "plane_angle_deg",
           "expected_width_px"]

RIDGE_BETA = 0.5            # blob damping exp(-(l2/l1)^2 / (2 beta^2)) (Frangi): a ball keeps 14 %
RANSAC_ITERATIONS = 400
PROFILE_STEP_PX = 0.25
MAX_RMS_PX = 0.2            # a straight wire's samples lie on their line to ~0.01-0.05 px; a bent set is not one
BLOB_RATIO = 1.4            # cross-section over the wire's: a blob (ball) on the line; samples near it leave the fit
OCCLUDED_RATIO = 1.6        # cross-section over the wire's beyond its consistent stretch: a ball on its end
DIP_RATIO, HUMP_RATIO = 0.8, 1.2   # ... or a dip under 0.8 of it, then a rise over 1.2 near the end: a ball past the tip
SAMPLE_STEP_PX = 1.0


class ToolLineError(ValueError):
    """No tool line could be found or used; the message says why in one line."""


class ToolTriangulationError(ToolLineError):
    """The two views' lines do not give a well-defined 3D line (e.g. the tool lies in the epipolar plane)."""


# --- results -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ToolLine2D:
    """A thin dense straight object found in one shot. Raw and ideal (distortion-corrected) pixels;
    the fitted line is straight in ideal pixels, ``direction_ideal`` points from the back to the tip."""
    samples_raw: np.ndarray          # (N, 2) sub-pixel centreline samples, raw px
    samples_ideal: np.ndarray        # (N, 2) the same, ideal px
    point_ideal: np.ndarray          # (2,) a point of the fitted line (the samples' centroid)
    direction_ideal: np.ndarray      # (2,) unit, back -> tip
    tip_raw: np.ndarray
    tip_ideal: np.ndarray
    back_raw: np.ndarray             # the other visible end
    back_ideal: np.ndarray
    back_at_field_edge: bool         # the line leaves the field there (the true end is not in view)
    width_px: float                  # median edge-to-edge width
    contrast: float                  # median density step (ln units) of the centre over the background
    cnr: float                       # contrast over the profile background's noise
    rms_px: float                    # RMS distance of the samples to the fitted line (ideal px)
    polarity: int
    view: str | None = None
    distortion: object = field(default=None, repr=False)
    tip_occluded: bool = False       # a denser blob (a ball) lies on the tip's end: the end found is the
                                     # blob's far side, not the tip; the line is still good

    @property
    def tip_usable(self) -> bool:
        """The tip's position along the line can be trusted (not occluded)."""
        return not self.tip_occluded

    def distance_px(self, uv_raw) -> np.ndarray:
        """Distance (ideal px) of raw pixels (N, 2) to the fitted line."""
        q = _to_ideal(self.distortion, np.atleast_2d(np.asarray(uv_raw, float)))
        n = np.array([-self.direction_ideal[1], self.direction_ideal[0]])
        return np.abs((q - self.point_ideal) @ n)

    def to_dict(self) -> dict:
        return {"view": self.view, "samples_raw": np.round(self.samples_raw, 4).tolist(),
                "tip_raw": self.tip_raw.tolist(), "back_raw": self.back_raw.tolist(),
                "back_at_field_edge": self.back_at_field_edge, "width_px": self.width_px,
                "contrast": self.contrast, "cnr": self.cnr, "rms_px": self.rms_px, "polarity": self.polarity,
                "tip_occluded": self.tip_occluded}


@dataclass(frozen=True, eq=False)
class ToolPose:
    """The tool's 3D line in the cage frame: ``tip_mm`` and unit ``direction`` (toward the tip)."""
    tip_mm: np.ndarray
    direction: np.ndarray
    plane_angle_deg: float           # angle between the two back-projected planes (0: epipolar, degenerate)
    residual_px: dict                # view -> RMS raw-px distance of its samples to the reprojected line
    tip_gap_mm: float                # disagreement of the two views' tips along the line
    ill_conditioned: bool            # plane angle below ``WELL_CONDITIONED_DEG``: errors are amplified
    n_samples: dict = field(default_factory=dict)
    tip_views: tuple = ("ap", "lat")  # the views whose tip the tip comes from (an occluded one is left out)

    @property
    def rms_px(self) -> float:
        r = np.array(list(self.residual_px.values()), float)
        w = np.array([self.n_samples.get(v, 1) for v in self.residual_px], float)
        return float(np.sqrt(np.sum(w * r * r) / np.sum(w)))

    def distance_to(self, point_mm) -> float:
        """Distance (mm) of a point to the tool's (infinite) line."""
        w = np.asarray(point_mm, float) - self.tip_mm
        return float(np.linalg.norm(w - (w @ self.direction) * self.direction))

    def to_dict(self) -> dict:
        return {"tip_mm": self.tip_mm.tolist(), "direction": self.direction.tolist(),
                "plane_angle_deg": self.plane_angle_deg, "residual_px": dict(self.residual_px),
                "rms_px": self.rms_px, "tip_gap_mm": self.tip_gap_mm, "ill_conditioned": self.ill_conditioned,
                "n_samples": dict(self.n_samples), "tip_views": list(self.tip_views)}


WELL_CONDITIONED_DEG = 10.0


# --- helpers ------------------------------------------------------------------------------

def _to_ideal(distortion, uv):
    return uv.copy() if distortion is None else np.asarray(distortion.raw_to_ideal(uv), float)


def _to_raw(distortion, uv):
    return uv.copy() if distortion is None else np.asarray(distortion.ideal_to_raw(uv), float)


def _view_model(calibration, view):
    """(3x4 camera in ideal px, distortion or None) of a view, from a ``CageCalibration`` (its
    3D-2D camera), the simulator's ``TruthCalibration`` or a ``ConeBeamPair``."""
    views = getattr(calibration, "views", None)
    if isinstance(views, dict) and view in views and hasattr(views[view], "P"):
        return np.asarray(views[view].P, float), views[view].distortion
    geometry = getattr(calibration, "geometry", None)
    if isinstance(geometry, dict) and view in geometry and hasattr(geometry[view], "projection_matrix"):
        shots = getattr(calibration, "shots", None)
        dist = getattr(shots[view], "distortion", None) if isinstance(shots, dict) and view in shots else None
        return geometry[view].projection_matrix, dist
    raise ToolLineError(f"the calibration ({type(calibration).__name__}) has no camera for the {view!r} view")


def plan_hint(calibration, entry_mm, target_mm) -> dict:
    """The plan's line in each view: {"ap": (2, 2), "lat": (2, 2)} raw px of entry and target."""
    pts = np.array([entry_mm, target_mm], float)
    if pts.shape != (2, 3) or not np.all(np.isfinite(pts)):
        raise ToolLineError("the plan's entry and target must be finite (x, y, z) points in mm")
    return {v: np.asarray(uv, float) for v, uv in calibration.project(pts).items()}


def plane_angle_deg(calibration, entry_mm, target_mm) -> float:
    """Angle (deg) between the planes through each view's source that hold the line entry ->
    target: how well two shots determine a tool on that line (``triangulate_tool`` amplifies a
    view's line error by about 1 / sin of it; under ``WELL_CONDITIONED_DEG`` take one view at
    another angle)."""
    e, t = np.asarray(entry_mm, float), np.asarray(target_mm, float)
    if e.shape != (3,) or t.shape != (3,) or not (np.all(np.isfinite(e)) and np.all(np.isfinite(t))):
        raise ToolLineError("the plan's entry and target must be finite (x, y, z) points in mm")
    normals = []
    for v in ("ap", "lat"):
        P, _ = _view_model(calibration, v)
        c = np.linalg.svd(P)[2][-1]
        if abs(c[3]) < 1e-12:
            raise ToolLineError(f"the {v} view's camera has no finite source")
        src = c[:3] / c[3]
        n = np.cross(e - src, t - src)
        if np.linalg.norm(n) < 1e-12:
            raise ToolLineError(f"the plan points along the {v} beam")
        normals.append(n / np.linalg.norm(n))
    return math.degrees(math.acos(min(1.0, abs(float(normals[0] @ normals[1])))))


def expected_width_px(calibration, view: str, entry_mm, target_mm, diameter_mm: float) -> float:
    """Edge-to-edge width (ideal px) of a cylinder of ``diameter_mm`` along the plan, seen in
    ``view`` at the plan's midpoint: its silhouette across the projected axis."""
    e, t = np.asarray(entry_mm, float), np.asarray(target_mm, float)
    if e.shape != (3,) or t.shape != (3,) or not (np.all(np.isfinite(e)) and np.all(np.isfinite(t))):
        raise ToolLineError("the plan's entry and target must be finite (x, y, z) points in mm")
    if not (math.isfinite(diameter_mm) and diameter_mm > 0):
        raise ToolLineError(f"the tool's diameter must be positive, got {diameter_mm}")
    a = t - e
    if np.linalg.norm(a) < 1.0:
        raise ToolLineError("the plan's entry and target are less than 1 mm apart")
    a /= np.linalg.norm(a)
    P, _ = _view_model(calibration, view)
    e1 = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    m = 0.5 * (e + t)
    ring = m + 0.5 * diameter_mm * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    pts = np.vstack([ring, [m - a, m + a]])
    h = pts @ P[:, :3].T + P[:, 3]
    uv = h[:, :2] / h[:, 2:3]
    axis2 = uv[-1] - uv[-2]
    if np.linalg.norm(axis2) < 1e-9:
        raise ToolLineError(f"the plan points along the {view} beam: no line to see")
    axis2 /= np.linalg.norm(axis2)
    across = (uv[:-2] - uv[:-2].mean(0)) @ np.array([-axis2[1], axis2[0]])
    return float(across.max() - across.min())


def _pixels_and_polarity(pixels, polarity):
    if hasattr(pixels, "pixels") and hasattr(pixels, "photometric"):   # a FluoroImage
        pol = -1 if pixels.photometric == "MONOCHROME1" else 1
        return np.asarray(pixels.pixels), pol if polarity is None else polarity
    return np.asarray(pixels), 1 if polarity is None else polarity


def _density(pixels, polarity):
    a = np.asarray(pixels)
    if a.ndim != 2 or min(a.shape, default=0) < 16:
        raise ToolLineError(f"an image must be a 2-D array of at least 16 x 16 pixels, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ToolLineError(f"image pixels must be real numbers, got {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ToolLineError("the image has non-finite pixels (NaN or inf)")
    if a.min() < 0:
        raise ToolLineError("the image has negative pixels: give the raw stored values")
    if a.max() - a.min() <= 0:
        raise ToolLineError("the image is blank (every pixel the same)")
    if polarity not in (1, -1):
        raise ToolLineError(f"polarity must be +1 (dense = dark) or -1, got {polarity!r}")
    d = density_of(a, polarity).astype(np.float64)
    f = field_mask(a, polarity, margin_px=2)
    if f.mean() < 0.05:
        raise ToolLineError("the image has no exposed field")
    return d, f


def _fill_outside(d, fieldm, sigma):
    """Outside the field, the normalised-convolution average of the field nearby (no edge)."""
    m = fieldm.astype(np.float64)
    num = ndimage.gaussian_filter(d * m, sigma)
    den = ndimage.gaussian_filter(m, sigma)
    fill = np.where(den > 1e-6, num / np.maximum(den, 1e-6), np.median(d[fieldm]))
    return np.where(fieldm, d, fill)


def _ridges(d, scales):
    """(strength, unit direction along the ridge (rows, cols, 2) as (du, dv)) of dense lines."""
    best = np.zeros(d.shape)
    along = np.zeros(d.shape + (2,))
    for s in scales:
        duu = ndimage.gaussian_filter(d, s, order=(0, 2))
        dvv = ndimage.gaussian_filter(d, s, order=(2, 0))
        duv = ndimage.gaussian_filter(d, s, order=(1, 1))
        half_tr, det_root = 0.5 * (duu + dvv), np.sqrt(0.25 * (duu - dvv) ** 2 + duv ** 2)
        l1, l2 = half_tr - det_root, half_tr + det_root          # l1 <= l2; a dense ridge: l1 << 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(l1 < 0, l2 / l1, 1.0)
        r = s * s * np.clip(-l1, 0, None) * np.exp(-ratio ** 2 / (2 * RIDGE_BETA ** 2)) * (l2 < -0.25 * l1)
        # the eigenvector of l2 (the smaller curvature) runs along the ridge
        vu, vv = duv, l2 - duu
        small = np.hypot(vu, vv) < 1e-12
        vu, vv = np.where(small, l2 - dvv, vu), np.where(small, duv, vv)
        n = np.hypot(vu, vv) + 1e-30
        take = r > best
        best = np.where(take, r, best)
        along[take] = np.stack([vu / n, vv / n], -1)[take]
    return best, along


def _ridge_cores(strength, along):
    """(rows, cols) of ridge pixels that are maxima across the ridge (non-maximum suppression
    along the normal, +-1 px, bilinear)."""
    rr, cc = np.nonzero(strength > 0)
    if not len(rr):
        return rr, cc
    s = strength[rr, cc]
    nu, nv = -along[rr, cc, 1], along[rr, cc, 0]
    keep = np.ones(len(rr), bool)
    for sign in (-1.0, 1.0):
        other = ndimage.map_coordinates(strength, [rr + sign * nv, cc + sign * nu], order=1, mode="constant")
        keep &= s >= other
    return rr[keep], cc[keep]


def _tls_line(pts, w=None):
    w = np.ones(len(pts)) if w is None else w
    c = (w[:, None] * pts).sum(0) / w.sum()
    q = (pts - c) * np.sqrt(w)[:, None]
    _, _, vt = np.linalg.svd(q, full_matrices=False)
    return c, vt[0]


def _runs(t, gap):
    """Index groups of sorted 1-D positions split where consecutive ones are over ``gap`` apart."""
    order = np.argsort(t)
    ts = t[order]
    cuts = np.flatnonzero(np.diff(ts) > gap) + 1
    return [order[g] for g in np.split(np.arange(len(ts)), cuts)]


def _hypotheses(pts, strength, along, hint_line, hint_angle, tol_px, max_gap, rng, n_keep=3):
    """Up to ``n_keep`` distinct candidate segments (centre, unit direction, t-range, score)."""
    out = []
    active = np.ones(len(pts), bool)
    cos_tol = math.cos(math.radians(20.0))
    for _ in range(n_keep):
        idx = np.flatnonzero(active)
        if len(idx) < 4:
            break
        p, s, a = pts[idx], strength[idx], along[idx]
        prob = s / s.sum()
        best = None
        for _ in range(RANSAC_ITERATIONS):
            i, j = rng.choice(len(idx), 2, replace=False, p=prob)
            dvec = p[j] - p[i]
            L = np.hypot(*dvec)
            if L < 2.0:
                continue
            dvec = dvec / L
            if hint_line is not None and abs(dvec @ hint_line[1]) < math.cos(math.radians(hint_angle)):
                continue
            nrm = np.array([-dvec[1], dvec[0]])
            ok = (np.abs((p - p[i]) @ nrm) < tol_px) & (np.abs(a @ dvec) > cos_tol)
            score = s[ok].sum()
            if best is None or score > best[0]:
                best = (score, p[i], dvec)
        if best is None:
            break
        _, p0, dvec = best
        for _ in range(2):                   # refit on the inliers, weighted by strength
            nrm = np.array([-dvec[1], dvec[0]])
            ok = (np.abs((p - p0) @ nrm) < tol_px) & (np.abs(a @ dvec) > cos_tol)
            if ok.sum() < 3:
                break
            p0, dvec = _tls_line(p[ok], s[ok])
        nrm = np.array([-dvec[1], dvec[0]])
        ok = np.flatnonzero((np.abs((p - p0) @ nrm) < tol_px) & (np.abs(a @ dvec) > cos_tol))
        if len(ok) < 3:
            active[idx] = False
            break
        t = (p[ok] - p0) @ dvec
        runs = _runs(t, max_gap)
        k = max(range(len(runs)), key=lambda r: s[ok][runs[r]].sum())
        run = runs[k]
        out.append((p0, dvec, (float(t[run].min()), float(t[run].max())), float(s[ok][run].sum())))
        # the next hypothesis without this line's points
        near = np.abs((p - p0) @ nrm) < tol_px + 1.0
        active[idx[near]] = False
    return out


class _Sampler:
    """Bilinear samples of the density at raw pixels, NaN outside the field."""

    def __init__(self, d, fieldm):
        self.d, self.field = d, fieldm

    def __call__(self, uv):
        uv = np.asarray(uv, float)
        flat = uv.reshape(-1, 2)
        vals = ndimage.map_coordinates(self.d, [flat[:, 1], flat[:, 0]], order=1, mode="nearest")
        r = np.rint(flat[:, 1]).astype(int)
        c = np.rint(flat[:, 0]).astype(int)
        inside = (r >= 0) & (r < self.d.shape[0]) & (c >= 0) & (c < self.d.shape[1])
        ok = np.zeros(len(flat), bool)
        ok[inside] = self.field[r[inside], c[inside]]
        vals = np.where(ok, vals, np.nan)
        return vals.reshape(uv.shape[:-1])


def _raw_frames(distortion, ideal_pts, dvec):
    """Raw positions of ideal points and the raw unit directions along and across the line there."""
    q = _to_raw(distortion, ideal_pts)
    if distortion is None:
        t = np.broadcast_to(dvec, q.shape).copy()
    else:
        t = _to_raw(distortion, ideal_pts + 0.5 * dvec) - _to_raw(distortion, ideal_pts - 0.5 * dvec)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
    n = np.stack([-t[:, 1], t[:, 0]], 1)
    return q, t, n


def _edge(o, g, idx):
    """Parabola-refined position of the derivative extremum at index ``idx``."""
    if 0 < idx < len(g) - 1:
        y0, y1, y2 = g[idx - 1], g[idx], g[idx + 1]
        den = y0 - 2 * y1 + y2
        if abs(den) > 1e-12:
            return o[idx] + 0.5 * (y0 - y2) / den * (o[1] - o[0])
    return o[idx]


def _profiles(sample, distortion, p0, dvec, t_values, half_px):
    """Across-line profiles at ideal line positions p0 + t dvec: (raw centres, raw normals, offsets,
    profiles (N, M)), each averaged over +-1 px along the line against noise."""
    ideal = p0 + t_values[:, None] * dvec
    q, t, n = _raw_frames(distortion, ideal, dvec)
    o = np.arange(-half_px, half_px + 1e-9, PROFILE_STEP_PX)
    along = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    pts = q[:, None, None, :] + o[None, :, None, None] * n[:, None, None, :] + along[None, None, :, None] * t[:, None, None, :]
    prof = sample(pts).mean(axis=2)
    return q, n, o, prof


def _measure(o, prof, width_range):
    """(centre offset, width, contrast, background noise) of one profile, or None."""
    if not np.all(np.isfinite(prof)):
        return None
    g = ndimage.gaussian_filter1d(np.gradient(prof, o[1] - o[0]), 2.0)
    gmax, gmin = g.max(), g.min()
    if not (gmax > 0 and gmin < 0):
        return None
    loc_max = np.flatnonzero((g[1:-1] >= g[:-2]) & (g[1:-1] > g[2:]) & (g[1:-1] > 0.5 * gmax)) + 1
    loc_min = np.flatnonzero((g[1:-1] <= g[:-2]) & (g[1:-1] < g[2:]) & (g[1:-1] < 0.5 * gmin)) + 1
    if not len(loc_max) or not len(loc_min):
        return None
    # the innermost rise left of the line's centre and fall right of it: a wire lying on a wider
    # object (a screw seen through it) keeps its own edges; a tube's lumen edges have the other
    # signs, so a tube gives its outer wall
    rises, falls = loc_max[o[loc_max] < 0], loc_min[o[loc_min] > 0]
    if not len(rises) or not len(falls):
        return None
    i, j = rises[-1], falls[0]
    left, right = _edge(o, g, i), _edge(o, g, j)
    width = right - left
    if not width_range[0] <= width <= width_range[1]:
        return None
    bg_l, bg_r = prof[o < left - 2.0], prof[o > right + 2.0]
    if len(bg_l) < 3 or len(bg_r) < 3:
        return None
    centre = 0.5 * (left + right)
    mid = prof[np.abs(o - centre) <= max(0.25 * width, PROFILE_STEP_PX)]
    bg = 0.5 * (bg_l.mean() + bg_r.mean())
    noise = 0.5 * (bg_l.std() + bg_r.std())
    return centre, width, float(mid.mean() - bg), float(noise)


def _opened(x, size):
    """Grey opening along the line, NaN kept: removes dense bumps shorter than ``size`` samples
    (a ball beside the wire) and keeps any linear trend exactly."""
    good = np.isfinite(x)
    if good.sum() < 2:
        return x
    idx = np.arange(len(x))
    filled = np.interp(idx, idx[good], x[good])
    out = ndimage.grey_opening(filled, size=int(size), mode="nearest")
    return np.where(good, out, np.nan)


def _cross_integral(sample, distortion, p0, dvec, ts, width):
    """Density integrated across the line (px x ln units) at ideal positions p0 + t dvec (ts
    ascending, 0.5 px apart), over the object's width + 2 px each side, above the background:
    the median of a 3 px band beyond that on each side, opened along the line (a ball next to
    the wire is no background), joined linearly across. It is proportional to the object's
    cross-section whatever the blur; NaN off the field."""
    core = 0.5 * width + 2.0
    o = np.arange(-(core + 3.0), core + 3.0 + 1e-9, PROFILE_STEP_PX)
    ideal = p0 + ts[:, None] * dvec
    q, t, n = _raw_frames(distortion, ideal, dvec)
    along = np.array([-0.5, 0.0, 0.5])
    pts = q[:, None, None, :] + o[None, :, None, None] * n[:, None, None, :] + along[None, None, :, None] * t[:, None, None, :]
    prof = sample(pts).mean(axis=2)
    left, right = o < -core, o > core
    size = max(3, int(round(2 * (width + 8.0) / max(ts[1] - ts[0], 1e-6)))) if len(ts) > 1 else 3
    with np.errstate(all="ignore"):
        bl = _opened(np.median(prof[:, left], 1), size)
        br = _opened(np.median(prof[:, right], 1), size)
    ol, orr = o[left].mean(), o[right].mean()
    inner = ~(left | right)
    bg = bl[:, None] + (br - bl)[:, None] * ((o[inner] - ol) / (orr - ol))[None]
    return np.sum(prof[:, inner] - bg, 1) * PROFILE_STEP_PX


def _ends(sample, distortion, p0, dvec, t_lo, t_hi, width):
    """Positions t (ideal px along the line) of both ends where the density integrated across the
    line falls to half its median along the object (a sharp tip's cone: where its radius is
    1/sqrt(2) of the wire's, see ``tip_offset_mm``), walking out from the middle of the object
    (balls on the wire or just beyond its tip add density and stop nothing), whether each end
    is at the field's edge instead, and whether a blob denser than the wire (``OCCLUDED_RATIO``
    times its cross-section: a ball) lies within ``2 width + 6`` px inside the end: then the end
    found may be the blob's far side (a ball's rim looks like a wire's profile) and the true end
    is hidden in it.
    Returns ``[(t, at_edge, occluded), (t, at_edge, occluded)]`` for the low and the high end."""
    step = 0.5
    ext = 4 * width + 60.0
    ts = np.arange(t_lo - ext, t_hi + ext + 1e-9, step)
    c = _cross_integral(sample, distortion, p0, dvec, ts, width)
    inside = (ts >= t_lo) & (ts <= t_hi)
    ref = np.nanmedian(c[inside]) if np.isfinite(c[inside]).any() else np.nan
    if not ref > 0:
        raise ToolLineError("the line's cross-section has no contrast over its background")
    # the wire's own cross-section for the blob tests: the lower quartile, as a ball can cover
    # much of a short visible stretch and lift its median
    ref_low = float(np.nanpercentile(c[inside], 25)) if np.isfinite(c[inside]).sum() >= 4 else ref
    ref_low = ref_low if ref_low > 0 else ref
    good = np.isfinite(c)
    cs = c.copy()
    if good.sum() > 3:
        cs[good] = ndimage.gaussian_filter1d(c[good], 1.0)
    mid = int(np.argmin(np.abs(ts - 0.5 * (t_lo + t_hi))))
    ends = []
    reach = 2.0 * width + 6.0
    for sign in (-1, 1):
        k = mid
        while 0 <= k + sign < len(ts) and cs[k + sign] >= 0.5 * ref:    # NaN stops: the field ends there
            k += sign
        nxt = k + sign
        near = ((ts[k] - ts) * sign >= 0) & ((ts[k] - ts) * sign <= reach)
        # "blob": a ball on the end; "dip": a dip then a blob, a ball past the tip if one is found there
        occluded = ("blob" if np.any(cs[near] > OCCLUDED_RATIO * ref_low) else
                    "dip" if _dip_then_blob(ts, cs, mid, k, sign, reach, ref_low) else "")
        if not (0 <= nxt < len(ts)) or not np.isfinite(cs[nxt]):
            ends.append((float(ts[k]), True, occluded))
            continue
        a, b = cs[k], cs[nxt]
        f = (a - 0.5 * ref) / (a - b) if a != b else 0.0
        ends.append((float(ts[k] + sign * f * step), False, occluded))
    return ends, (ts, cs, ref_low)


def _dip_then_blob(ts, cs, mid, k, sign, reach, ref):
    """Whether the walk from ``mid`` out to the end ``k`` crossed a dip and then a blob near the end:
    the cross-section falls under ``DIP_RATIO`` of the wire's (the wire's tip) and rises again over
    ``HUMP_RATIO`` of it within ``reach`` of the end (a ball just beyond the tip, off the line's
    centre, that a half-contrast walk runs through). The end found is then the ball's far side."""
    path = np.arange(mid, k + sign, sign)
    if len(path) < 3:
        return False
    c = cs[path]
    tail = np.flatnonzero(np.abs(ts[path] - ts[k]) <= reach)
    h = int(tail[np.argmax(c[tail])])
    if not c[h] >= HUMP_RATIO * ref:
        return False
    before = (np.abs(ts[path] - ts[path[h]]) <= reach) & (np.arange(len(path)) < h)
    return bool(before.any() and np.min(c[before]) <= DIP_RATIO * ref)



def _without_balls_near(d, fieldm, raw, pol, uv_raw, line_pt_raw, line_dir_raw, half_width_px, reach_px):
    """The density with the cage balls within ``reach_px`` of ``uv_raw`` (a tip end a ball may hide)
    subtracted, or None when no such ball is found. The balls: ``core.calibration.beads`` finds them
    in the shot (a ball joined to the wire too); their shape is the shot's own ball template
    (``build_template`` over the isolated ones); each ball's centre, amplitude and a background
    plane are fitted by least squares to its window without the wire's band (``half_width_px`` of
    the line, which runs on to the true tip somewhere under the ball), and that ball is subtracted.
    Beer-Lambert makes the ball's footprint additive in density, so the wire's own cross-section
    and its tip are what is left."""
    from scipy.optimize import least_squares
    from core.calibration.bead_pairs import build_template
    from core.calibration.beads import BeadDetectionError, detect_beads
    try:
        beads = detect_beads(raw, pol)
    except BeadDetectionError:
        return None
    cen = np.asarray(beads.centres_px, float)
    near = np.linalg.norm(cen - uv_raw, axis=1) <= reach_px
    if not near.any() or len(cen) < 4:
        return None
    r = float(np.median(beads.radius_px))
    dn = np.where(fieldm, d, np.nan)
    template = build_template(dn, cen[~near], r)
    if template is None:
        return None
    out = d.copy()
    rows, cols = d.shape
    nrm = np.array([-line_dir_raw[1], line_dir_raw[0]])
    R = int(np.ceil(1.25 * r + 5))
    for c0 in cen[near]:
        u0, v0 = max(int(c0[0]) - R, 0), max(int(c0[1]) - R, 0)
        u1, v1 = min(int(c0[0]) + R + 2, cols), min(int(c0[1]) + R + 2, rows)
        yy, xx = np.mgrid[v0:v1, u0:u1]
        p = d[v0:v1, u0:u1]
        off_wire = np.abs((np.stack([xx, yy], -1) - line_pt_raw) @ nrm) > half_width_px
        use = off_wire & fieldm[v0:v1, u0:u1]
        if use.sum() < 30:
            continue
        xf, yf, pf = xx[use].astype(float), yy[use].astype(float), p[use]

        def res(x):
            return x[3] + x[4] * (xf - c0[0]) + x[5] * (yf - c0[1]) + x[2] * template(
                np.hypot(xf - x[0], yf - x[1])) - pf
        x0 = np.array([c0[0], c0[1], float(np.max(pf) - np.median(pf)), float(np.median(pf)), 0.0, 0.0])
        fit = least_squares(res, x0, loss="soft_l1", f_scale=0.05)
        if not (fit.success and np.hypot(*(fit.x[:2] - c0)) < 0.5 * r + 1.0 and fit.x[2] > 0):
            continue
        out[v0:v1, u0:u1] -= fit.x[2] * template(np.hypot(xx - fit.x[0], yy - fit.x[1]))
    return out


def _tip_without_ball(sample, distortion, fieldm, raw, pol, p0, dvec, samples_ideal, tip, width, kind="blob"):
    """A tip end that a ball may hide (``tip_occluded``), found again on the density with the balls
    near it subtracted (``_without_balls_near``): (tip (ideal px), still occluded). Unchanged when
    no ball is found there, or the end found again is still at a ball or at the field's edge; a
    ``kind`` "dip" end (``_dip_then_blob``) with no ball near it is not a ball's: trusted as found."""
    q, t, _ = _raw_frames(distortion, tip[None], dvec)
    clean = _without_balls_near(sample.d, fieldm, raw, pol, q[0], q[0], t[0], 0.5 * width + 1.5, 2.0 * width + 10.0)
    if clean is None:
        return tip, kind != "dip"
    tt = (samples_ideal - p0) @ dvec
    ends, _ = _ends(_Sampler(clean, fieldm), distortion, p0, dvec, float(tt.min()), float(tt.max()), width)
    t_tip = (tip - p0) @ dvec
    t_new, at_edge, occluded = min(ends, key=lambda e: abs(e[0] - t_tip))
    if at_edge or occluded:
        return tip, True
    return p0 + t_new * dvec, False

def _near_blob(t_samples, profile, width):
    """True for line positions ``t_samples`` within ``width + 2`` px of a blob on the line: where
    the cross-section (``_ends``' profile) exceeds ``BLOB_RATIO`` times the wire's. A ball
    overlapping the wire pulls the profile's edges toward its centre there, bending the samples."""
    ts, cs, ref = profile
    blob = np.isfinite(cs) & (cs > BLOB_RATIO * ref)
    if not blob.any():
        return np.zeros(len(t_samples), bool)
    tb = ts[blob]
    d = np.min(np.abs(np.asarray(t_samples, float)[:, None] - tb[None, :]), axis=1)
    return d <= width + 2.0


def tip_offset_mm(tip: str = "flat", cone_length_mm: float = 0.0) -> float:
    """How far the true tip lies beyond the end ``detect_tool_line`` finds, along the tool: 0 for a
    flat (square-cut) end; for a sharp (conical) tip of length L, L / sqrt(2) (the integrated
    density ~ radius^2 falls to half where the radius is 1/sqrt(2) of the wire's)."""
    if tip == "flat":
        return 0.0
    if tip != "sharp":
        raise ToolLineError(f"tip must be 'sharp' or 'flat', got {tip!r}")
    if not (math.isfinite(cone_length_mm) and cone_length_mm >= 0):
        raise ToolLineError(f"a sharp tip's cone length must be >= 0 mm, got {cone_length_mm}")
    return cone_length_mm / math.sqrt(2.0)


def detect_tool_line(pixels, *, polarity: int | None = None, distortion=None, calibration=None,
                     view: str | None = None, hint=None, hint_radius_px: float = 30.0,
                     hint_angle_deg: float = 20.0, width_px=(1.5, 12.0), min_contrast: float = 0.5,
                     min_length_px: float = 20.0) -> ToolLine2D:
    """The thin dense straight object (K-wire, tool) in a raw shot (module docstring).

    ``pixels``: the raw 2-D array (dense = dark unless ``polarity=-1``) or a ``FluoroImage``
    (its photometric interpretation sets the polarity). ``distortion`` (raw <-> ideal), or
    ``calibration`` and ``view`` to take it from: the line is fitted in ideal pixels. ``hint``:
    (2, 2) raw px of the expected line, entry then target (``plan_hint``); the search keeps to
    ``hint_radius_px`` of it and ``hint_angle_deg`` of its direction, and the tip is the end
    toward the target. ``width_px``: the object's expected edge-to-edge width range (a 2 mm wire
    is ~3-6 px on a 0.3-0.6 mm detector at 1.6x); ``min_contrast``: the least density step
    (ln units: a 2 mm steel wire gives ~1.8, bone edges < 0.4). Raises ``ToolLineError``.
    """
    raw, pol = _pixels_and_polarity(pixels, polarity)
    if distortion is None and calibration is not None:
        if view is None:
            raise ToolLineError("give the view ('ap' or 'lat') together with the calibration")
        _, distortion = _view_model(calibration, view)
    lo_w, hi_w = (float(x) for x in width_px)
    if not (0.5 <= lo_w < hi_w):
        raise ToolLineError(f"width range must satisfy 0.5 <= low < high px, got {width_px}")
    d, fieldm = _density(raw, pol)
    scales = np.geomspace(max(0.7, 0.25 * lo_w), max(0.8, 0.3 * hi_w), 4)
    inner = ndimage.binary_erosion(fieldm, iterations=int(math.ceil(2 * scales[-1])) + 2)
    d_filled = _fill_outside(d, fieldm, 2 * scales[-1] + 2)
    strength, along = _ridges(d_filled, scales)
    strength[~inner] = 0.0

    hint_line = None
    if hint is not None:
        h = np.asarray(hint, float)
        if h.shape != (2, 2) or not np.all(np.isfinite(h)):
            raise ToolLineError(f"the hint must be two finite raw pixels (2, 2), got shape {h.shape}")
        hi = _to_ideal(distortion, h)
        L = np.linalg.norm(hi[1] - hi[0])
        if L < 1.0:
            raise ToolLineError("the hint's entry and target project within 1 px of each other: "
                                "the plan points along this view's beam")
        hint_line = (hi[0], (hi[1] - hi[0]) / L, hi)
    # ridge points: the strongest few thousand (ridge cores, not their flanks)
    rr, cc = _ridge_cores(strength, along)
    if not len(rr):
        raise ToolLineError("no line-like structure in the image")
    uv = np.stack([cc, rr], 1).astype(float)
    s = strength[rr, cc]
    a_raw = along[rr, cc]
    ideal = _to_ideal(distortion, uv)
    if hint_line is not None:
        nrm = np.array([-hint_line[1][1], hint_line[1][0]])
        keep = np.abs((ideal - hint_line[0]) @ nrm) < hint_radius_px
        ideal, s, a_raw = ideal[keep], s[keep], a_raw[keep]
        if len(s) < 4:
            raise ToolLineError(f"no line-like structure within {hint_radius_px:.0f} px of the planned line")
    order = np.argsort(-s, kind="stable")[:4000]
    ideal, s, a_raw = ideal[order], s[order], a_raw[order]
    s = s / s.max()
    keep = s > 0.02
    ideal, s, a_raw = ideal[keep], s[keep], a_raw[keep]
    rng = np.random.default_rng(0)
    hyps = _hypotheses(ideal, s, a_raw, hint_line, hint_angle_deg, tol_px=1.5 + 0.25 * hi_w,
                       max_gap=max(4.0, 2 * lo_w), rng=rng)
    sample = _Sampler(d, fieldm)
    reasons = []
    for p0, dvec, (t0, t1), _ in hyps:
        try:
            return _finish(sample, distortion, fieldm, p0, dvec, t0, t1, (lo_w, hi_w), min_contrast,
                           min_length_px, hint_line, pol, view, raw)
        except ToolLineError as e:
            reasons.append(str(e))
    why = reasons[0] if reasons else "no line-like structure in the image"
    raise ToolLineError(f"no thin dense straight object found: {why}")


def _in_field_span(fieldm, distortion, p0, dvec, t0, t1):
    """The stretch of the ideal line around [t0, t1] whose raw points lie in the field."""
    rows, cols = fieldm.shape
    ts = np.arange(-float(rows + cols), float(rows + cols), 1.0)
    q = _to_raw(distortion, p0 + ts[:, None] * dvec)
    r, c = np.rint(q[:, 1]).astype(int), np.rint(q[:, 0]).astype(int)
    ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    ok[ok] = fieldm[r[ok], c[ok]]
    mid = int(np.argmin(np.abs(ts - 0.5 * (t0 + t1))))
    if not ok[mid]:
        return t0, t1
    lo = mid - int(np.argmin(ok[mid::-1])) + 1 if not ok[:mid + 1].all() else 0
    hi = mid + int(np.argmin(ok[mid:])) - 1 if not ok[mid:].all() else len(ts) - 1
    return float(ts[lo]), float(ts[hi])


def _finish(sample, distortion, fieldm, p0, dvec, t0, t1, width_range, min_contrast, min_length_px,
            hint_line, pol, view, raw=None) -> ToolLine2D:
    """Centreline samples, line fit and ends of one hypothesis (steps 4-5)."""
    half = 0.5 * width_range[1] + 6.0
    for k in range(3):
        # pass 0 over the hypothesis' run; then over the whole line in the field on the line the
        # samples gave, past breaks (a ball on the wire), with the figures of the trusted stretch
        trusted = (t0, t1)
        if k > 0:
            t0, t1 = _in_field_span(fieldm, distortion, p0, dvec, t0, t1)
        ts = np.arange(t0, t1 + 1e-9, SAMPLE_STEP_PX)
        if len(ts) < 3:
            raise ToolLineError(f"the line is only {t1 - t0:.0f} px long")
        q, n, o, prof = _profiles(sample, distortion, p0, dvec, ts, half)
        meas = [_measure(o, pr, width_range) for pr in prof]
        ok = np.array([m is not None for m in meas])
        if ok.sum() < 3:
            raise ToolLineError("no profile across the line shows two edges of a thin object")
        m = np.array([x if x is not None else (np.nan,) * 4 for x in meas])
        centre, width, contrast, noise = m.T
        ref = ok & (ts >= trusted[0] - 0.5) & (ts <= trusted[1] + 0.5)
        ref = ref if ref.sum() >= 3 else ok
        c_med = np.nanmedian(contrast[ref])
        if not c_med >= min_contrast:
            raise ToolLineError(f"the strongest line's contrast {c_med:.2f} is under {min_contrast:.2f} "
                                "(no steel wire or tool in the image?)")
        w_med = np.nanmedian(width[ref])
        ok &= (np.abs(width - w_med) <= 0.3 * w_med + 0.5) & (contrast >= 0.6 * c_med) & (contrast <= 1.6 * c_med)
        idx = np.flatnonzero(ok)
        if len(idx) < 3:
            raise ToolLineError("the line's profiles disagree in width and contrast (not one object)")
        # the continuous stretch of consistent samples that overlaps the trusted one most
        runs = _runs(ts[idx], max(12.0, 3 * w_med))

        def overlap(r):
            a, b = ts[idx[r]].min(), ts[idx[r]].max()
            return (max(0.0, min(b, trusted[1]) - max(a, trusted[0])), len(r))
        run = idx[max(runs, key=overlap)]
        raw_c = q[run] + centre[run, None] * n[run]
        ideal_c = _to_ideal(distortion, raw_c)
        keep = np.ones(len(run), bool)
        for _ in range(4):                   # robust total-least-squares fit
            c, dv = _tls_line(ideal_c[keep])
            r = (ideal_c - c) @ np.array([-dv[1], dv[0]])
            mad = 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep])))
            new = np.abs(r) <= max(3.5 * mad, 0.3)
            if np.array_equal(new, keep):
                break
            keep = new
        if dv @ dvec < 0:
            dv = -dv
        tt = (ideal_c[keep] - c) @ dv
        p0, dvec, t0, t1 = c, dv, float(tt.min()), float(tt.max())
    if t1 - t0 < min_length_px:
        raise ToolLineError(f"the line is only {t1 - t0:.0f} px long (at least {min_length_px:.0f} px needed)")
    ends, profile = _ends(sample, distortion, p0, dvec, t0, t1, w_med)
    (ta, edge_a, occ_a), (tb, edge_b, occ_b) = ends
    # samples beyond the ends (a ball's rim in line with the wire) leave the fit, and those next
    # to a ball on the line (biased toward its centre by up to a pixel) when the others still
    # span half the line (5 px at least): a wider object under much of the wire (a screw) stays
    tt = (ideal_c - p0) @ dvec
    within = keep & (tt >= ta - 1.0) & (tt <= tb + 1.0)
    clear = within & ~_near_blob(tt, profile, w_med)
    if clear.sum() >= 3 and np.ptp(tt[clear]) >= max(5.0, 0.5 * np.ptp(tt[within])):
        within = clear
    if within.sum() >= 3 and not np.array_equal(within, keep):
        keep = within
        c, dv = _tls_line(ideal_c[keep])
        dv = dv if dv @ dvec >= 0 else -dv
        shift = (c - p0) @ dv
        p0, dvec, ta, tb = c, dv, ta - shift, tb - shift
    pa, pb = p0 + ta * dvec, p0 + tb * dvec
    if hint_line is not None:
        tgt = hint_line[2][1]
        tip_is_b = np.linalg.norm(pb - tgt) <= np.linalg.norm(pa - tgt)
    elif edge_a != edge_b:
        tip_is_b = edge_a
    else:
        bg = []
        for pt in (pa, pb):
            qq, _, nn = _raw_frames(distortion, pt[None], dvec)
            bg.append(np.nanmean([sample(qq + k * nn) for k in (-(w_med + 6), w_med + 6)]))
        tip_is_b = not (bg[0] > bg[1])
    (tip, tip_edge, tip_occ), (back, back_edge) = (((pb, edge_b, occ_b), (pa, edge_a)) if tip_is_b
                                                   else ((pa, edge_a, occ_a), (pb, edge_b)))
    if tip_edge:
        raise ToolLineError("the tool's tip is not in view: its line runs off the field")
    if tip_occ == "dip" and raw is not None:
        # a ball past the tip, beside the line: subtracted. A ball on the end itself ("blob") hides
        # the end's fall, which its subtraction does not give back to a pixel: flagged as before
        tip, tip_occ = _tip_without_ball(sample, distortion, fieldm, raw, pol, p0, dvec, ideal_c[keep], tip, w_med,
                                         tip_occ)
    tip_occ = bool(tip_occ)
    direction = (tip - back) / np.linalg.norm(tip - back)
    resid = ((ideal_c[keep] - p0) @ np.array([-dvec[1], dvec[0]]))
    rms = float(np.sqrt(np.mean(resid ** 2)))
    if rms > MAX_RMS_PX:
        raise ToolLineError(f"the line's centreline samples scatter by {rms:.2f} px RMS about it "
                            f"(a straight wire: under {MAX_RMS_PX} px): not one straight object")
    noise_med = np.nanmedian(noise[run][keep])
    return ToolLine2D(samples_raw=raw_c[keep], samples_ideal=ideal_c[keep], point_ideal=p0,
                      direction_ideal=direction, tip_raw=_to_raw(distortion, tip[None])[0], tip_ideal=tip,
                      back_raw=_to_raw(distortion, back[None])[0], back_ideal=back, back_at_field_edge=back_edge,
                      width_px=float(w_med), contrast=float(c_med),
                      cnr=float(c_med / max(noise_med, 1e-6)), rms_px=rms,
                      polarity=pol, view=view, distortion=distortion, tip_occluded=tip_occ)


# --- triangulation -----------------------------------------------------------------------------

def _check_det(det, view):
    if not isinstance(det, ToolLine2D):
        raise ToolLineError(f"the {view} detection must be a ToolLine2D, got {type(det).__name__}")
    if len(det.samples_raw) < 2 or not np.all(np.isfinite(det.samples_raw)):
        raise ToolLineError(f"the {view} detection has too few finite centreline samples")


def _ideal_line(P_dist, det):
    """Homogeneous ideal-pixel line (3,) through the detection's samples, corrected by the
    calibration's own distortion (it need not be the one detection used)."""
    _, dist = P_dist
    pts = _to_ideal(dist, det.samples_raw)
    c, dv = _tls_line(pts)
    n = np.array([-dv[1], dv[0]])
    return np.array([n[0], n[1], -n @ c]), pts, c, dv


def _polyline_distance(pts, poly):
    """Signed distance of points (N, 2) to a polyline (M, 2) (positive to the left of its course)."""
    a, b = poly[:-1], poly[1:]
    ab = b - a
    L2 = np.maximum(np.sum(ab * ab, 1), 1e-12)
    w = pts[:, None, :] - a[None]
    t = np.clip(np.sum(w * ab[None], -1) / L2[None], 0, 1)
    d = w - t[..., None] * ab[None]
    k = np.argmin(np.sum(d * d, -1), 1)
    i = np.arange(len(pts))
    dist = np.linalg.norm(d[i, k], axis=1)
    side = np.sign(ab[k, 0] * w[i, k, 1] - ab[k, 1] * w[i, k, 0])
    return np.where(side == 0, 1.0, side) * dist


def triangulate_tool(calibration, det_ap: ToolLine2D, det_lat: ToolLine2D, *, tip_offset_mm: float = 0.0,
                     min_plane_angle_deg: float = 3.0, refine: bool = True, tip_agree_mm: float = 1.0) -> ToolPose:
    """The tool's 3D line and tip in the cage frame from its AP and LAT detections (module docstring).

    ``tip_offset_mm``: how far the true tip lies beyond the detected half-contrast end along the
    tool (``KWire.tip_offset_mm``: half a sharp tip's cone). Raises ``ToolTriangulationError``
    when the back-projected planes meet at under ``min_plane_angle_deg`` (the tool lies near the
    epipolar plane of the two shots: take one view at another angle).
    """
    _check_det(det_ap, "AP")
    _check_det(det_lat, "LAT")
    if not math.isfinite(tip_offset_mm):
        raise ToolLineError(f"tip offset must be finite, got {tip_offset_mm}")
    dets = {"ap": det_ap, "lat": det_lat}
    models = {v: _view_model(calibration, v) for v in dets}
    planes, lines = {}, {}
    for v, det in dets.items():
        l, pts, c, dv = _ideal_line(models[v], det)
        lines[v] = (pts, c, dv)
        pi = models[v][0].T @ l
        planes[v] = pi / np.linalg.norm(pi[:3])
    n1, n2 = planes["ap"][:3], planes["lat"][:3]
    cosang = abs(float(n1 @ n2))
    angle = math.degrees(math.acos(min(cosang, 1.0)))
    if not angle >= min_plane_angle_deg:
        raise ToolTriangulationError(
            f"the tool lies within {angle:.1f} deg of the two shots' epipolar plane: its 3D line is undetermined; "
            "retake one view at another angle (e.g. tilt the C-arm 15-20 deg)")
    direction = np.cross(n1, n2)
    direction /= np.linalg.norm(direction)
    A = np.stack([n1, n2, direction])
    point = np.linalg.solve(A, np.array([-planes["ap"][3], -planes["lat"][3], 0.0]))
    # sample rays' nearest points on the line: where along it the samples lie, and the tip side
    rays = {v: _rays(calibration, v, dets[v].samples_raw) for v in dets}
    tip_rays = {v: _rays(calibration, v, dets[v].tip_raw[None]) for v in dets}

    def along(o, d, p, u):
        try:
            _, pb, _ = closest_points_between_lines(o, d, np.broadcast_to(p, o.shape), np.broadcast_to(u, o.shape))
        except GeometryError:
            raise ToolTriangulationError("a view's X-ray runs along the tool's line: the tool is seen end-on") from None
        return (pb - p) @ u

    if refine:
        point, direction = _refine(calibration, dets, rays, point, direction, along)
    residual = {v: float(np.sqrt(np.mean(_reprojection(calibration, v, dets[v].samples_raw, rays[v], point,
                                                       direction, along) ** 2))) for v in dets}
    t_tip, weights = {}, {}
    for v in dets:
        o, d = tip_rays[v]
        t_tip[v] = float(along(o, d, point, direction)[0])
        weights[v] = 1.0 - float(d[0] @ direction) ** 2       # sin^2 of the ray-line angle
    t_samples = np.concatenate([along(*rays[v], point, direction) for v in dets])
    tip_views = _tip_views(dets, t_tip, np.median(t_samples), tip_agree_mm)
    t_comb = sum(weights[v] * t_tip[v] for v in tip_views) / max(sum(weights[v] for v in tip_views), 1e-12)
    if t_comb < np.median(t_samples):        # point the direction from the samples toward the tip
        direction, t_comb, t_tip = -direction, -t_comb, {v: -t for v, t in t_tip.items()}
    tip = point + (t_comb + tip_offset_mm) * direction
    return ToolPose(tip_mm=tip, direction=direction, plane_angle_deg=angle, residual_px=residual,
                    tip_gap_mm=abs(t_tip["ap"] - t_tip["lat"]), ill_conditioned=angle < WELL_CONDITIONED_DEG,
                    n_samples={v: len(dets[v].samples_raw) for v in dets}, tip_views=tip_views)


def _tip_views(dets, t_tip, t_mid, tip_agree_mm):
    """The views whose tip makes the tool's tip: both when they agree to ``tip_agree_mm`` along
    the line; else a ball can only have lengthened a view's end (it adds density), so of views
    flagged ``tip_occluded`` the one not flagged, or, both flagged, the shorter one; neither
    flagged: both (the gap says they disagree)."""
    views = tuple(dets)
    if abs(t_tip[views[0]] - t_tip[views[1]]) <= tip_agree_mm:
        return views
    occluded = [v for v in views if getattr(dets[v], "tip_occluded", False)]
    if len(occluded) == 1:
        return tuple(v for v in views if v not in occluded)
    if len(occluded) == 2:
        sign = 1.0 if np.mean([t_tip[v] for v in views]) >= t_mid else -1.0   # toward the tip
        return (min(views, key=lambda v: sign * t_tip[v]),)
    return views


def _rays(calibration, view, uv_raw):
    views = getattr(calibration, "views", None)
    if isinstance(views, dict) and hasattr(views.get(view), "rays"):
        o, d = views[view].rays(uv_raw, calibration.method)
        return np.asarray(o, float), np.asarray(d, float)
    rs = [calibration.ray(view, q) for q in uv_raw]
    return np.array([r.origin for r in rs]), np.array([r.direction for r in rs])


def _reprojection(calibration, view, samples_raw, rays, point, direction, along):
    """Raw-px distance of each sample to the 3D line reprojected by the calibration."""
    t = along(*rays, point, direction)
    span = max(t.max() - t.min(), 1.0)
    ts = np.linspace(t.min() - 0.1 * span - 1.0, t.max() + 0.1 * span + 1.0, 96)
    poly = np.asarray(calibration.project(point + ts[:, None] * direction)[view], float)
    good = np.all(np.isfinite(poly), 1)
    if good.sum() < 2:
        raise ToolTriangulationError(f"the 3D line does not project into the {view} view")
    return _polyline_distance(samples_raw, poly[good])


def _refine(calibration, dets, rays, point, direction, along):
    """Least squares on the line's 4 degrees of freedom (two shifts, two tilts across it)."""
    from scipy.optimize import least_squares
    e1 = np.cross(direction, [1.0, 0, 0] if abs(direction[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(direction, e1)
    # the reference point: the middle of the samples along the line, so that tilts pivot there
    t = np.concatenate([along(*rays[v], point, direction) for v in dets])
    point = point + np.median(t) * direction

    def line(x):
        d = direction + x[2] * e1 + x[3] * e2
        return point + x[0] * e1 + x[1] * e2, d / np.linalg.norm(d)

    def fun(x):
        p, d = line(x)
        return np.concatenate([_reprojection(calibration, v, dets[v].samples_raw, rays[v], p, d, along)
                               for v in dets])

    res = least_squares(fun, np.zeros(4), x_scale=np.array([1.0, 1.0, 0.01, 0.01]), diff_step=1e-6)
    return line(res.x)
