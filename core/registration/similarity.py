"""Image similarity between a DRR and a shot: global NCC and patch-wise gradient NCC.

- ``ncc``: normalized cross-correlation over the region (invariant to the offset and
  gain between line integrals and ``-log`` of the shot), for the coarse stages where
  the whole silhouette steers the pose.
- ``patch_gradient_ncc``: the gradient correlation of Penney et al. (1998) computed in
  square patches (local NCC of the x and y Sobel derivatives, each patch normalised on
  its own, averaged over patches weighted by the shot's gradient energy): edges drive
  the fine stage, and slowly varying soft tissue, heel effect and scatter drop out.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ncc", "highpass_ncc", "patch_gradient_ncc", "SIMILARITIES"]

_EPS = 1e-12


def ncc(moving: np.ndarray, fixed: np.ndarray) -> float:
    """Σ(a-ā)(b-b̄) / sqrt(Σ(a-ā)² Σ(b-b̄)²) over all pixels; 0 where either image is flat."""
    a = moving.astype(np.float64).ravel()
    b = fixed.astype(np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    # sums, not ``a @ b``: a BLAS dot may wake its thread pool for ~10k elements, costly when loaded
    d = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / d) if d > _EPS else 0.0


def highpass_ncc(moving: np.ndarray, fixed: np.ndarray, sigma_px: float = 3.0) -> float:
    """NCC of both images minus their Gaussian blur (σ px): the bone's structure at this scale,
    without the soft tissue's slow trend that the CT box does not hold."""
    # +1: around the DRR's support (zero outside the box) the blur's far tails would be
    # float32 subnormals, ~100x slower; an offset changes neither difference
    a = moving.astype(np.float32) + np.float32(1.0)
    b = fixed.astype(np.float32)
    a = a - cv2.GaussianBlur(a, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    b = b - cv2.GaussianBlur(b, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    return ncc(a, b)


def _local_ncc(a: np.ndarray, b: np.ndarray, patch: int, weight: np.ndarray) -> float:
    """Patch NCC of a and b (box windows of ``patch`` px), averaged with ``weight`` per pixel."""
    box = (patch, patch)
    def mean(x):
        return cv2.boxFilter(x, -1, box, normalize=True, borderType=cv2.BORDER_REFLECT)
    ma, mb = mean(a), mean(b)
    va = mean(a * a) - ma * ma
    vb = mean(b * b) - mb * mb
    cov = mean(a * b) - ma * mb
    r = cov / np.sqrt(np.maximum(va * vb, _EPS))
    return float((r * weight).sum() / max(weight.sum(), _EPS))


def patch_gradient_ncc(moving: np.ndarray, fixed: np.ndarray, patch: int = 9) -> float:
    """Mean of the patch NCC of the x and y derivatives (Sobel), in [-1, 1]."""
    a = moving.astype(np.float32)
    b = fixed.astype(np.float32)
    out = 0.0
    for dx, dy in ((1, 0), (0, 1)):
        ga = cv2.Sobel(a, cv2.CV_32F, dx, dy, ksize=3)
        gb = cv2.Sobel(b, cv2.CV_32F, dx, dy, ksize=3)
        w = cv2.boxFilter(gb * gb, -1, (patch, patch), normalize=True, borderType=cv2.BORDER_REFLECT)
        out += 0.5 * _local_ncc(ga, gb, patch, np.sqrt(w))
    return out


SIMILARITIES = {"ncc": ncc, "hpncc": highpass_ncc, "gradncc": patch_gradient_ncc}
