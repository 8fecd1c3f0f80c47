"""Regenerate ``default.json`` (the cage) and ``../plates/default.json`` (the plate).

Run: ``python resources/cages/make_default.py``. Seeded, so the output is
reproducible. The design reasoning is in README.md beside this file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from core.calibration.cage import blue_noise_layer

HERE = Path(__file__).resolve().parent
HALF_SPAN = 70.0        # each layer covers [-70, 70] mm x [-70, 70] mm
WINDOW_R = 18.0         # ball-free central window (the target path stays visible)
MIN_IN_LAYER = 13.0     # centre distance between balls of one layer
MIN_OTHER_LAYER = 7.0   # in-plane distance to the other layer's balls (rare overlaps)
N_PER_LAYER = 48
LAYER_GAP = 50.0        # layer spacing: depth conditioning of the 2D-2D rays
LAT_X = 170.0           # lateral part: inner layer at x = 170 mm


def poisson_layer(rng, avoid=None, n=N_PER_LAYER):
    return blue_noise_layer(rng, n, MIN_IN_LAYER, HALF_SPAN, WINDOW_R, avoid, MIN_OTHER_LAYER)


def max_self_matches(a, b, tol=1.5, same=False):
    """Most points of ``a`` that one similarity (with or without reflection) puts
    within ``tol`` mm of points of ``b``, over hypotheses built from neighbour pairs;
    the identity is excluded when ``same``. A unique layout gives a small number."""
    za = a[:, 0] + 1j * a[:, 1]
    zb = b[:, 0] + 1j * b[:, 1]
    tree = cKDTree(b)
    pa = [(i, j) for i in range(len(a)) for j in cKDTree(a).query(a[i], 5)[1][1:]]
    pb = [(k, l) for k in range(len(b)) for l in cKDTree(b).query(b[k], 5)[1][1:]]
    best = 0
    for i, j in pa:
        for refl in (False, True):
            zi, zj = (np.conj(za[i]), np.conj(za[j])) if refl else (za[i], za[j])
            src = np.conj(za) if refl else za
            k, l = np.array(pb).T
            s = (zb[l] - zb[k]) / (zj - zi)
            ok = (np.abs(s) > 0.7) & (np.abs(s) < 1.4)
            if same and not refl:
                ok &= ~((k == i) & (l == j))
            s, t = s[ok], zb[k[ok]] - s[ok] * zi
            m = s[:, None] * src[None] + t[:, None]
            d, _ = tree.query(np.stack([m.real, m.imag], -1).reshape(-1, 2))
            best = max(best, int((d.reshape(m.shape) < tol).sum(1).max(initial=0)))
    return best


def main():
    rng = np.random.default_rng(20201104)
    layers = {}
    for part in ("ap", "lat"):
        l1 = poisson_layer(rng)
        l2 = poisson_layer(rng, avoid=l1)
        layers[part] = (l1, l2)
        for x, y, same in ((l1, l1, True), (l2, l2, True), (l1, l2, False), (l2, l1, False)):
            print(part, "max similarity matches:", max_self_matches(x, y, same=same))
    (a1, a2), (l1, l2) = layers["ap"], layers["lat"]
    z = np.zeros((N_PER_LAYER, 1))
    planes = [
        {"id": "ap_1", "view": "ap", "balls_mm": np.hstack([a1, z]).tolist()},
        {"id": "ap_2", "view": "ap", "balls_mm": np.hstack([a2, z + LAYER_GAP]).tolist()},
        # lateral layers: in-plane (y, z) with z centred 140 mm below the AP part
        {"id": "lat_1", "view": "lat",
         "balls_mm": np.column_stack([z[:, 0] + LAT_X, l1[:, 0], l1[:, 1] - 140.0]).tolist()},
        {"id": "lat_2", "view": "lat",
         "balls_mm": np.column_stack([z[:, 0] + LAT_X + LAYER_GAP, l2[:, 0], l2[:, 1] - 140.0]).tolist()},
    ]
    cage = {"format": "fluoronav.cage/1", "name": "fluoronav default bi-planar cage v1",
            "ball_diameter_mm": 4.0, "planes": planes}
    (HERE / "default.json").write_text(json.dumps(cage, indent=1) + "\n")

    g = np.arange(-110.0, 110.1, 10.0)
    grid = [(x, y) for y in g for x in g]
    mark = {(0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (0.0, 10.0)}   # L-shaped gap: orientation mark
    balls = [[x, y] for x, y in grid if (x, y) not in mark]
    plate = {"format": "fluoronav.plate/1", "name": "fluoronav default distortion plate v1",
             "ball_diameter_mm": 2.0, "pitch_mm": 10.0, "balls_mm": balls}
    (HERE.parent / "plates" / "default.json").write_text(json.dumps(plate) + "\n")


if __name__ == "__main__":
    main()
