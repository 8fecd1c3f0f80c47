"""Cheap simulated verification shots for the tool-line and verification tests (test helper).

A small spine phantom (L3-L4 on a 2 mm grid), 256 x 256 shots with the image intensifier's
distortion or a flat panel, the cage in place, a K-wire (and optionally the guide tube and other
metal) from the simulator's public API; the truth calibration is the simulator's true geometry.
Scenes are cached per process: the tool-line and verification tests share them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.geometry.rigid import invert
from core.simulation.instruments import GuideTube, KWire, deviated_wire
from core.simulation.objects import MU_TITANIUM_PER_MM, Cylinder
from core.simulation.scene import SimulatedOR
from core.simulation.truth_calibration import TruthCalibration

SHAPE = (256, 256)


@lru_cache(maxsize=1)
def phantom():
    from core.simulation.phantom import make_spine_phantom
    return make_spine_phantom(spacing_mm=2.0, levels=("L3", "L4"))


@lru_cache(maxsize=2)
def room(detector: str) -> SimulatedOR:
    return SimulatedOR(seed=3, phantom=phantom(), shape=SHAPE, detector=detector, render_device="cpu")


def to_cage(sim, p):
    T = invert(sim.T_world_cage)
    return T[:3, :3] @ np.asarray(p, float) + T[:3, 3]


@dataclass
class Case:
    sim: SimulatedOR
    shots: dict                 # view -> SimulatedShot
    calibration: TruthCalibration
    wire_world: KWire
    wire: KWire                 # in the cage frame
    plan_entry: np.ndarray      # cage frame
    plan_target: np.ndarray
    pedicle: object
    poses: dict

    def truth_raw(self, view, n=4000):
        """True raw pixels of the wire's axis (n, 2) from its back to its tip."""
        return self.shots[view].project_raw(np.linspace(self.wire.back_mm, self.wire.tip_mm, n))


def make_case(detector="image_intensifier", level="L4", side="left", offset_mm=1.0, angle_deg=2.0,
              depth_mm=1.5, tip="sharp", guide=False, clutter="", poses=None, wire_world=None,
              seed: int = 11) -> Case:
    sim = room(detector)
    ped = phantom().pedicle(level, side)
    if wire_world is None:
        wire_world = deviated_wire(ped.entry_mm, ped.target_mm, offset_mm, angle_deg, depth_mm,
                                   offset_azimuth_rad=0.7, tilt_azimuth_rad=2.0, tip=tip)
    instruments = [wire_world]
    if guide:
        instruments += GuideTube(ped.entry_mm, ped.target_mm, standoff_mm=30.0).attenuators()
    if clutter:   # a titanium screw in the other pedicle (of this level: under the wire in LAT) and a stray wire
        other = phantom().pedicle(level if clutter == "same level" else ("L3" if level == "L4" else "L4"),
                                  "right" if side == "left" else "left")
        instruments.append(Cylinder(other.entry_mm, other.target_mm, 3.0, MU_TITANIUM_PER_MM))
        instruments.append(KWire([-60.0, 60.0, -70.0], [40.0, 30.0, 50.0], 1.6, 0.0, "flat"))
    poses = poses or {"ap": (0.0, 0.0), "lat": (0.0, 0.0)}
    shots = {v: sim.acquire(v, *poses[v], instruments=instruments, seed=seed + i) for i, v in enumerate(("ap", "lat"))}
    return Case(sim, shots, TruthCalibration(shots), wire_world, wire_world.in_frame(invert(sim.T_world_cage)),
                to_cage(sim, ped.entry_mm), to_cage(sim, ped.target_mm), ped, poses)


@lru_cache(maxsize=8)
def cached_case(**kw) -> Case:
    return make_case(**kw)
