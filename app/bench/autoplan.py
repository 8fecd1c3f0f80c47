"""``fluoronav bench autoplan``: CT-free pedicle planning from two shots with the shape model.

Cases (``core.registration.ssm.cases``): a vertebra from OUTSIDE the model's
family (a scale beyond its range, strong pedicle asymmetry, a compression
fracture, or a smooth random deformation; levels L1-L5 and the four kinds in
turn) between two neighbours in soft tissue, shot AP and LAT with the cage in
view (flat panel, random orbits), calibrated from the cage's balls, six clicks
with 3 px noise. Figures, over the cases:
- the model (clicks, then the images' edges): ``bipedicular_success_fraction``
  (both 5 mm trajectories grade A with the tip in the body; ``screw_6_5mm``: the
  same lines graded as 6.5 mm screws), ``dice``,
  ``hd95_mm`` (mean over cases), ``seconds_per_vertebra`` (the fit, wall clock; and its
  process CPU time);
- ``clicks_only``: the same model fitted to the clicks alone;
- ``baseline``: 2D detection plus triangulation (clicked pedicles triangulated,
  textbook angles; reconstruction figures of the mean shape placed rigidly);
- ``floor``: the model fitted to the true 3D surface (the best any 2D fit can do);
- ``spine_dart``: the paper's figures for reference (DICE 0.75, HD95 6.3 mm, 82 %).
"""
from __future__ import annotations

import time

import numpy as np

DESCRIPTION = "CT-free pedicle planning from two shots (shape model) vs 2D triangulation and the 3D floor"
SPINE_DART = {"dice": 0.7461, "hd95_mm": 6.3431, "bipedicular_success_fraction": 0.82}


def add_arguments(parser) -> None:
    parser.add_argument("--cases", type=int, default=20, help="cases (default 20: 5 levels x 4 held-out kinds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=40, help="family vertebrae per level's model")
    parser.add_argument("--generations", type=int, default=40, help="CMA-ES generations of the image stage")
    parser.add_argument("--click-px", type=float, default=3.0, help="click noise, px standard deviation (default 3)")
    parser.add_argument("--no-floor", action="store_true", help="skip the 3D floor (faster)")
    parser.add_argument("--overlay", default=None, metavar="DIR",
                        help="write each case's fit drawn over its AP and LAT shots (PNG) into DIR")


def _summary(rows, key_ok, dice, hd) -> dict:
    return {"bipedicular_success_fraction": float(np.mean([r[key_ok]["bipedicular"] for r in rows])),
            "grade_a_fraction": float(np.mean([r[key_ok][s]["grade"] == "A" for r in rows
                                               for s in ("left", "right")])),
            "dice": float(np.mean([r[dice] for r in rows])),
            "dice_min": float(np.min([r[dice] for r in rows])),
            "hd95_mm": float(np.mean([r[hd] for r in rows])),
            "hd95_max_mm": float(np.max([r[hd] for r in rows]))}


def _write_overlay(folder, case, r) -> None:
    import cv2
    from pathlib import Path
    from core.registration.ssm.overlay import overlay
    Path(folder).mkdir(parents=True, exist_ok=True)
    views = [overlay(r["result"], case.calibration, case.shots[v].image.pixels, v, case.clicks) for v in ("ap", "lat")]
    cv2.imwrite(str(Path(folder) / f"{r['case']}.png"), np.hstack(views))


def run(args) -> dict:
    from core.registration.ssm.cases import make_case
    from core.registration.ssm.evaluate import evaluate_case
    from core.registration.ssm.model import shape_model
    from core.registration.ssm.samples import HELDOUT_KINDS, LUMBAR_LEVELS
    if args.cases < 1:
        raise SystemExit("--cases must be at least 1")
    t0 = time.perf_counter()
    rows, clicks_rows, failed, build_s = [], [], [], {}
    for i in range(args.cases):
        level = LUMBAR_LEVELS[i % len(LUMBAR_LEVELS)]
        kind = HELDOUT_KINDS[(i // len(LUMBAR_LEVELS)) % len(HELDOUT_KINDS)]
        if level not in build_s:
            t = time.perf_counter()
            shape_model(level, args.samples)
            build_s[level] = time.perf_counter() - t
        model = shape_model(level, args.samples)
        case = make_case(level, kind, seed=args.seed * 1000 + i, click_px=args.click_px)
        r = evaluate_case(case, model, refine=True, floor=not args.no_floor, generations=args.generations)
        if not r["ok"]:
            failed.append({"case": r["case"], "reason": r["reason"]})
            continue
        c = evaluate_case(case, model, refine=False, floor=False, baseline=False)
        if args.overlay:
            _write_overlay(args.overlay, case, r)
        r.pop("result", None), c.pop("result", None)
        rows.append(r)
        clicks_rows.append(c)
    if not rows:
        return {"cases": args.cases, "failed": failed}
    out = {"cases": args.cases, "fitted": len(rows), "failed": failed, "diameter_mm": 5.0,
           **_summary(rows, "model", "dice", "hd95_mm"),
           "seconds_per_vertebra": float(np.mean([r["seconds"] for r in rows])),
           "seconds_per_vertebra_max": float(np.max([r["seconds"] for r in rows])),
           "cpu_seconds_per_vertebra": float(np.mean([r["cpu_seconds"] for r in rows])),
           "cpu_seconds_per_vertebra_max": float(np.max([r["cpu_seconds"] for r in rows]))}
    out["clicks_only"] = {**_summary(clicks_rows, "model", "dice", "hd95_mm"),
                          "seconds_per_vertebra": float(np.mean([r["seconds"] for r in clicks_rows]))}
    out["baseline"] = {"name": "2D detection + triangulation (textbook angles; mean shape placed rigidly)",
                       **_summary(rows, "baseline", "baseline_dice", "baseline_hd95_mm"),
                       "seconds_per_vertebra": float(np.mean([r["baseline_seconds"] for r in rows]))}
    if not args.no_floor:
        out["floor"] = _summary(rows, "floor", "floor_dice", "floor_hd95_mm")
    out["screw_6_5mm"] = {name: float(np.mean([r[key]["bipedicular"] for r in rows]))
                          for name, key in (("model", "model_screw"), ("baseline", "baseline_screw"),
                                            ("floor", "floor_screw")) if key in rows[0]}
    out["click_px"] = args.click_px
    out["spine_dart"] = SPINE_DART
    out["by_kind"] = {k: {"bipedicular": float(np.mean([r["model"]["bipedicular"] for r in rows if r["kind"] == k])),
                          "baseline_bipedicular": float(np.mean([r["baseline"]["bipedicular"] for r in rows
                                                                 if r["kind"] == k])),
                          "dice": float(np.mean([r["dice"] for r in rows if r["kind"] == k]))}
                      for k in HELDOUT_KINDS if any(r["kind"] == k for r in rows)}
    out["per_case"] = [{"case": r["case"], "dice": round(r["dice"], 3), "hd95_mm": round(r["hd95_mm"], 2),
                        "grades": [r["model"][s]["grade"] + ("" if r["model"][s]["tip_in_body"] else "/tip-out")
                                   for s in ("left", "right")],
                        "baseline_grades": [r["baseline"][s]["grade"] + ("" if r["baseline"][s]["tip_in_body"]
                                                                          else "/tip-out") for s in ("left", "right")]}
                       for r in rows]
    out["model_build_seconds"] = {k: round(v, 1) for k, v in build_s.items()}
    out["total_seconds"] = time.perf_counter() - t0
    return out
