"""Where a pixel lies in a raw image (DESIGN.md: ``(u, v)`` = (column, row), the centre of the
top-left pixel at (0, 0)), so that an image of (rows, cols) pixels covers ``-0.5 .. cols - 0.5``
by ``-0.5 .. rows - 0.5`` from pixel edge to pixel edge.

One definition for clicks, projected points, epipolar lines and detector hits: a margin of
0.5 px gives the centres of the border pixels (``0 .. cols - 1``), a negative one reaches
beyond the edges.
"""
from __future__ import annotations

import numpy as np

__all__ = ["image_bounds", "in_image", "mask_at"]


def image_bounds(shape, margin_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The (lo, hi) corners ``(u, v)`` of a (rows, cols) image, ``margin_px`` inside its edges."""
    rows, cols = shape
    m = float(margin_px)
    return np.array([-0.5 + m, -0.5 + m]), np.array([cols - 0.5 - m, rows - 0.5 - m])


def in_image(uv, shape, margin_px: float = 0.0) -> np.ndarray:
    """True where pixels (N, 2), or one (2,), lie in a (rows, cols) image at least ``margin_px``
    inside its edges (edges included); NaN is outside. Always an (N,) boolean array."""
    q = np.atleast_2d(np.asarray(uv, float))
    lo, hi = image_bounds(shape, margin_px)
    with np.errstate(invalid="ignore"):
        return np.all((q >= lo) & (q <= hi), axis=1)


def mask_at(mask, uv) -> np.ndarray:
    """The boolean image ``mask`` at the pixel nearest each ``(u, v)`` (N, 2); False outside
    the image and for NaN. Always an (N,) boolean array."""
    m = np.asarray(mask, bool)
    q = np.atleast_2d(np.asarray(uv, float))
    ok = in_image(q, m.shape)
    out = np.zeros(len(q), bool)
    if ok.any():      # the pixel whose square holds (u, v); its far edge belongs to the last pixel
        k = np.minimum(np.rint(q[ok]).astype(np.int64), [m.shape[1] - 1, m.shape[0] - 1])
        out[ok] = m[k[:, 1], k[:, 0]]
    return out
