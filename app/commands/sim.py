"""``fluoronav sim run``: whole navigated cases headless over randomized phantoms (issue 12).

DESIGN.md command line: ``fluoronav sim run --cases N --seed S [--workers K] [--tracker] [--motion] [--json]``. Each
case (``app.sim_case``) is drawn from the run's seed and its index only, runs in a worker process
(spawned, one torch thread each) and comes back as one dict; results are sorted by case index,
so the figures do not depend on ``--workers`` or on scheduling. One line per case, then the
summary as the last line (with ``--json`` both are JSON objects; DESIGN.md names the keys that
external checks read).
"""
from __future__ import annotations

import json
import math
import time

import numpy as np

from app.cli import CommandError

__all__ = ["register", "run", "run_specs", "summarize", "figure_stats", "tracker_summary"]

TRACKER_GOALS = {"tip_error_mm": 0.3, "tip_p95_mm": 0.6, "recovery_s": 1.0, "after_recovery_mm": 0.5,
                 "breathing_error_mm": 0.5, "hand_eye_mm": 0.3, "hand_eye_deg": 0.1}
GOALS = {"tip_error_mm": 0.5, "angle_error_deg": 0.5, "tip_p95_mm": 1.0, "angle_p95_deg": 1.0,
         "grade_a_fraction": 1.0, "verification_error_mm": 0.2, "seconds_per_case": 10.0}


def register(sub) -> None:
    p = sub.add_parser("sim", help="simulated whole cases (headless)",
                       description="Simulated navigation cases without the GUI.")
    ssub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    r = ssub.add_parser("run", help="run whole navigated cases on randomized phantoms",
                        description="Whole cases headless: randomized phantom, C-arm and robot; shots with "
                                    "distortion and noise, automatic calibration, planning clicks, align, "
                                    "closed-loop correction, verification and grading; per case and in total.")
    r.add_argument("--cases", type=int, required=True, help="number of cases (>= 1)")
    r.add_argument("--seed", type=int, required=True, help="run seed (>= 0): case i is drawn from (seed, i)")
    r.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    r.add_argument("--json", action="store_true", help="one JSON object per case, the summary as the last line")
    r.add_argument("--tracker", action="store_true",
                   help="the optical tracker in each case: robot-marker hand-eye, the plan registered to the "
                        "patient marker through the first tool shots, then eq. 24's tracked loop (no more shots)")
    r.add_argument("--motion", action="store_true",
                   help="with --tracker: the patient breathes and is bumped by 5-20 mm while the guide is held; "
                        "recovery time and tip error after recovery are reported")
    r.set_defaults(func=run)


def _worker_init() -> None:
    """One torch thread per worker: K workers use K cores, and a DRR's sums do not depend on it."""
    import torch
    torch.set_num_threads(1)


def _run_one(spec) -> dict:
    from app.sim_case import run_case
    return run_case(spec)


def run_specs(specs, workers: int = 1) -> list[dict]:
    """Run ``CaseSpec``s; results sorted by case index. ``workers`` 1 runs them in this process
    (with one torch thread, restored after), more in spawned worker processes."""
    specs = list(specs)
    if workers <= 1 or len(specs) <= 1:
        import torch
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = [_run_one(s) for s in specs]
        finally:
            torch.set_num_threads(n)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=min(workers, len(specs)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_run_one, s) for s in specs]
            out = []
            for s, f in zip(specs, futures):
                try:
                    out.append(f.result())
                except Exception as e:               # noqa: BLE001 - a lost worker is a failed case
                    out.append({"case": s.case, "ok": False, "stage": "worker",
                                "reason": f"worker: {type(e).__name__}: {' '.join(str(e).split())}"})
    return sorted(out, key=lambda r: r["case"])


def figure_stats(values) -> dict:
    """{"mean", "p95", "max"} of the finite values (NaN each when there are none)."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if not a.size:
        return {"mean": math.nan, "p95": math.nan, "max": math.nan}
    return {"mean": float(a.mean()), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def summarize(results: list[dict], wall_s: float, workers: int) -> dict:
    """The run's figures over the completed cases; ``failed`` lists every other case with its reason."""
    ok = [r for r in results if r.get("ok")]
    failed = [{"case": r["case"], "reason": r.get("reason") or "no reason given"} for r in results
              if not r.get("ok")]
    get = lambda *keys: [_dig(r, keys) for r in ok]
    stages = ("calibration", "clicks", "kinematics", "open_loop", "closed_loop", "tool_detection", "verification")
    grades = [r["grade"] for r in ok]
    plan_grades = [r.get("plan_grade") or "ungraded" for r in ok]
    plan_a = [r for r in ok if r.get("plan_grade") == "A"]
    out = {
        "cases": len(results), "completed": len(ok), "workers": int(workers),
        "tip_error_mm": figure_stats(get("tip_error_mm")),
        "angle_error_deg": figure_stats(get("angle_error_deg")),
        "entry_error_mm": figure_stats(get("entry_error_mm")),
        "depth_error_mm": figure_stats([abs(x) for x in get("depth_error_mm")]),
        "grade_a_fraction": (sum(g == "A" for g in grades) / len(ok)) if ok else 0.0,
        "grade_a_fraction_of_all": (sum(g == "A" for g in grades) / len(results)) if results else 0.0,
        "grades": {g: grades.count(g) for g in sorted(set(grades))},
        # the planned screw itself graded against the pedicle: a plan whose clicks already breach
        # cannot be placed grade A; navigation is judged on the cases whose plan is grade A
        "plan_grades": {g: plan_grades.count(g) for g in sorted(set(plan_grades), key=str)},
        "grade_a_fraction_of_plans_a": (sum(r["grade"] == "A" for r in plan_a) / len(plan_a)) if plan_a else 0.0,
        "open_loop": {"tip_error_mm": figure_stats(get("open_loop", "tip_mm")),
                      "angle_error_deg": figure_stats(get("open_loop", "angle_deg")),
                      "entry_error_mm": figure_stats(get("open_loop", "entry_mm"))},
        "closed_loop": {"tip_error_mm": figure_stats(get("closed_loop", "tip_mm")),
                        "angle_error_deg": figure_stats(get("closed_loop", "angle_deg")),
                        "entry_error_mm": figure_stats(get("closed_loop", "entry_mm")),
                        "shot_pairs": figure_stats(get("closed_loop_shots")),
                        "converged_fraction": (sum(bool(r["converged"]) for r in ok) / len(ok)) if ok else 0.0},
        "verification_error_mm": {"tip_deviation": figure_stats(get("verification_error", "tip_deviation_mm")),
                                  "entry_deviation": figure_stats(get("verification_error", "entry_deviation_mm")),
                                  "tip_position": figure_stats(get("verification_error", "tip_position_mm"))},
        "verification_error_deg": figure_stats(get("verification_error", "angle_deg")),
        "shots": figure_stats(get("shots")),
        "ray_gap_mm": figure_stats(get("ray_gap_mm")),
        "plan_vs_anatomy_mm": {"entry": figure_stats(get("plan_vs_anatomy_mm", "entry")),
                               "target": figure_stats(get("plan_vs_anatomy_mm", "target"))},
        "error_budget_mm": {k: figure_stats(get("budget_mm", k)) for k in stages},
        "cage_mount": "nominal",
        "seconds_per_case": wall_s / max(len(results), 1),
        "case_seconds": figure_stats([r.get("seconds") for r in results]),
        "case_cpu_seconds": figure_stats([r.get("cpu_seconds") for r in results]),
        "wall_s": wall_s,
        "failed": failed,
        "goals": GOALS,
    }
    tracked = [r for r in ok if "tracker" in r]
    if tracked:
        out["tracker"] = tracker_summary(tracked)
    return out


def tracker_summary(ok: list[dict]) -> dict:
    """The tracker's figures over the completed cases (``--tracker``, ``--motion``)."""
    get = lambda *keys: [_dig(r, keys) for r in ok]
    out = {"hand_eye_error_mm": figure_stats(get("tracker", "hand_eye", "error_mm")),
           "hand_eye_error_deg": figure_stats(get("tracker", "hand_eye", "error_deg")),
           "tracked_steps": figure_stats(get("tracked_steps")),
           "converged_fraction": sum(bool(r["converged"]) for r in ok) / len(ok),
           "goals": TRACKER_GOALS}
    moved = [r for r in ok if "motion" in r]
    if moved:
        m = lambda *keys: [_dig(r, ("motion", *keys)) for r in moved]
        out["motion"] = {"cases": len(moved), "recovery_s": figure_stats(m("recovery_s")),
                         "recovered_fraction": sum(math.isfinite(x) for x in m("recovery_s")) / len(moved),
                         "tip_error_after_recovery_mm": figure_stats(m("after_recovery_mm", "mean")),
                         "breathing_error_p95_mm": figure_stats(m("breathing_error_mm", "p95")),
                         "bump_mm": figure_stats(m("bump_mm")),
                         "reverify_fraction": sum(bool(x) for x in m("reverify")) / len(moved)}
    return out


def _dig(r, keys):
    for k in keys:
        r = r[k]
    return r


def _case_line(r: dict) -> str:
    if not r.get("ok"):
        return f"case {r['case']}: FAILED - {r['reason']}"
    ol = r["open_loop"]
    tr = ""
    if "tracker" in r:
        tr = f"; tracker: {r['tracked_steps']} measurement(s), hand-eye off {r['tracker']['hand_eye']['error_mm']:.2f} mm"
        if "motion" in r:
            m = r["motion"]
            tr += (f"; {m['bump_mm']:.0f} mm bump recovered in {m['recovery_s']:.2f} s, then "
                   f"{m['after_recovery_mm']['mean']:.2f} mm")
    return (f"case {r['case']}: {r['level']} {r['side']}: tip {r['tip_error_mm']:.2f} mm, entry "
            f"{r['entry_error_mm']:.2f} mm, angle {r['angle_error_deg']:.2f}°, grade {r['grade']} "
            f"(open loop {ol['tip_mm']:.2f} mm / {ol['angle_deg']:.2f}°; {r['closed_loop_shots']} correction "
            f"pair(s), {r['shots']} shots; verification off by {r['verification_error']['tip_deviation_mm']:.2f} mm; "
            f"ray gap {r['ray_gap_mm']:.2f} mm{tr}; {r['seconds']:.1f} s)")


def _summary_line(s: dict) -> str:
    f = lambda d, u: f"{d['mean']:.2f}/{d['p95']:.2f}/{d['max']:.2f} {u}"
    failed = "; ".join(f"case {x['case']}: {x['reason']}" for x in s["failed"]) or "none"
    tr = ""
    if "tracker" in s:
        t = s["tracker"]
        tr = f"; tracker hand-eye {f(t['hand_eye_error_mm'], 'mm')}"
        if "motion" in t:
            m = t["motion"]
            tr += (f"; motion: recovered in {f(m['recovery_s'], 's')}, tip after recovery "
                   f"{f(m['tip_error_after_recovery_mm'], 'mm')}, breathing p95 {f(m['breathing_error_p95_mm'], 'mm')}")
    return (f"{s['completed']}/{s['cases']} cases completed: tip {f(s['tip_error_mm'], 'mm')}, entry "
            f"{f(s['entry_error_mm'], 'mm')}, angle {f(s['angle_error_deg'], '°')} (mean/p95/max); grade A "
            f"{100 * s['grade_a_fraction']:.0f} %; open loop tip {f(s['open_loop']['tip_error_mm'], 'mm')}; "
            f"{s['seconds_per_case']:.1f} s per case{tr}; failed: {failed}")


def run(args) -> int:
    if args.sim_command != "run":
        raise CommandError(f"unknown sim command {args.sim_command!r}")
    if args.cases < 1:
        raise CommandError(f"--cases must be at least 1, got {args.cases}")
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}")
    if args.motion and not args.tracker:
        raise CommandError("--motion needs --tracker: the patient's motion is followed through the tracker")
    from app.sim_case import draw_case
    specs = [draw_case(args.seed, i, tracker=bool(args.tracker), motion=bool(args.motion)) for i in range(args.cases)]
    t0 = time.perf_counter()
    results = run_specs(specs, args.workers)
    summary = summarize(results, time.perf_counter() - t0, args.workers)
    for r in results:
        print(json.dumps(_jsonable(r), allow_nan=False) if args.json else _case_line(r), flush=True)
    print(json.dumps(_jsonable(summary), allow_nan=False) if args.json else _summary_line(summary), flush=True)
    return 0


def _jsonable(x):
    """NaN -> None (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
