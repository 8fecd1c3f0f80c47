"""The simulator's true two-view geometry in the cage frame, behind the same
``ray / locate / project`` calls as a ``CageCalibration`` (core.planning.two_view's
``TwoViewCalibration``): ground truth for planning tests and benchmarks."""
from __future__ import annotations

import numpy as np

from core.geometry.rigid import triangulate_rays


class TruthCalibration:
    """Rays and projections of raw pixels through each shot's true distortion and pinhole."""

    def __init__(self, shots: dict):
        self.shots = shots
        self.geometry = {v: s.geometry_cage() for v, s in shots.items()}

    def ray(self, view, uv_raw):
        s = self.shots[view]
        ideal = np.asarray(uv_raw, float)[None]
        if s.distortion is not None:
            ideal = s.distortion.raw_to_ideal(ideal)
        return self.geometry[view].ray(ideal[0])

    def locate(self, uv_ap, uv_lat):
        return triangulate_rays(self.ray("ap", uv_ap), self.ray("lat", uv_lat))

    def project(self, points_mm):
        p = np.atleast_2d(np.asarray(points_mm, float))
        out = {}
        for v, s in self.shots.items():
            uv = self.geometry[v].project(p)
            out[v] = uv if s.distortion is None else s.distortion.ideal_to_raw(uv)
        return out
