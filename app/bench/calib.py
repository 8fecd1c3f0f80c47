"""``fluoronav bench calib``: cage calibration accuracy on seeded simulated operating rooms.

Scenarios: an image intensifier (pose-dependent distortion, round field, plate
shots) and a flat panel, each with the spine phantom, a K-wire and screws in
view, random C-arm orbits (±8°) per seed. For every method the figures are:
``locate_rms_mm`` / ``locate_max_mm`` (two-view triangulation of targets 90-220 mm
from the cage planes, against the true projections), ``reproj_rms_px``
(projection of the same targets into both raw images), ``balls_matched_fraction``
(matched / balls whose centre is in the field), ``wrong_matches`` (matched more
than 1 px from the truth), ``seconds_per_pair`` (detection to both models, AP+LAT;
wall clock, and process CPU time as ``cpu_seconds_per_pair``). A ball counts as
visible when its whole shadow is inside the field and clear of the instruments'.
Methods: ``3d2d`` (the default) and ``2d2d`` with the best held-out distortion
model, and the baseline in the same run, ``paper``: the robot paper's choice,
2D-2D with the local per-cell (linear) distortion correction. With ``--samples`` the same
figures for shots of another simulator (``samples_ii``, ``samples_flat``: the
calibration-samples folder, its truth.json as ground truth; a ball counts as
visible when that truth lists it in the field).
"""
from __future__ import annotations

import time

import numpy as np

DESCRIPTION = "cage calibration on simulated shots: locate/reprojection error, matching, speed"


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="scenes per detector (seeded)")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (square)")
    parser.add_argument("--detectors", default="image_intensifier,flat_panel",
                        help="comma-separated: image_intensifier, flat_panel")
    parser.add_argument("--samples", default="auto",
                        help="folder of shots from another simulator (calibration-samples: per sample ap.dcm, "
                             "lat.dcm, cage.json, truth.json, optional plate); 'auto': ../shared/calibration-samples "
                             "beside the checkout if present; 'none' to skip")


def _instruments(T_world_cage, rng):
    """A K-wire and two pedicle-screw-like cylinders near the spine (world frame)."""
    from core.simulation.objects import Cylinder
    c = T_world_cage[:3, 3] * 0 + np.array([0.0, 0.0, 0.0])
    out = [Cylinder(c + [-20, 80, -30], c + [10, -40, 20] + rng.uniform(-10, 10, 3), 0.8)]
    for s in (-1, 1):
        p0 = c + [s * 25, 60, rng.uniform(-40, 40)]
        out.append(Cylinder(p0, p0 + [s * -15, -45, 0], 3.0))
    return out


def _targets(shots, rng, n=200):
    """Cage-frame points 90-220 mm from every cage plane and inside both fields."""
    cage_planes = shots["cage"].planes
    pts = []
    T = np.linalg.inv(shots["ap"].T_world_cage)
    while len(pts) < n:
        w = rng.uniform(-60, 60, (4 * n, 3))
        X = w @ T[:3, :3].T + T[:3, 3]
        d = np.min(np.stack([np.abs((X - p.origin_mm) @ p.normal) for p in cage_planes]), axis=0)
        dmax = np.max(np.stack([np.abs((X - p.origin_mm) @ p.normal) for p in cage_planes
                                if p.view == "ap"] + [np.abs((X - p.origin_mm) @ p.normal)
                                                      for p in cage_planes if p.view == "lat"]), axis=0)
        ok = (d >= 90) & (dmax <= 220)
        for v in ("ap", "lat"):
            ok &= shots[v].in_field(shots[v].project_raw(X), margin_px=10)
        pts.extend(X[ok])
    return np.array(pts[:n])


def _occluded(shot, cage, instruments):
    """Plane id -> (N,) True where an instrument's shadow covers the ball's shadow (the ray
    to the ball centre passes within one ball radius of the instrument): not visible."""
    from core.simulation.objects import Cylinder
    geo = shot.geometry_world
    r = 0.5 * cage.ball_diameter_mm
    fat = [Cylinder(c.p0_mm, c.p1_mm, c.radius_mm + r) for c in instruments]
    out = {}
    for plane in cage.planes:
        w = plane.balls_mm @ shot.T_world_cage[:3, :3].T + shot.T_world_cage[:3, 3]
        dirs = w - geo.source_mm
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        out[plane.id] = np.any([c.chords(geo.source_mm, dirs) > 0 for c in fat], axis=0) if fat else \
            np.zeros(len(w), bool)
    return out


def _scene(detector, seed, size):
    from core.simulation.scene import SimulatedOR
    rng = np.random.default_rng(1000 + seed)
    sc = SimulatedOR(seed=seed, detector=detector, shape=(size, size))
    inst = _instruments(sc.T_world_cage, rng)
    shots, plates = {"cage": sc.cage, "instruments": inst}, {}
    for v in ("ap", "lat"):
        ang = tuple(rng.uniform(-8, 8, 2))
        shots[v] = sc.acquire(v, *ang, instruments=inst)
        if detector == "image_intensifier":
            plates[v] = sc.plate_shot(v, *ang).image.display()
    return shots, plates, rng


def _evaluate(cal, shots, X):
    uv = {v: shots[v].project_raw(X) for v in ("ap", "lat")}
    P, gap = cal.locate_many(uv["ap"], uv["lat"])
    e = np.linalg.norm(P - X, axis=1)
    pr = cal.project(X)
    pe = np.concatenate([np.linalg.norm(pr[v] - uv[v], axis=1) for v in uv])
    matched = visible = wrong = 0
    for v, vc in cal.views.items():
        truth = shots[v].ball_pixels_raw(shots["cage"])
        hidden = _occluded(shots[v], shots["cage"], shots["instruments"])
        r_px = np.median(vc.figures.get("ball_radius_px", [5.0]))
        for pf in vc.planes:
            t = truth[pf.plane_id]
            # visible: the whole ball inside the field, its shadow clear of instruments
            vis = np.isfinite(t[:, 0]) & ~hidden[pf.plane_id]
            vis[vis] &= shots[v].in_field(t[vis], margin_px=r_px + 1)
            visible += int(vis.sum())
            err = np.linalg.norm(t[pf.ball_idx] - pf.uv_raw, axis=1)
            wrong += int(np.sum(~(err < 1.0)))
            matched += int(np.sum((err < 1.0) & vis[pf.ball_idx]))
    return e, gap, pe, matched, visible, wrong


def _run_scene(detector, seed, size, acc):
    from core.calibration import calibrate
    from core.calibration.plate import load_plate, plate_distortion
    from resources import path
    shots, plates, rng = _scene(detector, seed, size)
    images = {v: shots[v].image.display() for v in ("ap", "lat")}
    plate = load_plate(path("plates", "default.json"))
    variants = {"best": {}, "paper": {}}
    for v, img in plates.items():
        variants["best"][v], _ = plate_distortion(plate, img, 1)
        variants["paper"][v], _ = plate_distortion(plate, img, 1, model="local_linear")
    X = _targets(shots, rng)
    for name, dist in variants.items():
        t0, c0 = time.perf_counter(), time.process_time()
        cal = calibrate(shots["cage"], images, dist, polarity={"ap": 1, "lat": 1})
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        methods = ("3d2d", "2d2d") if name == "best" else ("2d2d",)
        for m in methods:
            key = m if name == "best" else "paper"
            e, gap, pe, matched, visible, wrong = _evaluate(cal.with_method(m), shots, X)
            a = acc.setdefault(detector, {}).setdefault(key, {"e": [], "gap": [], "pe": [], "m": 0, "v": 0,
                                                              "w": 0, "t": [], "c": []})
            a["e"].append(e), a["gap"].append(gap), a["pe"].append(pe), a["t"].append(dt), a["c"].append(dc)
            a["m"] += matched
            a["v"] += visible
            a["w"] += wrong


def _samples_dir(arg):
    from pathlib import Path
    if arg == "none":
        return None
    if arg == "auto":
        d = Path(__file__).resolve().parents[2].parent / "shared" / "calibration-samples"
        return d if d.is_dir() else None
    return Path(arg)


def _run_sample(d, acc):
    """One sample of another simulator through the same models as the scenes; its truth gives the
    targets (cage frame and raw pixels) and each ball's raw pixel centre (``balls_px``)."""
    import json
    from app.commands.calibrate import read_shot
    from core.calibration import calibrate
    from core.calibration.cage import load_cage
    from core.calibration.plate import load_plate, plate_distortion
    truth = json.loads((d / "truth.json").read_text())
    cage = load_cage(d / "cage.json")
    shots = {v: read_shot(d / f"{v}.dcm", v.upper()) for v in ("ap", "lat")}
    variants = {"best": {}, "paper": {}}
    if (d / "plate.json").exists():
        plate = load_plate(d / "plate.json")
        for v in ("ap", "lat"):
            img, pol = read_shot(d / f"plate_{v}.dcm", f"{v.upper()} plate")
            variants["best"][v], _ = plate_distortion(plate, img, pol)
            variants["paper"][v], _ = plate_distortion(plate, img, pol, model="local_linear")
    kind = "samples_ii" if d.name.startswith("ii") else "samples_flat"
    X = np.asarray(truth["targets_mm"], float)
    uv = {v: np.asarray(truth["targets_px"][v], float) for v in ("ap", "lat")}
    offsets = np.cumsum([0] + [p.n_balls for p in cage.planes])
    for name, dist in variants.items():
        t0, c0 = time.perf_counter(), time.process_time()
        cal = calibrate(cage, {v: s[0] for v, s in shots.items()}, dist, polarity={v: s[1] for v, s in shots.items()})
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        for m in (("3d2d", "2d2d") if name == "best" else ("2d2d",)):
            c = cal.with_method(m)
            P, gap = c.locate_many(uv["ap"], uv["lat"])
            pr = c.project(X)
            matched = visible = wrong = 0
            for v, vc in c.views.items():
                balls = {int(i): (u, w) for i, u, w in truth["balls_px"][v]}
                visible += len(balls)
                for pf in vc.planes:
                    k = [p.id for p in cage.planes].index(pf.plane_id)
                    for b, q in zip(pf.ball_idx, pf.uv_raw):
                        t = balls.get(int(offsets[k] + b))
                        ok = t is not None and np.hypot(q[0] - t[0], q[1] - t[1]) < 1.0
                        matched += int(ok)
                        wrong += int(not ok)
            a = acc.setdefault(kind, {}).setdefault(m if name == "best" else "paper",
                                                    {"e": [], "gap": [], "pe": [], "m": 0, "v": 0, "w": 0,
                                                     "t": [], "c": []})
            a["e"].append(np.linalg.norm(P - X, axis=1)), a["gap"].append(gap)
            a["pe"].append(np.concatenate([np.linalg.norm(pr[v] - uv[v], axis=1) for v in uv]))
            a["t"].append(dt), a["c"].append(dc)
            a["m"] += matched
            a["v"] += visible
            a["w"] += wrong


def run(args) -> dict:
    acc = {}
    for detector in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        for seed in range(args.seeds):
            _run_scene(detector, seed, args.size, acc)
    samples = _samples_dir(getattr(args, "samples", "none"))
    n_samples = 0
    if samples is not None:
        for d in sorted(p.parent for p in samples.glob("*/truth.json")):
            _run_sample(d, acc)
            n_samples += 1
    out = {"image_px": args.size, "seeds": args.seeds, "samples": n_samples}
    for det, methods in acc.items():
        for m, a in methods.items():
            e, pe = np.concatenate(a["e"]), np.concatenate(a["pe"])
            p = f"{det}.{m}."
            out[p + "locate_rms_mm"] = float(np.sqrt(np.mean(e ** 2)))
            out[p + "locate_max_mm"] = float(e.max())
            out[p + "ray_gap_median_mm"] = float(np.median(np.concatenate(a["gap"])))
            out[p + "reproj_rms_px"] = float(np.sqrt(np.mean(pe ** 2)))
            out[p + "balls_matched_fraction"] = a["m"] / max(a["v"], 1)
            out[p + "wrong_matches"] = a["w"]
            out[p + "seconds_per_pair"] = float(np.median(a["t"]))
            out[p + "cpu_seconds_per_pair"] = float(np.median(a["c"]))   # less sensitive to machine load
    return out
