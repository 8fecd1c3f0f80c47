"""One vertebra as signed-distance parts in its local frame (x left, y posterior, z superior).

Body: elliptic end-plate outline flattened posteriorly, concave end-plates and a
waist, wedge from anterior/posterior heights, rounded rims. Pedicles: tapered
elliptic canals along the ideal screw axis (``core.simulation.phantom.truth``), placed so
their medial cortices are the interpedicular distance apart at the isthmus.
Posterior arch: pars/facet-base blocks, laminae, spinous process, transverse
processes, superior and inferior articular processes; the spinal canal is
carved out before the pedicles are added, so the pedicles drawn are exactly
the ground-truth pedicles.
"""
from __future__ import annotations

import numpy as np

from core.simulation.phantom.anatomy import LevelParams
from core.simulation.phantom.parts import Part
from core.simulation.phantom.ribs_pelvis import rib_parts
from core.simulation.phantom.sdf import ellipse_approx, ellipsoid_approx, round_box
from core.simulation.phantom.truth import SIDES, PedicleTruth, pedicle_distance

__all__ = ["vertebra_parts", "PEDICLE_TAPER", "ENDPLATE_CONCAVITY_MM"]

PEDICLE_TAPER = 0.3          # 30 % wider where the pedicle meets the body and the arch
ENDPLATE_CONCAVITY_MM = 1.2
BODY_RIM_MM = 2.0
_NAN3 = np.full(3, np.nan)


def _place(T_wv, t_local, R_local=None) -> np.ndarray:
    T = np.eye(4)
    if R_local is not None:
        T[:3, :3] = R_local
    T[:3, 3] = t_local
    return T_wv @ T


def _frame_along(direction, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Rotation whose x axis is ``direction`` and z axis is ``up`` made orthogonal."""
    x = np.asarray(direction, float) / np.linalg.norm(direction)
    z = np.asarray(up, float) - np.dot(up, x) * x
    z /= np.linalg.norm(z)
    return np.column_stack([x, np.cross(z, x), z])


def _body_sdf(p: LevelParams):
    W, D = p.body_width, p.body_depth
    bx, by, y0 = 0.5 * W, 0.575 * D, 0.075 * D

    def sdf(x, y, z):
        r2 = np.clip((x / bx) ** 2 + ((y - y0) / by) ** 2, 0.0, 1.0)
        top, bottom = p.endplate_z(y)
        z = z - 0.5 * (top + bottom)                          # a fracture lowers only the top
        hz = 0.5 * (top - bottom) - ENDPLATE_CONCAVITY_MM * (1.0 - r2)
        waist = 1.0 - 0.07 * (1.0 - np.clip((z / hz) ** 2, 0.0, 1.0))
        d2 = np.maximum(ellipse_approx(x, y - y0, bx * waist, by * waist), y - 0.5 * D)
        dz = np.abs(z) - hz
        qa, qb = d2 + BODY_RIM_MM, dz + BODY_RIM_MM
        return (np.sqrt(np.maximum(qa, 0) ** 2 + np.maximum(qb, 0) ** 2)
                + np.minimum(np.maximum(qa, qb), 0) - BODY_RIM_MM)
    return sdf


def body_part(p: LevelParams, T_wv) -> Part:
    half = (0.5 * p.body_width + 1, 0.65 * p.body_depth + 1,
            0.5 * max(p.height_anterior + p.collapse, p.height_posterior) + 1)
    return Part("body", T_wv.copy(), half, _body_sdf(p), "union", 1.5)


def _pedicle(p: LevelParams, T_wv, side: str) -> PedicleTruth:
    """Provisional truth (entry/target filled in by the builder) in world coordinates."""
    i, sgn = (0, 1.0) if side == "left" else (1, -1.0)
    th, be, pw = p.transverse_angle[i], p.sagittal_angle, p.pedicle_width[i]
    a = np.array([-sgn * np.sin(th) * np.cos(be), -np.cos(th) * np.cos(be), np.sin(be)])
    lateral = sgn * np.cross([0.0, 0.0, 1.0], a)
    lateral /= np.linalg.norm(lateral)
    sup = np.cross(a, lateral)
    sup = sup if sup[2] > 0 else -sup
    half_len = 0.425 * p.canal_depth / (np.cos(th) * np.cos(be))
    c = np.array([sgn * (0.5 * p.canal_width + 0.5 * pw / np.cos(th)),
                  0.5 * p.body_depth + 0.425 * p.canal_depth,
                  0.5 * p.height_posterior - 0.5 * p.pedicle_height - 1.0])
    R = T_wv[:3, :3]
    return PedicleTruth(
        level=p.name, side=side, entry_mm=_NAN3, target_mm=_NAN3, axis=R @ a,
        isthmus_mm=T_wv[:3, :3] @ c + T_wv[:3, 3], lateral=R @ lateral, superior=R @ sup,
        width_mm=pw, height_mm=p.pedicle_height, half_length_mm=float(half_len), taper=PEDICLE_TAPER,
        cortex_mm=0.0, transverse_angle_rad=th, sagittal_angle_rad=be)


def pedicle_part(ped: PedicleTruth) -> Part:
    """The drawn pedicle: the truth's canal, extended into the body and the arch, capped."""
    L, ext_back, ext_front = ped.half_length_mm, 5.0, 8.0
    mid, half = 0.5 * (ext_front - ext_back), L + 0.5 * (ext_front + ext_back)

    def sdf(w, h, s):
        d = pedicle_distance(w, h, s, ped.width_mm, ped.height_mm, L, ped.taper)
        return np.maximum(d, np.abs(s - mid) - half)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([ped.lateral, ped.superior, ped.axis])
    T[:3, 3] = ped.isthmus_mm
    f = 1 + ped.taper
    return Part(f"pedicle_{ped.side}", T, (0.5 * ped.width_mm * f, 0.5 * ped.height_mm * f, half + abs(mid)),
                sdf, "union", 1.0)


def _arch_parts(p: LevelParams, T_wv, peds: dict) -> list[Part]:
    """Pars blocks, laminae, processes (local frame), before the canal is carved."""
    D, Cd, Hp = p.body_depth, p.canal_depth, p.height_posterior
    Rinv, t = T_wv[:3, :3].T, T_wv[:3, 3]
    parts = []
    mid = np.array([0.0, 0.5 * D + Cd + 3.0, 0.5 * Hp - 0.5 * p.pedicle_height - 5.0])
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        ped = peds[side]
        a_l = Rinv @ ped.axis
        c_l = Rinv @ (ped.isthmus_mm - t)
        j = c_l - a_l * (ped.half_length_mm + 2.5)          # junction of pedicle, lamina, facets, TP
        pw, ph = ped.width_mm, ped.height_mm
        parts.append(Part(f"pars_{side}", _place(T_wv, j), (0.5 * pw + 3, 6.5, 0.5 * ph + 2),
                          lambda x, y, z, a=0.5 * pw + 2.5, b=6.0, c=0.5 * ph + 1.5: ellipsoid_approx(x, y, z, a, b, c),
                          "union", 2.0))
        seg = mid - j
        L = np.linalg.norm(seg)
        hz = 0.42 * Hp
        parts.append(Part(f"lamina_{side}", _place(T_wv, j + 0.5 * seg - [0, 0, 3.0], _frame_along(seg)),
                          (0.5 * L + 2, 3.2, hz),
                          lambda x, y, z, hx=0.5 * L + 2, hz=hz: round_box(x, y, z, hx, 3.2, hz, 2.5), "union", 2.0))
        if p.kind != "S":
            tip = np.array([sgn * 0.5 * p.transverse_span, j[1] - 5.0, j[2] + 1.0])
            tseg = tip - j
            Lt = np.linalg.norm(tseg)
            th = 4.0 if p.kind == "T" else 5.5
            parts.append(Part(f"transverse_{side}", _place(T_wv, j + 0.5 * tseg, _frame_along(tseg)),
                              (0.5 * Lt + 1, 2.8, th),
                              lambda x, y, z, hx=0.5 * Lt + 1, th=th: round_box(x, y, z, hx, 2.8, th, 2.5),
                              "union", 2.5))
        sap = np.array([j[0] + sgn * 1.5, j[1] + 1.5, 0.5 * Hp + 4.0])
        parts.append(Part(f"sup_articular_{side}", _place(T_wv, sap), (3.5, 6.0, 8.0),
                          lambda x, y, z: round_box(x, y, z, 3.5, 6.0, 8.0, 2.5), "union", 2.0))
        iap = np.array([sgn * (0.5 * p.canal_width - 0.5), 0.5 * D + Cd + 2.0, -0.5 * Hp - 3.0])
        parts.append(Part(f"inf_articular_{side}", _place(T_wv, iap), (3.5, 5.0, 8.0),
                          lambda x, y, z: round_box(x, y, z, 3.5, 5.0, 8.0, 2.5), "union", 2.0))
    parts += _spinous_parts(p, T_wv, mid)
    if p.kind == "S":
        parts += _sacral_parts(p, T_wv)
    if p.kind == "T":
        parts += rib_parts(p, T_wv)
    return parts


def _spinous_parts(p: LevelParams, T_wv, mid) -> list[Part]:
    tilt = np.radians(30.0 if p.kind == "T" else 12.0)        # thoracic spines point caudally
    d = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    L = p.spinous_length + 6.0
    hz = 0.5 * p.spinous_height
    R = np.column_stack([[1.0, 0, 0], d, np.cross([1.0, 0, 0], d)])
    body = Part("spinous", _place(T_wv, mid + 0.5 * L * d, R), (3.2, 0.5 * L, hz),
                lambda x, y, z: round_box(x, y, z, 3.2, 0.5 * L, hz, 2.5), "union", 2.5)
    tip = Part("spinous_tip", _place(T_wv, mid + L * d, R), (4.5, 4.0, hz + 1),
               lambda x, y, z: ellipsoid_approx(x, y, z, 4.5, 4.0, hz + 1), "union", 2.0)
    return [body, tip]


def _sacral_parts(p: LevelParams, T_wv) -> list[Part]:
    """S1: alae, then three fused segments (S2-S4) shrinking and curving back (sacral kyphosis)."""
    W, D, Hp = p.body_width, p.body_depth, p.height_posterior
    parts = []
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        parts.append(Part(f"ala_{side}", _place(T_wv, [sgn * (0.5 * W + 12), 0.15 * D, -2.0]), (24, 16, 17),
                          lambda x, y, z: ellipsoid_approx(x, y, z, 23.0, 15.0, 16.0), "union", 4.0))
    for k in (1, 2, 3):
        hx, hy, hz = 0.5 * W * (0.9 - 0.18 * k), 0.5 * D * (0.85 - 0.12 * k), 9.0
        y, z = 1.5 * k * k + 2.0 * k, -0.5 * Hp - 1.0 - (k - 0.5) * 19.0
        tilt = np.radians(12.0 * k)
        R = np.array([[1.0, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
        wing = 12.0 * (1.0 - 0.2 * k)
        for name, c, half in ((f"S{k + 1}_body", [0.0, y, z], (hx, hy, hz)),
                              (f"S{k + 1}_mass_left", [hx + wing, y + 2, z], (wing + 2, 0.9 * hy, hz)),
                              (f"S{k + 1}_mass_right", [-hx - wing, y + 2, z], (wing + 2, 0.9 * hy, hz)),
                              (f"S{k + 1}_dorsal", [0.0, y + hy + 9.0, z], (0.9 * hx, 3.0, hz))):
            parts.append(Part(name, _place(T_wv, c, R), half,
                              lambda x_, y_, z_, h=half: round_box(x_, y_, z_, *h, min(2.5, min(h))), "union", 3.0))
    return parts


def _canal_part(p: LevelParams, T_wv) -> Part:
    a, b = 0.5 * p.canal_width, 0.5 * p.canal_depth
    yc = 0.5 * p.body_depth + b
    zc, hz = (0.0, 0.5 * p.height_posterior + 30) if p.kind != "S" else (-4.0, 0.5 * p.height_posterior + 10)
    return Part("canal", _place(T_wv, [0.0, yc, zc]), (a, b, hz),
                lambda x, y, z: np.maximum(ellipse_approx(x, y, a, b), np.abs(z) - hz), "subtract", 1.0)


def vertebra_parts(p: LevelParams, T_wv) -> tuple[list[Part], Part, dict[str, PedicleTruth]]:
    """All parts in drawing order, the body part alone, and the provisional pedicle truths."""
    peds = {side: _pedicle(p, T_wv, side) for side in SIDES}
    body = body_part(p, T_wv)
    parts = [body] + _arch_parts(p, T_wv, peds) + [_canal_part(p, T_wv)]
    parts += [pedicle_part(peds[s]) for s in SIDES]
    return parts, body, peds
