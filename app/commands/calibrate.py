"""``fluoronav calibrate``: cage + AP + LAT shots (+ optional distortion plate) -> CALIB.json.

DESIGN.md command-line contract. Prints a summary (balls found and matched per
plane, residuals); on failure one line saying what to do, exit 2.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from app.cli import CommandError


def allow_negative_numbers(parser) -> None:
    """Let values such as ``-12.5,3,40`` follow an option (argparse would take them for flags)."""
    parser._negative_number_matcher = re.compile(r"^-[\d.]+([eE][-+]?\d+)?(,[-+]?[\d.]+([eE][-+]?\d+)?)*$")


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate the cage from an AP and a LAT shot",
                       description="Find the cage's balls in the AP and LAT shots, identify them, and write "
                                   "the calibration that maps raw pixels to rays in the cage frame.")
    p.add_argument("--cage", required=True, help="cage geometry file (fluoronav.cage/1 JSON)")
    p.add_argument("--ap", required=True, help="AP shot: DICOM, or 16-bit PNG/TIFF")
    p.add_argument("--lat", required=True, help="lateral shot: DICOM, or 16-bit PNG/TIFF")
    p.add_argument("--plate", help="distortion plate file (fluoronav.plate/1 JSON)")
    p.add_argument("--plate-ap", help="plate shot for the AP view")
    p.add_argument("--plate-lat", help="plate shot for the LAT view")
    p.add_argument("--method", choices=("2d2d", "3d2d"), default=None,
                   help="calibration model used by locate/project (default: the better-measured 3d2d)")
    p.add_argument("--out", required=True, help="calibration file to write (fluoronav.calib/1 JSON)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def _is_dicom(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_shot(path, what: str):
    """(pixels larger = brighter, polarity hint) of an image file; CommandError if unreadable."""
    from core.imaging.fluoro_image import ImageReadError
    from core.imaging.images import read_image
    try:
        img = read_image(path)
    except (ImageReadError, ValueError) as e:
        raise CommandError(f"{what} image: {e}") from None
    # DICOM states its photometric interpretation; PNG/TIFF do not: detect the polarity
    return img.display(), (1 if _is_dicom(path) else None)


def _distortions(args, shapes):
    from core.calibration.plate import PlateError, load_plate, plate_distortion
    given = {"ap": args.plate_ap, "lat": args.plate_lat}
    if not args.plate:
        if any(given.values()):
            raise CommandError("plate shots given without --plate PLATE.json: add the plate file")
        return {}, {}
    if not any(given.values()):
        raise CommandError("--plate given without --plate-ap/--plate-lat shots: add the plate shots")
    try:
        plate = load_plate(args.plate)
    except PlateError as e:
        raise CommandError(str(e)) from None
    out, figs = {}, {}
    for view, path in given.items():
        if not path:
            continue
        pixels, pol = read_shot(path, f"{view.upper()} plate")
        if pixels.shape != shapes[view]:
            raise CommandError(f"the {view.upper()} plate shot is {pixels.shape[1]}x{pixels.shape[0]} px but the "
                               f"{view.upper()} shot is {shapes[view][1]}x{shapes[view][0]}: use shots of one C-arm setting")
        try:
            out[view], figs[view] = plate_distortion(plate, pixels, pol)
        except PlateError as e:
            raise CommandError(f"{view.upper()} {e}") from None
    return out, figs


def run(args) -> int:
    from core.calibration.cage import CageFileError, load_cage
    from core.calibration import DEFAULT_METHOD, CalibrationError, calibrate
    t0 = time.perf_counter()
    try:
        cage = load_cage(args.cage)
    except CageFileError as e:
        raise CommandError(str(e)) from None
    shots = {v: read_shot(getattr(args, v), v.upper()) for v in ("ap", "lat")}
    dist, plate_figs = _distortions(args, {v: s[0].shape for v, s in shots.items()})
    try:
        cal = calibrate(cage, {v: s[0] for v, s in shots.items()}, dist, args.method or DEFAULT_METHOD,
                        {v: s[1] for v, s in shots.items()})
    except CalibrationError as e:
        raise CommandError(str(e)) from None
    cal.figures["distortion"] = plate_figs
    cal.figures["seconds"] = time.perf_counter() - t0
    try:
        cal.save(args.out)
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror or e}") from None
    _summary(cal, args)
    return 0


def _summary(cal, args) -> None:
    import json
    if args.json:
        print(json.dumps({"out": str(Path(args.out)), "method": cal.method, "figures": cal.figures,
                          "views": {v: vc.figures for v, vc in cal.views.items()}}, default=float))
        return
    print(f"calibration written to {args.out} (method {cal.method}, views {cal.figures['view_angle_deg']:.1f} deg apart)")
    for v, vc in cal.views.items():
        f = vc.figures
        d = cal.figures["distortion"].get(v)
        dist = f"distortion {d['model']} (held-out {min(x for k, x in d.items() if k.startswith('heldout')):.3f} px)" \
            if d else "no distortion correction (no plate)"
        print(f"{v.upper()}: {f['balls_detected']} balls detected; {dist}; "
              f"leave-one-out {f[f'loo_rms_px_{cal.method}']:.3f} px")
        for pid, pf in f["planes"].items():
            print(f"  {pid}: matched {pf['matched']}/{pf['expected_in_view']} in view, "
                  f"rms {pf[f'rms_px_{cal.method}']:.3f} px ({pf[f'rms_mm_{cal.method}']:.3f} mm), "
                  f"outliers {pf['rejected_outliers']}")
    worst = max(pf[f"rms_px_{cal.method}"] for vc in cal.views.values() for pf in vc.figures["planes"].values())
    if worst > 1.0:
        print(f"warning: plane residuals up to {worst:.2f} px: the shots look distorted; calibrate with "
              "a distortion plate (--plate, --plate-ap, --plate-lat) for sub-millimetre accuracy")
