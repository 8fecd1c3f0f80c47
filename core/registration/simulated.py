"""A simulated CT-to-fluoroscopy case: a pre-op CT, two shots of the same anatomy, the truth.

Independent on purpose from what the registration renders ("not tuned to itself"):
the shots come from the anatomy rasterised at ``room_spacing_mm`` (finer than the
CT's), placed on the OR table at a random pose, through the simulator's full image
formation (μ at the beam's 60 keV with the bone model, Beer-Lambert, Poisson quanta,
detector blur, the cage's steel balls), while the engine renders the CT sampled at
``ct_spacing_mm``, bone only, μ at the CT's 70 keV, noise-free, with no balls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry.rigid import from_rotvec, invert
from core.imaging.volume import Volume
from core.registration.models import pose_delta
from core.registration.views import ShotView, geometry_from_projection

__all__ = ["CtCase", "simulated_ct_case", "random_start"]


@dataclass
class CtCase:
    ct: Volume                     # the pre-op CT in its own (LPS) frame
    views: list                    # [ShotView ap, ShotView lat], geometry in the cage frame
    T_cage_ct: np.ndarray          # the truth
    levels: dict                   # name -> {"centre_ct": (3,), "targets_ct": (2, 3)} (pedicle targets)
    shots: dict                    # view -> SimulatedShot (truth geometry, raw image)


def simulated_ct_case(seed: int, levels=("L2", "L3", "L4"), room_spacing_mm: float = 1.0,
                      ct_spacing_mm: float = 2.0, shape=(512, 512), max_tilt_deg: float = 8.0,
                      max_shift_mm: float = 20.0, orbit_deg: float = 5.0) -> CtCase:
    """Seeded case: patient pose on the table within ±``max_tilt_deg``/±``max_shift_mm``, C-arm
    orbits within ±``orbit_deg``, flat-panel shots of ``shape`` pixels."""
    from core.simulation.phantom import make_spine_phantom
    from core.simulation.scene import SimulatedOR
    rng = np.random.default_rng([7331, seed])
    T_world_ct = from_rotvec(np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, 3)),
                             rng.uniform(-max_shift_mm, max_shift_mm, 3))
    anatomy = make_spine_phantom(seed=seed, spacing_mm=room_spacing_mm, levels=levels).volume
    room = Volume(anatomy.hu, anatomy.spacing_mm, T_world_ct @ anatomy.T_world_voxel)
    orbits = rng.uniform(-orbit_deg, orbit_deg, 4)
    sor = SimulatedOR(seed=seed, phantom=room, detector="flat_panel", shape=shape, render_device="cpu")
    shots = {"ap": sor.acquire("ap", orbits[0], orbits[1]), "lat": sor.acquire("lat", orbits[2], orbits[3])}
    views = []
    front = np.concatenate([pl.balls_mm for pl in sor.cage.planes]).mean(0)      # the cage, in the beam
    for name, shot in shots.items():
        geo = geometry_from_projection(shot.geometry_cage().projection_matrix, shot.geometry_world.shape, front)
        views.append(ShotView.from_raw(name, shot.image.pixels, geo))
    ct_ph = make_spine_phantom(seed=seed, spacing_mm=ct_spacing_mm, levels=levels)
    info = {n: {"centre_ct": ct_ph.levels[n].T_world_vertebra[:3, 3].copy(),
                "targets_ct": np.array([p.target_mm for p in ct_ph.levels[n].pedicles.values()])}
            for n in ct_ph.levels}
    return CtCase(ct_ph.volume, views, invert(sor.T_world_cage) @ T_world_ct, info, shots)


def random_start(T_cage_ct, centre_ct, rng, max_shift_mm: float = 10.0, max_rot_deg: float = 5.0) -> np.ndarray:
    """The truth moved by uniform offsets within ±``max_shift_mm`` and ±``max_rot_deg`` per axis,
    about the level's centre."""
    x = np.concatenate([np.radians(rng.uniform(-max_rot_deg, max_rot_deg, 3)),
                        rng.uniform(-max_shift_mm, max_shift_mm, 3)])
    return np.asarray(T_cage_ct) @ pose_delta(x, centre_ct)
