"""``fluoronav locate``: raw AP and LAT pixels -> 3-D point in the cage frame and ray gap (JSON)."""
from __future__ import annotations

import json

import numpy as np

from app.cli import CommandError
from app.commands.calibrate import allow_negative_numbers


def register(sub) -> None:
    p = sub.add_parser("locate", help="3-D cage-frame point of an AP and a LAT pixel")
    p.add_argument("--calib", required=True, help="calibration file from fluoronav calibrate")
    p.add_argument("--ap", help="AP raw pixel U,V")
    p.add_argument("--lat", help="LAT raw pixel U,V")
    p.add_argument("--pairs", help='JSON file {"ap": [[u, v], ...], "lat": [[u, v], ...]}')
    allow_negative_numbers(p)
    p.set_defaults(func=run)


def parse_numbers(text: str, n: int, what: str) -> np.ndarray:
    try:
        a = np.array([float(x) for x in text.split(",")])
    except ValueError:
        a = np.zeros(0)
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise CommandError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return a


def load_calibration(path):
    from core.calibration import CageCalibration, CalibrationFileError
    try:
        return CageCalibration.load(path)
    except CalibrationFileError as e:
        raise CommandError(str(e)) from None


def read_json(path, what):
    """A JSON input file (bounded size and nesting, UTF-8), or CommandError in one line."""
    from core.formats.schema import FileFormatError, parse_json
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CommandError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    try:
        return parse_json(raw, f"{what} file {path}")
    except FileFormatError as e:
        raise CommandError(str(e)) from None


def _pairs(path):
    d = read_json(path, "pairs")
    try:
        a, b = np.asarray(d["ap"], float), np.asarray(d["lat"], float)
    except (KeyError, TypeError, ValueError):
        raise CommandError('pairs file must be {"ap": [[u, v], ...], "lat": [[u, v], ...]}') from None
    if a.ndim != 2 or a.shape[1:] != (2,) or a.shape != b.shape:
        raise CommandError(f"pairs file: ap and lat must be lists of [u, v] of equal length, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CommandError("pairs file: pixel coordinates must be finite numbers")
    return a, b


def run(args) -> int:
    from core.calibration import CalibrationError
    single = args.ap is not None or args.lat is not None
    if single == (args.pairs is not None) or (single and (args.ap is None or args.lat is None)):
        raise CommandError("give either --ap U,V and --lat U,V, or --pairs PAIRS.json")
    cal = load_calibration(args.calib)
    try:
        if single:
            p, g = cal.locate(parse_numbers(args.ap, 2, "--ap"), parse_numbers(args.lat, 2, "--lat"))
            out = {"point_mm": p.tolist(), "ray_gap_mm": g}
        else:
            a, b = _pairs(args.pairs)
            if len(a) == 0:
                out = {"points_mm": [], "ray_gap_mm": []}
            else:
                P, G = cal.locate_many(a, b)
                out = {"points_mm": P.tolist(), "ray_gap_mm": G.tolist()}
    except CalibrationError as e:
        raise CommandError(str(e)) from None
    print(json.dumps(out))
    return 0
