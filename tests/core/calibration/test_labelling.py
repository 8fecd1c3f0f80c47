"""Labelling on projected ball centres with ground truth: each difficulty, and never a wrong match.

Ideal pixel centres come from a pinhole C-arm (tests/core/synthetic_shots.py)
with 0.1 px noise; no rendering, so these tests are fast.
"""
import numpy as np
import pytest

from core.calibration.cage import cage_from_dict, load_cage
from core.calibration.labelling import LabellingError, label_plane, label_view
from resources import path
from synthetic_shots import carm_geometry

SHAPE = (512, 512)


@pytest.fixture(scope="module")
def cage():
    return load_cage(path("cages", "default.json"))


def _points(cage, view, seed, angles=(4, -3, 6), shift=(0, 0, 0), other_part=False, hide=0.0,
            clutter=0, noise=0.1):
    rng = np.random.default_rng(seed)
    geom = carm_geometry(view, SHAPE, 0.5, angles_deg=angles, shift_mm=shift)
    pts, truth = [], []
    for k, p in enumerate(cage.planes_for(view)):
        uv = geom.project(p.balls_mm)
        for i, q in enumerate(uv):
            pts.append(q), truth.append((k, i))
    if other_part:
        other = "lat" if view == "ap" else "ap"
        for p in cage.planes_for(other):
            for q in geom.project(p.balls_mm):
                pts.append(q), truth.append((-1, -1))
    pts = np.array(pts) + rng.normal(0, noise, (len(pts), 2))
    truth = np.array(truth)
    keep = geom.contains(pts, margin_px=6) & (rng.random(len(pts)) >= hide)
    pts, truth = pts[keep], truth[keep]
    if clutter:
        pts = np.vstack([pts, rng.uniform(0, SHAPE[0], (clutter, 2))])
        truth = np.vstack([truth, -np.ones((clutter, 2), int)])
    order = rng.permutation(len(pts))
    return pts[order], truth[order]


def _check(matches, truth, min_fraction):
    for k, m in enumerate(matches):
        assert np.all(truth[m.point_idx, 0] == k), "a ball matched to another plane's blob or clutter"
        assert np.all(truth[m.point_idx, 1] == m.ball_idx), "a wrong ball label"
        visible = np.sum(truth[:, 0] == k)
        assert m.n_matched >= min_fraction * visible
        assert m.rms_px < 0.3


@pytest.mark.parametrize("view", ["ap", "lat"])
def test_all_balls_identified(cage, view):
    pts, truth = _points(cage, view, seed=1)
    _check(label_view([p.balls_2d for p in cage.planes_for(view)], pts, SHAPE), truth, 0.98)


def test_other_part_and_clutter_in_view(cage):
    pts, truth = _points(cage, "ap", seed=2, other_part=True, clutter=60)
    _check(label_view([p.balls_2d for p in cage.planes_for("ap")], pts, SHAPE), truth, 0.95)


def test_part_of_cage_outside_the_field(cage):
    pts, truth = _points(cage, "lat", seed=3, shift=(0, 70, 0))     # ~40 % of the part off the detector
    assert np.sum(truth[:, 0] >= 0) < 0.75 * 96
    _check(label_view([p.balls_2d for p in cage.planes_for("lat")], pts, SHAPE), truth, 0.95)


def test_hidden_balls(cage):
    pts, truth = _points(cage, "ap", seed=4, hide=0.35, clutter=20)
    _check(label_view([p.balls_2d for p in cage.planes_for("ap")], pts, SHAPE), truth, 0.95)


def test_steep_view_perspective(cage):
    pts, truth = _points(cage, "ap", seed=5, angles=(18, -15, 40))
    _check(label_view([p.balls_2d for p in cage.planes_for("ap")], pts, SHAPE), truth, 0.95)


def test_another_asymmetric_cage_file():
    """A cage unlike the default: 14 balls per plane, tilted planes, 35 mm layers."""
    rng = np.random.default_rng(7)
    planes = []
    for view, normal_axis in (("ap", 2), ("lat", 0)):
        R = np.linalg.qr(rng.normal(size=(3, 3)))[0] if False else None
        for layer in range(2):
            xy = []
            while len(xy) < 14:
                q = rng.uniform(-55, 55, 2)
                if all(np.linalg.norm(q - o) > 16 for o in xy):
                    xy.append(q)
            xy = np.array(xy)
            t = np.radians(15)
            if view == "ap":
                b = np.column_stack([xy[:, 0] * np.cos(t), xy[:, 1], xy[:, 0] * np.sin(t) + 35 * layer])
            else:
                b = np.column_stack([170 + 35 * layer + xy[:, 1] * np.sin(t), xy[:, 0], xy[:, 1] * np.cos(t) - 140])
            planes.append({"id": f"{view}{layer}", "view": view, "balls_mm": b.tolist()})
    cage = cage_from_dict({"format": "fluoronav.cage/1", "ball_diameter_mm": 3.0, "planes": planes})
    for view in ("ap", "lat"):
        pts, truth = _points(cage, view, seed=8, clutter=15)
        _check(label_view([p.balls_2d for p in cage.planes_for(view)], pts, SHAPE), truth, 0.9)


def test_symmetric_plane_is_not_forced():
    """A full regular grid has many equally good labellings: refuse, do not guess."""
    g = np.array([[x, y] for x in range(0, 84, 12) for y in range(0, 84, 12)], float)
    pts = 100 + 3.1 * g @ np.array([[0.98, 0.2], [-0.2, 0.98]])
    with pytest.raises(LabellingError, match="ambiguous"):
        label_plane(g, pts, SHAPE)


def test_random_blobs_are_not_a_cage(cage):
    pts = np.random.default_rng(9).uniform(0, 512, (150, 2))
    with pytest.raises(LabellingError):
        label_plane(cage.planes[0].balls_2d, pts, SHAPE)


def test_too_few_detections(cage):
    with pytest.raises(LabellingError, match="only 3 balls"):
        label_plane(cage.planes[0].balls_2d, np.zeros((3, 2)), SHAPE)


def test_bad_detection_shape(cage):
    with pytest.raises(LabellingError, match="shape"):
        label_plane(cage.planes[0].balls_2d, np.zeros((10, 3)), SHAPE)


def test_too_few_model_balls():
    with pytest.raises(LabellingError, match="at least"):
        label_plane(np.zeros((3, 2)), np.zeros((10, 2)), SHAPE)


def test_plane_symmetry_of_the_cage_file(cage):
    """A 5x5 grid maps onto itself (refused as a symmetric cage file); the default cage's planes do not."""
    from core.calibration.labelling import plane_is_symmetric
    g = np.array([[x, y] for x in range(-40, 41, 20) for y in range(-40, 41, 20)], float)
    assert plane_is_symmetric(g)
    assert not any(plane_is_symmetric(p.balls_2d) for p in cage.planes)
