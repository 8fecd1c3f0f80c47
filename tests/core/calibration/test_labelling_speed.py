"""The labelling's shortcuts give the answers of the plain computations they replace: the
hypothesis votes (sparse product over distinct affine coordinates) against counting every
coordinate pair, and the image-intensifier field test (distance maps) against evaluating the
distortion's inverse for every point. Small inputs: well under a second each."""
import numpy as np
import pytest

from core.calibration import labelling as L
from core.calibration.distortion import NoDistortion, fit_polynomial
from core.calibration.pipeline import _in_field
from core.geometry.pixels import mask_at


def _grid(n=7, pitch=10.0, missing=((0, 0), (2, 3))):
    return np.array([[pitch * i, pitch * j] for i in range(n) for j in range(n) if (i, j) not in missing], float)


def _brute_votes(mq, mo, n_mb, iq, io, min_votes):
    """Every coordinate pair within the tolerance listed (the plain way), then counted."""
    from scipy.spatial import cKDTree
    pairs = cKDTree(iq).sparse_distance_matrix(cKDTree(mq), L.HASH_TOL, output_type="ndarray")
    i, j = pairs["i"], pairs["j"]
    votes = np.bincount(io[i] * n_mb + mo[j])
    keys = np.flatnonzero(votes >= min_votes)
    return keys, votes[keys]


@pytest.mark.parametrize("wide", [False, True])
def test_votes_equal_counting_every_pair(wide):
    rng = np.random.default_rng(3)
    model = _grid()
    A = np.array([[1.8, 0.3], [-0.2, 1.7]])
    pts = model[rng.permutation(len(model))[:24]] @ A.T + [40.0, 60.0] + rng.normal(0, 0.2, (24, 2))
    pts = np.vstack([pts, rng.uniform(0, 150, (5, 2))])                # clutter
    km, kc, ki, kc2, mv = ((L.K_MODEL + 2, L.N_MODEL_COORDS + 4, L.K_IMAGE + 3, L.N_IMAGE_COORDS + 6, 2) if wide
                           else (L.K_MODEL, L.N_MODEL_COORDS, L.K_IMAGE, L.N_IMAGE_COORDS, 3))
    mb, mq, mo, _ = L._model_bases(model, km, kc)
    ib, iq, io, _ = L._bases(pts, ki, kc2)
    keys, votes = L._votes(mq, mo, len(mb), iq, io, len(ib), mv)
    o = np.argsort(keys)
    bk, bv = _brute_votes(mq, mo, len(mb), iq, io, mv)
    assert len(bk) > 50                                                  # the test has something to count
    np.testing.assert_array_equal(keys[o], bk)
    np.testing.assert_array_equal(votes[o], bv)


def test_voters_are_the_pairs_within_the_hash_tolerance():
    rng = np.random.default_rng(4)
    model = _grid()
    pts = model @ np.array([[1.5, 0.2], [0.1, 1.6]]).T + rng.normal(0, 0.3, (len(model), 2))
    mb, mq, mo, _ = L._model_bases(model, L.K_MODEL, L.N_MODEL_COORDS)
    ib, iq, io, _ = L._bases(pts, L.K_IMAGE, L.N_IMAGE_COORDS)
    keys, votes = L._votes(mq, mo, len(mb), iq, io, len(ib), 3)
    ibi, mbi = np.divmod(keys[:200], len(mb))
    h, ie, me = L._voters(iq, io, len(ib), ibi, mq, mo, len(mb), mbi)
    np.testing.assert_array_equal(np.bincount(h, minlength=len(ibi)), votes[:200])
    assert np.all(io[ie] == ibi[h]) and np.all(mo[me] == mbi[h])
    assert np.all(np.linalg.norm(iq[ie] - mq[me], axis=1) <= L.HASH_TOL)


def _barrel(shape):
    """A polynomial distortion fitted to a barrel law about the image centre (up to ~9 px)."""
    rows, cols = shape
    c = np.array([0.5 * cols, 0.52 * rows])
    g = np.stack(np.meshgrid(np.linspace(20, cols - 20, 15), np.linspace(20, rows - 20, 15)), -1).reshape(-1, 2)
    r2 = np.sum(((g - c) / (0.5 * cols)) ** 2, axis=1, keepdims=True)
    ideal = c + (g - c) * (1 + 0.04 * r2)
    return fit_polynomial(g, ideal, orders=(3, 4))


@pytest.mark.parametrize("field_kind", ["round", "rect"])
def test_field_test_equals_the_exact_one(field_kind):
    shape = (300, 320)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    field = (np.hypot(xx - 165, yy - 150) < 135) if field_kind == "round" else \
        ((xx > 30) & (xx < 290) & (yy > 12) & (yy < 280))
    dist = _barrel(shape)
    test = _in_field(field, dist)
    rng = np.random.default_rng(5)
    q = np.vstack([rng.uniform(-80, 400, (40000, 2)), rng.uniform(-1e5, 1e5, (500, 2)),
                   [[np.nan, 10.0], [np.inf, 5.0], [-np.inf, -np.inf], [1e12, 3.0]]])
    with np.errstate(all="ignore"):
        exact = mask_at(field, dist.ideal_to_raw(q))
        fast = test(q)
    assert 1000 < exact.sum() < len(q) - 1000              # both sides of the edge are asked
    np.testing.assert_array_equal(fast, exact)
    assert test(np.zeros((0, 2))).shape == (0,)


def test_field_test_without_distortion_is_the_mask():
    field = np.zeros((50, 60), bool)
    field[10:40, 5:50] = True
    test = _in_field(field, NoDistortion())
    q = np.array([[5.0, 10.0], [4.4, 10.0], [49.4, 39.4], [49.6, 39.0], [np.nan, 20.0]])
    np.testing.assert_array_equal(test(q), [True, False, True, False, False])
