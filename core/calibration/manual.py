"""Technician-edited ball correspondences of one view, and the calibration refitted from them.

When the automatic labelling of a shot fails or keeps a wrong blob, the
technician fixes it by hand: add a ball at a click (its centre refined like the
detector's, ``core.calibration.beads.refine_centre``), remove a detection, or assign a
detection to a cage ball. ``complete_labels`` then predicts the other balls of
a plane from the homography of its labelled ones (robot paper II.C.4: a ball
plane maps to the ideal image by a homography) and labels the detections that
sit on a prediction. ``fit_view`` refits both models of the view (3D-2D camera
over all labelled balls, 2D-2D plane homographies) with the quality gates of
``core.calibration.pipeline``; ``assemble`` joins two views into a
``CageCalibration`` with the two-view gate. Pure numpy: no Qt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.calibration.beads import density_of, refine_centre, whole_ball_field
from core.calibration.calibration import CalibrationError, PlaneFit, ViewCalibration
from core.calibration.models import (ModelError, apply_h, fit_homography, fit_projection, loo_dlt_px,
                                     loo_homography_px)
from core.geometry.pixels import in_image
from core.calibration.cage import MIN_BALLS_PER_PLANE
from core.calibration.pipeline import assemble, balls_in_view, finite_rms, gate_plane, plane_residuals
from core.calibration.distortion import NoDistortion

__all__ = ["ManualEditError", "ViewLabels", "labels_from_view", "add_ball", "remove_detection", "assign",
           "unassign", "complete_labels", "diagnose", "fit_view", "assemble", "MIN_BALLS_PER_PLANE"]

UNLABELLED = ("", -1)


class ManualEditError(ValueError):
    """A manual edit of the ball correspondences cannot be applied."""


@dataclass(frozen=True)
class ViewLabels:
    """Detections of one view (raw px, (N, 2)) and the cage ball each one is (``plane_ids[i]``,
    ``ball_idx[i]``); ``""``/-1 = not a ball of the cage. ``edits`` counts manual changes."""
    view: str
    centres_px: np.ndarray
    plane_ids: tuple
    ball_idx: np.ndarray
    polarity: int = 1
    radius_px: float = 3.0
    edits: int = 0

    def __post_init__(self):
        c = np.asarray(self.centres_px, float).reshape(-1, 2)
        object.__setattr__(self, "centres_px", c)
        object.__setattr__(self, "ball_idx", np.asarray(self.ball_idx, int).reshape(-1))
        object.__setattr__(self, "plane_ids", tuple(self.plane_ids))
        if not (len(c) == len(self.plane_ids) == len(self.ball_idx)):
            raise ManualEditError("detections and labels differ in number")

    def __len__(self):
        return len(self.centres_px)

    def matched(self, plane_id) -> tuple[np.ndarray, np.ndarray]:
        """(ball indices, detection indices) of ``plane_id``, by ball index."""
        det = np.array([i for i, p in enumerate(self.plane_ids) if p == plane_id], int)
        order = np.argsort(self.ball_idx[det])
        return self.ball_idx[det][order], det[order]

    def label_of(self, i) -> tuple[str, int]:
        return self.plane_ids[i], int(self.ball_idx[i])

    def _with(self, centres, planes, balls) -> "ViewLabels":
        return replace(self, centres_px=centres, plane_ids=tuple(planes), ball_idx=balls, edits=self.edits + 1)


def labels_from_view(view, centres_px, vc: ViewCalibration | None = None, polarity=1, radius_px=3.0,
                     tol_px: float = 0.5) -> ViewLabels:
    """Labels of detections ``centres_px`` from a fitted view (its planes' ``uv_raw``);
    a ball whose centre is not among the detections is added as one."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    c = np.asarray(centres_px, float).reshape(-1, 2)
    planes, balls = [""] * len(c), np.full(len(c), -1)
    for pf in (vc.planes if vc is not None else []):
        for b, uv in zip(pf.ball_idx, pf.uv_raw):
            d, i = cKDTree(c).query(uv) if len(c) else (np.inf, -1)
            if d > tol_px or planes[i]:
                c = np.vstack([c, uv])
                planes.append("")
                balls = np.append(balls, -1)
                i = len(c) - 1
            planes[i], balls[i] = pf.plane_id, int(b)
    return ViewLabels(view, c, planes, balls, int(polarity), float(radius_px))


def _check_index(labels, i) -> int:
    if not (isinstance(i, (int, np.integer)) and 0 <= i < len(labels)):
        raise ManualEditError(f"no detection number {i}: pick a ball on the image")
    return int(i)


def add_ball(labels: ViewLabels, uv, pixels=None, max_shift_px: float | None = None) -> tuple[ViewLabels, int]:
    """Add a detection at a clicked raw pixel; with ``pixels`` its centre is refined
    (background-corrected intensity weighting). Returns (labels, its index)."""
    q = np.asarray(uv, float)
    if q.shape != (2,) or not np.all(np.isfinite(q)):
        raise ManualEditError(f"a click must be a finite (u, v), got {q!r}")
    if len(labels) and np.min(np.linalg.norm(labels.centres_px - q, axis=1)) < 0.8 * labels.radius_px:
        raise ManualEditError("this ball is already detected: select it to assign or remove it")
    if pixels is not None:
        img = np.asarray(pixels)
        if not in_image(q, img.shape, 0.5)[0]:
            raise ManualEditError("the click is outside the image: click on the ball")
        others = labels.centres_px[np.linalg.norm(labels.centres_px - q, axis=1) < 4 * labels.radius_px]
        c, _ = refine_centre(density_of(img, labels.polarity), q, labels.radius_px, others=others)
        limit = max_shift_px if max_shift_px is not None else 1.5 * labels.radius_px
        if c is None or np.linalg.norm(np.asarray(c) - q) > limit:
            raise ManualEditError("no ball found under the click: click on the centre of a ball")
        q = np.asarray(c, float)
    if len(labels) and np.min(np.linalg.norm(labels.centres_px - q, axis=1)) < 0.5 * labels.radius_px:
        raise ManualEditError("this ball is already detected: select it to assign or remove it")
    new = labels._with(np.vstack([labels.centres_px, q]), labels.plane_ids + ("",),
                       np.append(labels.ball_idx, -1))
    return new, len(new) - 1


def remove_detection(labels: ViewLabels, i) -> ViewLabels:
    """Drop detection ``i`` (a blob that is not a ball, or a wrong one)."""
    i = _check_index(labels, i)
    keep = np.arange(len(labels)) != i
    return labels._with(labels.centres_px[keep], [p for k, p in enumerate(labels.plane_ids) if k != i],
                        labels.ball_idx[keep])


def assign(labels: ViewLabels, i, cage, plane_id: str, ball: int) -> ViewLabels:
    """Detection ``i`` is ball ``ball`` of ``plane_id``; another detection holding that ball loses it."""
    i = _check_index(labels, i)
    plane = cage.plane(plane_id) if plane_id in [p.id for p in cage.planes] else None
    if plane is None or plane.view != labels.view:
        raise ManualEditError(f"{plane_id!r} is not a ball plane of the {labels.view.upper()} view")
    if not (0 <= int(ball) < plane.n_balls):
        raise ManualEditError(f"plane {plane_id} has balls 0-{plane.n_balls - 1}, not {ball}")
    planes, balls = list(labels.plane_ids), labels.ball_idx.copy()
    for k in range(len(planes)):
        if planes[k] == plane_id and balls[k] == int(ball):
            planes[k], balls[k] = UNLABELLED
    planes[i], balls[i] = plane_id, int(ball)
    return labels._with(labels.centres_px, planes, balls)


def unassign(labels: ViewLabels, i) -> ViewLabels:
    """Detection ``i`` is not a cage ball (kept, but left out of the fit)."""
    i = _check_index(labels, i)
    planes, balls = list(labels.plane_ids), labels.ball_idx.copy()
    planes[i], balls[i] = UNLABELLED
    return labels._with(labels.centres_px, planes, balls)


def complete_labels(labels: ViewLabels, cage, distortion=None, tol_px: float | None = None,
                    only=None) -> ViewLabels:
    """Label unlabelled detections (all, or the indices ``only``) that sit on a ball predicted by
    the homography of a plane's labelled balls (>= 4, ideal pixels); existing labels are kept."""
    from scipy.spatial import cKDTree  # lazy: ~0.5 s of start-up
    distortion = distortion or NoDistortion()
    tol = tol_px if tol_px is not None else 0.6 * labels.radius_px
    ideal = distortion.raw_to_ideal(labels.centres_px) if len(labels) else labels.centres_px
    planes, balls = list(labels.plane_ids), labels.ball_idx.copy()
    for plane in cage.planes_for(labels.view):
        bi, di = labels.matched(plane.id)
        if len(bi) < 4:
            continue
        try:
            H = fit_homography(plane.balls_2d[bi], ideal[di])
        except ModelError:
            continue
        free = np.array([k for k in range(len(planes)) if not planes[k] and (only is None or k in only)], int)
        todo = np.setdiff1d(np.arange(plane.n_balls), bi)
        if len(free) == 0 or len(todo) == 0:
            continue
        d, j = cKDTree(ideal[free]).query(apply_h(H, plane.balls_2d[todo]), distance_upper_bound=tol)
        for b, dj, jj in sorted(zip(todo, d, j), key=lambda t: t[1]):
            if np.isfinite(dj) and not planes[free[jj]]:
                planes[free[jj]], balls[free[jj]] = plane.id, int(b)
    if planes == list(labels.plane_ids):
        return labels
    return replace(labels, plane_ids=tuple(planes), ball_idx=balls)


def diagnose(labels: ViewLabels, cage, distortion=None) -> np.ndarray:
    """(N, 2) raw-pixel offset from each labelled detection to its ball as a robust (RANSAC)
    homography of its plane's labelled balls predicts it; NaN elsewhere. When a fit fails the
    gate, the wrongly labelled ball stands out by the longest offset."""
    import cv2
    distortion = distortion or NoDistortion()
    out = np.full((len(labels), 2), np.nan)
    if len(labels) == 0:
        return out
    ideal = distortion.raw_to_ideal(labels.centres_px)
    for plane in cage.planes_for(labels.view):
        bi, di = labels.matched(plane.id)
        if len(bi) < 5:
            continue
        H, _ = cv2.findHomography(plane.balls_2d[bi], ideal[di], cv2.RANSAC, 1.0)
        if H is None:
            continue
        out[di] = distortion.ideal_to_raw(apply_h(H, plane.balls_2d[bi])) - labels.centres_px[di]
    return out


def fit_view(cage, labels: ViewLabels, pixels, distortion=None) -> ViewCalibration:
    """Both models of one view from the labelled detections, with the pipeline's figures
    (per plane: matched, expected in view, RMS px/mm of each model, leave-one-out)."""
    distortion = distortion or NoDistortion()
    pixels = np.asarray(pixels)
    planes = cage.planes_for(labels.view)
    ideal = distortion.raw_to_ideal(labels.centres_px) if len(labels) else labels.centres_px
    per = [(p,) + labels.matched(p.id) for p in planes]
    for p, bi, di in per:
        if len(bi) < MIN_BALLS_PER_PLANE:
            gate_plane(labels.view, p, p.balls_2d[bi], 0.0, advice="manual")
    X = np.concatenate([p.balls_mm[bi] for p, bi, _ in per])
    uv = np.concatenate([ideal[di] for _, _, di in per])
    try:
        P = fit_projection(X, uv)
    except ModelError as e:
        raise CalibrationError(f"{labels.view.upper()} shot: {e}") from None
    loo3 = loo_dlt_px(X, uv)
    centre = np.mean([p.origin_mm for p in planes], axis=0)
    figs = {"balls_detected": int(len(labels)), "merged_blobs_dropped": 0, "polarity": int(labels.polarity),
            "manual_edits": int(labels.edits), "planes": {}}
    fits, resid, off, loo2_all = [], {}, 0, []
    field = whole_ball_field(pixels, labels.polarity, labels.radius_px)
    for p, bi, di in per:
        xy, q = p.balls_2d[bi], ideal[di]
        H, r2, r2_mm, r3, r3_mm = plane_residuals(p.balls_mm[bi], xy, q, P, centre)
        gate_plane(labels.view, p, xy, min(finite_rms(r2), finite_rms(r3)), advice="manual")
        loo2 = loo_homography_px(xy, q)
        loo2_all.append(loo2)
        l3 = loo3[off:off + len(bi)]
        off += len(bi)
        expected = balls_in_view(field, distortion, H, p.balls_2d, bi)
        fits.append(PlaneFit(p.id, p.origin_mm, p.axes, H, bi, labels.centres_px[di], r3, r3_mm, expected))
        resid[p.id] = (r2, r2_mm)
        figs["planes"][p.id] = {"expected_in_view": expected, "matched": int(len(bi)), "rejected_outliers": 0,
                                "rms_px_2d2d": finite_rms(r2), "rms_mm_2d2d": finite_rms(r2_mm),
                                "rms_px_3d2d": finite_rms(r3), "rms_mm_3d2d": finite_rms(r3_mm),
                                "loo_rms_px_2d2d": finite_rms(loo2), "loo_rms_px_3d2d": finite_rms(l3)}
    figs["loo_rms_px_2d2d"] = finite_rms(np.concatenate(loo2_all))
    figs["loo_rms_px_3d2d"] = finite_rms(loo3)
    vc = ViewCalibration(labels.view, tuple(pixels.shape), distortion, P, fits, figs)
    vc._resid = resid      # per-method residuals, as core.calibration.pipeline keeps them
    return vc
