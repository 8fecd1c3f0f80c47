"""Auto-plan on a held-out vertebra shot by the simulated C-arm: the fitted mesh against the truth
(DICE, HD95), its trajectories graded (Gertzbein-Robbins), refusals and bad input."""
import numpy as np
import pytest

from core.planning.grading import grade_trajectory
from core.registration.ssm.cases import make_case
from core.registration.ssm.evaluate import _recon, baseline_trajectories
from core.registration.ssm.fit import AutoPlanError, autoplan
from core.registration.ssm.model import shape_model


@pytest.fixture(scope="module")
def model():
    return shape_model("L3", 16, 0, 2.0)


@pytest.fixture(scope="module")
def case():
    # a smooth random deformation of body and arch: outside the model's family
    return make_case("L3", "deformation", seed=3, image_px=384, spacing_mm=1.5)


@pytest.fixture(scope="module")
def fitted(model, case):
    images = {v: s.image.pixels for v, s in case.shots.items()}
    return autoplan(model, case.calibration, case.clicks, images, generations=20, seed=0)


def _world(case, p):
    T = case.T_world_cage
    return np.asarray(p) @ T[:3, :3].T + T[:3, 3]


def test_fit_reconstructs_the_heldout_vertebra(case, fitted):
    dice, hd95 = _recon(case.vertebra, _world(case, fitted.vertices_mm), fitted.faces, 1.0)
    assert dice >= 0.8                # goal of issue 16; Spine-DART 0.75
    assert hd95 <= 4.0                # goal 5 mm; Spine-DART 6.3 mm
    assert fitted.quality["stage"] == "images"
    assert fitted.quality["edge_cost"] <= fitted.quality["edge_cost_initial"]
    assert fitted.quality["click_rms_px"] < 10.0


def test_proposed_trajectories_grade_a_against_the_truth(case, fitted):
    for side in ("left", "right"):
        t = fitted.trajectories[side]
        entry, target = _world(case, t.entry_mm), _world(case, t.target_mm)
        ped = case.vertebra.pedicles[side]
        g = grade_trajectory(entry, target, 5.0, ped)
        assert g.grade == "A" and g.clearance_mm > 0.3, (side, g)
        assert np.linalg.norm(entry - ped.entry_mm) < 5.0
        assert case.vertebra.body_signed_distance(target[None])[0] < -0.5      # the tip in the body


def test_baseline_triangulates_the_clicks_without_the_model(case):
    base = baseline_trajectories("L3", case.calibration, case.clicks)
    for side in ("left", "right"):
        entry, target = (_world(case, p) for p in base[side])
        ped = case.vertebra.pedicles[side]
        # through the pedicle: its line passes within 2 mm of the true isthmus
        a = (target - entry) / np.linalg.norm(target - entry)
        off = ped.isthmus_mm - entry
        assert np.linalg.norm(off - (off @ a) * a) < 2.0


def test_clicks_inconsistent_between_views_are_refused(model, case):
    bad = {v: c.copy() for v, c in case.clicks.items()}
    bad["lat"][1, 1] += 60.0          # the left pedicle clicked on another level in the LAT view
    with pytest.raises(AutoPlanError, match="do not meet in 3D"):
        autoplan(model, case.calibration, bad)


def test_clicks_of_another_anatomy_are_refused(model, case):
    """Consistent in both views, but the pedicles 2.5 times too far apart for an L3."""
    T = np.linalg.inv(case.T_world_cage)
    v = case.vertebra
    c = v.T_world_vertebra[:3, 3]
    pts = np.array([c] + [c + 2.5 * (v.pedicles[s].isthmus_mm - c) for s in ("left", "right")])
    pc = pts @ T[:3, :3].T + T[:3, 3]
    clicks = case.calibration.project(pc)
    with pytest.raises(AutoPlanError, match="check the level"):
        autoplan(model, case.calibration, clicks)


@pytest.mark.parametrize("clicks, match", [
    ({"ap": np.zeros((3, 2))}, "AP and the LAT"),
    ({"ap": np.zeros((2, 2)), "lat": np.zeros((3, 2))}, "3 finite"),
    ({"ap": np.full((3, 2), np.nan), "lat": np.zeros((3, 2))}, "3 finite"),
    ("clicks", "AP and the LAT"),
])
def test_bad_clicks_are_refused(model, case, clicks, match):
    with pytest.raises(AutoPlanError, match=match):
        autoplan(model, case.calibration, clicks)


def test_images_must_be_both_views(model, case):
    with pytest.raises(AutoPlanError, match="AP and the LAT shot"):
        autoplan(model, case.calibration, case.clicks, images={"ap": case.shots["ap"].image.pixels})



def test_overlay_draws_the_fit_where_the_vertebra_projects(case, fitted):
    from core.registration.ssm.overlay import overlay
    for view in ("ap", "lat"):
        img = overlay(fitted, case.calibration, case.shots[view].image.pixels, view, case.clicks)
        assert img.shape == (384, 384, 3) and img.dtype == np.uint8
        green = (img[..., 1] > 200) & (img[..., 0] < 90) & (img[..., 2] < 90)
        rows, cols = np.nonzero(green)
        assert green.sum() > 200
        # drawn inside the true vertebra's projected box (10 px margin)
        lo, hi = case.vertebra.box(0.0)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        T = np.linalg.inv(case.T_world_cage)
        uv = case.calibration.project(corners @ T[:3, :3].T + T[:3, 3])[view]
        inside = ((cols >= uv[:, 0].min() - 10) & (cols <= uv[:, 0].max() + 10)
                  & (rows >= uv[:, 1].min() - 10) & (rows <= uv[:, 1].max() + 10))
        assert inside.mean() > 0.97
