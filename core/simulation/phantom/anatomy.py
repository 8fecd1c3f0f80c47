"""Per-level dimensions drawn from the morphometry table and the seed, and the spine's layout.

Sizes follow ``resources/phantom/lumbar_morphometry.json`` (Zindrick 1987,
Panjabi 1991/1992, Zhou 2000; see the file): a whole-patient scale ~N(1, 0.04),
a per-level scale ~N(1, 0.025), pedicle width ~N(1, 0.04) and transverse angle
+-N(0, 1.5 deg) per level, plus a left/right asymmetry. The lordosis (L1 to S1 end-plate frames) is spread over
the segments in the table's proportions; the layout stacks the bodies and discs
along it with L3's body centre at the world origin (patient LPS).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

import resources

__all__ = ["CANONICAL_LEVELS", "PhantomError", "LevelParams", "morphometry", "draw_parameters",
           "spine_frames"]

CANONICAL_LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")


class PhantomError(ValueError):
    """A phantom request that cannot be built (unknown level, out-of-range angle or size)."""


@dataclass(frozen=True)
class LevelParams:
    """Dimensions of one vertebra in mm and radians (sides: index 0 left, 1 right)."""
    name: str
    body_width: float
    body_depth: float
    height_anterior: float
    height_posterior: float
    pedicle_width: tuple[float, float]
    pedicle_height: float
    transverse_angle: tuple[float, float]
    sagittal_angle: float
    canal_width: float
    canal_depth: float
    spinous_length: float
    spinous_height: float
    transverse_span: float
    disc_below: float
    lordosis_below: float      # radians, table proportion
    fractured: bool = False
    height_anterior_intact: float = 0.0   # before a fracture (0: same as height_anterior)

    @property
    def kind(self) -> str:
        return self.name[0]

    @property
    def collapse(self) -> float:
        """Anterior height lost by a wedge fracture of the superior end-plate (mm)."""
        return max(self.height_anterior_intact - self.height_anterior, 0.0) if self.fractured else 0.0

    def endplate_z(self, y):
        """(superior, inferior) end-plate heights above the body centre at depth y (rim plane).

        The intact body is a wedge from the posterior to the anterior height; a fracture
        lowers only the superior end-plate, by ``collapse`` at the anterior wall, 0 posteriorly.
        """
        D, Hp = self.body_depth, self.height_posterior
        ha = self.height_anterior + self.collapse
        f = (0.5 * D - np.asarray(y, dtype=float)) / D          # 0 posterior wall, 1 anterior wall
        h_intact = Hp + (ha - Hp) * f
        return 0.5 * h_intact - self.collapse * f, -0.5 * h_intact


@lru_cache(maxsize=1)
def morphometry() -> dict:
    """The per-level table (mm, degrees) from the resources folder, validated by its schema."""
    from core.formats.schema import load_json
    data, _ = load_json(resources.path("phantom", "lumbar_morphometry.json"), "morphometry",
                        hint="reinstall fluoronav", error=PhantomError)
    return data["levels"]


def _monotone(values: list[float], step: float) -> list[float]:
    """Lumbar trend kept after the random draw: each level at least ``step`` above the one before."""
    out = [values[0]]
    for v in values[1:]:
        out.append(max(v, out[-1] + step))
    return out


def draw_parameters(rng: np.random.Generator, fracture_level: str | None,
                    fracture_loss: float) -> dict[str, LevelParams]:
    """Seeded dimensions of every canonical level (always drawn in the same order).

    Pedicle width and transverse angle keep their caudal growth over L1-L5
    (Zindrick 1987) whatever the draw; left and right differ symmetrically
    about the level's value (asymmetry up to ~8 % and ~3 deg).
    """
    table = morphometry()
    g = float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
    n = len(CANONICAL_LEVELS)
    s = g * np.clip(rng.normal(1.0, 0.025, n), 0.94, 1.06)
    pw = [table[m]["pedicle_width"] * s[i] * float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
          for i, m in enumerate(CANONICAL_LEVELS)]
    ta = [table[m]["pedicle_transverse_angle"] + float(np.clip(rng.normal(0.0, 1.5), -3, 3))
          for m in CANONICAL_LEVELS]
    lumbar = slice(1, 6)
    pw[lumbar] = _monotone(pw[lumbar], 0.4)
    ta[lumbar] = _monotone(ta[lumbar], 0.5)
    asym_w = np.clip(rng.normal(0.0, 0.03, n), -0.08, 0.08)
    asym_a = np.clip(rng.normal(0.0, 1.2, n), -3.0, 3.0)
    out = {}
    for i, name in enumerate(CANONICAL_LEVELS):
        m, si = table[name], float(s[i])
        ha = m["body_height_anterior"] * si
        frac = name == fracture_level
        if frac:
            ha *= 1.0 - fracture_loss
        out[name] = LevelParams(
            name=name, body_width=m["body_width"] * si, body_depth=m["body_depth"] * si,
            height_anterior=ha, height_posterior=m["body_height_posterior"] * si,
            pedicle_width=(pw[i] * (1 + asym_w[i]), pw[i] * (1 - asym_w[i])),
            pedicle_height=m["pedicle_height"] * si,
            transverse_angle=(float(np.radians(ta[i] + asym_a[i])), float(np.radians(ta[i] - asym_a[i]))),
            sagittal_angle=float(np.radians(m["pedicle_sagittal_angle"])),
            canal_width=m["canal_width"] * si, canal_depth=m["canal_depth"] * si,
            spinous_length=m["spinous_length"] * si, spinous_height=m["spinous_height"] * si,
            transverse_span=m["transverse_span"] * si, disc_below=m["disc_height_below"] * si,
            lordosis_below=float(np.radians(m["segment_lordosis_below"])), fractured=frac,
            height_anterior_intact=m["body_height_anterior"] * si)
    return out


def _tilts(params: dict[str, LevelParams], lordosis_rad: float) -> dict[str, float]:
    """Sagittal tilt psi of each level (superior axis leans posterior by psi); L3 = 0."""
    lumbar = [n for n in CANONICAL_LEVELS[1:-1]]
    table_sum = sum(params[n].lordosis_below for n in lumbar)
    scale = lordosis_rad / table_sum
    psi = {"L3": 0.0}
    names = list(CANONICAL_LEVELS)
    i3 = names.index("L3")
    for i in range(i3 - 1, -1, -1):          # upward: upper = lower + segment angle of the upper
        seg = params[names[i]].lordosis_below * (scale if names[i] != "T12" else 1.0)
        psi[names[i]] = psi[names[i + 1]] + seg
    for i in range(i3 + 1, len(names)):      # downward
        psi[names[i]] = psi[names[i - 1]] - params[names[i - 1]].lordosis_below * scale
    for name, p in params.items():           # a wedge fracture kyphoses the levels above it
        if p.fractured:
            wedge = np.arctan(p.collapse / p.body_depth)
            for upper in names[:names.index(name)]:
                psi[upper] -= wedge
    return psi


def spine_frames(params: dict[str, LevelParams], lordosis_rad: float,
                 axial_rotation_rad: dict[str, float]) -> dict[str, np.ndarray]:
    """T_world_vertebra per canonical level: bodies and discs stacked along the lordotic curve."""
    psi = _tilts(params, lordosis_rad)
    names = list(CANONICAL_LEVELS)
    zaxis = {n: np.array([0.0, np.sin(psi[n]), np.cos(psi[n])]) for n in names}
    centre = {"L3": np.zeros(3)}
    i3 = names.index("L3")
    for i in range(i3 - 1, -1, -1):
        up, lo = names[i], names[i + 1]
        u = zaxis[up] + zaxis[lo]
        step = params[lo].endplate_z(0.0)[0] + params[up].disc_below - params[up].endplate_z(0.0)[1]
        centre[up] = centre[lo] + step * u / np.linalg.norm(u)
    for i in range(i3 + 1, len(names)):
        up, lo = names[i - 1], names[i]
        u = zaxis[up] + zaxis[lo]
        step = -params[up].endplate_z(0.0)[1] + params[up].disc_below + params[lo].endplate_z(0.0)[0]
        centre[lo] = centre[up] - step * u / np.linalg.norm(u)
    frames = {}
    for n in names:
        R = Rotation.from_rotvec([-psi[n], 0, 0]) * Rotation.from_rotvec([0, 0, axial_rotation_rad.get(n, 0.0)])
        T = np.eye(4)
        T[:3, :3] = R.as_matrix()
        T[:3, 3] = centre[n]
        frames[n] = T
    return frames
