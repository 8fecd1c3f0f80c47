"""The fast bead detection path (shared first pass, blob shapes in one pass, all balls refined
together by ``refine_centres``) against the reference path (``_detect(fast=False)``: every
stage from scratch, ``refine_centre`` ball by ball) on images made here: the same detections
in the same order, centres within 1e-6 px, radii and peaks within 1e-9 relative.
No stored outputs: simulated images differ in the last bits between CPUs."""
import numpy as np
import pytest

from core.calibration import beads as B
from core.calibration.cage import load_cage
from core.simulation.block_phantom import block_phantom
from core.simulation.scene import SimulatedOR
from resources import path
from synthetic_shots import carm_geometry, render


def _same(img, polarity=None):
    """Both paths on one image; returns the fast result after asserting equality."""
    ref = B._detect(img, polarity, None, 6, fast=False)
    new = B._detect(img, polarity, None, 6, fast=True)
    assert len(new) == len(ref) > 0
    assert (new.polarity, new.dropped_merged, new.split_pairs) == (ref.polarity, ref.dropped_merged, ref.split_pairs)
    assert np.max(np.abs(new.centres_px - ref.centres_px)) < 1e-6
    np.testing.assert_allclose(new.radius_px, ref.radius_px, rtol=1e-9, atol=0)
    np.testing.assert_allclose(new.contrast, ref.contrast, rtol=1e-9, atol=0)
    np.testing.assert_allclose(new.roundness, ref.roundness, rtol=0, atol=1e-9)
    return new


@pytest.fixture(scope="module")
def cage():
    return load_cage(path("cages", "default.json"))


@pytest.fixture(scope="module")
def geom():
    return carm_geometry("ap", (512, 512), 0.5, angles_deg=(3, -2, 10))


@pytest.fixture(scope="module")
def sim_ii():
    return SimulatedOR(seed=3, phantom=block_phantom(4.0), shape=(512, 512))


def test_images_of_the_bead_tests_detected_alike(cage, geom):
    """The images of tests/core/test_beads.py: clean, clutter + K-wire, inverted, round field,
    a touching pair (split by the two-ball fit)."""
    balls = cage.balls_for("ap")
    clean, _ = render(geom, balls, background=False, clutter=False, kwire=False, noise=False)
    assert _same(clean).polarity == 1
    assert _same(render(geom, balls, seed=3)[0]).polarity == 1
    inverted = 65535 - render(geom, balls, seed=4)[0]
    assert _same(inverted).polarity == -1
    assert _same(inverted, polarity=-1).polarity == -1           # polarity given: no scoring
    roundf, _ = render(geom, balls, seed=5, clutter=False, kwire=False)
    yy, xx = np.mgrid[:512, :512]
    roundf[np.hypot(xx - 255.5, yy - 255.5) > 200] = 0
    b = _same(roundf)
    assert np.all(np.hypot(b.centres_px[:, 0] - 255.5, b.centres_px[:, 1] - 255.5) < 200)
    a = balls[0]
    src = geom.source_mm
    far = src + (a - src) * (a[2] + 50 - src[2]) / (a[2] - src[2]) + np.array([3.0, 0, 0])
    pair, _ = render(geom, np.vstack([balls[:30], far]), background=False, clutter=False, kwire=False, seed=6)
    assert _same(pair).split_pairs >= 1


def test_simulated_plate_and_cage_shots_detected_alike(sim_ii):
    """The II plate shot of the plate calibration, cage AP and LAT on an image intensifier
    (round field, distortion) and a flat panel, one of them inverted."""
    plate = sim_ii.plate_shot("ap").image.pixels
    b = _same(plate)
    assert len(b) > 300                                  # the plate's grid, not a handful
    _same(plate, polarity=1)
    _same(sim_ii.acquire("ap").image.pixels)
    _same(sim_ii.acquire("lat").image.pixels)
    fp = SimulatedOR(seed=3, phantom=block_phantom(4.0), shape=(512, 512), detector="flat_panel")
    ap = fp.acquire("ap").image.pixels
    assert _same(ap).polarity == 1
    assert _same(ap.max() - ap).polarity == -1
    _same(fp.acquire("lat").image.pixels)


def test_1024_cage_shot_detected_alike():
    sim = SimulatedOR(seed=3, phantom=block_phantom(4.0), shape=(1024, 1024))
    b = _same(sim.acquire("ap").image.pixels)
    assert len(b) > 60


def _ball(shape, centre, r, amp=1.0, bg=(0.2, 0.001, -0.002)):
    """A sphere chord profile (density) at a sub-pixel centre, 4x4 supersampled, on a tilted plane."""
    rows, cols = shape
    s = (np.arange(4) + 0.5) / 4 - 0.5
    yy, xx = np.mgrid[:rows, :cols].astype(float)
    d = np.zeros(shape)
    for dy in s:
        for dx in s:
            q = r * r - (xx + dx - centre[0]) ** 2 - (yy + dy - centre[1]) ** 2
            d += np.sqrt(np.maximum(q, 0.0)) / r / 16
    return amp * d + bg[0] + bg[1] * xx + bg[2] * yy


def test_refine_centres_equals_refine_centre_ball_by_ball():
    """Known sub-pixel centres: both estimators find them (< 0.05 px) and agree to 1e-9 px;
    a ball whose window leaves the image, one on NaN (off-field) pixels and a start on empty
    background give None / ok=False alike; neighbours (``others``) handled alike."""
    truth = np.array([[20.3, 21.7], [45.55, 20.1], [70.2, 44.9], [30.0, 60.35], [3.0, 40.0], [60.0, 75.0]])
    d = sum(_ball((90, 96), t, 4.0) for t in truth[:4]) + 0.0
    d = d - 0.2 * (len(truth[:4]) - 1)                  # one background plane, not four
    d[70:, 50:] = np.nan                                 # the ball at (60, 75) is off the field
    d = d.astype(np.float32)
    starts = truth + np.array([[0.4, -0.3], [-0.5, 0.2], [0.3, 0.3], [-0.2, -0.4], [0, 0], [0, 0]])
    starts = np.vstack([starts, [[88.0, 10.0]]])         # nothing there
    cen, pk, ok = B.refine_centres(d, starts, 4.0)
    assert ok.tolist() == [True, True, True, True, False, False, False]
    assert np.all(np.isnan(cen[~ok])) and np.all(pk[~ok] == 0)
    assert np.max(np.linalg.norm(cen[:4] - truth[:4], axis=1)) < 0.05
    for k, s in enumerate(starts):
        c, p = B.refine_centre(d, s, 4.0)
        if ok[k]:
            assert np.max(np.abs(c - cen[k])) < 1e-9 and abs(p - pk[k]) <= 1e-9 * p
        else:
            assert c is None and p == 0.0
    # two touching balls, each refined with the other left out
    pair = np.array([[40.2, 40.4], [48.9, 41.1]])
    d2 = (_ball((80, 80), pair[0], 4.0) + _ball((80, 80), pair[1], 4.0, bg=(0, 0, 0))).astype(np.float32)
    others = [pair[[1]], pair[[0]]]
    cen2, pk2, ok2 = B.refine_centres(d2, pair + 0.3, [4.0, 4.0], others=others)
    assert ok2.all()
    assert np.max(np.linalg.norm(cen2 - pair, axis=1)) < 0.3
    for k in range(2):
        c, p = B.refine_centre(d2, pair[k] + 0.3, 4.0, others=others[k])
        assert np.max(np.abs(c - cen2[k])) < 1e-9 and abs(p - pk2[k]) <= 1e-9 * p
    # a ball without neighbours in the same call as one with them
    cen3, _, ok3 = B.refine_centres(d2, pair + 0.3, 4.0, others=[pair[[1]], np.zeros((0, 2))])
    c, _ = B.refine_centre(d2, pair[1] + 0.3, 4.0)
    assert ok3.all() and np.max(np.abs(cen3[1] - c)) < 1e-9 and np.max(np.abs(cen3[0] - cen2[0])) < 1e-9
    # one iteration only: the same partial step
    c1, _, _ = B.refine_centres(d, starts[:4], 4.0, iterations=1)
    assert np.max(np.abs(c1[0] - B.refine_centre(d, starts[0], 4.0, iterations=1)[0])) < 1e-9


def test_refine_centres_bad_input():
    d = np.zeros((40, 40), np.float32)
    with pytest.raises(ValueError, match="one array per ball"):
        B.refine_centres(d, [[20.0, 20.0], [10.0, 10.0]], 3.0, others=[np.zeros((0, 2))])
    cen, pk, ok = B.refine_centres(d, np.zeros((0, 2)), 3.0)
    assert cen.shape == (0, 2) and pk.shape == (0,) and ok.shape == (0,)
    cen, pk, ok = B.refine_centres(d, [[20.0, 20.0]], 3.0)       # flat: no positive weight
    assert not ok[0] and B.refine_centre(d, (20.0, 20.0), 3.0)[0] is None


def test_disc_opening_by_rectangles_is_opencvs_pixel_for_pixel():
    """The background's grey opening: the union-of-rectangles opening returns OpenCV's ellipse
    opening bit for bit (min/max round nothing), at the image border too, for every disc size."""
    import cv2
    rng = np.random.default_rng(2)
    for shape in ((64, 64), (97, 171), (256, 256)):
        img = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), 2)
        img[shape[0] // 3:shape[0] // 2, 5:40] = 3.0            # a plateau and a dark edge row
        img[-3:, :] = -2.0
        for k in range(3, 45, 2):
            ref = cv2.morphologyEx(img, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            assert np.array_equal(B._open_disc(img, k), ref), (shape, k)
            rects = B._disc_rectangles(k)
            assert max(r.shape[0] for r in rects) == k and max(r.shape[1] for r in rects) == k
            assert len(rects) == len({r.shape[1] for r in rects}) <= k // 2 + 1
