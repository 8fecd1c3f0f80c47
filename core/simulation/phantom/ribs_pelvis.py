"""Bones next to the lumbar spine that shape a real radiograph: the 12th ribs and the iliac wings.

Simplified on purpose (they carry no ground truth): a 12th rib is a tapered
capsule from the side of T12 running laterally, posteriorly then down; an iliac
wing is an elliptic plate (3 mm in the fossa, ~11 mm at the rim) from the sacro-iliac joint, opening
anteriorly ~35 deg from the coronal plane, with its crest at the L4-L5 disc
(the landmark surgeons count levels from on an AP shot).
"""
from __future__ import annotations

import numpy as np

from core.simulation.phantom.anatomy import LevelParams
from core.simulation.phantom.parts import Part
from core.simulation.phantom.sdf import capsule, ellipse_approx, smax

__all__ = ["rib_parts", "iliac_parts"]


def _segment_frame(a, b) -> np.ndarray:
    """Rigid frame at the midpoint of a->b with its z axis along the segment."""
    z = (b - a) / np.linalg.norm(b - a)
    x = np.cross(z, [0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = 0.5 * (a + b)
    return T


def rib_parts(p: LevelParams, T_wv) -> list[Part]:
    """12th ribs (T12 only): head at the body's posterolateral corner, two straight segments."""
    parts = []
    R, t = T_wv[:3, :3], T_wv[:3, 3]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        head = np.array([sgn * (0.5 * p.body_width - 2.0), 0.5 * p.body_depth + 4.0, 3.0])
        angle = np.array([sgn * (0.5 * p.body_width + 40.0), 0.5 * p.body_depth + 22.0, -12.0])
        tip = np.array([sgn * (0.5 * p.body_width + 85.0), 0.5 * p.body_depth - 10.0, -55.0])
        for name, a, b, r0, r1 in (("neck", head, angle, 5.0, 5.5), ("shaft", angle, tip, 5.5, 3.5)):
            A, B = R @ a + t, R @ b + t
            L = np.linalg.norm(B - A)
            parts.append(Part(f"rib12_{name}_{side}", _segment_frame(A, B), (r1 + 1, r1 + 1, 0.5 * L + 6),
                              lambda x, y, z, h=0.5 * L, r0=r0, r1=r1: capsule(x, y, z, h, r0, r1), "union", 3.0))
    return parts


def _wing(x, y, z, a, b):
    """Elliptic plate, thin in the fossa (3 mm) and thick at its rim (crest, ~11 mm)."""
    r2 = np.clip((x / a) ** 2 + (z / b) ** 2, 0.0, 1.0)
    half_t = 1.5 + 4.0 * r2 ** 3
    return smax(ellipse_approx(x, z, a, b), np.abs(y) - half_t, 1.0)


def iliac_parts(s1: LevelParams, T_s1, z_crest: float) -> list[Part]:
    """Iliac wings (world-vertical plates) joined to the S1 alae; crest at height ``z_crest``."""
    parts = []
    c1 = T_s1[:3, 3]
    z_bottom = c1[2] - 45.0
    half_h = 0.5 * (z_crest - z_bottom)
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        si = c1 + np.array([sgn * (0.5 * s1.body_width + 20.0), 18.0, 0.0])
        u = np.array([sgn * np.cos(np.radians(35.0)), -np.sin(np.radians(35.0)), 0.0])
        centre = si + 52.0 * u
        centre[2] = z_bottom + half_h
        w = np.cross(u, [0.0, 0.0, 1.0])
        T = np.eye(4)
        T[:3, :3] = np.column_stack([u, w, [0.0, 0.0, 1.0]])
        T[:3, 3] = centre
        parts.append(Part(f"ilium_{side}", T, (58.0, 6.0, half_h + 1),
                          lambda x, y, z, hh=half_h: _wing(x, y, z, 56.0, hh), "union", 5.0))
    return parts
