"""A small phantom of known shapes for tests and fallbacks: elliptic body, bone column, dense ball.

Prone patient, world LPS (x left, y posterior, z superior), centred on the origin.
Values in HU; the shapes are analytic so their line integrals are known.
"""
from __future__ import annotations

import numpy as np

from core.imaging.volume import Volume


def block_phantom(spacing_mm: float = 2.0, size_mm=(300.0, 220.0, 200.0), seed: int | None = None) -> Volume:
    """Body (ellipse 140 x 100 mm half-axes, soft tissue 40 HU), spine column (r 22 mm, 700 HU) at
    y = 30 mm with a 300 HU core, a 1200 HU sphere (r 10 mm) at (40, -20, 30); optional texture noise."""
    n = [max(4, int(round(s / spacing_mm))) for s in size_mm]
    origin = -0.5 * (np.array(n) - 1) * spacing_mm
    x = origin[0] + spacing_mm * np.arange(n[0])
    y = origin[1] + spacing_mm * np.arange(n[1])
    z = origin[2] + spacing_mm * np.arange(n[2])
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    hu = np.full(Z.shape, -1000.0, np.float32)
    hu[(X / 140.0) ** 2 + (Y / 100.0) ** 2 <= 1] = 40.0
    col = X ** 2 + (Y - 30.0) ** 2
    hu[col <= 22.0 ** 2] = 700.0
    hu[col <= 16.0 ** 2] = 300.0
    hu[(X - 40.0) ** 2 + (Y + 20.0) ** 2 + (Z - 30.0) ** 2 <= 10.0 ** 2] = 1200.0
    if seed is not None:
        body = hu > -1000
        hu[body] += np.random.default_rng(seed).normal(0, 20, int(body.sum())).astype(np.float32)
    return Volume.from_grid(hu, (spacing_mm,) * 3, origin_mm=origin)
