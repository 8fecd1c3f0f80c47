"""Shot views, the projection-to-geometry decomposition, metal suppression and the similarities."""
import numpy as np
import pytest

from core.registration import RegistrationError, ShotView, geometry_from_projection, line_integral_image
from core.registration.similarity import highpass_ncc, ncc, patch_gradient_ncc
from core.registration.views import suppress_metal_blobs
from core.simulation.scene import carm_geometry


@pytest.mark.parametrize("view,primary,secondary", [("ap", 0, 0), ("ap", 12, -7), ("lat", -5, 9)])
@pytest.mark.parametrize("scale", [1.0, -3.5])
def test_geometry_from_projection_reproduces_the_camera(view, primary, secondary, scale):
    g = carm_geometry(view, primary, secondary, np.array([5.0, -3, 8]), 1000, 625, (0.45, 0.4), (300, 320))
    h = geometry_from_projection(scale * g.projection_matrix, g.shape, in_front_mm=np.zeros(3), sid_mm=800.0)
    X = np.random.default_rng(1).uniform(-80, 80, (50, 3))
    assert np.max(np.abs(h.project(X) - g.project(X))) < 1e-6
    assert np.allclose(h.source_mm, g.source_mm, atol=1e-6)
    assert h.source_to_detector_mm == pytest.approx(800.0)
    # the detector lies beyond the patient, on the side away from the source
    assert (np.zeros(3) - h.source_mm) @ -h.detector_normal > 0


def test_geometry_from_projection_rejects_bad_matrices():
    with pytest.raises(RegistrationError, match="3x4"):
        geometry_from_projection(np.eye(3), (10, 10), np.zeros(3))
    with pytest.raises(RegistrationError, match="singular"):
        geometry_from_projection(np.zeros((3, 4)), (10, 10), np.zeros(3))
    P = carm_geometry("ap", 0, 0, np.zeros(3), 1000, 625, (0.5, 0.5), (64, 64)).projection_matrix
    with pytest.raises(RegistrationError, match="in_front_mm"):
        geometry_from_projection(P, (64, 64), [np.nan, 0, 0])


def test_line_integrals_and_bad_pixels():
    px = np.full((32, 32), 1000, np.uint16)
    px[8:16, 8:16] = 100                      # dense: dark in MONOCHROME2
    li = line_integral_image(px)
    assert li[10, 10] - li[0, 0] == pytest.approx(np.log(1001 / 101), rel=1e-5)
    inverted = line_integral_image(px.max() - px, "MONOCHROME1")       # MONOCHROME1: dense is bright
    assert inverted[10, 10] > inverted[0, 0]
    with pytest.raises(RegistrationError, match="2-D"):
        line_integral_image(np.ones(100))
    with pytest.raises(RegistrationError, match="non-negative"):
        line_integral_image(-np.ones((32, 32)))
    with pytest.raises(RegistrationError, match="photometric"):
        line_integral_image(px, "RGB")
    g = carm_geometry("ap", 0, 0, np.zeros(3), 1000, 625, (0.5, 0.5), (64, 64))
    with pytest.raises(RegistrationError, match="differ in size"):
        ShotView("ap", np.zeros((32, 32)), g)


def test_metal_blobs_go_and_bone_edges_stay():
    vv, uu = np.mgrid[0:128, 0:128].astype(np.float32)
    img = 0.002 * uu                                          # soft tissue trend
    img[:, 60:68] += 0.6                                      # a cortex seen edge on: a long bright bar
    for c in ((20, 20), (100, 30), (64, 100)):               # steel balls: +3.6 over ~10 px
        img[(uu - c[0]) ** 2 + (vv - c[1]) ** 2 <= 25] += 3.6
    out = suppress_metal_blobs(img, blob_px=15)
    assert abs(out[20, 20] - 0.002 * 20) < 0.05
    assert abs(out[30, 100] - 0.002 * 100) < 0.05
    assert np.allclose(out[:, 60:68][:80], img[:, 60:68][:80])  # the bar, away from the ball on it
    assert np.array_equal(suppress_metal_blobs(0.002 * uu, 15), 0.002 * uu)


def test_similarities_against_known_relations():
    rng = np.random.default_rng(3)
    import cv2
    a = cv2.GaussianBlur(rng.random((80, 90)).astype(np.float32), (0, 0), 2.0)
    assert ncc(a, 3 * a + 7) == pytest.approx(1.0, abs=1e-9)
    assert ncc(a, -a) == pytest.approx(-1.0, abs=1e-9)
    assert ncc(a, np.ones_like(a)) == 0.0
    assert patch_gradient_ncc(a, 2 * a + 1) == pytest.approx(1.0, abs=1e-3)
    shifted = np.roll(a, 4, axis=1)
    assert patch_gradient_ncc(a, shifted) < 0.5
    vv, uu = np.mgrid[0:80, 0:90].astype(np.float32)
    trend = a + 0.01 * uu                          # soft tissue's slow ramp under the same structure
    assert highpass_ncc(a, trend) > 0.95
    assert ncc(a, trend) < 0.5


class _Shift:
    """A distortion that moves every ideal pixel by (+3, -2) raw pixels."""
    def ideal_to_raw(self, uv):
        return np.asarray(uv, float) + [3.0, -2.0]


def test_views_from_a_calibration_use_its_projection_and_undistort():
    from core.calibration.calibration import CageCalibration, PlaneFit, ViewCalibration
    from core.calibration.distortion import NoDistortion
    from core.registration import views_from_calibration
    views, images = {}, {}
    for name, dist in (("ap", NoDistortion()), ("lat", _Shift())):
        g = carm_geometry(name, 3, -2, np.zeros(3), 1000, 625, (0.5, 0.5), (96, 128))
        plane = PlaneFit("p", np.zeros(3), np.eye(3)[:2], np.eye(3), np.zeros(0, int), np.zeros((0, 2)),
                         np.zeros(0), np.zeros(0))
        views[name] = ViewCalibration(name, (96, 128), dist, g.projection_matrix, [plane, plane])
        img = np.full((96, 128), 3000, np.uint16)
        img[30:70, 40:80] = 300              # a dense square, in raw pixels (larger than a cage ball)
        images[name] = img
    calib = CageCalibration("3d2d", views)
    out = views_from_calibration(calib, images)
    X = np.random.default_rng(2).uniform(-40, 40, (10, 3))
    for v in out:
        assert np.max(np.abs(v.geometry.project(X) - _project(views[v.name].P, X))) < 1e-6
    ap, lat = out
    dense, clear = np.log(3001 / 301), 0.0
    # image[v, u]; ideal (u, v) is raw (u + 3, v - 2) in the LAT, raw itself in the AP
    assert ap.image[50, 37] - ap.image[0, 0] == pytest.approx(clear, abs=0.05)
    assert ap.image[50, 78] - ap.image[0, 0] == pytest.approx(dense, abs=0.05)
    assert lat.image[50, 37] - lat.image[0, 0] == pytest.approx(dense, abs=0.05)
    assert lat.image[50, 78] - lat.image[0, 0] == pytest.approx(clear, abs=0.05)
    with pytest.raises(RegistrationError, match="calibrated at"):
        views_from_calibration(calib, {"ap": images["ap"][:90], "lat": images["lat"]})
    with pytest.raises(RegistrationError, match="LAT image is missing"):
        views_from_calibration(calib, {"ap": images["ap"]})


def _project(P, X):
    h = X @ P[:, :3].T + P[:, 3]
    return h[:, :2] / h[:, 2:]
