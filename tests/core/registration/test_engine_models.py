"""The engine knows models only through ``RegistrationModel``: a model that is not a CT (a few
Gaussian blobs moved by 3 parameters, as a shape model would be by its modes) fits the same way."""
import numpy as np
import pytest

from core.registration import RegistrationRefused, RegistrationSettings, ShotView, register
from core.simulation.scene import carm_geometry

BLOBS = np.array([[0.0, 0, 0], [18, 4, -6], [-12, -8, 10], [5, 15, 14], [-20, 10, -12]])


class BlobModel:
    """Blobs of 5 mm (σ at the object) whose cloud is shifted by x (mm); rendered analytically."""
    n_params = 3
    scales = np.array([10.0, 10.0, 10.0])

    def __init__(self, offset):
        self.offset = np.asarray(offset, float)

    def check_points(self, x):
        return BLOBS + self.offset + x

    def footprint(self, x):
        lo, hi = BLOBS.min(0) - 10, BLOBS.max(0) + 10
        return np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]) \
            + self.offset + x

    def render(self, geometry, x):
        rows, cols = geometry.shape
        vv, uu = np.mgrid[0:rows, 0:cols].astype(float)
        img = np.zeros((rows, cols))
        for p in self.check_points(x):
            u, v = geometry.project(p)
            depth = np.linalg.norm(p - geometry.source_mm)
            s = 5.0 * geometry.source_to_detector_mm / depth / geometry.pixel_spacing_mm[0]
            img += np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * s * s))
        return img.astype(np.float32)


def _views(truth_offset, rng):
    views = []
    for name in ("ap", "lat"):
        g = carm_geometry(name, 0, 0, np.zeros(3), 1000, 625, (0.9, 0.9), (160, 160))
        img = BlobModel(truth_offset).render(g, np.zeros(3)) + rng.normal(0, 0.02, g.shape)
        views.append(ShotView(name, img, g))
    return views


def test_a_model_that_is_not_a_ct_fits_through_the_same_engine():
    truth = np.array([6.0, -7.0, 5.0])
    views = _views(truth, np.random.default_rng(0))
    r = register(BlobModel(np.zeros(3)), views)
    assert np.max(np.abs(r.x - truth)) < 0.5, r.x
    assert r.T_calib_model is None          # no pose: the model only has its own parameters
    assert r.runs >= 2 and r.disagreement_mm <= 2.0


def test_shots_of_something_else_are_refused():
    rng = np.random.default_rng(1)
    views = [ShotView(v.name, rng.normal(0, 1, v.image.shape), v.geometry) for v in _views(np.zeros(3), rng)]
    with pytest.raises(RegistrationRefused, match="did not converge"):
        register(BlobModel(np.zeros(3)), views, RegistrationSettings(seed=3))
