"""Distortion correction: plate labelling (orientation mark), local and global models with
held-out residuals, raw <-> ideal round trips, the display remap, files and bad input."""
import numpy as np
import pytest

from core.calibration.distortion import (DistortionError, NoDistortion, distortion_from_dict, fit_distortion, fit_local,
                             fit_polynomial, remap_to_ideal)
from core.calibration.models import fit_homography
from core.calibration.plate import PlateError, label_plate, load_plate, plate_distortion, plate_from_dict
from resources import path
from synthetic_shots import BrownDistortion, carm_geometry, plate_shot

SHAPE = (512, 512)
WARP = BrownDistortion((262.5, 250.5), 256.0, k1=0.05, k2=0.01, p1=0.004, p2=-0.003)


@pytest.fixture(scope="module")
def plate():
    return load_plate(path("plates", "default.json"))


@pytest.fixture(scope="module")
def shot(plate):
    geom = carm_geometry("ap", SHAPE, 0.5)
    img, uv = plate_shot(plate.balls_mm, geom, WARP, rot_deg=-12, flip=True, seed=2)
    return img, uv, geom


def _homography_rms(a, b):
    H = fit_homography(a, b)
    p = np.column_stack([a, np.ones(len(a))]) @ H.T
    return float(np.sqrt(np.mean(np.sum((p[:, :2] / p[:, 2:] - b) ** 2, 1))))


def test_plate_labelled_through_rotation_and_flip(plate, shot):
    from core.calibration.beads import detect_beads
    img, uv, _ = shot
    b = detect_beads(img)
    det, ball = label_plate(plate, b.centres_px)
    assert len(det) >= 400
    assert np.max(np.linalg.norm(b.centres_px[det] - uv[ball], axis=1)) < 0.3    # every label right


def test_plate_correction_is_a_pinhole_to_0_05_px(plate, shot):
    """Corrected coordinates equal the true ideal ones up to a homography (the ideal frame
    is fixed by the central region), over the whole field."""
    img, _, _ = shot
    dist, figs = plate_distortion(plate, img)
    q = np.random.default_rng(0).uniform(40, 470, (3000, 2))
    assert _homography_rms(dist.raw_to_ideal(q), WARP.raw_to_ideal(q)) < 0.05
    assert _homography_rms(q, WARP.raw_to_ideal(q)) > 2.0                        # the warp was real
    assert figs["plate_balls_matched"] >= 400 and figs["max_correction_px"] > 5
    assert figs[f"heldout_rms_px_{figs['model']}"] == \
        min(v for k, v in figs.items() if k.startswith("heldout"))            # the better model is used
    forced, f2 = plate_distortion(plate, img, model="local_linear")            # the paper's method on demand
    assert f2["model"] == "local_linear" and forced.kind == "local" and forced.method == "linear"


def _control_points(n=400, seed=1, noise=0.03):
    rng = np.random.default_rng(seed)
    ideal = rng.uniform(30, 480, (n, 2))
    raw = WARP.ideal_to_raw(ideal) + rng.normal(0, noise, (n, 2))
    return raw, ideal


@pytest.mark.parametrize("fit, heldout, err", [(fit_polynomial, 0.1, 0.15),
                                               (lambda r, i: fit_local(r, i, "cubic"), 0.2, 0.35),
                                               (lambda r, i: fit_local(r, i, "linear"), 0.6, 1.2)])
def test_models_round_trip_and_report_heldout(fit, heldout, err):
    """400 scattered control points with 0.03 px noise. The per-cell linear map (the
    paper's local method) interpolates the curved warp worst; the polynomial best."""
    raw, ideal = _control_points()
    d = fit(raw, ideal)
    assert 0 < d.heldout_rms_px < heldout
    q = np.random.default_rng(3).uniform(60, 450, (500, 2))
    assert np.max(np.linalg.norm(d.raw_to_ideal(q) - WARP.raw_to_ideal(q), axis=1)) < err
    assert np.max(np.linalg.norm(d.ideal_to_raw(d.raw_to_ideal(q)) - q, axis=1)) < 1e-3


def test_best_model_selected_by_heldout_error():
    raw, ideal = _control_points()
    best, figs = fit_distortion(raw, ideal)
    assert set(figs) == {"polynomial", "local_linear", "local_cubic"}
    assert best.heldout_rms_px == min(figs.values())


def test_outside_the_control_points_falls_back_to_the_polynomial():
    raw, ideal = _control_points()
    d = fit_local(raw, ideal)
    corner = np.array([[2.0, 3.0], [509.0, 508.0]])
    assert np.all(np.isfinite(d.raw_to_ideal(corner)))
    assert np.allclose(d.raw_to_ideal(corner), d.fallback.raw_to_ideal(corner))


@pytest.mark.parametrize("kind", ["none", "polynomial", "local"])
def test_saved_and_rebuilt_identically(kind):
    raw, ideal = _control_points(200)
    d = {"none": NoDistortion(), "polynomial": fit_polynomial(raw, ideal), "local": fit_local(raw, ideal)}[kind]
    back = distortion_from_dict(d.to_dict())
    q = np.random.default_rng(4).uniform(0, 511, (100, 2))
    assert np.allclose(back.raw_to_ideal(q), d.raw_to_ideal(q)) and np.allclose(back.ideal_to_raw(q), d.ideal_to_raw(q))


def test_remap_puts_features_at_their_ideal_place():
    from core.calibration.beads import detect_beads
    from synthetic_shots import render
    geom = carm_geometry("ap", SHAPE, 0.5)
    balls = np.array([[x, y, 0.0] for x in (-60, -20, 20, 60) for y in (-60, -20, 20, 60)])
    img, raw = render(geom, balls, distortion=WARP, background=False, clutter=False, kwire=False, noise=False)
    raw_pts, ideal_pts = _control_points(400, noise=0.0)
    d = fit_local(raw_pts, ideal_pts)
    out = remap_to_ideal(img, d)
    b = detect_beads(out.astype(np.float32))
    from scipy.spatial import cKDTree
    dd, _ = cKDTree(b.centres_px).query(geom.project(balls))
    assert np.all(dd < 0.15)


@pytest.mark.parametrize("raw, ideal, msg", [(np.zeros((5, 2)), np.zeros((5, 2)), "at least 12"),
                                             (np.zeros((20, 2)), np.zeros((19, 2)), "matching"),
                                             (np.full((20, 2), np.nan), np.zeros((20, 2)), "non-finite")])
def test_bad_control_points(raw, ideal, msg):
    with pytest.raises(DistortionError, match=msg):
        fit_polynomial(raw, ideal)


def test_unknown_saved_kind():
    with pytest.raises(DistortionError, match="unknown distortion kind"):
        distortion_from_dict({"kind": "spline"})


@pytest.mark.parametrize("bad, msg", [({"format": "x"}, "not a fluoronav.plate/1"),
                                      ({"format": "fluoronav.plate/1", "ball_diameter_mm": 2, "balls_mm": [[0, 0]]},
                                       "at least 16"),
                                      ({"format": "fluoronav.plate/1", "ball_diameter_mm": -1, "balls_mm": []},
                                       "ball_diameter_mm"),
                                      ])
def test_bad_plate_files(bad, msg):
    with pytest.raises(PlateError, match=msg):
        plate_from_dict(bad)


def test_plate_shot_without_a_plate(plate):
    with pytest.raises(PlateError):
        plate_distortion(plate, np.full(SHAPE, 3000, np.uint16))


def test_missed_balls_beside_the_mark_are_recovered_and_the_mark_is_not_filled(plate, shot):
    import dataclasses
    from core.calibration.beads import detect_beads
    from core.calibration.plate import _recover_missed
    img, uv, _ = shot
    b = detect_beads(img)
    mark_nb = uv[[int(np.argmin(np.linalg.norm(plate.balls_mm - q, axis=1))) for q in ([-10, 0], [10, 10])]]
    drop = np.min(np.linalg.norm(b.centres_px[:, None] - mark_nb[None], axis=2), axis=1) < 1
    assert drop.sum() == 2
    b2 = dataclasses.replace(b, centres_px=b.centres_px[~drop], radius_px=b.radius_px[~drop],
                             contrast=b.contrast[~drop], roundness=b.roundness[~drop])
    pts = _recover_missed(img, b2)
    added = pts[len(b2.centres_px):]
    assert len(added) >= 1
    assert np.all(np.min(np.linalg.norm(added[:, None] - mark_nb[None], axis=2), axis=1) < 0.3)
    assert len(_recover_missed(img, b)) == len(b.centres_px)       # the mark's own holes stay empty


def _plate_of(balls, name):
    return plate_from_dict({"format": "fluoronav.plate/1", "name": name, "ball_diameter_mm": 2.0,
                            "balls_mm": np.asarray(balls, float).tolist()})


@pytest.mark.parametrize("kind", ["mark_beside_missing_centre", "hexagonal"])
def test_plate_layouts_labelled_from_the_file(kind):
    """Layouts other than the default: a square grid whose centre ball is missing with an orientation
    ball half a pitch beside it (off the grid), and a hexagonal grid coded by two missing balls (both
    mirror-symmetric). Each is labelled from its file's geometry through rotation, flip and distortion."""
    from core.calibration.beads import detect_beads
    if kind == "hexagonal":
        balls = [[10.0 * (i + 0.5 * (j % 2)), 10.0 * np.sqrt(3) / 2 * j] for i in range(-13, 14) for j in range(-15, 16)]
        balls = [b for b in balls if np.hypot(*b) < 135 and not (np.allclose(b, [0, 0]) or np.allclose(b, [15, 10 * np.sqrt(3) / 2]))]
    else:
        balls = [[10.0 * i, 10.0 * j] for i in range(-12, 13) for j in range(-12, 13) if (i, j) != (0, 0)] + [[5.0, 0.0]]
    plate = _plate_of(balls, kind)
    geom = carm_geometry("ap", SHAPE, 0.5)
    img, uv = plate_shot(plate.balls_mm, geom, WARP, rot_deg=17, flip=True, seed=4)
    b = detect_beads(img)
    det, ball = label_plate(plate, b.centres_px)
    inside = np.all((uv > 12) & (uv < SHAPE[0] - 12), axis=1)
    assert len(det) >= 0.9 * inside.sum()
    # every label right, up to a symmetry of the layout (this mark lies on a mirror line of the grid),
    # which changes no corrected coordinate: one rigid map of the plate carries the labels to the truth
    from scipy.spatial import cKDTree
    d, true_ball = cKDTree(uv).query(b.centres_px[det])
    assert np.all(d < 0.5)
    x, y = plate.balls_mm[ball], plate.balls_mm[true_ball]
    for det_sign in (1.0, -1.0):
        U, _, Vt = np.linalg.svd((x - x.mean(0)).T @ (y - y.mean(0)))
        R = (U @ np.diag([1.0, det_sign * np.sign(np.linalg.det(U @ Vt))]) @ Vt).T
        err = np.linalg.norm(x @ R.T + (y - x @ R.T).mean(0) - y, axis=1).max()
        if err < 0.5:
            break
    assert err < 0.5, f"labels off by {err:.1f} mm"
    dist, figs = plate_distortion(plate, img)
    q = np.random.default_rng(1).uniform(60, 450, (2000, 2))
    assert _homography_rms(dist.raw_to_ideal(q), WARP.raw_to_ideal(q)) < 0.1


def test_plain_grid_plate_gives_the_same_correction():
    """A plain square grid (no mark, no missing ball, its edges out of view): the labels are known only
    up to a shift, which changes no corrected coordinate (the ideal frame is a homography of the central
    balls): accepted, and the correction is exact."""
    plate = _plate_of([[10.0 * i, 10.0 * j] for i in range(-15, 16) for j in range(-15, 16)], "plain")
    img, _ = plate_shot(plate.balls_mm, carm_geometry("ap", SHAPE, 0.5), WARP, rot_deg=17, flip=False, seed=5)
    dist, _ = plate_distortion(plate, img)
    q = np.random.default_rng(2).uniform(60, 450, (2000, 2))
    assert _homography_rms(dist.raw_to_ideal(q), WARP.raw_to_ideal(q)) < 0.1


def test_plate_of_random_balls_is_refused():
    """A plate file whose balls form no grid: its shot cannot be walked; one line, no traceback."""
    rng = np.random.default_rng(0)
    balls = rng.uniform(-120, 120, (400, 2))
    balls = balls[np.all(np.linalg.norm(balls[:, None] - balls[None], axis=-1) + 1e3 * np.eye(400) > 6, axis=1)]
    plate = _plate_of(balls, "random")
    img, _ = plate_shot(plate.balls_mm, carm_geometry("ap", SHAPE, 0.5), WARP, rot_deg=0, flip=False, seed=6)
    with pytest.raises(PlateError, match="plate"):
        plate_distortion(plate, img)
