"""Cage shots at several robot poses, from a folder (real data) or a simulated room, calibrated
and solved for ``T_flange_cage`` (``core.navigation.hand_eye``).

The folder (``fluoronav handeye --shots DIR``) holds the shots and a ``hand_eye_shots.json``
beside them, file names relative to the folder::

    {"format": "fluoronav.hand_eye_shots/1",
     "cage": "cage.json",                              # fluoronav.cage/1; default: the shipped cage
     "plate": {"file": "plate.json", "ap": "plate_ap.png", "lat": "plate_lat.png"},   # optional
     "poses": [{"joints": [l11_mm, l14_mm, l3_mm, theta4_deg, theta5_deg],
                "ap": "pose1_ap.dcm", "lat": "pose1_lat.dcm"}, ...]}

``joints`` are the robot's encoder readings at the shots (linear joints in mm, rotary ones in
degrees, the robot file's order). The C-arm (both views' angles) and the patient table stay
put for all the shots; only the robot moves. Images as ``fluoronav calibrate`` reads them
(DICOM, 16-bit PNG/TIFF).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.navigation.hand_eye import MIN_POSES, HandEyeError, HandEyeResult, solve_from_calibrations

__all__ = ["SHOTS_FORMAT", "SHOTS_FILE", "PoseShots", "ShotsFolder", "read_shots_folder", "write_shots_folder",
           "calibrate_poses", "Measurement", "measure"]

SHOTS_FORMAT = "fluoronav.hand_eye_shots/1"
SHOTS_FILE = "hand_eye_shots.json"


@dataclass
class PoseShots:
    """One robot pose: encoder readings ``q`` (mm, rad) and the two shots' pixels (larger =
    brighter) with their polarity hints (1 for DICOM, None: detect)."""
    q: np.ndarray
    pixels: dict
    polarity: dict = field(default_factory=lambda: {"ap": None, "lat": None})


@dataclass
class ShotsFolder:
    cage: object
    poses: list
    distortion: dict = field(default_factory=dict)


def _read(path: Path, what: str):
    from core.imaging.fluoro_image import ImageReadError
    from core.imaging.images import read_image
    try:
        img = read_image(path)
    except (ImageReadError, ValueError) as e:
        raise HandEyeError(f"{what}: {e}") from None
    with open(path, "rb") as f:
        dicom = f.read(132)[128:132] == b"DICM"
    return img.display(), (1 if dicom else None)


def read_shots_folder(folder, revolute=(False, False, False, True, True)) -> ShotsFolder:
    """The folder's cage, plate corrections and per-pose shots; HandEyeError (one line) when the
    file is missing or malformed, an image cannot be read, or there are too few poses."""
    from core.calibration.cage import CageFileError, load_cage
    from core.calibration.plate import PlateError, load_plate, plate_distortion
    from resources import path as resource_path
    root = Path(folder)
    f = root / SHOTS_FILE
    if not f.is_file():
        raise HandEyeError(f"{root}: no {SHOTS_FILE} (the poses' joints and shot files): see "
                           "core/navigation/hand_eye_shots.py or the README for its format")
    try:
        doc = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HandEyeError(f"{f}: not a readable JSON file ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("format") != SHOTS_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise HandEyeError(f"{f}: format is {got!r}, expected {SHOTS_FORMAT!r}")
    try:
        cage = load_cage(root / doc["cage"] if doc.get("cage") else resource_path("cages", "default.json"))
    except CageFileError as e:
        raise HandEyeError(str(e)) from None
    poses_doc = doc.get("poses")
    if not isinstance(poses_doc, list) or len(poses_doc) < MIN_POSES:
        n = len(poses_doc) if isinstance(poses_doc, list) else 0
        raise HandEyeError(f"{f}: hand-eye calibration needs cage shots at >= {MIN_POSES} robot poses, got {n}")
    poses = []
    for i, p in enumerate(poses_doc):
        try:
            j = np.asarray(p["joints"], float)
            names = {v: str(p[v]) for v in ("ap", "lat")}
        except (KeyError, TypeError, ValueError) as e:
            raise HandEyeError(f"{f}: pose {i + 1}: needs 'joints' (5 numbers), 'ap' and 'lat' ({e})") from None
        if j.shape != (len(revolute),) or not np.all(np.isfinite(j)):
            raise HandEyeError(f"{f}: pose {i + 1}: 'joints' must be {len(revolute)} finite numbers")
        q = np.where(revolute, np.radians(j), j)
        shots = {v: _read(root / names[v], f"pose {i + 1} {v.upper()}") for v in ("ap", "lat")}
        poses.append(PoseShots(q, {v: s[0] for v, s in shots.items()}, {v: s[1] for v, s in shots.items()}))
    dist = {}
    plate = doc.get("plate")
    if plate:
        try:
            pl = load_plate(root / plate["file"])
            for v in ("ap", "lat"):
                if plate.get(v):
                    px, pol = _read(root / plate[v], f"{v.upper()} plate")
                    dist[v], _ = plate_distortion(pl, px, pol)
        except (KeyError, TypeError) as e:
            raise HandEyeError(f"{f}: 'plate' needs 'file' and the 'ap' / 'lat' plate shots ({e})") from None
        except PlateError as e:
            raise HandEyeError(f"plate: {e}") from None
    return ShotsFolder(cage, poses, dist)


def write_shots_folder(folder, poses, plate_images=None, cage_file=None, plate_file=None,
                       revolute=(False, False, False, True, True)) -> Path:
    """Write shots in the folder format: ``poses`` as ``(q, {"ap": FluoroImage, "lat": ...})``,
    ``plate_images`` ``{"ap": FluoroImage, ...}`` with ``plate_file``; 16-bit PNGs."""
    import shutil
    from core.formats.files import write_json_atomic
    from core.imaging.images import write_png16
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    doc = {"format": SHOTS_FORMAT, "poses": []}
    if cage_file:
        shutil.copyfile(cage_file, root / "cage.json")
        doc["cage"] = "cage.json"
    for i, (q, imgs) in enumerate(poses):
        entry = {"joints": [float(math.degrees(x)) if r else float(x) for x, r in zip(q, revolute)]}
        for v, img in imgs.items():
            entry[v] = write_png16(img, root / f"pose{i + 1}_{v}.png").name
        doc["poses"].append(entry)
    if plate_images:
        shutil.copyfile(plate_file, root / "plate.json")
        doc["plate"] = {"file": "plate.json",
                        **{v: write_png16(img, root / f"plate_{v}.png").name for v, img in plate_images.items()}}
    return write_json_atomic(root / SHOTS_FILE, doc)


def calibrate_poses(cage, poses, distortion) -> list:
    """Each pose's calibration of the two views in its cage frame; HandEyeError naming the pose
    whose shots do not calibrate."""
    from core.calibration import CalibrationError, calibrate
    cals = []
    for i, p in enumerate(poses):
        try:
            cals.append(calibrate(cage, p.pixels, distortion, polarity=p.polarity))
        except CalibrationError as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HandEyeError(f"pose {i + 1}: the cage shots do not calibrate ({msg}): retake them with "
                               "the whole cage in both fields, or leave the pose out") from None
    return cals


@dataclass
class Measurement:
    """A hand-eye measurement: the result, the room marks' fit per pose (mm), the joints used
    (mm, rad), each pose's calibration and flange pose (the robot's model)."""
    result: HandEyeResult
    marks_rms_mm: list
    joints: list
    calibrations: list = field(default_factory=list)
    T_base_flange: list = field(default_factory=list)


def measure(kinematics, folder: ShotsFolder) -> Measurement:
    """``T_flange_cage`` from a shots folder: calibrate each pose, then AX = XB with the robot's
    flange poses as its model gives them at the recorded joints."""
    from core.robot.kinematics.base import KinematicsError
    cals = calibrate_poses(folder.cage, folder.poses, folder.distortion)
    try:
        F = [kinematics.flange(p.q) for p in folder.poses]
    except KinematicsError as e:
        raise HandEyeError(f"the recorded joints: {e}") from None
    result, rms = solve_from_calibrations(F, cals)
    return Measurement(result, rms, [p.q.tolist() for p in folder.poses], cals, F)
