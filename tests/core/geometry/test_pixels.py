"""core.geometry.pixels: the image covers pixel edge to pixel edge (-0.5 .. cols - 0.5)."""
import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.pixels import image_bounds, in_image

SHAPE = (100, 200)      # rows, cols


def test_edges_are_inside_and_just_beyond_is_outside():
    uv = np.array([[-0.5, -0.5], [199.5, 99.5], [-0.5001, 50], [100, 99.5001], [0, 0], [np.nan, 3]])
    assert in_image(uv, SHAPE).tolist() == [True, True, False, False, True, False]
    assert in_image([199.5, 99.5], SHAPE).shape == (1,)


def test_margin_moves_the_edges_inwards_or_outwards():
    lo, hi = image_bounds(SHAPE, 0.5)          # the border pixels' centres
    assert lo.tolist() == [0, 0] and hi.tolist() == [199, 99]
    assert in_image([[199, 99], [199.2, 10]], SHAPE, 0.5).tolist() == [True, False]
    assert in_image([[-3, 10], [-6, 10]], SHAPE, -5).tolist() == [True, False]


def test_a_detector_contains_what_the_image_holds():
    g = ConeBeamGeometry([0, 0, -600], [-49.75, -24.75, 400], [1, 0, 0], [0, 1, 0], (0.5, 0.5), SHAPE)
    uv = np.random.default_rng(0).uniform(-10, 210, (500, 2))
    assert np.array_equal(g.contains(uv, 2.0), in_image(uv, SHAPE, 2.0))


def test_mask_at_reads_the_nearest_pixel_and_is_false_outside_or_nan():
    from core.geometry.pixels import mask_at
    m = np.zeros((4, 6), bool)
    m[1, 2] = m[3, 5] = True
    uv = np.array([[2.0, 1.0], [2.4, 0.6], [1.6, 1.4], [5.49, 3.49], [5.51, 3.0], [-0.6, 0.0],
                   [np.nan, 1.0], [2.0, 0.4]])
    assert mask_at(m, uv).tolist() == [True, True, True, True, False, False, False, False]
    assert mask_at(m, np.zeros((0, 2))).shape == (0,)
    assert mask_at(m, (2.0, 1.0)).tolist() == [True]
