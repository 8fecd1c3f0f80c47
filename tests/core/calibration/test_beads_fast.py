"""Bead detection on fluoronav's own simulated shots (plate, image-intensifier and flat-panel
cage shots, 512 and 1024 px) against the simulator's ground truth, and the batched centre
estimator ``refine_centres`` against known sub-pixel centres.
No stored outputs: simulated images differ in the last bits between CPUs."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from core.calibration import beads as B
from core.simulation.block_phantom import block_phantom
from core.simulation.scene import SimulatedOR


def _found(beads, truth_px, all_px, tol_px=0.5):
    """(fraction of ``truth_px`` found within ``tol_px``, their errors px, detections > 2 px
    from every ball of ``all_px``)."""
    d, _ = cKDTree(beads.centres_px).query(truth_px)
    a = all_px[np.all(np.isfinite(all_px), axis=1)]
    far = cKDTree(a).query(beads.centres_px)[0] > 2.0
    return float(np.mean(d < tol_px)), d[d < tol_px], int(far.sum())


@pytest.fixture(scope="module")
def sim_ii():
    return SimulatedOR(seed=3, phantom=block_phantom(4.0), shape=(512, 512))


def _cage_truth(sim, shot, margin_px):
    """True raw pixels of the cage balls whose whole disc is in the field and clear of the
    other balls (two shadows stacked are dropped by design)."""
    every = shot.project_raw(np.concatenate([p.balls_mm for p in sim.cage.planes]))
    uv = every[shot.in_field(every, margin_px)]
    nn = cKDTree(every).query(uv, 2)[0][:, 1]
    return uv, nn, every


@pytest.mark.parametrize("detector", ["image_intensifier", "flat_panel"])
def test_simulated_cage_shots_detected_against_truth(detector):
    """AP and LAT cage shots over the block phantom (512 px): >= 95 % of the balls clear of other
    balls found within 0.5 px, median error < 0.1 px, at most 2 detections off any ball;
    the inverted flat-panel image gives the same centres under polarity -1."""
    sim = SimulatedOR(seed=3, phantom=block_phantom(4.0), shape=(512, 512), detector=detector)
    for view in ("ap", "lat"):
        shot = sim.acquire(view)
        px = shot.image.pixels
        b = B.detect_beads(px)
        assert b.polarity == 1
        r = float(np.median(b.radius_px))
        uv, nn, every = _cage_truth(sim, shot, r + 4)
        frac, err, far = _found(b, uv[nn > 2 * r + 2], every)
        assert frac >= 0.95, (detector, view, frac)
        assert np.median(err) < 0.1 and far <= 2, (detector, view, np.median(err), far)
        if detector == "flat_panel" and view == "ap":
            inv = B.detect_beads(px.max() - px)
            assert inv.polarity == -1
            frac_i, err_i, _ = _found(inv, uv[nn > 2 * r + 2], every)
            assert frac_i >= 0.95 and np.median(err_i) < 0.1


def test_simulated_plate_shot_detected_against_truth(sim_ii):
    """The II plate shot (2 mm balls, round field, distortion): >= 97 % of the balls whose disc is
    inside the field found within 0.3 px, none off the grid."""
    shot = sim_ii.plate_shot("ap")
    b = B.detect_beads(shot.image.pixels)
    every = shot.distortion.ideal_to_raw(shot.balls_ideal_px)
    c = np.asarray(shot.distortion.centre_px)
    r = float(np.median(b.radius_px))
    t = every[np.linalg.norm(every - c, axis=1) < shot.distortion.radius_px - r - 4]
    frac, err, far = _found(b, t, every, 0.3)
    assert len(t) > 300 and frac >= 0.97, (len(t), frac)
    assert far == 0 and np.median(err) < 0.08


def test_detection_is_deterministic(sim_ii):
    """The same image twice gives the same detections in the same order, bit for bit."""
    px = sim_ii.acquire("lat").image.pixels
    a, b = B.detect_beads(px), B.detect_beads(px.copy())
    assert np.array_equal(a.centres_px, b.centres_px) and np.array_equal(a.radius_px, b.radius_px)


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


def test_refine_centres_finds_known_centres():
    """Known sub-pixel centres on a tilted background: found within 0.05 px from starts 0.5 px
    off; a ball whose window leaves the image, one on NaN (off-field) pixels and a start on
    empty background fail (ok False, NaN); the one-ball form agrees; two touching balls,
    each refined with the other left out, within 0.3 px."""
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
    c, p = B.refine_centre(d, starts[1], 4.0)
    assert np.array_equal(c, cen[1]) and p == pk[1]
    assert B.refine_centre(d, starts[5], 4.0) == (None, 0.0)
    pair = np.array([[40.2, 40.4], [48.9, 41.1]])
    d2 = (_ball((80, 80), pair[0], 4.0) + _ball((80, 80), pair[1], 4.0, bg=(0, 0, 0))).astype(np.float32)
    cen2, _, ok2 = B.refine_centres(d2, pair + 0.3, [4.0, 4.0], others=[pair[[1]], pair[[0]]])
    assert ok2.all() and np.max(np.linalg.norm(cen2 - pair, axis=1)) < 0.3
    alone, _, _ = B.refine_centres(d2, pair + 0.3, [4.0, 4.0])
    assert np.max(np.linalg.norm(alone - pair, axis=1)) > np.max(np.linalg.norm(cen2 - pair, axis=1))


def test_refine_centres_bad_input():
    d = np.zeros((40, 40), np.float32)
    with pytest.raises(ValueError, match="one array per ball"):
        B.refine_centres(d, [[20.0, 20.0], [10.0, 10.0]], 3.0, others=[np.zeros((0, 2))])
    cen, pk, ok = B.refine_centres(d, np.zeros((0, 2)), 3.0)
    assert cen.shape == (0, 2) and pk.shape == (0,) and ok.shape == (0,)
    cen, pk, ok = B.refine_centres(d, [[20.0, 20.0]], 3.0)       # flat: no positive weight
    assert not ok[0]


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
