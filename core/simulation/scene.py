"""The simulated operating room: a prone patient (phantom CT), the cage, and a C-arm.

World frame = the phantom's patient frame (LPS): x to the patient's left, y
posterior (up, the patient lies prone), z superior. The C-arm turns about its
isocentre: at 0°/0° the AP beam runs along +y (source under the table, detector
above the back) and the LAT beam along +x (detector on the patient's left, on the
side of the cage's lateral part). ``primary_deg`` (LAO +/RAO -) turns the C-arm
about the patient's long axis, moving the detector towards the patient's left;
``secondary_deg`` (cranial +/caudal -) tilts the detector towards the head
(DICOM Positioner Primary/Secondary Angle senses, for the detector).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.drr import DrrRenderer, MuGrid
from core.geometry.rigid import invert, make_transform
from core.imaging.fluoro_image import FluoroImage
from core.simulation.distortion import IIDistortion
from core.simulation.fluoro import DetectorModel, form_image
from core.simulation.objects import SceneError, Sphere

VIEWS = ("ap", "lat")
# Base pose per view: beam direction (source -> detector), detector column and row axes, tilt axis.
_BASE = {"ap": (np.array([0, 1.0, 0]), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), np.array([1.0, 0, 0])),
         "lat": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0]), np.array([0, -1.0, 0]))}
# Cage frame (resources/cages/README.md): x towards the lateral part, y along the table, z up.
R_WORLD_CAGE = np.column_stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
AIR_MU_PER_MM = 1e-5  # below this the renderer skips voxels as air


class SceneCancelled(SceneError):
    """The scene's build was abandoned (its ``cancelled`` callable returned True)."""


def _check_cancelled(stop) -> None:
    if stop():
        raise SceneCancelled("the simulated room's build was cancelled")


def _rot(axis, angle) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(np.asarray(axis, float) * angle).as_matrix()


@dataclass
class SimulatedShot:
    """One simulated acquisition with its ground truth."""
    image: FluoroImage
    view: str
    geometry_world: ConeBeamGeometry
    distortion: object | None
    T_world_cage: np.ndarray
    info: dict = field(default_factory=dict)

    def geometry_cage(self) -> ConeBeamGeometry:
        """The ideal pinhole in the cage frame."""
        return self.geometry_world.transformed(invert(self.T_world_cage))

    def project_raw(self, points_cage) -> np.ndarray:
        """True raw pixels (N, 2) of cage-frame points (distortion applied)."""
        uv = self.geometry_cage().project(np.atleast_2d(np.asarray(points_cage, float)))
        return uv if self.distortion is None else self.distortion.ideal_to_raw(uv)

    def in_field(self, uv_raw, margin_px: float = 0.0) -> np.ndarray:
        """True where raw pixels (N, 2) lie on the detector and inside the II's round field."""
        ok = self.geometry_world.contains(uv_raw, margin_px)
        if self.distortion is not None:
            c = np.asarray(self.distortion.centre_px)
            ok &= np.linalg.norm(uv_raw - c, axis=1) <= self.distortion.radius_px - margin_px
        return ok

    def ball_pixels_raw(self, cage) -> dict:
        """Plane id -> (N, 2) raw pixel of each ball centre's projection; NaN outside the field."""
        out = {}
        for plane in cage.planes:
            uv = self.project_raw(plane.balls_mm)
            uv[~self.in_field(uv)] = np.nan
            out[plane.id] = uv
        return out


class SimulatedOR:
    """Phantom, cage and C-arm; ``acquire`` returns what a real C-arm would, plus the truth.

    ``phantom``: a SpinePhantom or a Volume (default: ``make_spine_phantom(seed)``);
    ``cage``: a Cage (default: resources/cages/default.json); ``T_world_cage``
    (default: ``default_T_world_cage``, settable later); ``detector``:
    "image_intensifier" (distortion, round field) or "flat_panel"; ``sid_mm`` and
    ``sod_mm`` (source to isocentre); ``pixel_spacing_mm``: a number or (column,
    row), default field / pixels; ``detector_model`` overrides noise, blur, bits;
    ``render_device``: "auto", "cpu" or "cuda"; ``bowel_gas``: number of gas pockets;
    ``energy_kev``: effective beam energy for HU -> μ (water/bone model; steel balls use
    ``MU_STEEL_PER_MM``, ~60 keV). ``cancelled``: a callable asked between the build's stages
    (phantom, attenuation grid, renderer), each a second or two; when it returns True the
    build stops with ``SceneCancelled``.
    """

    def __init__(self, seed: int = 0, phantom=None, cage=None, T_world_cage=None,
                 detector: str = "image_intensifier", sid_mm: float = 1000.0, sod_mm: float = 625.0,
                 pixel_spacing_mm=None, shape=(512, 512), field_diameter_mm: float = 230.0,
                 isocentre_mm=(0.0, 0.0, 0.0), detector_model: DetectorModel | None = None,
                 render_device: str = "auto", bowel_gas: int = 0, energy_kev: float = 60.0,
                 cancelled=None):
        stop = cancelled or (lambda: False)
        if not (0 < sod_mm < sid_mm):
            raise SceneError(f"need 0 < source-to-isocentre ({sod_mm}) < source-to-detector ({sid_mm}) mm")
        self.seed, self.sid_mm, self.sod_mm = int(seed), float(sid_mm), float(sod_mm)
        self.shape = (int(shape[0]), int(shape[1]))
        self.field_diameter_mm = float(field_diameter_mm)
        ps = self.field_diameter_mm / max(self.shape) if pixel_spacing_mm is None else pixel_spacing_mm
        su, sv = np.broadcast_to(np.asarray(ps, float), (2,))  # a number, or (column, row) spacing
        if not (su > 0 and sv > 0):
            raise SceneError(f"pixel spacing must be positive, got {pixel_spacing_mm}")
        self.pixel_spacing_mm = (float(su), float(sv))
        self.isocentre_mm = np.asarray(isocentre_mm, float)
        self.detector = detector_model or DetectorModel(kind=detector)
        if detector_model is not None and detector_model.kind != detector and detector != "image_intensifier":
            raise SceneError("detector and detector_model.kind disagree")
        _check_cancelled(stop)
        self.volume = self._volume(phantom, seed)
        _check_cancelled(stop)
        self.cage = self._cage(cage)
        self.energy_kev = float(energy_kev)
        mu = MuGrid.from_volume(self.volume, self.energy_kev)
        _check_cancelled(stop)
        self.renderer = DrrRenderer(mu, render_device, air_mu=AIR_MU_PER_MM)
        self.T_world_cage = (default_T_world_cage(self.volume, self.cage) if T_world_cage is None
                             else np.asarray(T_world_cage, float))
        self.gas = bowel_gas_blobs(self.volume, bowel_gas, seed, self.energy_kev)
        self._shots = 0

    @staticmethod
    def _volume(phantom, seed):
        if phantom is None:
            from core.simulation.phantom import make_spine_phantom  # lazy: only when no phantom is given
            phantom = make_spine_phantom(seed=seed)
        return getattr(phantom, "volume", phantom)

    @staticmethod
    def _cage(cage):
        if cage is None:
            from core.calibration.cage import load_cage
            from resources import path
            return load_cage(path("cages", "default.json"))
        return cage

    def carm_geometry(self, view: str, primary_deg: float = 0.0, secondary_deg: float = 0.0) -> ConeBeamGeometry:
        """Ideal pinhole of the C-arm in the world frame at this view and orbit."""
        return carm_geometry(view, primary_deg, secondary_deg, self.isocentre_mm, self.sid_mm, self.sod_mm,
                             self.pixel_spacing_mm, self.shape)

    def distortion_for(self, view: str, primary_deg: float = 0.0, secondary_deg: float = 0.0):
        """The II distortion at this pose (None for a flat panel)."""
        if self.detector.kind != "image_intensifier":
            return None
        rows, cols = self.shape
        radius = 0.5 * self.field_diameter_mm / self.pixel_spacing_mm[0]
        radius = min(radius, 0.5 * min(rows, cols))
        return IIDistortion.for_pose(((cols - 1) / 2, (rows - 1) / 2), radius, primary_deg, secondary_deg,
                                     seed=self.seed + (0 if view == "ap" else 7919))

    def cage_objects(self) -> list:
        r = 0.5 * self.cage.ball_diameter_mm
        balls = np.concatenate([p.balls_mm for p in self.cage.planes])
        world = balls @ self.T_world_cage[:3, :3].T + self.T_world_cage[:3, 3]
        return [Sphere(c, r) for c in world]

    def acquire(self, view: str, primary_deg: float = 0.0, secondary_deg: float = 0.0, with_cage: bool = True,
                instruments=(), seed: int | None = None) -> SimulatedShot:
        """One shot: raw image with DICOM-like metadata, and the ground truth geometry."""
        geo = self.carm_geometry(view, primary_deg, secondary_deg)
        dist = self.distortion_for(view, primary_deg, secondary_deg)
        objects = (self.cage_objects() if with_cage else []) + list(self.gas) + list(instruments)
        if seed is None:
            seed = self.seed * 100003 + self._shots
        self._shots += 1
        drr = self.renderer.render(geo)
        pixels, info = form_image(drr, geo, objects, dist, self.detector, np.random.default_rng(seed))
        img = self.fluoro_image(pixels, view, primary_deg, secondary_deg, "simulated C-arm",
                                {"noise_seed": seed, **info})
        return SimulatedShot(img, view, geo, dist, self.T_world_cage.copy(), info)

    def fluoro_image(self, pixels, view: str, primary_deg: float, secondary_deg: float, source: str,
                     extra: dict) -> FluoroImage:
        """A shot's pixels as the C-arm delivers them: its geometry tags, now as the acquisition
        time, and ``extra`` after the detector's own tags."""
        return FluoroImage(pixels=pixels, photometric="MONOCHROME2", pixel_spacing_mm=self.pixel_spacing_mm,
                           sid_mm=self.sid_mm, primary_angle_deg=float(primary_deg),
                           secondary_angle_deg=float(secondary_deg), view=view,
                           acquired_at=_dt.datetime.now(_dt.timezone.utc), source=source,
                           bits_stored=self.detector.bits_stored,
                           extra={"sod_mm": self.sod_mm, "detector": self.detector.kind, "simulated": True, **extra})

    def plate_shot(self, view: str, primary_deg: float = 0.0, secondary_deg: float = 0.0, **kwargs):
        """The distortion plate on the detector at this pose (see ``core.simulation.plate``)."""
        from core.simulation.plate import plate_shot
        return plate_shot(self, view, primary_deg, secondary_deg, **kwargs)


def carm_geometry(view: str, primary_deg: float, secondary_deg: float, isocentre_mm, sid_mm: float,
                  sod_mm: float, pixel_spacing_mm, shape) -> ConeBeamGeometry:
    """The C-arm's pinhole in the world frame (module docstring: views and angle senses)."""
    if view not in VIEWS:
        raise SceneError(f"view must be 'ap' or 'lat', got {view!r}")
    if not (abs(primary_deg) <= 120 and abs(secondary_deg) <= 60):
        raise SceneError("C-arm angles out of range: primary within ±120°, secondary within ±60°")
    beam, u, v, tilt = _BASE[view]
    R = _rot([0, 0, -1.0], math.radians(primary_deg)) @ _rot(tilt, math.radians(secondary_deg))
    b, u, v = R @ beam, R @ u, R @ v
    iso = np.asarray(isocentre_mm, float)
    source = iso - sod_mm * b
    centre = iso + (sid_mm - sod_mm) * b
    rows, cols = shape
    su, sv = pixel_spacing_mm
    origin = centre - (cols - 1) / 2 * su * u - (rows - 1) / 2 * sv * v
    return ConeBeamGeometry(source, origin, u, v, (su, sv), (rows, cols))


def bowel_gas_blobs(volume, count: int, seed: int, energy_kev: float = 70.0) -> list:
    """``count`` seeded gas pockets (spheres of negative attenuation) in the soft tissue in front of the spine.

    Each removes the attenuation of the tissue it replaces (μ from the HU at its centre).
    """
    if count < 0:
        raise SceneError(f"bowel_gas must be a count >= 0, got {count}")
    rng = np.random.default_rng(10007 + seed)
    out, tries = [], 0
    while len(out) < count and tries < 200 * max(count, 1):
        tries += 1
        c = rng.uniform([-110, -140, -120], [110, -50, 120])
        r = rng.uniform(8, 22)
        hu = volume.sample(np.array([c, c + [r, 0, 0], c - [r, 0, 0], c + [0, r, 0], c - [0, r, 0]]))
        if np.all((hu > -200) & (hu < 150)):  # entirely within soft tissue
            out.append(Sphere(c, r, -_mu_soft(float(np.mean(hu)), energy_kev)))
    return out


def _mu_soft(hu: float, energy_kev: float) -> float:
    from core.imaging.volume import mu_water
    return mu_water(energy_kev) * (1 + hu / 1000.0)


def body_extent(volume, hu_threshold: float = -500.0) -> tuple[np.ndarray, np.ndarray]:
    """World (min, max) corners of the voxels denser than ``hu_threshold`` (the skin's box)."""
    solid = volume.hu > hu_threshold
    if not solid.any():
        raise SceneError("the phantom has no tissue denser than air")
    ks, js, is_ = (np.flatnonzero(solid.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    corners = np.array([[i, j, k] for i in (is_[0], is_[-1]) for j in (js[0], js[-1]) for k in (ks[0], ks[-1])], float)
    w = corners @ volume.T_world_voxel[:3, :3].T + volume.T_world_voxel[:3, 3]
    return w.min(0), w.max(0)


def default_T_world_cage(volume, cage, clearance_mm: float = 30.0) -> np.ndarray:
    """Cage pose a technician would choose: AP part above the back, lateral part beside the patient.

    The AP layers sit ``clearance_mm`` above the skin (world +y), the lateral layers
    ``clearance_mm`` beyond the patient's left flank (world +x), centred on the isocentre's z.
    """
    lo, hi = body_extent(volume)
    ap = np.concatenate([p.balls_mm for p in cage.planes_for("ap")]) @ R_WORLD_CAGE.T
    lat = np.concatenate([p.balls_mm for p in cage.planes_for("lat")]) @ R_WORLD_CAGE.T
    t = np.zeros(3)
    t[1] = hi[1] + clearance_mm - ap[:, 1].min()
    t[0] = max(hi[0] + clearance_mm - lat[:, 0].min(), 0.0)
    t[2] = -0.5 * (ap[:, 2].min() + ap[:, 2].max())
    return make_transform(R_WORLD_CAGE, t)
