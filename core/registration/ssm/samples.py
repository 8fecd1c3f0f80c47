"""Vertebrae drawn for the shape model and, apart from them, for its honest evaluation.

Both come from the phantom's own construction (``core.simulation.phantom.vertebra``):
signed-distance parts in the vertebra frame (x left, y posterior, z superior,
origin at the body centre), pedicle truth found on the drawn surface.

- ``family_params``: the model's family, the morphometry table's level scaled by
  a whole-vertebra factor within +-8 % and each dimension within +-5 %, pedicle
  widths +-8 %, transverse angles +-3 deg, a mild left/right asymmetry; intact.
- ``heldout_vertebra``: what the model never saw, a stress case by case: a scale
  outside the family's range, a strong left/right asymmetry of the pedicles, a
  compression fracture of the superior end-plate (15-35 % of the anterior
  height), and a smooth random deformation of the body and posterior arch (the
  surface moved along its normal by a sum of Gaussian bumps up to +-2 mm). The
  pedicles are kept as drawn so that their truth stays exact for grading.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.simulation.phantom.anatomy import LevelParams, PhantomError, morphometry
from core.simulation.phantom.landmarks import pedicle_truth
from core.simulation.phantom.parts import Part, evaluate
from core.simulation.phantom.truth import SIDES
from core.simulation.phantom.vertebra import vertebra_parts

__all__ = ["LUMBAR_LEVELS", "FAMILY", "family_params", "mean_params", "Vertebra", "build_vertebra",
           "heldout_vertebra", "part_landmarks", "HELDOUT_KINDS"]

LUMBAR_LEVELS = ("L1", "L2", "L3", "L4", "L5")
CORTEX_MM = 1.2
# the model family: (whole-vertebra scale, per-dimension, pedicle width, transverse angle deg, asymmetry)
FAMILY = {"scale": 0.08, "dimension": 0.05, "pedicle_width": 0.08, "angle_deg": 3.0, "asymmetry": 0.03}
HELDOUT_KINDS = ("scale", "asymmetry", "fracture", "deformation")


def _check_level(level: str) -> dict:
    table = morphometry()
    if level not in LUMBAR_LEVELS:
        raise PhantomError(f"the shape model covers the lumbar levels {', '.join(LUMBAR_LEVELS)}, not {level!r}")
    return table[level]


def _params(level: str, scale: float, dims: np.ndarray, pw: tuple, ta_deg: tuple,
            fracture_loss: float = 0.0) -> LevelParams:
    """LevelParams from the table's level with the given factors (dims: 10 per-dimension factors)."""
    m = _check_level(level)
    s = scale * dims
    ha = m["body_height_anterior"] * s[2]
    return LevelParams(
        name=level, body_width=m["body_width"] * s[0], body_depth=m["body_depth"] * s[1],
        height_anterior=ha * (1.0 - fracture_loss), height_posterior=m["body_height_posterior"] * s[3],
        pedicle_width=(m["pedicle_width"] * scale * pw[0], m["pedicle_width"] * scale * pw[1]),
        pedicle_height=m["pedicle_height"] * s[4],
        transverse_angle=(float(np.radians(ta_deg[0])), float(np.radians(ta_deg[1]))),
        sagittal_angle=float(np.radians(m["pedicle_sagittal_angle"])),
        canal_width=m["canal_width"] * s[5], canal_depth=m["canal_depth"] * s[6],
        spinous_length=m["spinous_length"] * s[7], spinous_height=m["spinous_height"] * s[8],
        transverse_span=m["transverse_span"] * s[9], disc_below=m["disc_height_below"] * scale,
        lordosis_below=float(np.radians(m["segment_lordosis_below"])), fractured=fracture_loss > 0,
        height_anterior_intact=ha)


def mean_params(level: str) -> LevelParams:
    """The table's level as it stands: the model's template."""
    m = _check_level(level)
    ta = m["pedicle_transverse_angle"]
    return _params(level, 1.0, np.ones(10), (1.0, 1.0), (ta, ta))


def family_params(level: str, rng: np.random.Generator) -> LevelParams:
    """One member of the model's family (module docstring)."""
    m = _check_level(level)
    f = FAMILY
    scale = rng.uniform(1 - f["scale"], 1 + f["scale"])
    dims = rng.uniform(1 - f["dimension"], 1 + f["dimension"], 10)
    w = rng.uniform(1 - f["pedicle_width"], 1 + f["pedicle_width"])
    a = rng.uniform(-f["asymmetry"], f["asymmetry"])
    ta = m["pedicle_transverse_angle"] + rng.uniform(-f["angle_deg"], f["angle_deg"])
    da = rng.uniform(-1.0, 1.0)
    return _params(level, scale, dims, (w * (1 + a), w * (1 - a)), (ta + da, ta - da))


@dataclass(frozen=True, eq=False)
class Vertebra:
    """One drawn vertebra: its parts (drawing order), the body part and both pedicle truths."""
    params: LevelParams
    T_world_vertebra: np.ndarray
    parts: list
    body: Part
    pedicles: dict
    kind: str = "family"

    def signed_distance(self, points) -> np.ndarray:
        """mm to the drawn bone surface (< 0 inside) of world points (..., 3)."""
        return evaluate(self.parts, points)

    def body_signed_distance(self, points) -> np.ndarray:
        return evaluate([self.body], points)

    def box(self, margin: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        """World box holding the bone (the union parts' boxes)."""
        boxes = [p.world_box(margin) for p in self.parts if p.op == "union"]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def build_vertebra(p: LevelParams, T_world_vertebra=None, deform=None, kind: str = "family") -> Vertebra:
    """Parts of ``p`` placed at ``T_world_vertebra``; ``deform``: (centres (K,3) local mm, amplitudes (K,),
    radii (K,)) moves the body and arch surfaces outward by the bumps' sum (pedicles untouched)."""
    T = np.eye(4) if T_world_vertebra is None else np.asarray(T_world_vertebra, float)
    parts, body, peds = vertebra_parts(p, T)
    if deform is not None:
        parts = [_bumped(q, T, deform) if q.op == "union" and not q.name.startswith("pedicle") else q
                 for q in parts]
        body = parts[0]
    peds = {s: pedicle_truth(peds[s], parts, body, CORTEX_MM) for s in SIDES}
    return Vertebra(p, T, parts, body, peds, kind)


def _bumped(part: Part, T_wv, deform) -> Part:
    centres, amps, radii = (np.asarray(a, float) for a in deform)
    R_pl = T_wv[:3, :3].T @ part.T_world_part[:3, :3]          # part -> vertebra local
    t_pl = T_wv[:3, :3].T @ (part.T_world_part[:3, 3] - T_wv[:3, 3])
    sdf = part.sdf

    def bumped(x, y, z):
        q = np.stack(np.broadcast_arrays(x, y, z), -1)
        local = q @ R_pl.T + t_pl
        r2 = np.sum((local[..., None, :] - centres) ** 2, axis=-1)
        return sdf(x, y, z) - np.sum(amps * np.exp(-0.5 * r2 / radii ** 2), axis=-1)
    grow = float(np.sum(np.clip(amps, 0, None)))
    return replace(part, sdf=bumped, half_size=tuple(h + grow for h in part.half_size))


def heldout_vertebra(level: str, kind: str, rng: np.random.Generator, T_world_vertebra=None) -> Vertebra:
    """A vertebra from outside the model's family (module docstring); ``kind`` in ``HELDOUT_KINDS``."""
    m = _check_level(level)
    if kind not in HELDOUT_KINDS:
        raise PhantomError(f"held-out kind must be one of {', '.join(HELDOUT_KINDS)}, got {kind!r}")
    f = FAMILY
    side = rng.choice([-1.0, 1.0])
    scale = 1.0 + side * rng.uniform(f["scale"] + 0.005, f["scale"] + 0.05) if kind == "scale" else \
        rng.uniform(1 - f["scale"], 1 + f["scale"])
    dims = rng.uniform(1 - f["dimension"], 1 + f["dimension"], 10)
    w = rng.uniform(1 - f["pedicle_width"], 1 + f["pedicle_width"])
    ta = m["pedicle_transverse_angle"] + rng.uniform(-f["angle_deg"], f["angle_deg"])
    if kind == "asymmetry":       # beyond the family: widths 8-14 % and angles 3-5 deg apart each side
        a, da = rng.choice([-1, 1]) * rng.uniform(0.08, 0.14), rng.choice([-1, 1]) * rng.uniform(3.0, 5.0)
    else:
        a, da = rng.uniform(-f["asymmetry"], f["asymmetry"]), rng.uniform(-1.0, 1.0)
    loss = rng.uniform(0.15, 0.35) if kind == "fracture" else 0.0
    p = _params(level, scale, dims, (w * (1 + a), w * (1 - a)), (ta + da, ta - da), loss)
    deform = None
    if kind == "deformation":
        k = 8
        centres = rng.uniform([-0.6 * p.body_width, -0.5 * p.body_depth, -12.0],
                              [0.6 * p.body_width, 0.5 * p.body_depth + p.canal_depth + 25.0, 12.0], (k, 3))
        deform = (centres, rng.uniform(-2.0, 2.0, k), rng.uniform(8.0, 14.0, k))
    return build_vertebra(p, T_world_vertebra, deform, kind=kind)


def part_landmarks(v: Vertebra) -> np.ndarray:
    """Corresponding points of any two vertebrae of the family: each part's centre and the centres of
    its box's six faces, in the vertebra frame (the canal's far ends left out: they hold no bone)."""
    Tinv = np.linalg.inv(v.T_world_vertebra)
    out = []
    for part in v.parts:
        T = Tinv @ part.T_world_part
        h = np.asarray(part.half_size, float)
        axes = (0, 1) if part.name == "canal" else (0, 1, 2)
        pts = [np.zeros(3)] + [s * h[i] * np.eye(3)[i] for i in axes for s in (-1.0, 1.0)]
        out.extend(T[:3, :3] @ q + T[:3, 3] for q in pts)
    return np.array(out)
