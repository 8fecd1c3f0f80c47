"""From a cage file and two raw shots to a ``CageCalibration`` with its quality gates.

Per view: detect balls (raw px) -> distortion-correct the centres -> label
each plane -> fit the 3D-2D camera on all labelled balls, reject balls that
disagree with the other layer (residual gate), refit the plane homographies
(2D-2D) -> residuals per ball and plane, leave-one-out errors. Then the
two-view gate (angle between the views) and the figures.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.calibration.bead_pairs import build_template, fit_partial_ball
from core.calibration.beads import BeadDetectionError, density_of, detect_beads, field_mask, whole_ball_field
from core.calibration.cage import MIN_BALLS_PER_PLANE
from core.calibration.calibration import CageCalibration, CalibrationError, PlaneFit, ViewCalibration
from core.calibration.models import (ModelError, apply_h, fit_homography, fit_projection, loo_dlt_px,
                                     loo_homography_px, p_rays, project_p)
from core.calibration.distortion import NoDistortion
from core.geometry.pixels import in_image, mask_at
from core.calibration.labelling import LabellingError, PlaneMatch, ViewNotRecognised, label_view, plane_is_symmetric

__all__ = ["calibrate_view", "calibrate", "assemble", "view_angle_deg", "gate_plane", "plane_residuals", "DEFAULT_METHOD", "MAX_PLANE_RMS_PX",
           "MIN_VIEW_ANGLE_DEG", "GATE_ADVICE"]

DEFAULT_METHOD = "3d2d"
MAX_PLANE_RMS_PX = 3.0
MIN_VIEW_ANGLE_DEG = 30.0
MIN_SPREAD_RATIO = 0.15


def _label_planes(cage, view, ideal, shape, in_field=None):
    planes = cage.planes_for(view)
    return planes, label_view([p.balls_2d for p in planes], ideal, shape, planes_mm=[p.balls_mm for p in planes],
                              names=[p.id for p in planes], max_rms_px=MAX_PLANE_RMS_PX, in_field=in_field)


def _in_field(field, distortion):
    """Ideal px (K, 2) -> bool (K,): where a whole ball would have been seen in the raw shot."""
    def exact(uv):
        return mask_at(field, distortion.ideal_to_raw(uv)) if len(uv) else np.zeros(0, bool)
    if isinstance(distortion, NoDistortion):
        return lambda uv: exact(np.asarray(uv, float).reshape(-1, 2))
    return _FieldTest(field, distortion, exact)


class _FieldTest:
    """``mask_at(field, ideal_to_raw(uv))`` with the distortion's inverse evaluated only near the
    field's edge. The labelling asks this of thousands of predicted balls per view, and the
    inverse is an iterated polynomial: a point whose raw position is certain to round to a pixel
    deep inside the field (or far outside it) is answered from distance maps. The answers are
    the exact test's: ``reach`` bounds how far ideal_to_raw moves any point (its largest
    displacement over the plane, sampled, with a margin: beyond the plate's control points the
    correction holds the edge's displacement), so a point whose pixel is more than ``reach`` + 2
    px from the field's edge (or from the image) lies on the same side as its raw position."""

    def __init__(self, field, distortion, exact):
        import cv2
        rows, cols = field.shape
        g = np.stack(np.meshgrid(np.linspace(-0.5 * cols, 1.5 * cols, 33),
                                 np.linspace(-0.5 * rows, 1.5 * rows, 33)), -1).reshape(-1, 2)
        with np.errstate(all="ignore"):
            move = np.linalg.norm(distortion.ideal_to_raw(g) - g, axis=1)
        self.exact = exact
        self.ok = bool(np.all(np.isfinite(move)))
        if not self.ok:
            return
        self.reach = 1.25 * float(move.max()) + 1.0
        self.pad = int(np.ceil(self.reach)) + 4
        f = np.pad(np.asarray(field, bool), self.pad).astype(np.uint8)
        self.d_in = cv2.distanceTransform(f, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)       # to the nearest outside
        self.d_out = cv2.distanceTransform(1 - f, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # to the nearest inside
        self.lo = np.array([-self.pad, -self.pad])
        self.hi = np.array([cols - 1 + self.pad, rows - 1 + self.pad])

    def __call__(self, uv):
        uv = np.asarray(uv, float).reshape(-1, 2)
        if not self.ok or len(uv) == 0:
            return self.exact(uv)
        out = np.zeros(len(uv), bool)
        with np.errstate(invalid="ignore"):
            k = np.rint(uv)
            fin = np.all(np.isfinite(k), axis=1)
            grid = fin & np.all((k >= self.lo) & (k <= self.hi), axis=1)     # else far off the image: False
        ij = (k[grid] + self.pad).astype(np.int64)
        d_in, d_out = self.d_in[ij[:, 1], ij[:, 0]], self.d_out[ij[:, 1], ij[:, 0]]
        sure = self.reach + 2.0
        out[np.flatnonzero(grid)[d_in > sure]] = True
        unsure = ~fin.copy()
        unsure[np.flatnonzero(grid)[(d_in <= sure) & (d_out <= sure)]] = True
        if unsure.any():
            out[unsure] = self.exact(uv[unsure])
        return out


def _label(cage, view, ideal, shape, radius_px, in_field=None):
    try:
        return _label_planes(cage, view, ideal, shape, in_field)
    except ViewNotRecognised as e:
        raise CalibrationError(_diagnose(cage, view, ideal, shape, radius_px, e, in_field)) from None
    except LabellingError as e:
        raise CalibrationError(f"{view.upper()} shot: {e}") from None


MIN_BALL_RADIUS_PX = 2.5


def _diagnose(cage, view, ideal, shape, radius_px, err, in_field=None):
    """Why no plane of a view was identified, as one line saying what to do: a symmetric
    cage file, swapped AP/LAT images, no cage in the beam, or a cage file that does not
    match the cage."""
    for p in cage.planes_for(view):
        if plane_is_symmetric(p.balls_2d):
            return (f"cage file: plane {p.id} is symmetric (its balls can be matched two ways): "
                    "use a cage file whose layers have no symmetry")
    other = "lat" if view == "ap" else "ap"
    try:
        _label_planes(cage, other, ideal, shape, in_field)
        return (f"the {view.upper()} image looks like the {'lateral' if view == 'ap' else 'AP'} view: "
                "check --ap/--lat")
    except LabellingError:
        pass
    n_planes = len(cage.planes_for(view))
    if len(ideal) < (MIN_BALLS_PER_PLANE + 2) * n_planes:
        return (f"{view.upper()} shot: only {len(ideal)} balls found, none of the cage's planes identified "
                f"(need {MIN_BALLS_PER_PLANE} per plane): reposition the cage so more of it is in the beam")
    if float(np.median(radius_px)) < MIN_BALL_RADIUS_PX:
        return (f"{view.upper()} shot: no steel balls of the cage found (only small blobs): "
                "check that the cage is in the beam")
    name = Path(cage.source).name if cage.source else (cage.name or "given")
    if "residual" in str(err):      # loose fits only: another cage, or a warp no plate corrected
        return (f"{view.upper()} shot: the balls found do not match the cage file {name}: check the cage file "
                "(and, on an image intensifier, calibrate with the distortion plate)")
    return f"{view.upper()} shot: the balls found do not match the cage file {name}: check the cage file"


def _reject_outliers(planes, matches, ideal):
    """3D-2D fit over both layers; drop balls whose reprojection disagrees (> 4 sigma)."""
    keep = [np.ones(m.n_matched, bool) for m in matches]
    for _ in range(3):
        X = np.concatenate([p.balls_mm[m.ball_idx[k]] for p, m, k in zip(planes, matches, keep)])
        uv = np.concatenate([ideal[m.point_idx[k]] for m, k in zip(matches, keep)])
        P = fit_projection(X, uv)
        changed = False
        for p, m, k in zip(planes, matches, keep):
            r = np.linalg.norm(project_p(P, p.balls_mm[m.ball_idx]) - ideal[m.point_idx], axis=1)
            s = 1.4826 * np.median(r[k]) + 1e-9
            new = r < max(0.4, 4 * s)
            changed |= bool(np.any(new != k))
            k[:] = new
        if not changed:
            break
    return P, keep


# What to do when a plane fails a gate, after the automatic labelling or after manual labels:
# (what its balls are, too few, near a line, residual too large).
GATE_ADVICE = {
    "auto": ("matched", "reposition the cage so its balls are in the beam",
             "reposition the cage so more of it is in the beam", "check the distortion plate shot or re-acquire"),
    "manual": ("labelled", "assign more balls or reposition the cage", "label balls across the whole plane",
               "a ball is labelled wrongly; remove or reassign the one with the longest arrow"),
}


def gate_plane(view, plane, xy, rms, advice: str = "auto") -> None:
    """Refuse a plane fit with too few balls, balls near a line, or a residual over
    ``MAX_PLANE_RMS_PX`` (px): one line saying which and what to do (``GATE_ADVICE``)."""
    what, few, line, resid = GATE_ADVICE[advice]
    v = view.upper()
    if len(xy) < MIN_BALLS_PER_PLANE:
        raise CalibrationError(f"{v} shot: only {len(xy)} balls of plane {plane.id} are {what} (need "
                               f"{MIN_BALLS_PER_PLANE}): {few}")
    s = np.linalg.svd(xy - xy.mean(0), compute_uv=False)
    if s[1] < MIN_SPREAD_RATIO * s[0]:
        raise CalibrationError(f"{v} shot: the {what} balls of plane {plane.id} lie near a line: {line}")
    if rms > MAX_PLANE_RMS_PX:
        raise CalibrationError(f"{v} shot: plane {plane.id} residual {rms:.2f} px exceeds "
                               f"{MAX_PLANE_RMS_PX} px: {resid}")


def finite_rms(a) -> float:
    """RMS of the finite values (NaN when there are none: e.g. leave-one-out of too few balls)."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan")


def plane_residuals(X, xy, uv, P, centre):
    """Per-ball residuals of both models: 2D-2D (homography px; back-projected on the
    plane, mm) and 3D-2D (reprojection px; ball-to-ray distance, mm); the homography."""
    H = fit_homography(xy, uv)
    r2 = np.linalg.norm(apply_h(H, xy) - uv, axis=1)
    r2_mm = np.linalg.norm(apply_h(np.linalg.inv(H), uv) - xy, axis=1)
    r3 = np.linalg.norm(project_p(P, X) - uv, axis=1)
    o, d = p_rays(P, uv, centre)
    w = X - o
    r3_mm = np.linalg.norm(w - np.sum(w * d, 1, keepdims=True) * d, axis=1)
    return H, r2, r2_mm, r3, r3_mm


def _detect(view, pixels, polarity):
    try:
        return detect_beads(pixels, polarity)
    except BeadDetectionError as e:
        raise CalibrationError(f"{view.upper()} shot: {e}") from None


def calibrate_view(cage, view, pixels, distortion=None, polarity=None):
    """One view's ``ViewCalibration`` (method-independent) and its figures."""
    distortion = distortion or NoDistortion()
    pixels = np.asarray(pixels)
    beads = _detect(view, pixels, polarity)
    ideal = distortion.raw_to_ideal(beads.centres_px)
    field = whole_ball_field(pixels, beads.polarity, float(np.median(beads.radius_px)))
    planes, matches = _label(cage, view, ideal, pixels.shape, beads.radius_px, _in_field(field, distortion))
    try:
        P, keep = _reject_outliers(planes, matches, ideal)
        rejected = [int((~k).sum()) for k in keep]
        beads, ideal, matches, n_recovered = _recover(planes, matches, keep, P, ideal, pixels, beads, distortion)
        if n_recovered:
            P, keep = _reject_outliers(planes, matches, ideal)
            rejected = [r + int((~k).sum()) for r, k in zip(rejected, keep)]
    except ModelError as e:
        raise CalibrationError(f"{view.upper()} shot: {e}") from None
    centre = np.mean([p.origin_mm for p in planes], axis=0)
    figs = {"balls_detected": int(len(beads)), "merged_blobs_dropped": int(beads.dropped_merged),
            "touching_pairs_split": int(beads.split_pairs), "ball_radius_px": float(np.median(beads.radius_px)),
            "polarity": int(beads.polarity), "recovered_at_prediction": int(n_recovered), "planes": {}}
    loo3 = loo_dlt_px(np.concatenate([p.balls_mm[m.ball_idx[k]] for p, m, k in zip(planes, matches, keep)]),
                      np.concatenate([ideal[m.point_idx[k]] for m, k in zip(matches, keep)]))
    fits, loo = [], {"2d2d": [], "3d2d": []}
    for p, m, k, n_rej in zip(planes, matches, keep, rejected):
        bi, uv = m.ball_idx[k], ideal[m.point_idx[k]]
        if len(bi) < MIN_BALLS_PER_PLANE:
            gate_plane(view, p, p.balls_2d[bi], 0.0)
        H, r2, r2_mm, r3, r3_mm = plane_residuals(p.balls_mm[bi], p.balls_2d[bi], uv, P, centre)
        gate_plane(view, p, p.balls_2d[bi], min(finite_rms(r2), finite_rms(r3)))
        l2, l3 = loo_homography_px(p.balls_2d[bi], uv), loo3[:len(bi)]
        loo3 = loo3[len(bi):]
        loo["2d2d"].append(l2), loo["3d2d"].append(l3)
        expected = balls_in_view(field, distortion, H, p.balls_2d, bi)
        fits.append((PlaneFit(p.id, p.origin_mm, p.axes, H, bi, beads.centres_px[m.point_idx[k]],
                              r3, r3_mm, expected), r2, r2_mm))
        figs["planes"][p.id] = {"expected_in_view": expected, "matched": int(len(bi)),
                                "rejected_outliers": n_rej,
                                "rms_px_2d2d": finite_rms(r2), "rms_mm_2d2d": finite_rms(r2_mm),
                                "rms_px_3d2d": finite_rms(r3), "rms_mm_3d2d": finite_rms(r3_mm),
                                "loo_rms_px_2d2d": finite_rms(l2), "loo_rms_px_3d2d": finite_rms(l3)}
    for meth in ("2d2d", "3d2d"):
        figs[f"loo_rms_px_{meth}"] = finite_rms(np.concatenate(loo[meth]))
    vc = ViewCalibration(view, tuple(pixels.shape), distortion, P, [f[0] for f in fits], figs)
    vc._resid = {pf.plane_id: (r2, r2_mm) for pf, r2, r2_mm in fits}   # per-method, for assemble
    return vc


def balls_in_view(field, distortion, H, balls_2d, matched_idx) -> int:
    """How many of a plane's balls are in view: those whose fitted projection lies in the
    whole-ball ``field``, and every ball matched to a blob (seen, so in view, even where
    its projected centre falls just outside the field's eroded edge: "36 / 35" otherwise)."""
    inside = mask_at(field, distortion.ideal_to_raw(apply_h(H, balls_2d)))
    inside[np.asarray(matched_idx, dtype=np.int64)] = True
    return int(inside.sum())


RECOVER_MIN_TOL_PX = 0.25


def _recover(planes, matches, keep, P, ideal, pixels, beads, distortion):
    """Balls the labelling left out (beside metal, beside another ball, missed by the detector):
    each unmatched ball's position predicted by the 3D-2D model is looked up among the free
    detections, else the shot's ball template is fitted there to the in-field pixels only
    (``fit_partial_ball``: a disc cut by the field border, robust beside metal); it joins its plane when it lands within a tight tolerance
    (3 sigma of the view's residuals, >= 0.25 px) of the prediction. The caller refits.
    Returns (beads, ideal, matches, number recovered)."""
    X = np.concatenate([p.balls_mm[m.ball_idx[k]] for p, m, k in zip(planes, matches, keep)])
    uv = np.concatenate([ideal[m.point_idx[k]] for m, k in zip(matches, keep)])
    r = np.linalg.norm(project_p(P, X) - uv, axis=1)
    depth_typ = float(np.median(np.column_stack([X, np.ones(len(X))]) @ P[2]))
    tol = max(RECOVER_MIN_TOL_PX, 3 * 1.4826 * float(np.median(r)))
    used = set(np.concatenate([m.point_idx[k] for m, k in zip(matches, keep)]).tolist())
    radius = float(np.median(beads.radius_px))
    d = tmpl = None
    pred_all = np.concatenate([distortion.ideal_to_raw(project_p(P, p.balls_mm)) for p in planes])
    new_raw, out = [], []
    n0 = len(beads)
    for p, m, k in zip(planes, matches, keep):
        miss = np.setdiff1d(np.arange(len(p.balls_mm)), m.ball_idx[k])
        pred_i = project_p(P, p.balls_mm[miss]) if len(miss) else np.zeros((0, 2))
        ok_pred = in_image(pred_i, pixels.shape, 0.5)
        add_b, add_p = [], []
        for b, q in zip(miss[ok_pred], pred_i[ok_pred]):
            j = int(np.argmin(np.linalg.norm(ideal - q, axis=1)))
            if j not in used and np.linalg.norm(ideal[j] - q) <= tol:
                used.add(j)
                add_b.append(b), add_p.append(j)
                continue
            if d is None:
                d, tmpl, sigma = _template(pixels, beads)
            if tmpl is None:
                break
            q_raw = distortion.ideal_to_raw(q[None])[0]
            near = np.linalg.norm(pred_all - q_raw, axis=1)
            if np.any((near > 0.5 * radius) & (near < 2 * radius + 2)):
                continue                    # overlapping another ball's shadow: not a single-ball fit
            scale = depth_typ / float(np.append(p.balls_mm[b], 1.0) @ P[2])   # magnification ratio
            c = fit_partial_ball(d, q_raw, tmpl, float(np.nanmedian(beads.contrast)), sigma, scale)
            if c is None or np.linalg.norm(distortion.raw_to_ideal(np.asarray(c)[None])[0] - q) > tol:
                continue
            add_b.append(b), add_p.append(n0 + len(new_raw))
            new_raw.append(c)
        if add_b:
            bi, pi = np.concatenate([m.ball_idx[k], add_b]), np.concatenate([m.point_idx[k], add_p]).astype(int)
            m = PlaneMatch(bi, pi, m.H_img_plane, np.zeros(len(bi)), m.expected, m.score_margin)
        else:
            m = PlaneMatch(m.ball_idx[k], m.point_idx[k], m.H_img_plane, m.residual_px[k], m.expected,
                           m.score_margin)
        out.append(m)
    n_added = sum(len(m.ball_idx) for m in out) - sum(int(k.sum()) for k in keep)
    if n_added == 0:
        return beads, ideal, matches, 0
    if new_raw:
        nr = np.asarray(new_raw, float)
        beads = replace(beads, centres_px=np.vstack([beads.centres_px, nr]),
                        radius_px=np.append(beads.radius_px, np.full(len(nr), radius)),
                        contrast=np.append(beads.contrast, np.full(len(nr), np.nan)),
                        roundness=np.append(beads.roundness, np.full(len(nr), np.nan)))
        ideal = np.vstack([ideal, distortion.raw_to_ideal(nr)])
    return beads, ideal, out, int(n_added)


def _template(pixels, beads):
    """Log density (NaN off the field), the shot's ball template, the pixel noise sigma."""
    d = density_of(pixels, beads.polarity).copy()
    d[~field_mask(pixels, beads.polarity)] = np.nan
    tmpl = build_template(d, beads.centres_px, float(np.median(beads.radius_px)))
    dd = np.diff(d, axis=1)
    sigma = 1.4826 * float(np.nanmedian(np.abs(dd - np.nanmedian(dd)))) / np.sqrt(2)
    return d, tmpl, sigma


def view_angle_deg(views) -> float:
    """Angle between the AP and LAT principal axes (rows 3 of the cameras)."""
    axes = [views[v].P[2, :3] / np.linalg.norm(views[v].P[2, :3]) for v in ("ap", "lat")]
    return float(np.degrees(np.arccos(min(1.0, abs(axes[0] @ axes[1])))))


def assemble(cage, views: dict, method: str) -> CageCalibration:
    """A ``CageCalibration`` of two fitted views (``calibrate_view`` or ``manual.fit_view``): the
    two-view angle gate, the chosen method's per-ball residuals, the figures."""
    if set(views) != {"ap", "lat"}:
        raise CalibrationError("a calibration needs both the AP and the LAT view")
    angle = view_angle_deg(views)
    if angle < MIN_VIEW_ANGLE_DEG:
        raise CalibrationError(f"the AP and LAT views are only {angle:.0f} deg apart (need "
                               f"{MIN_VIEW_ANGLE_DEG:.0f}): rotate the C-arm about 90 deg between the shots")
    for vc in views.values():
        resid = getattr(vc, "_resid", {})   # per-method residuals, kept by the view fits
        for pf in vc.planes:
            if method == "2d2d" and pf.plane_id in resid:
                pf.residual_px, pf.residual_mm = resid[pf.plane_id]
    figs = {"view_angle_deg": angle}
    for v, vc in views.items():
        for k in ("loo_rms_px_2d2d", "loo_rms_px_3d2d", "balls_detected"):
            figs[f"{v}_{k}"] = vc.figures[k]
    cage_info = {"name": cage.name, "file": cage.source, "sha256": cage.sha256}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return CageCalibration(method, dict(views), cage_info, now, figs)


def calibrate(cage, images: dict, distortions: dict | None = None, method: str = DEFAULT_METHOD,
              polarity: dict | None = None) -> CageCalibration:
    """Calibrate both views. ``images``: {"ap": raw pixels, "lat": raw pixels};
    ``distortions``: per view correction (None = undistorted flat panel)."""
    distortions = distortions or {}
    polarity = polarity or {}
    views = {v: calibrate_view(cage, v, images[v], distortions.get(v), polarity.get(v)) for v in ("ap", "lat")}
    return assemble(cage, views, method)
