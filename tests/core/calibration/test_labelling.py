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


def _coded_grid_cage():
    """Two interleaved layers like a flat-panel calibration cage: an 8x8 and a 7x7 grid of 12 mm pitch,
    offset by half a pitch, 40 mm apart, each coded by a few missing balls (no rotation, flip or
    shift maps one onto itself, but a shift by one pitch nearly does)."""
    def grid(n, holes, z):
        c = (n - 1) / 2
        return [[12.0 * (i - c), 12.0 * (j - c), z] for i in range(n) for j in range(n) if (i, j) not in holes]
    planes = [{"id": "ap_1", "view": "ap", "balls_mm": grid(8, {(0, 1), (2, 5), (5, 2), (6, 6), (3, 3)}, 0.0)},
              {"id": "ap_2", "view": "ap", "balls_mm": grid(7, {(1, 1), (4, 2), (2, 5), (5, 4)}, -40.0)}]
    for p in list(planes):      # the lateral part: the same layers turned to face +x
        b = np.asarray(p["balls_mm"])
        planes.append({"id": p["id"].replace("ap", "lat"), "view": "lat",
                       "balls_mm": np.column_stack([200 - b[:, 2], b[:, 0], b[:, 1] - 140]).tolist()})
    return cage_from_dict({"format": "fluoronav.cage/1", "ball_diameter_mm": 4.0, "planes": planes})


@pytest.mark.parametrize("seed, shift, hide, clutter", [(20, (0, 0, 0), 0.0, 0), (21, (0, 0, 0), 0.05, 15),
                                                        (22, (25, 10, 0), 0.03, 10)])
def test_coded_interleaved_grids(seed, shift, hide, clutter):
    """Near-translation-invariant coded grids whose layers interleave into one lattice: every ball
    labelled from the code and the edges in view (part of the plane off the field in the last case),
    never a shifted labelling."""
    from core.calibration.labelling import plane_is_symmetric
    cage = _coded_grid_cage()
    assert not any(plane_is_symmetric(p.balls_2d) for p in cage.planes)
    pts, truth = _points(cage, "ap", seed=seed, shift=shift, hide=hide, clutter=clutter, angles=(3, -2, 5))
    planes = cage.planes_for("ap")
    matches = label_view([p.balls_2d for p in planes], pts, SHAPE, planes_mm=[p.balls_mm for p in planes])
    _check(matches, truth, 0.95)
    assert all(m.score_margin >= 2 for m in matches)


def test_coded_grid_with_its_code_out_of_view_is_refused():
    """Only a code-free 3x4 block of a coded grid in a small field: truly ambiguous (shifts by a
    pitch fit as well), refused rather than guessed."""
    cage = _coded_grid_cage()
    plane = cage.planes_for("ap")[0]
    pts, truth = _points(cage, "ap", seed=23, angles=(3, -2, 5))
    ij = np.rint(plane.balls_mm[:, :2] / 12.0 + 3.5).astype(int)
    block = (ij[:, 0] >= 5) & (ij[:, 1] >= 3) & (ij[:, 1] <= 5)
    keep = (truth[:, 0] == 0) & block[np.maximum(truth[:, 1], 0)]
    lo, hi = pts[keep].min(0) - 8, pts[keep].max(0) + 8
    field = lambda uv: np.all((uv > lo) & (uv < hi), axis=1)    # noqa: E731  the small field
    with pytest.raises(LabellingError, match="ambiguous"):
        label_plane(plane.balls_2d, pts[keep], SHAPE, in_field=field)
