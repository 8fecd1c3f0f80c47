"""Acceptance scenarios for the calibration command line, built from the simulator's public API.

A scenario is a random asymmetric cage file of this module's own design (ball
counts, pitch, span, layer gaps, a tilted lateral part, and an arbitrary file
frame: rotated axes and offset origin), a C-arm pose (LAO/RAO, cranial/caudal,
SID, pixel size, detector shape, flat panel or image intensifier with a plate),
noise, metal clutter, the AP/LAT (and plate) shots written in a chosen file
format, and the ground truth: target points 90-220 mm from the cage planes with
their true raw pixels, and every ball's true raw pixel.

Nothing here calls the calibration code: it is the outside reviewer's scene.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from core.calibration.cage import blue_noise_layer, cage_from_dict
from core.geometry.rigid import invert, make_transform
from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_dicom_xa, write_png16
from core.simulation.fluoro import DetectorModel
from core.simulation.objects import MU_STEEL_PER_MM, MU_TITANIUM_PER_MM, Cylinder, Sphere
from core.simulation.scene import SimulatedOR, default_T_world_cage

FORMATS = ("png16", "png16_inv", "tiff16", "dcm16_m2", "dcm12_m1", "dcm8_m2", "dcm8_m1", "dcm10_m1")


@dataclass
class Spec:
    """What to vary. Angles in degrees (C-arm, DICOM senses), lengths in mm."""
    seed: int = 0
    n_balls: tuple = (20, 24, 18, 22)          # per plane: ap_1, ap_2, lat_1, lat_2
    pitch_mm: float = 12.0                     # minimum centre distance within a layer
    half_span_mm: float = 65.0                 # each layer spans [-h, h] in its two in-plane axes
    gap_ap_mm: float = 45.0
    gap_lat_mm: float = 55.0
    lat_tilt_deg: float = 0.0                  # lateral part rotated about the table axis
    lat_offset_mm: float = 0.0                 # extra distance of the lateral part from the flank
    file_frame_seed: int | None = 1            # None: the standard cage frame; else a random rigid frame
    ap_pose: tuple = (0.0, 0.0)                # (primary, secondary)
    lat_pose: tuple = (0.0, 0.0)
    sid_mm: float = 1000.0
    sod_mm: float = 620.0
    pixel_mm: float | tuple = 0.4              # one number, or (column, row)
    shape: tuple = (512, 512)                  # (rows, cols)
    detector: str = "flat_panel"               # or "image_intensifier" (then a plate shot per view)
    photons: float = 800.0
    blur_px: float = 0.8
    bits: int = 12
    clutter: tuple = ()                        # any of "kwire", "screws", "clamp"
    cage_shift_mm: tuple = (0.0, 0.0, 0.0)      # world shift of the cage (part of it out of the field)
    cage_rot_deg: tuple = (0.0, 0.0, 0.0)       # small world rotation of the cage (xyz Euler)
    fmt: str = "png16"
    phantom: str = "spine2"                    # "spine2" (2 mm grid, fast), "spine1" (1 mm), "block"
    n_targets: int = 40
    ball_mm: float = 4.0                       # ball diameter written in the cage file and rendered
    centre_views: bool = False                 # re-centre the C-arm on the view's cage part before each shot


@dataclass
class Scenario:
    spec: Spec
    dir: Path
    cage_path: Path
    ap_path: Path
    lat_path: Path
    plate_args: list
    cage: object
    targets_mm: np.ndarray
    targets_uv: dict                           # view -> (N, 2) true raw pixels
    balls_uv: dict                             # view -> {plane id: (n, 2) true raw pixels, NaN out of field}
    shots: dict = field(default_factory=dict)
    instruments: list = field(default_factory=list)

    def calibrate_args(self, out) -> list:
        return ["calibrate", "--cage", str(self.cage_path), "--ap", str(self.ap_path), "--lat",
                str(self.lat_path), *self.plate_args, "--out", str(out)]


# --- the cage -------------------------------------------------------------------------

def poisson_layer(rng, n, pitch, half, window=15.0, avoid=None, avoid_mm=6.0):
    """``n`` blue-noise points in [-half, half]² at least ``pitch`` apart (a random, asymmetric layout)."""
    return blue_noise_layer(rng, n, pitch, half, window, avoid, avoid_mm, tries=100_000)


def cage_standard(spec: Spec) -> dict:
    """Plane id -> (n, 3) balls in the standard cage frame (x to the lateral part, y along the table, z up)."""
    rng = np.random.default_rng(spec.seed)
    h = spec.half_span_mm
    a1 = poisson_layer(rng, spec.n_balls[0], spec.pitch_mm, h)
    a2 = poisson_layer(rng, spec.n_balls[1], spec.pitch_mm, h, avoid=a1)
    l1 = poisson_layer(rng, spec.n_balls[2], spec.pitch_mm, h)
    l2 = poisson_layer(rng, spec.n_balls[3], spec.pitch_mm, h, avoid=l1)
    z = np.zeros((1,))
    x0 = 170.0 + spec.lat_offset_mm
    zc = -140.0
    R = Rotation.from_euler("y", spec.lat_tilt_deg, degrees=True).as_matrix()
    pivot = np.array([x0, 0.0, zc])
    lat = lambda l, x: (np.column_stack([np.full(len(l), x), l[:, 0], zc + l[:, 1]]) - pivot) @ R.T + pivot
    return {"ap_1": np.column_stack([a1, np.zeros(len(a1)) + z]),
            "ap_2": np.column_stack([a2, np.full(len(a2), spec.gap_ap_mm)]),
            "lat_1": lat(l1, x0), "lat_2": lat(l2, x0 + spec.gap_lat_mm)}


def file_frame(spec: Spec) -> np.ndarray:
    """T_file_std: the cage file's own frame (rotated axes, offset origin) against the standard one."""
    if spec.file_frame_seed is None:
        return np.eye(4)
    rng = np.random.default_rng(spec.file_frame_seed)
    return make_transform(Rotation.random(random_state=rng).as_matrix(), rng.uniform(-300, 300, 3))


def write_cage(spec: Spec, path: Path) -> tuple[dict, np.ndarray]:
    std = cage_standard(spec)
    T = file_frame(spec)
    planes = []
    order = ["lat_2", "ap_1", "lat_1", "ap_2"]          # the file need not list AP first
    for pid in order:
        b = std[pid] @ T[:3, :3].T + T[:3, 3]
        planes.append({"id": f"qa_{pid}", "view": pid[:-2],
                       "balls_mm": np.round(b, 4).tolist()})
    d = {"format": "fluoronav.cage/1", "name": f"qa cage {spec.seed}", "ball_diameter_mm": spec.ball_mm,
         "planes": planes}
    path.write_text(json.dumps(d))
    return d, T


# --- the scene ------------------------------------------------------------------------

def _phantom(kind):
    if kind == "block":
        from core.simulation.block_phantom import block_phantom
        return block_phantom()
    from core.simulation.phantom import make_spine_phantom
    return make_spine_phantom(seed=0, spacing_mm=2.0 if kind == "spine2" else 1.0)


def clutter_objects(kinds, rng, centre) -> list:
    """Metal in the beams near the spine (world mm): K-wires, pedicle screws, a clamp."""
    out = []
    c = np.asarray(centre, float)
    if "kwire" in kinds:
        for _ in range(3):
            p = c + rng.uniform(-40, 40, 3)
            d = Rotation.random(random_state=rng).apply([0, 0, 1.0])
            out.append(Cylinder(p - 90 * d, p + 90 * d, 0.8, MU_STEEL_PER_MM))
    if "screws" in kinds:
        for sx in (-1, 1):
            for dz in (-20, 20):
                head = c + np.array([sx * 22.0, 40.0, dz]) + rng.normal(0, 3, 3)
                tip = head + np.array([-sx * 12.0, -42.0, rng.normal(0, 4)])
                out.append(Cylinder(head, tip, 3.0, MU_TITANIUM_PER_MM))
                out.append(Sphere(head, 5.0, MU_TITANIUM_PER_MM))
    if "clamp" in kinds:
        p = c + np.array([-60.0, 80.0, rng.uniform(-30, 30)])
        out.append(Cylinder(p, p + np.array([40.0, 0, 60.0]), 4.0, MU_STEEL_PER_MM))
        out.append(Cylinder(p, p + np.array([0.0, 30.0, -50.0]), 3.0, MU_STEEL_PER_MM))
        out.append(Sphere(p, 7.0, MU_STEEL_PER_MM))
    return out


def build_scene(spec: Spec, cage_file_dict: dict, T_file_std: np.ndarray) -> SimulatedOR:
    cage = cage_from_dict(cage_file_dict, "qa cage")
    det = DetectorModel(kind=spec.detector, bits_stored=spec.bits, photons_ref=spec.photons,
                        blur_sigma_px=spec.blur_px)
    ps = spec.pixel_mm if np.isscalar(spec.pixel_mm) else spec.pixel_mm[0]
    scene = SimulatedOR(seed=spec.seed, phantom=_phantom(spec.phantom), cage=cage, detector=spec.detector,
                        sid_mm=spec.sid_mm, sod_mm=spec.sod_mm, pixel_spacing_mm=float(ps),
                        shape=spec.shape, detector_model=det, render_device="cpu")
    if not np.isscalar(spec.pixel_mm):   # non-square pixels: the scene takes one number; set both
        scene.pixel_spacing_mm = (float(spec.pixel_mm[0]), float(spec.pixel_mm[1]))
    std_cage = cage_from_dict({"format": "fluoronav.cage/1", "ball_diameter_mm": 4.0, "planes": [
        {"id": p["id"], "view": p["view"], "balls_mm": (np.asarray(p["balls_mm"]) @ invert(T_file_std)[:3, :3].T
                                                        + invert(T_file_std)[:3, 3]).tolist()}
        for p in cage_file_dict["planes"]]})
    T_world_std = default_T_world_cage(scene.volume, std_cage)
    R = Rotation.from_euler("xyz", spec.cage_rot_deg, degrees=True).as_matrix()
    T_world_std = make_transform(R, np.asarray(spec.cage_shift_mm, float)) @ T_world_std
    scene.T_world_cage = T_world_std @ invert(T_file_std)
    return scene


def sample_targets(spec, std_planes, shots, T_file_std, rng) -> np.ndarray:
    """Targets (file frame) whose distance to the nearer plane of each view is 90-220 mm, in both fields."""
    def plane_dist(P, b):
        c = b.mean(0)
        n = np.linalg.svd(b - c)[2][2]
        return np.abs((P - c) @ n)
    out = []
    for _ in range(200):
        P = np.column_stack([rng.uniform(-60, 90, 4000), rng.uniform(-60, 60, 4000), rng.uniform(-230, -40, 4000)])
        ok = np.ones(len(P), bool)
        for view in ("ap", "lat"):
            d = np.minimum(plane_dist(P, std_planes[f"{view}_1"]), plane_dist(P, std_planes[f"{view}_2"]))
            ok &= (d >= 90) & (d <= 220)
        Pf = P @ T_file_std[:3, :3].T + T_file_std[:3, 3]
        for shot in shots.values():
            ok &= shot.in_field(shot.project_raw(Pf), margin_px=10)
        out.extend(Pf[ok])
        if len(out) >= spec.n_targets:
            return np.asarray(out[:spec.n_targets])
    raise RuntimeError("no target points 90-220 mm from the planes fall in both fields: change the pose")


# --- files ----------------------------------------------------------------------------

def write_image(img: FluoroImage, fmt: str, path: Path) -> Path:
    """Write a shot in one of FORMATS; the file name's suffix follows the format."""
    import cv2
    px = img.pixels.astype(np.int64)
    full = (1 << img.bits_stored) - 1
    if fmt == "png16":
        return write_png16(img, path.with_suffix(".png"))
    if fmt == "png16_inv":                     # dense = bright, as some consoles export
        p = path.with_suffix(".png")
        cv2.imwrite(str(p), (full - px).astype(np.uint16))
        return p
    if fmt == "tiff16":
        p = path.with_suffix(".tif")
        cv2.imwrite(str(p), px.astype(np.uint16))
        return p
    kind, mono = fmt[3:].split("_")
    bits = int(kind)
    if bits == 8:
        px = np.rint(px * (255.0 / full)).astype(np.uint8)
        full = 255
    elif bits != img.bits_stored:
        px = np.rint(px * (((1 << bits) - 1) / full)).astype(np.uint16)
        full = (1 << bits) - 1
    if mono == "m1":
        px = full - px
    out = FluoroImage(pixels=px.astype(np.uint8 if bits == 8 else np.uint16),
                      photometric="MONOCHROME1" if mono == "m1" else "MONOCHROME2",
                      pixel_spacing_mm=img.pixel_spacing_mm, sid_mm=img.sid_mm,
                      primary_angle_deg=img.primary_angle_deg, secondary_angle_deg=img.secondary_angle_deg,
                      view=img.view, acquired_at=img.acquired_at, bits_stored=bits,
                      extra={"sod_mm": img.extra.get("sod_mm")})
    return write_dicom_xa(out, path.with_suffix(".dcm"))


def centred_isocentre(scene, view, pose, iso0) -> np.ndarray:
    """The isocentre moved across the beam so that the centroid of the view's cage part lies on the central ray
    (a technician re-centres the C-arm on the cage after angulating)."""
    part = np.concatenate([p.balls_mm for p in scene.cage.planes_for(view)])
    c = (part @ scene.T_world_cage[:3, :3].T + scene.T_world_cage[:3, 3]).mean(0)
    scene.isocentre_mm = np.asarray(iso0, float)
    b = scene.carm_geometry(view, *pose).detector_normal
    d = c - iso0
    return iso0 + d - (d @ b) * b


def build(spec: Spec, out_dir) -> Scenario:
    """Write the cage, shots (and plate shots) of ``spec`` under ``out_dir``; return them with the truth."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    cage_path = d / "cage.json"
    cage_dict, T_file_std = write_cage(spec, cage_path)
    scene = build_scene(spec, cage_dict, T_file_std)
    rng = np.random.default_rng(spec.seed + 17)
    centre = scene.isocentre_mm.copy()
    instruments = clutter_objects(spec.clutter, rng, centre)
    shots = {}
    for v in ("ap", "lat"):
        if spec.centre_views:
            scene.isocentre_mm = centred_isocentre(scene, v, getattr(spec, f"{v}_pose"), centre)
        shots[v] = scene.acquire(v, *getattr(spec, f"{v}_pose"), instruments=instruments)
    paths = {v: write_image(shots[v].image, spec.fmt, d / v) for v in ("ap", "lat")}
    plate_args = []
    scene.isocentre_mm = centre
    if spec.detector == "image_intensifier":
        from resources import path as rpath
        plate_args = ["--plate", str(rpath("plates", "default.json"))]
        for v in ("ap", "lat"):
            if spec.centre_views:
                scene.isocentre_mm = centred_isocentre(scene, v, getattr(spec, f"{v}_pose"), centre)
            ps = scene.plate_shot(v, *getattr(spec, f"{v}_pose"))
            plate_args += [f"--plate-{v}", str(write_image(ps.image, spec.fmt, d / f"plate_{v}"))]
    std = cage_standard(spec)
    targets = sample_targets(spec, std, shots, T_file_std, rng)
    cage = scene.cage
    return Scenario(spec, d, cage_path, paths["ap"], paths["lat"], plate_args, cage, targets,
                    {v: shots[v].project_raw(targets) for v in shots},
                    {v: shots[v].ball_pixels_raw(cage) for v in shots}, shots, instruments)


def view_angle_deg(scenario: Scenario) -> float:
    a = [s.geometry_cage() for s in scenario.shots.values()]
    n = [g.detector_normal for g in a]
    return float(np.degrees(np.arccos(abs(np.dot(n[0], n[1])))))


def clear_balls(scenario: Scenario, view: str) -> dict:
    """Plane id -> bool per ball: its whole shadow in the field, no other ball's shadow within one diameter,
    and no metal clutter darker than 50 % transmission within one shadow radius (truth of "clearly visible")."""
    from core.simulation.fluoro import object_transmission
    shot = scenario.shots[view]
    geo = shot.geometry_world
    trans = object_transmission(scenario.instruments, geo, shot.distortion, 2) if scenario.instruments else None
    uv = scenario.balls_uv[view]
    every = np.concatenate([shot.project_raw(p.balls_mm) for p in scenario.cage.planes])
    out = {}
    for p in scenario.cage.planes:
        dist = np.linalg.norm(p.balls_mm - shot.geometry_cage().source_mm, axis=1)
        r_px = 0.5 * scenario.cage.ball_diameter_mm * geo.source_to_detector_mm / dist / min(geo.pixel_spacing_mm)
        ok = np.isfinite(uv[p.id][:, 0])
        ok[ok] = shot.in_field(uv[p.id][ok], margin_px=0.0)
        for i in np.flatnonzero(ok):
            ok[i] = bool(shot.in_field(uv[p.id][i][None], margin_px=r_px[i] + 1.0)[0])   # whole shadow inside
            if not ok[i]:
                continue
            d = np.linalg.norm(every - uv[p.id][i], axis=1)
            if np.sum(d < 2 * r_px[i]) > 1:
                ok[i] = False
            elif trans is not None:
                u, v = uv[p.id][i]
                r = int(np.ceil(r_px[i]))
                patch = trans[max(int(v) - r, 0):int(v) + r + 2, max(int(u) - r, 0):int(u) + r + 2]
                ok[i] = patch.size == 0 or patch.min() > 0.5
        out[p.id] = ok
    return out
