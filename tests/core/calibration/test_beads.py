"""Bead detection against exact sphere-chord renderings: sub-pixel bias, clutter, polarity,
round field edge, touching pairs, and bad input."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from core.calibration.beads import BeadDetectionError, detect_beads
from core.calibration.cage import load_cage
from resources import path
from synthetic_shots import carm_geometry, render

SHAPE = (512, 512)


@pytest.fixture(scope="module")
def cage():
    return load_cage(path("cages", "default.json"))


@pytest.fixture(scope="module")
def geom():
    return carm_geometry("ap", SHAPE, 0.5, angles_deg=(3, -2, 10))


def _errors(beads, truth, shape=SHAPE, margin=12, isolated_px=None):
    inside = np.all((truth > margin) & (truth < np.array(shape[::-1]) - margin), axis=1)
    if isolated_px is not None:
        inside &= cKDTree(truth).query(truth, 2)[0][:, 1] > isolated_px
    d, i = cKDTree(beads.centres_px).query(truth[inside])
    found = d < 1.0
    return beads.centres_px[i[found]] - truth[inside][found], found.mean()


def test_clean_balls_have_no_centroid_bias(cage, geom):
    """Bias of the background-corrected weighted centroid on clean isolated balls < 0.05 px
    (mean and RMS); balls touching another ball's shadow stay within 0.15 px."""
    img, truth = render(geom, cage.balls_for("ap"), background=False, clutter=False, kwire=False, noise=False)
    b = detect_beads(img)
    r = float(np.median(b.radius_px))
    err, frac = _errors(b, truth, isolated_px=2 * r + 4)
    assert frac == 1.0
    assert np.all(np.abs(err.mean(axis=0)) < 0.05)
    assert np.sqrt(np.mean(np.sum(err ** 2, 1))) < 0.05
    assert np.max(np.abs(err)) < 0.05
    err_all, frac_all = _errors(b, truth)
    assert frac_all > 0.9                      # the rest: two shadows stacked, dropped
    assert np.max(np.linalg.norm(err_all, axis=1)) < 0.15


def test_balls_found_over_anatomy_clutter_and_kwire(cage, geom):
    img, truth = render(geom, cage.balls_for("ap"), seed=3)
    b = detect_beads(img)
    err, frac = _errors(b, truth)
    assert frac >= 0.85
    assert np.sqrt(np.mean(np.sum(err ** 2, 1))) < 0.15
    assert b.polarity == 1


def test_inverted_image_polarity_detected(cage, geom):
    img, truth = render(geom, cage.balls_for("ap"), seed=4)
    b = detect_beads(65535 - img)
    assert b.polarity == -1
    err, frac = _errors(b, truth)
    assert frac >= 0.85 and np.sqrt(np.mean(np.sum(err ** 2, 1))) < 0.15


def test_round_field_edge_gives_no_biased_balls(cage, geom):
    img, truth = render(geom, cage.balls_for("ap"), seed=5, clutter=False, kwire=False)
    yy, xx = np.mgrid[:512, :512]
    img[np.hypot(xx - 255.5, yy - 255.5) > 200] = 0                 # the II's unexposed surround
    b = detect_beads(img)
    assert np.all(np.hypot(b.centres_px[:, 0] - 255.5, b.centres_px[:, 1] - 255.5) < 200)
    d, _ = cKDTree(truth).query(b.centres_px)
    assert np.all(d < 0.3)                                          # balls cut by the edge were dropped


def test_touching_pair_is_split(cage, geom):
    balls = cage.balls_for("ap")[:30].copy()
    a = balls[0]
    # a second ball in the far layer whose shadow overlaps the first one's by ~35 %
    src = geom.source_mm
    far = src + (a - src) * (a[2] + 50 - src[2]) / (a[2] - src[2]) + np.array([3.0, 0, 0])
    balls = np.vstack([balls, far])
    img, truth = render(geom, balls, background=False, clutter=False, kwire=False, seed=6)
    sep = np.linalg.norm(truth[0] - truth[-1])
    b = detect_beads(img)
    r = np.median(b.radius_px)
    assert sep < 2 * r                                              # the two shadows touch
    d, _ = cKDTree(b.centres_px).query(truth[[0, -1]])
    assert b.split_pairs >= 1
    assert np.all(d < 0.35)


@pytest.mark.parametrize("bad, msg", [(np.zeros(100), "2-D"), (np.zeros((10, 10)), "32 x 32"),
                                      (np.full((64, 64), 1000, np.uint16), "no round balls")])
def test_bad_images_rejected(bad, msg):
    with pytest.raises(BeadDetectionError, match=msg):
        detect_beads(bad)


def test_partial_ball_at_the_field_border(cage, geom):
    """A ball whose disc the field border cuts (NaN beyond it) is centred by the masked template fit within
    0.15 px for 100 %-50 % of its disc visible (over anatomy), from a start 0.4 px off; too little visible, or no ball: None."""
    from core.calibration.bead_pairs import build_template, fit_partial_ball
    from core.calibration.beads import density_of
    img, truth = render(geom, cage.balls_for("ap"), background=True, clutter=False, kwire=False, seed=3)
    b = detect_beads(img)
    d = density_of(img, 1).astype(float)
    r = float(np.median(b.radius_px))
    tmpl = build_template(d, b.centres_px, r)
    amp = float(np.median(b.contrast))
    sigma = 1.4826 * float(np.median(np.abs(np.diff(d, axis=1)))) / np.sqrt(2)
    iso = cKDTree(truth).query(truth, 2)[0][:, 1] > 2 * r + 6
    inner = np.all((truth > 30) & (truth < np.array(SHAPE[::-1]) - 30), axis=1)
    dist = np.linalg.norm(cage.balls_for("ap") - geom.source_mm, axis=1)
    errs = []
    for k in np.flatnonzero(iso & inner)[:6]:
        t, scale = truth[k], np.median(dist) / dist[k]       # its magnification over the typical one
        for cut in (r, 0.5 * r, 0.0):                   # border at x = u + cut (NaN beyond)
            dd = d.copy()
            dd[:, int(np.floor(t[0] + cut)) + 1:] = np.nan
            c = fit_partial_ball(dd, t + [0.3, -0.3], tmpl, amp, sigma, scale)
            assert c is not None, f"ball at {t} with border {cut:.1f} px from its centre not fitted"
            errs.append(np.linalg.norm(c - t))
        dd = d.copy()
        dd[:, int(t[0] - 0.6 * r):] = np.nan            # less than half of the disc visible
        assert fit_partial_ball(dd, t, tmpl, amp, sigma) is None
    assert len(errs) >= 12 and max(errs) < 0.15, max(errs)
    empty = truth[iso & inner][0] + [0.0, 3.5 * r]      # background only
    assert cKDTree(truth).query(empty)[0] > 2.5 * r
    assert fit_partial_ball(d, empty, tmpl, amp, sigma) is None


def test_partial_ball_outside_the_image_is_none():
    from core.calibration.bead_pairs import RadialTemplate, fit_partial_ball
    t = RadialTemplate(np.array([0.0, 3.0, 6.0]), np.array([1.0, 0.8, 0.0]), 5.0)
    d = np.zeros((64, 64))
    for uv in ([-3.0, 10.0], [10.0, 70.0], [np.nan, 5.0]):
        assert fit_partial_ball(d, np.array(uv), t, 1.0, 0.01) is None
