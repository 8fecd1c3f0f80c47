"""Instruments in the simulated shots: a K-wire and a tool guide tube, with their exact truth.

Both are analytic attenuators for ``SimulatedOR.acquire(..., instruments=[...])``: each ray's
steel chord is computed exactly (``core.simulation.objects``), so the wire's true axis and tip
are known to the micrometre and a detector can be checked against them. World frame (mm) as
the scene's; ``in_frame`` re-expresses an instrument in another frame (e.g. the cage's).

- ``KWire``: a steel wire (default 2.0 mm) from a point ``outside_mm`` behind the entry,
  through the entry, to its tip; the tip is ``"sharp"`` (a cone of ``tip_length_mm``, apex
  at ``tip_mm``) or ``"flat"`` (cut square at ``tip_mm``).
- ``GuideTube``: a hollow tube (default 8 mm outer / 2.5 mm inner, 60 mm, steel) on an axis,
  its front end ``standoff_mm`` before the entry (the robot's tool guide above the skin).
- ``deviated_wire``: a wire placed with a known deviation from a plan (offset at the entry,
  tilt, depth error), for verification tests (issue 12: "within 0.2 mm of the truth").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.simulation.objects import (MU_STEEL_PER_MM, MU_TITANIUM_PER_MM, Cylinder, Frustum, SceneError,
                                     _vec3)

__all__ = ["KWire", "GuideTube", "deviated_wire", "attenuators", "MU_STEEL_PER_MM", "MU_TITANIUM_PER_MM"]

TIPS = ("sharp", "flat")


def _unit(v, what):
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise SceneError(f"{what}: the two points coincide, give a direction")
    return np.asarray(v, float) / n


def _apply(T, p):
    T = np.asarray(T, float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise SceneError("a frame change must be a finite 4x4 transform")
    return T[:3, :3] @ p + T[:3, 3]


@dataclass(frozen=True)
class KWire:
    """A K-wire through ``entry_mm`` to ``tip_mm`` (module docstring); also an attenuator itself."""
    entry_mm: np.ndarray
    tip_mm: np.ndarray
    diameter_mm: float = 2.0
    outside_mm: float = 100.0
    tip: str = "sharp"
    tip_length_mm: float | None = None       # sharp tip's cone length; default 1.5 diameters
    mu_per_mm: float = MU_STEEL_PER_MM

    def __post_init__(self):
        object.__setattr__(self, "entry_mm", _vec3(self.entry_mm, "K-wire entry"))
        object.__setattr__(self, "tip_mm", _vec3(self.tip_mm, "K-wire tip"))
        if not (math.isfinite(self.diameter_mm) and 0.3 <= self.diameter_mm <= 6.0):
            raise SceneError(f"K-wire diameter must be 0.3-6 mm, got {self.diameter_mm}")
        if not (math.isfinite(self.outside_mm) and self.outside_mm >= 0):
            raise SceneError(f"K-wire length outside the entry must be >= 0 mm, got {self.outside_mm}")
        if self.tip not in TIPS:
            raise SceneError(f"K-wire tip must be one of {TIPS}, got {self.tip!r}")
        _unit(self.tip_mm - self.entry_mm, "K-wire entry and tip")
        if self.tip_length_mm is None:
            object.__setattr__(self, "tip_length_mm", 1.5 * float(self.diameter_mm))
        if not (0 < self.tip_length_mm < self.length_mm):
            raise SceneError(f"K-wire tip length must be between 0 and the wire's length, got {self.tip_length_mm}")

    @property
    def axis(self) -> np.ndarray:
        """Unit direction from the entry toward the tip."""
        return _unit(self.tip_mm - self.entry_mm, "K-wire entry and tip")

    @property
    def back_mm(self) -> np.ndarray:
        """The wire's outer end, ``outside_mm`` behind the entry."""
        return self.entry_mm - self.outside_mm * self.axis

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.tip_mm - self.entry_mm)) + float(self.outside_mm)

    def parts(self) -> list:
        r = 0.5 * float(self.diameter_mm)
        if self.tip == "flat":
            return [Cylinder(self.back_mm, self.tip_mm, r, self.mu_per_mm)]
        base = self.tip_mm - self.tip_length_mm * self.axis
        return [Cylinder(self.back_mm, base, r, self.mu_per_mm), Frustum(base, self.tip_mm, r, 0.0, self.mu_per_mm)]

    def attenuators(self) -> list:
        return self.parts()

    # the attenuator interface (core.simulation.fluoro.object_transmission): the parts share
    # one material and touch without a gap, so their chords add to the whole wire's
    def chords(self, source, dirs) -> np.ndarray:
        return sum(p.chords(source, dirs) for p in self.parts())

    def bounding_points(self) -> np.ndarray:
        return np.linspace(self.back_mm, self.tip_mm, 17)

    @property
    def reach_mm(self) -> float:
        return 0.5 * float(self.diameter_mm)

    def in_frame(self, T_a_b) -> "KWire":
        """This wire (given in frame b) in frame a."""
        return KWire(_apply(T_a_b, self.entry_mm), _apply(T_a_b, self.tip_mm), self.diameter_mm,
                     self.outside_mm, self.tip, self.tip_length_mm, self.mu_per_mm)


@dataclass(frozen=True)
class GuideTube:
    """A hollow tool guide on the axis ``entry_mm`` -> ``target_mm``, ending ``standoff_mm``
    before the entry; ``length_mm`` long back from there (module docstring)."""
    entry_mm: np.ndarray
    target_mm: np.ndarray
    outer_diameter_mm: float = 8.0
    inner_diameter_mm: float = 2.5
    length_mm: float = 60.0
    standoff_mm: float = 30.0
    mu_per_mm: float = MU_STEEL_PER_MM

    def __post_init__(self):
        object.__setattr__(self, "entry_mm", _vec3(self.entry_mm, "guide entry"))
        object.__setattr__(self, "target_mm", _vec3(self.target_mm, "guide target"))
        _unit(self.target_mm - self.entry_mm, "guide entry and target")
        if not (0 < self.inner_diameter_mm < self.outer_diameter_mm <= 30.0):
            raise SceneError("guide tube needs 0 < inner < outer diameter <= 30 mm, got "
                             f"{self.inner_diameter_mm} / {self.outer_diameter_mm}")
        if not (self.length_mm > 0 and self.standoff_mm >= 0):
            raise SceneError(f"guide tube length must be > 0 and stand-off >= 0 mm, got "
                             f"{self.length_mm}, {self.standoff_mm}")

    @property
    def axis(self) -> np.ndarray:
        return _unit(self.target_mm - self.entry_mm, "guide entry and target")

    @property
    def front_mm(self) -> np.ndarray:
        """Centre of the tube's front (patient-side) end."""
        return self.entry_mm - self.standoff_mm * self.axis

    @property
    def back_mm(self) -> np.ndarray:
        return self.front_mm - self.length_mm * self.axis

    def attenuators(self) -> list:
        """The outer cylinder and the lumen as a cylinder of negative attenuation: chords add, so
        the sum is the tube's exact wall chord, and each outline gets its own edge supersampling."""
        return [Cylinder(self.back_mm, self.front_mm, 0.5 * self.outer_diameter_mm, self.mu_per_mm),
                Cylinder(self.back_mm, self.front_mm, 0.5 * self.inner_diameter_mm, -self.mu_per_mm)]

    def chords(self, source, dirs) -> np.ndarray:
        outer, lumen = self.attenuators()
        return outer.chords(source, dirs) - lumen.chords(source, dirs)

    def bounding_points(self) -> np.ndarray:
        return np.linspace(self.back_mm, self.front_mm, 9)

    @property
    def reach_mm(self) -> float:
        return 0.5 * self.outer_diameter_mm

    def in_frame(self, T_a_b) -> "GuideTube":
        return GuideTube(_apply(T_a_b, self.entry_mm), _apply(T_a_b, self.target_mm), self.outer_diameter_mm,
                         self.inner_diameter_mm, self.length_mm, self.standoff_mm, self.mu_per_mm)


def attenuators(instruments) -> list:
    """Flat list of analytic attenuators for ``SimulatedOR.acquire(instruments=...)``."""
    out = []
    for item in instruments:
        out.extend(item.attenuators() if hasattr(item, "attenuators") else [item])
    return out


def _perpendicular(axis, azimuth_rad):
    """A unit vector perpendicular to ``axis`` at ``azimuth_rad`` about it (0: the one nearest
    world +x, or +y when the axis is nearly along x)."""
    ref = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = ref - (ref @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    return math.cos(azimuth_rad) * e1 + math.sin(azimuth_rad) * e2


def deviated_wire(plan_entry_mm, plan_target_mm, entry_offset_mm: float = 0.0, angle_deg: float = 0.0,
                  depth_mm: float = 0.0, offset_azimuth_rad: float = 0.0, tilt_azimuth_rad: float = 0.0,
                  **wire) -> KWire:
    """A K-wire whose axis passes ``entry_offset_mm`` from the planned entry (perpendicular to the
    plan, at ``offset_azimuth_rad``), tilted ``angle_deg`` from the plan (about a perpendicular at
    ``tilt_azimuth_rad``), its tip ``depth_mm`` beyond the planned target's depth along its own axis.
    The wire's ``entry_mm`` is its point in the plane through the planned entry perpendicular to the
    plan; ``wire`` goes to ``KWire`` (diameter, tip, ...)."""
    e, t = _vec3(plan_entry_mm, "plan entry"), _vec3(plan_target_mm, "plan target")
    a = _unit(t - e, "plan entry and target")
    for name, x in (("entry offset", entry_offset_mm), ("angle", angle_deg), ("depth", depth_mm)):
        if not math.isfinite(x):
            raise SceneError(f"{name} must be finite, got {x}")
    if not 0 <= angle_deg < 60:
        raise SceneError(f"tilt from the plan must be 0-60 degrees, got {angle_deg}")
    entry = e + entry_offset_mm * _perpendicular(a, offset_azimuth_rad)
    th = math.radians(angle_deg)
    axis = math.cos(th) * a + math.sin(th) * _perpendicular(a, tilt_azimuth_rad)
    planned_depth = float(np.linalg.norm(t - e))
    return KWire(entry, entry + (planned_depth + depth_mm) * axis, **wire)
