"""Ground truth found on the drawn surfaces: pedicle entry and target, end-plates of each level.

The entry is searched on the very signed distance that is rasterised (all parts of
the vertebra, in drawing order), so the truth and the voxels share one surface.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.simulation.phantom.anatomy import LevelParams, PhantomError
from core.simulation.phantom.parts import Part, evaluate
from core.simulation.phantom.truth import PedicleTruth, VertebraTruth

__all__ = ["pedicle_truth", "vertebra_truth", "TARGET_FRACTION"]

TARGET_FRACTION = 0.8     # of the body chord along the axis: the anterior third


def _find_crossing(parts: list[Part], start, direction, length, step=0.05, inside_first=True) -> float:
    """Distance along the ray where the surface is crossed (inside -> outside), to 1e-3 mm."""
    s = np.arange(0.0, length, step)
    d = evaluate(parts, start + s[:, None] * direction)
    outside = np.nonzero(d > 0)[0]
    if inside_first and (d[0] > 0 or outside.size == 0):
        raise PhantomError("pedicle axis does not leave the bone: phantom parameters are inconsistent")
    i = outside[0]
    a, b = s[i - 1], s[i]
    for _ in range(12):                  # bisection on the exact surface
        m = 0.5 * (a + b)
        if evaluate(parts, start + m * direction) > 0:
            b = m
        else:
            a = m
    return 0.5 * (a + b)


def pedicle_truth(ped: PedicleTruth, parts: list[Part], body: Part, cortex_mm: float) -> PedicleTruth:
    """Entry: where the axis leaves the posterior bone surface; target: 80 % along the body chord."""
    s_entry = _find_crossing(parts, ped.isthmus_mm, -ped.axis, 60.0)
    entry = ped.isthmus_mm - s_entry * ped.axis
    s = np.arange(0.0, 120.0, 0.05)
    inside = evaluate([body], entry + s[:, None] * ped.axis) < 0
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        raise PhantomError(f"{ped.level} {ped.side} pedicle axis misses the vertebral body")
    s_in, s_out = s[idx[0]], s[idx[-1]]
    s_t = min(s_in + TARGET_FRACTION * (s_out - s_in), s_out - 4.0)
    return replace(ped, entry_mm=entry, target_mm=entry + s_t * ped.axis, cortex_mm=cortex_mm)


def vertebra_truth(p: LevelParams, T_wv, peds, parts: list[Part]) -> VertebraTruth:
    """End-plate planes from the body's rim (``LevelParams.endplate_z``), in the world."""
    R, t = T_wv[:3, :3], T_wv[:3, 3]
    eps = 1.0
    (top_a, bot_a), (top_p, bot_p) = p.endplate_z(-eps), p.endplate_z(eps)
    d_top, d_bot = (top_p - top_a) / (2 * eps), (bot_p - bot_a) / (2 * eps)     # slopes along y
    n_sup = R @ (np.array([0.0, -d_top, 1.0]) / np.hypot(1, d_top))
    n_inf = R @ (np.array([0.0, d_bot, -1.0]) / np.hypot(1, d_bot))
    top0, bot0 = p.endplate_z(0.0)
    return VertebraTruth(name=p.name, T_world_vertebra=T_wv, body_width_mm=p.body_width,
                         body_depth_mm=p.body_depth, height_anterior_mm=p.height_anterior,
                         height_posterior_mm=p.height_posterior, superior_normal=n_sup, inferior_normal=n_inf,
                         superior_endplate_mm=t + R[:, 2] * float(top0), inferior_endplate_mm=t + R[:, 2] * float(bot0),
                         fractured=p.fractured, pedicles=peds,
                         bone_sdf=lambda P: evaluate(parts, P))
