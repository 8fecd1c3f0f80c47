"""The fitted vertebra drawn over a shot for review: its occluding contours (green), the proposed
trajectories (left red, right blue, entry to target) and the clicks (yellow crosses)."""
from __future__ import annotations

import cv2
import numpy as np

from core.registration.ssm.fit import AutoPlanResult, _Contours

__all__ = ["overlay"]

_COLOURS = {"left": (40, 40, 230), "right": (230, 120, 30)}      # BGR


def overlay(result: AutoPlanResult, cal, pixels, view: str, clicks=None) -> np.ndarray:
    """BGR uint8 image of the raw shot (display windowed on its 1-99 % range) with the fit drawn on it."""
    img = np.asarray(pixels, float)
    lo, hi = np.percentile(img, [1.0, 99.0])
    grey = np.clip(255 * (img - lo) / max(hi - lo, 1e-9), 0, 255).astype(np.uint8)
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)

    class _M:                                   # the contour finder wants the model's faces only
        faces = result.faces
    rim = _Contours(_M, cal).points(result.vertices_mm, view)
    for u, v in cal.views[view].project(rim, "3d2d"):
        if np.isfinite(u) and np.isfinite(v):
            cv2.circle(out, (int(round(u)), int(round(v))), 0, (60, 220, 60), -1)
    for side, t in result.trajectories.items():
        uv = cal.views[view].project(np.array([t.entry_mm, t.target_mm]), "3d2d")
        if np.all(np.isfinite(uv)):
            p0, p1 = (tuple(int(round(c)) for c in q) for q in uv)
            cv2.line(out, p0, p1, _COLOURS[side], 1, cv2.LINE_AA)
            cv2.circle(out, p1, 3, _COLOURS[side], 1)
    if clicks is not None:
        for u, v in np.asarray(clicks[view], float):
            cv2.drawMarker(out, (int(round(u)), int(round(v))), (0, 220, 240), cv2.MARKER_CROSS, 8, 1)
    return out
