"""Plate shots: the distortion-calibration bead plate attached to the detector face.

The plate's plane is parallel to the detector, ``gap_mm`` in front of it (towards
the source); plate x, y run along the detector's columns and rows with the plate
origin on the detector centre. Its steel balls are rendered exactly like the
cage's (analytic chords, supersampled, distorted by the II); no patient.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.imaging.fluoro_image import FluoroImage
from core.simulation.fluoro import form_image
from core.simulation.objects import SceneError, Sphere


@dataclass
class PlateShot:
    """A plate image and its truth: ball centres in ideal and raw pixels (NaN outside the field)."""
    image: FluoroImage
    view: str
    geometry_world: ConeBeamGeometry
    distortion: object | None
    balls_plate_mm: np.ndarray
    balls_world_mm: np.ndarray
    balls_ideal_px: np.ndarray
    balls_raw_px: np.ndarray


def load_default_plate():
    """The plate file ``resources/plates/default.json`` (via core.calibration.plate when present)."""
    from resources import path
    try:
        from core.calibration.plate import load_plate
    except ImportError:
        d = json.loads(path("plates", "default.json").read_text())
        return np.asarray(d["balls_mm"], float), float(d["ball_diameter_mm"])
    p = load_plate(path("plates", "default.json"))
    return np.asarray(p.balls_mm, float), float(p.ball_diameter_mm)


def plate_balls_world(geometry: ConeBeamGeometry, balls_mm, gap_mm: float) -> np.ndarray:
    """World centres (N, 3) of plate balls (N, 2) on a plane ``gap_mm`` in front of the detector."""
    rows, cols = geometry.shape
    centre = geometry.pixel_to_detector_mm(np.array([(cols - 1) / 2, (rows - 1) / 2]))
    b = np.asarray(balls_mm, float)
    return (centre + gap_mm * geometry.detector_normal + np.outer(b[:, 0], geometry.detector_u)
            + np.outer(b[:, 1], geometry.detector_v))


def plate_shot(scene, view: str, primary_deg: float = 0.0, secondary_deg: float = 0.0, plate=None,
               gap_mm: float = 15.0, seed: int | None = None) -> PlateShot:
    """Shoot the bead plate on ``scene``'s C-arm (a ``SimulatedOR``) at a pose; ``plate``: (balls (N,2), diameter)."""
    if not (0 < gap_mm < 0.5 * scene.sid_mm):
        raise SceneError(f"plate gap must be between 0 and half the SID, got {gap_mm} mm")
    balls, diameter = load_default_plate() if plate is None else plate
    balls = np.asarray(balls, float)
    if balls.ndim != 2 or balls.shape[1] != 2 or len(balls) < 4:
        raise SceneError("plate balls must be (N, 2) with N >= 4")
    geo = scene.carm_geometry(view, primary_deg, secondary_deg)
    dist = scene.distortion_for(view, primary_deg, secondary_deg)
    world = plate_balls_world(geo, balls, gap_mm)
    objects = [Sphere(c, 0.5 * diameter) for c in world]
    rng = np.random.default_rng(scene.seed * 7 + 1 if seed is None else seed)
    pixels, info = form_image(np.zeros(geo.shape, np.float32), geo, objects, dist, scene.detector, rng)
    ideal = geo.project(world)
    raw = ideal if dist is None else dist.ideal_to_raw(ideal)
    inside = geo.contains(raw)
    if dist is not None:
        inside &= np.linalg.norm(raw - np.asarray(dist.centre_px), axis=1) <= dist.radius_px
    raw = np.where(inside[:, None], raw, np.nan)
    img = scene.fluoro_image(pixels, view, primary_deg, secondary_deg, "simulated C-arm, plate",
                             {"plate_gap_mm": gap_mm, **info})
    return PlateShot(img, view, geo, dist, balls, world, ideal, raw)
