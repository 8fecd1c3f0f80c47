"""Ground truth of the phantom: per level the vertebral body and both pedicles.

The pedicle is modelled as a tapered elliptic canal along its axis (what is drawn
into the voxels is this very shape, see ``core.simulation.phantom.vertebra``): in the
cross-section perpendicular to the axis at axial position s (mm from the
isthmus, positive toward the body) the OUTER cortex is the ellipse with
semi-axes ``half_width(s)`` along ``lateral`` and ``half_height(s)`` along
``superior``, where ``half_width(s) = width/2 * (1 + taper * min((s/half_length)^2, 1))``
(hour-glass: narrowest at the isthmus, constant beyond the pedicle proper). The pedicle proper, the part a screw is
graded against, spans s in [-half_length, +half_length]: from its junction with
the lamina and articular processes to the posterior wall of the body. The inner
cortex is the same ellipse shrunk by ``cortex_mm``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.simulation.phantom.sdf import ellipse_exact

__all__ = ["PedicleTruth", "VertebraTruth", "SIDES", "pedicle_half_axes", "pedicle_distance"]

SIDES = ("left", "right")


def pedicle_half_axes(s, width, height, half_length, taper):
    """Outer-cortex semi-axes at axial position s (module docstring)."""
    f = 1.0 + taper * np.minimum((s / half_length) ** 2, 1.0)
    return 0.5 * width * f, 0.5 * height * f


def pedicle_distance(w, h, s, width, height, half_length, taper):
    """Cross-sectional signed distance to the outer cortex in pedicle coordinates (w, h, s)."""
    aw, ah = pedicle_half_axes(s, width, height, half_length, taper)
    return ellipse_exact(w, h, aw, ah)


@dataclass(frozen=True, eq=False)
class PedicleTruth:
    """One pedicle in world mm (LPS): ideal screw axis and the cortex geometry (module docstring)."""
    level: str
    side: str
    entry_mm: np.ndarray          # where the ideal axis leaves the posterior bone surface
    target_mm: np.ndarray         # on the axis, in the anterior third of the body
    axis: np.ndarray              # unit, from entry toward target (posterior -> anterior)
    isthmus_mm: np.ndarray        # centre of the narrowest cross-section, on the axis
    lateral: np.ndarray           # unit, perpendicular to axis, horizontal in the vertebra, away from the midline
    superior: np.ndarray          # unit, axis x lateral or its opposite, toward the cranial end-plate
    width_mm: float               # outer isthmus width along ``lateral``
    height_mm: float              # outer isthmus height along ``superior``
    half_length_mm: float         # the pedicle proper spans s in [-half_length, +half_length]
    taper: float                  # relative widening at s = +-half_length
    cortex_mm: float              # cortical wall thickness
    transverse_angle_rad: float   # axis vs the vertebra's sagittal plane (converging anteriorly)
    sagittal_angle_rad: float     # axis vs the superior end-plate plane (positive = rising anteriorly)

    def pedicle_coordinates(self, points) -> np.ndarray:
        """(w, h, s) of world points: along ``lateral``, ``superior`` and ``axis`` from the isthmus."""
        p = np.asarray(points, dtype=float) - self.isthmus_mm
        return np.stack([p @ self.lateral, p @ self.superior, p @ self.axis], axis=-1)

    def half_axes(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Outer-cortex semi-axes (half width, half height) at axial position s (mm)."""
        return pedicle_half_axes(np.asarray(s, dtype=float), self.width_mm, self.height_mm,
                                 self.half_length_mm, self.taper)

    def signed_distance(self, points) -> np.ndarray:
        """Distance (mm) of world points to the outer cortex within their cross-section; < 0 inside.

        Measured perpendicular to the axis, as on a CT slice across the pedicle; the
        axial limits are not applied here (see ``in_pedicle_range``).
        """
        w, h, s = np.moveaxis(self.pedicle_coordinates(points), -1, 0)
        return pedicle_distance(w, h, s, self.width_mm, self.height_mm, self.half_length_mm, self.taper)

    def in_pedicle_range(self, points) -> np.ndarray:
        s = self.pedicle_coordinates(points)[..., 2]
        return np.abs(s) <= self.half_length_mm

    @property
    def length_mm(self) -> float:
        """Entry-to-target length of the ideal trajectory."""
        return float(np.linalg.norm(self.target_mm - self.entry_mm))


@dataclass(frozen=True, eq=False)
class VertebraTruth:
    """One vertebra in world mm: body frame, end-plates and both pedicles."""
    name: str
    T_world_vertebra: np.ndarray      # rigid; local x left, y posterior, z superior, origin body centre
    body_width_mm: float
    body_depth_mm: float
    height_anterior_mm: float
    height_posterior_mm: float
    superior_normal: np.ndarray       # outward unit normal of the cranial end-plate
    inferior_normal: np.ndarray       # outward unit normal of the caudal end-plate
    superior_endplate_mm: np.ndarray  # centre of the cranial end-plate
    inferior_endplate_mm: np.ndarray
    fractured: bool = False
    pedicles: dict = field(default_factory=dict)   # side -> PedicleTruth
    bone_sdf: Callable | None = field(default=None, repr=False)   # world points -> mm to the drawn bone

    def __getstate__(self):
        """Pickles without the drawn surface (a closure): a copy in another process has no bone_sdf."""
        state = self.__dict__.copy()
        state["bone_sdf"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def bone_signed_distance(self, points) -> np.ndarray:
        """Distance (mm) of world points to this vertebra's outer bone surface as drawn; < 0 inside."""
        if self.bone_sdf is None:
            raise ValueError(f"{self.name} has no bone surface attached")
        return self.bone_sdf(np.asarray(points, dtype=float))

    @property
    def body_center_mm(self) -> np.ndarray:
        return self.T_world_vertebra[:3, 3].copy()

    @property
    def left(self) -> PedicleTruth:
        return self.pedicles["left"]

    @property
    def right(self) -> PedicleTruth:
        return self.pedicles["right"]
