"""The lumbar shape model: correspondence, modes, its 3D fit to vertebrae it never saw, and the
reconstruction figures (DICE, HD95) checked on analytic shapes first."""
import numpy as np
import pytest
from skimage.measure import marching_cubes

from core.registration.ssm.metrics import best_3d_fit, dice_hd95, voxelize_mesh
from core.registration.ssm.model import ShapeModelError, build_shape_model, shape_model
from core.registration.ssm.samples import build_vertebra, family_params, heldout_vertebra


@pytest.fixture(scope="module")
def model():
    return shape_model("L3", 16, 0, 2.0)


def _sphere_mesh(r=10.0, h=0.5):
    ax = np.arange(-r - 3, r + 3 + h, h)
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    v, f, _, _ = marching_cubes(np.sqrt(X ** 2 + Y ** 2 + Z ** 2) - r, 0.0, spacing=(h, h, h))
    return v[:, ::-1] + ax[0], f[:, ::-1]


def test_metrics_on_a_sphere_against_its_analytic_surface():
    v, f = _sphere_mesh()
    sdf = lambda p: np.linalg.norm(p, axis=-1) - 10.0
    dice, hd = dice_hd95(v, f, sdf, 0.5)
    assert dice > 0.98 and hd <= 0.75
    shifted = lambda p: np.linalg.norm(p - [2.0, 0, 0], axis=-1) - 10.0     # 2 mm off: HD95 ~2 mm
    dice2, hd2 = dice_hd95(v, f, shifted, 0.5, truth_points=np.array([[-9, -11, -11], [13, 11, 11.0]]))
    overlap = 1 - 3 * 2.0 / (4 * 10.0) + 2.0 ** 3 / (16 * 10.0 ** 3)     # two unit spheres d/r = 0.2 apart
    assert dice2 == pytest.approx(overlap, abs=0.02)
    assert 1.5 <= hd2 <= 2.5


def test_voxelized_volume_matches_the_sphere():
    v, f = _sphere_mesh(8.0)
    mask = voxelize_mesh(v, f, np.array([-10.0, -10, -10]), 0.5, (41, 41, 41))
    assert mask.sum() * 0.125 == pytest.approx(4 / 3 * np.pi * 8 ** 3, rel=0.03)


def test_model_corresponds_and_keeps_the_named_points(model):
    assert model.correspondence_rms_mm < 0.05
    assert 3 <= model.n_modes <= 15 and np.all(np.diff(model.explained) > 0)
    pts = model.points()
    assert np.allclose(pts["body_centre"], 0.0, atol=1e-6)
    # the left pedicle on the left (+x), behind the body; targets anterior of the isthmus
    assert pts["isthmus_left"][0] > 10 and pts["isthmus_left"][1] > 15
    assert pts["target_left"][1] < pts["isthmus_left"][1] - 20
    # one standard deviation of the first mode moves the surface by millimetres, not metres
    d = np.linalg.norm(model.vertices([1.0]) - model.vertices(), axis=1)
    assert 0.3 < d.mean() < 5.0


@pytest.mark.parametrize("kind", ["family", "fracture", "asymmetry"])
def test_best_3d_fit_to_an_unseen_vertebra(model, kind):
    rng = np.random.default_rng(99)
    v = build_vertebra(family_params("L3", rng)) if kind == "family" else heldout_vertebra("L3", kind, rng)
    T, b = best_3d_fit(model, v.signed_distance, np.eye(4), n_points=600)
    verts = model.vertices(b) @ T[:3, :3].T + T[:3, 3]
    lo, hi = v.box(0.0)
    dice, hd = dice_hd95(verts, model.faces, v.parts, 1.0, truth_points=np.array([lo, hi]))
    assert dice > (0.9 if kind == "family" else 0.85)
    assert hd < (2.5 if kind == "family" else 4.0)


def test_bad_requests_are_refused():
    with pytest.raises(ShapeModelError, match="lumbar"):
        build_shape_model("T12", 16)
    with pytest.raises(ShapeModelError, match="8-2000"):
        build_shape_model("L3", 3)
    with pytest.raises(ShapeModelError, match="spacing"):
        build_shape_model("L3", 16, spacing_mm=0.1)


def test_too_many_coefficients_are_refused(model):
    with pytest.raises(ShapeModelError, match="at most"):
        model.vertices(np.zeros(model.n_modes + 1))
    with pytest.raises(ShapeModelError):
        model.points([np.nan])
