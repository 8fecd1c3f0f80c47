"""Fast cone-beam DRR on the CPU: Joseph's method as a shear-warp of slices (OpenCV).

Joseph (1982): a ray's line integral is Σ_k μ(ray ∩ slice k) · Δ, sampling each
slice across the axis most aligned with the beam bilinearly, with Δ = slice
spacing / |cos θ| the ray length between slices. For a cone beam, the central
projection from the source maps every slice onto one reference slice by a
homothety (scale + shift, Lacroute & Levoy's perspective shear-warp): each slice
is resampled once onto the reference plane (``cv2.warpAffine``) and summed there,
then the sum is mapped to the detector by one homography (``cv2.warpPerspective``)
and multiplied by Δ per pixel. Air outside each slice's bounding box is skipped.
The sampling is Joseph's (bilinear in slices); the reference-plane grid adds one
more bilinear interpolation, at the voxel pitch times ``1/oversample``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.drr.volume_grid import DrrError, MuGrid

# For a main axis c: the stack layout (transpose of mu (z, y, x)) and the in-plane (column, row) axes.
_LAYOUT = {2: ((0, 1, 2), (0, 1)), 1: ((1, 0, 2), (0, 2)), 0: ((2, 0, 1), (1, 2))}


def _bboxes(stack: np.ndarray, air_mu: float) -> list:
    """Per slice (y0, y1, x0, x1) of the voxels above ``air_mu``, None where all air."""
    solid = stack > air_mu
    rows_any, cols_any = solid.any(axis=2), solid.any(axis=1)
    out = []
    for r, c in zip(rows_any, cols_any):
        if not r.any():
            out.append(None)
            continue
        ry, cx = np.flatnonzero(r), np.flatnonzero(c)
        out.append((int(ry[0]), int(ry[-1]) + 1, int(cx[0]), int(cx[-1]) + 1))
    return out


class ShearWarpRenderer:
    """Renders DRRs of one attenuation grid for any number of geometries (slices cached per axis)."""

    def __init__(self, grid: MuGrid, oversample: float = 1.0, air_mu: float = 0.0):
        if not (0.25 <= oversample <= 4):
            raise DrrError(f"oversample must be within 0.25-4, got {oversample}")
        self.grid, self.oversample, self.air_mu = grid, float(oversample), float(air_mu)
        self._stacks: dict = {}
        self._weights: dict = {}  # path-length weights per (geometry, axis), the last few

    def _stack(self, axis: int):
        if axis not in self._stacks:
            s = np.ascontiguousarray(self.grid.mu.transpose(_LAYOUT[axis][0]))
            self._stacks[axis] = (s, _bboxes(s, self.air_mu))
        return self._stacks[axis]

    def render(self, geometry: ConeBeamGeometry) -> np.ndarray:
        """(rows, cols) float32 line integrals ∫μ dl through each pixel centre."""
        c = self.grid.main_axis(geometry)
        ca, ra = _LAYOUT[c][1]
        stack, boxes = self._stack(c)
        n = stack.shape[0]
        S = self.grid.source_index(geometry)
        if -0.5 <= S[c] <= n - 0.5:
            raise DrrError("the X-ray source lies inside the volume: move the C-arm source outside the CT")
        k_ref = (n - 1) / 2.0
        scale = (k_ref - S[c]) / (np.arange(n) - S[c])  # homothety slice k -> reference plane
        box = self._reference_box(geometry, stack.shape, S, c, ca, ra, scale, k_ref)
        if box is None:
            return np.zeros(geometry.shape, np.float32)
        X0, Y0, W, H = box
        m = self.oversample
        acc = np.zeros((H, W), np.float32)
        for k in range(n):
            if boxes[k] is not None:
                self._splat(acc, stack[k], boxes[k], scale[k], S[ca], S[ra], X0, Y0, m)
        Hm = self._detector_homography(geometry, c, ca, ra, k_ref, X0, Y0, m)
        rows, cols = geometry.shape
        img = cv2.warpPerspective(acc, Hm, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return img * self._path_weight(geometry, c)

    def _path_weight(self, geometry, axis) -> np.ndarray:
        key = (geometry.source_mm.tobytes(), geometry.detector_origin_mm.tobytes(), geometry.detector_u.tobytes(),
               geometry.detector_v.tobytes(), geometry.pixel_spacing_mm, geometry.shape, axis)
        if key not in self._weights:
            if len(self._weights) >= 4:
                self._weights.pop(next(iter(self._weights)))
            self._weights[key] = self.grid.path_weight(geometry, axis)
        return self._weights[key]

    @staticmethod
    def _splat(acc, sl, bbox, t, sx, sy, X0, Y0, m) -> None:
        """Resample slice region ``bbox`` onto the reference grid and add it into ``acc``."""
        y0, y1, x0, x1 = bbox
        s = m * t
        # local src (xs, ys) -> reference pixel: m * (S + t (x0 + xs - S) - X0)
        ox, oy = m * (sx * (1 - t) + t * x0 - X0), m * (sy * (1 - t) + t * y0 - Y0)
        # destination rectangle: image of src [-1, w] x [-1, h] (bilinear reaches one pixel out)
        w, h = x1 - x0, y1 - y0
        dx0, dx1 = math.floor(ox - s), math.ceil(ox + s * w)
        dy0, dy1 = math.floor(oy - s), math.ceil(oy + s * h)
        dx0, dy0 = max(dx0, 0), max(dy0, 0)
        dx1, dy1 = min(dx1, acc.shape[1] - 1), min(dy1, acc.shape[0] - 1)
        if dx1 < dx0 or dy1 < dy0:
            return
        M = np.array([[s, 0, ox - dx0], [0, s, oy - dy0]])
        out = cv2.warpAffine(sl[y0:y1, x0:x1], M, (dx1 - dx0 + 1, dy1 - dy0 + 1), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        acc[dy0:dy1 + 1, dx0:dx1 + 1] += out

    def _reference_box(self, geometry, shape, S, c, ca, ra, scale, k_ref):
        """(X0, Y0, W, H): reference-plane grid covering both the volume's shadow and the detector's view."""
        _, nr, nc = shape
        ext = []
        for t in (scale[0], scale[-1]):
            ext.append([S[ca] + t * (np.array([-0.5, nc - 0.5]) - S[ca]),
                        S[ra] + t * (np.array([-0.5, nr - 0.5]) - S[ra])])
        xs = np.concatenate([e[0] for e in ext])
        ys = np.concatenate([e[1] for e in ext])
        lo, hi = np.array([xs.min(), ys.min()]), np.array([xs.max(), ys.max()])
        # detector corners back-projected onto the reference plane (index coordinates)
        rows, cols = geometry.shape
        corners = np.array([[-1, -1], [cols, -1], [-1, rows], [cols, rows]], float)
        Tinv = np.linalg.inv(self.grid.T_world_voxel)
        D = (Tinv[:3, :3] @ geometry.pixel_to_detector_mm(corners).T).T + Tinv[:3, 3]
        d = D - S
        if np.all(d[:, c] * (k_ref - S[c]) > 0):
            p = S + ((k_ref - S[c]) / d[:, c])[:, None] * d
            lo = np.maximum(lo, p[:, [ca, ra]].min(0))
            hi = np.minimum(hi, p[:, [ca, ra]].max(0))
        if np.any(hi <= lo):
            return None
        m = self.oversample
        X0, Y0 = math.floor(lo[0]) - 1, math.floor(lo[1]) - 1
        W, H = int(math.ceil((hi[0] - X0) * m)) + 3, int(math.ceil((hi[1] - Y0) * m)) + 3
        return X0, Y0, W, H

    def _detector_homography(self, geometry, c, ca, ra, k_ref, X0, Y0, m) -> np.ndarray:
        """3x3 inverse map: detector pixel (u, v) -> reference-grid pixel."""
        P = self.grid.projection_matrix_index(geometry)
        H = np.column_stack([P[:, ca], P[:, ra], P[:, c] * k_ref + P[:, 3]])
        G = np.array([[1 / m, 0, X0], [0, 1 / m, Y0], [0, 0, 1.0]])
        return np.linalg.inv(H @ G)


def render_drr(grid: MuGrid, geometry: ConeBeamGeometry, oversample: float = 1.0) -> np.ndarray:
    """One DRR (line integrals, float32 (rows, cols)); use ``ShearWarpRenderer`` to render many."""
    return ShearWarpRenderer(grid, oversample).render(geometry)
