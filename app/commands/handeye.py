"""``fluoronav handeye``: measure the cage's mount on the robot flange, ``T_flange_cage``.

Cage shots (AP and LAT) at >= 3 robot poses while the C-arm stands still, each pose calibrated,
solved as AX = XB by every method of OpenCV's ``calibrateHandEye`` (Tsai, Park, Horaud, Andreff,
Daniilidis) and graded by its residual: how far the fixed C-arm, seen through each pose, spreads
in the robot base frame. The method with the smallest residual is chosen (in simulation the
truth is shown beside it, never used to choose).

    fluoronav handeye --sim [--poses N] [--seed S] [--tilt DEG] [--size PX] [--save-shots DIR]
    fluoronav handeye --shots DIR
    ... [--robot ROBOT.json] [--write [PATH]] [--json]

``--write`` stores the measured mount where ``load_hybrid5`` finds it (default
``$XDG_CONFIG_HOME/fluoronav/robots/<robot>.hand_eye.json``); the robot controller then uses it.
On failure: one line saying what to do, exit 2.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from app.cli import CommandError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("handeye", help="measure the cage's mount on the robot flange (hand-eye, AX = XB)",
                       description="Cage shots at several robot poses, each calibrated, solved for the cage's "
                                   "mount T_flange_cage by every OpenCV hand-eye method; the smallest residual "
                                   "wins. --write stores it with the robot's configuration.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="in the simulated room (the robot of --seed)")
    src.add_argument("--shots", metavar="DIR", help="a folder of per-pose AP+LAT shots with a hand_eye_shots.json")
    p.add_argument("--poses", type=int, default=5, help="robot poses in simulation (>= 3, default 5)")
    p.add_argument("--seed", type=int, default=0, help="simulated room and robot seed (default 0: the GUI's)")
    p.add_argument("--tilt", type=float, default=20.0, help="cage tilt between poses, deg (default 20)")
    p.add_argument("--size", type=int, default=256, help="simulated shot size, px (default 256)")
    p.add_argument("--save-shots", metavar="DIR", help="simulation: also write the shots as a --shots folder")
    p.add_argument("--robot", metavar="ROBOT.json", help="robot file (default resources/robots/hybrid5.json)")
    p.add_argument("--write", nargs="?", const="", default=None, metavar="PATH",
                   help="store the measured mount (default: where the robot configuration loads it from)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object (last line)")
    p.set_defaults(func=run)


def _fmt_T(T) -> str:
    from scipy.spatial.transform import Rotation
    rv = np.degrees(Rotation.from_matrix(T[:3, :3]).as_rotvec())
    return (f"t = [{T[0, 3]:.3f}, {T[1, 3]:.3f}, {T[2, 3]:.3f}] mm, "
            f"rotation vector [{rv[0]:.3f}, {rv[1]:.3f}, {rv[2]:.3f}] deg")


def run(args) -> int:
    from core.navigation.hand_eye import METHODS, HandEyeError, cage_mount_path, check_pose_plan, save_cage_mount
    from core.robot.kinematics.base import KinematicsError
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from resources import path as resource_path
    t0 = time.perf_counter()
    robot_file = Path(args.robot) if args.robot else resource_path("robots", "hybrid5.json")
    sim = None
    try:
        kin = load_hybrid5(robot_file, hand_eye=None)
        if args.sim:
            check_pose_plan(args.poses, args.tilt)
            if not 64 <= args.size <= 1024:
                raise HandEyeError(f"--size must be 64-1024 px, got {args.size}")
            if args.seed < 0:
                raise HandEyeError(f"--seed must be >= 0, got {args.seed}")
            from core.navigation.hand_eye_sim import simulate_hand_eye
            sim = simulate_hand_eye(args.seed, args.poses, args.tilt, (args.size, args.size), kin,
                                    save_dir=args.save_shots,
                                    progress=None if args.json else (lambda t: print(f"  {t}", flush=True)))
            m = sim["measurement"]
        else:
            from core.navigation.hand_eye_shots import measure, read_shots_folder
            m = measure(kin, read_shots_folder(args.shots))
    except (HandEyeError, KinematicsError) as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"{getattr(e, 'filename', None) or ''}: {e.strerror or e}".lstrip(": ")) from None
    r = m.result
    written = None
    if args.write is not None:
        path = Path(args.write) if args.write else cage_mount_path(robot_file)
        info = {"robot_file": str(robot_file), "joints_used": m.joints, "marks_rms_mm": m.marks_rms_mm,
                "source": f"simulation (seed {args.seed})" if args.sim else f"shots {Path(args.shots).resolve()}"}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            written = str(save_cage_mount(r, path, **info))
        except OSError as e:
            raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
    summary = {"method": r.method, "T_flange_cage": r.T_flange_cage.tolist(), "n_poses": r.n_poses,
               "max_rotation_deg": r.max_rotation_deg, "axis_spread_deg": r.axis_spread_deg,
               "residuals": r.residuals, "failed": r.failed, "marks_rms_mm": m.marks_rms_mm,
               "written": written, "seconds": time.perf_counter() - t0}
    if sim is not None:
        summary.update(seed=args.seed,
                       error_vs_truth={k: {"translation_mm": e[0], "rotation_deg": e[1]} for k, e in sim["errors"].items()},
                       nominal_error={"translation_mm": sim["nominal_error"][0], "rotation_deg": sim["nominal_error"][1]},
                       T_flange_cage_true=sim["truth"].tolist())
    if args.json:
        print(json.dumps(summary, default=float))
        return 0
    where = f"simulated room, seed {args.seed}" if sim is not None else str(args.shots)
    print(f"hand-eye calibration ({where}): {r.n_poses} poses, rotations up to {r.max_rotation_deg:.1f} deg, "
          f"rotation axes up to {r.axis_spread_deg:.0f} deg apart")
    print("room marks' rigid fit per pose: " + ", ".join(f"{x:.3f}" for x in m.marks_rms_mm) + " mm RMS")
    head = f"{'method':<11} {'residual (fixed C-arm spread)':>30}"
    if sim is not None:
        head += f"   {'error vs the true mount':>24}"
    print(head)
    for k in METHODS:
        if k in r.residuals:
            res = r.residuals[k]
            line = f"{k:<11} {res['translation_mm']:18.3f} mm {res['rotation_deg']:6.3f} deg"
            if sim is not None:
                e = sim["errors"][k]
                line += f"   {e[0]:13.3f} mm {e[1]:6.3f} deg"
            print(line + ("   <- chosen (smallest residual)" if k == r.method else ""))
        elif k in r.failed:
            print(f"{k:<11} failed: {r.failed[k]}")
    if sim is not None:
        e = sim["nominal_error"]
        print(f"{'nominal':<11} {'(the robot file)':>30}   {e[0]:13.3f} mm {e[1]:6.3f} deg")
    print(f"T_flange_cage ({r.method}): {_fmt_T(r.T_flange_cage)}")
    print(f"written to {written}: the robot controller uses it from its next start" if written
          else "not stored (add --write to use it)")
    return 0
