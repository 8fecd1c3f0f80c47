"""One auto-plan case graded against its truth: reconstruction (DICE, HD95) and bipedicular success.

Bipedicular success (Spine-DART section 5.4, graded here by the phantom's truth instead of a
reader): both trajectories Gertzbein-Robbins grade A for a ``diameter_mm`` cannula (5 mm: the
paper's trajectory cylinders) and both tips inside the vertebral body.

The baseline is 2D detection plus triangulation without the model (Spine-DART's 2D-GeoPlan
category): the clicked pedicles are triangulated, each trajectory runs through its pedicle
point at the level's textbook transverse and sagittal angles in the frame the three
triangulated points span, from 0.9 canal depths behind the pedicle point to the anterior third
of the table's body depth. Its reconstruction figures are those of the model's mean shape placed
rigidly on the three triangulated points (no shape fit, no image).
"""
from __future__ import annotations

import time

import numpy as np

from core.planning.grading import GradingError, grade_trajectory
from core.registration.ssm.fit import AutoPlanError, _kabsch, _triangulate, _check_clicks, autoplan
from core.registration.ssm.metrics import best_3d_fit, dice_hd95
from core.registration.ssm.model import ShapeModel
from core.simulation.phantom.anatomy import morphometry

__all__ = ["baseline_trajectories", "grade_case", "evaluate_case", "DIAMETER_MM"]

DIAMETER_MM = 5.0
SCREW_MM = 6.5          # a pedicle screw (the project's verification default), a stricter test of the same lines
SIDES = ("left", "right")


def _apply(T, p):
    return np.asarray(p, float) @ T[:3, :3].T + T[:3, 3]


def baseline_trajectories(level: str, cal, clicks) -> dict:
    """side -> (entry, target) in the cage frame from the triangulated clicks alone (module docstring)."""
    P, _ = _triangulate(cal, _check_clicks(clicks))
    m = morphometry()[level]
    c, pl, pr = P
    x = (pl - pr) / np.linalg.norm(pl - pr)
    y = 0.5 * (pl + pr) - c
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    th, be = np.radians(m["pedicle_transverse_angle"]), np.radians(m["pedicle_sagittal_angle"])
    out = {}
    for side, p, sgn in (("left", pl, 1.0), ("right", pr, -1.0)):
        a = (-sgn * np.sin(th) * np.cos(be)) * x - np.cos(th) * np.cos(be) * y + np.sin(be) * z
        entry = p - 0.9 * m["canal_depth"] / np.cos(th) * a
        depth = (p - c) @ y + 0.3 * m["body_depth"]          # to the anterior third of the body
        target = p + depth / max(-(a @ y), 0.2) * a
        out[side] = (entry, target)
    return out


def grade_case(vertebra, trajectories_world: dict, diameter_mm: float = DIAMETER_MM) -> dict:
    """Per side grade, breach and tip-in-body, and ``bipedicular`` (both A with the tip in the body)."""
    out, ok = {}, True
    for side in SIDES:
        e, t = trajectories_world[side]
        try:
            g = grade_trajectory(e, t, diameter_mm, vertebra.pedicles[side])
            grade, breach = g.grade, g.breach_mm
        except GradingError:
            grade, breach = "miss", float("nan")
        tip_in = bool(vertebra.body_signed_distance(np.asarray(t)[None])[0] < 0)
        out[side] = {"grade": grade, "breach_mm": breach, "tip_in_body": tip_in}
        ok &= grade == "A" and tip_in
    out["bipedicular"] = bool(ok)
    return out


def _recon(vertebra, verts_world, faces, spacing_mm):
    lo, hi = vertebra.box(0.0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    return dice_hd95(verts_world, faces, vertebra.parts, spacing_mm, truth_points=corners)


def evaluate_case(case, model: ShapeModel, refine: bool = True, floor: bool = True, baseline: bool = True,
                  spacing_mm: float = 0.75, generations: int = 40) -> dict:
    """Figures of the model fit (clicks then images), the baseline and the 3D floor on one case."""
    T_wc = case.T_world_cage
    images = {v: s.image.pixels for v, s in case.shots.items()} if refine else None
    out = {"case": f"{case.level}-{case.kind}-{case.seed}", "level": case.level, "kind": case.kind}
    t, cpu = time.perf_counter(), time.process_time()
    try:
        res = autoplan(model, case.calibration, case.clicks, images, generations=generations, seed=case.seed)
    except AutoPlanError as e:
        out.update(ok=False, reason=str(e))
        return out
    out["seconds"] = time.perf_counter() - t
    out["cpu_seconds"] = time.process_time() - cpu       # the fit's own work, whatever else loads the machine
    traj = {s: (_apply(T_wc, res.trajectories[s].entry_mm), _apply(T_wc, res.trajectories[s].target_mm))
            for s in SIDES}
    out["model"] = grade_case(case.vertebra, traj)
    out["model_screw"] = grade_case(case.vertebra, traj, SCREW_MM)
    out["dice"], out["hd95_mm"] = _recon(case.vertebra, _apply(T_wc, res.vertices_mm), res.faces, spacing_mm)
    out["quality"] = res.quality
    out["result"] = res
    if baseline:
        out.update(_baseline(case, model, spacing_mm))
    if floor:
        T0 = case.vertebra.T_world_vertebra
        Tf, bf = best_3d_fit(model, case.vertebra.signed_distance, T0)
        out["floor_dice"], out["floor_hd95_mm"] = _recon(case.vertebra, _apply(Tf, model.vertices(bf)),
                                                         model.faces, spacing_mm)
        pts = {n: _apply(Tf, p) for n, p in model.points(bf).items()}
        floor_traj = {s: (pts[f"entry_{s}"], pts[f"target_{s}"]) for s in SIDES}
        out["floor"] = grade_case(case.vertebra, floor_traj)
        out["floor_screw"] = grade_case(case.vertebra, floor_traj, SCREW_MM)
    out["ok"] = True
    return out


def _baseline(case, model, spacing_mm) -> dict:
    T_wc, out = case.T_world_cage, {}
    t = time.perf_counter()
    base = baseline_trajectories(case.level, case.calibration, case.clicks)
    P, _ = _triangulate(case.calibration, case.clicks)
    T_rigid = _kabsch(np.array([model.points()[n] for n in ("body_centre", "isthmus_left", "isthmus_right")]), P)
    out["baseline_seconds"] = time.perf_counter() - t
    base_w = {s: tuple(_apply(T_wc, q) for q in base[s]) for s in SIDES}
    out["baseline"] = grade_case(case.vertebra, base_w)
    out["baseline_screw"] = grade_case(case.vertebra, base_w, SCREW_MM)
    out["baseline_dice"], out["baseline_hd95_mm"] = _recon(
        case.vertebra, _apply(T_wc @ T_rigid, model.mean), model.faces, spacing_mm)
    return out
