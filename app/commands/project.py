"""``fluoronav project``: cage-frame points (mm) -> raw AP and LAT pixels (JSON)."""
from __future__ import annotations

import json

import numpy as np

from app.cli import CommandError
from app.commands.calibrate import allow_negative_numbers
from app.commands.locate import load_calibration, parse_numbers, read_json


def register(sub) -> None:
    p = sub.add_parser("project", help="raw AP and LAT pixels of cage-frame points")
    p.add_argument("--calib", required=True, help="calibration file from fluoronav calibrate")
    p.add_argument("--point", help="one point X,Y,Z in mm (cage frame)")
    p.add_argument("--points", help="JSON file: a list of [x, y, z] in mm")
    allow_negative_numbers(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from core.calibration import CalibrationError
    if (args.point is None) == (args.points is None):
        raise CommandError("give either --point X,Y,Z or --points POINTS.json")
    cal = load_calibration(args.calib)
    if args.point is not None:
        X = parse_numbers(args.point, 3, "--point")
    else:
        try:
            X = np.asarray(read_json(args.points, "points"), float)
        except (TypeError, ValueError):
            raise CommandError("points file must be a JSON list of [x, y, z] numbers") from None
        if X.size == 0:
            print(json.dumps({"ap": [], "lat": []}))
            return 0
        if X.ndim != 2 or X.shape[1] != 3:
            raise CommandError(f"points file must be a list of [x, y, z], got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise CommandError("points file: coordinates must be finite numbers")
    try:
        uv = cal.project(X)
    except CalibrationError as e:
        raise CommandError(str(e)) from None
    bad = {v: ~np.all(np.isfinite(np.atleast_2d(uv[v])), axis=1) for v in ("ap", "lat")}
    if args.point is not None and (bad["ap"].any() or bad["lat"].any()):
        raise CommandError("the point cannot be projected (it lies at or behind an X-ray source): "
                           "check the coordinates are in mm in the cage frame")
    if args.point is None:   # a batch: one unprojectable point gives null, not a failed batch
        print(json.dumps({v: [None if b else q for q, b in zip(uv[v].tolist(), bad[v])] for v in ("ap", "lat")}))
        return 0
    print(json.dumps({v: uv[v].tolist() for v in ("ap", "lat")}))
    return 0
