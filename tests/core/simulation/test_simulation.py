"""The simulated operating room: distortion, analytic objects, image formation, scene geometry, plate."""
import numpy as np
import pytest

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.block_phantom import block_phantom
from core.simulation.distortion import DistortionError, IIDistortion
from core.simulation.fluoro import DetectorModel, form_image, object_transmission
from core.simulation.objects import Cylinder, SceneError, Sphere
from core.simulation.scene import SimulatedOR, default_T_world_cage, body_extent


@pytest.fixture(scope="module")
def sim():
    return SimulatedOR(seed=5, phantom=block_phantom(4.0, seed=2), shape=(160, 160), pixel_spacing_mm=1.4)


def flat_geometry(shape=(64, 64), ps=0.4):
    rows, cols = shape
    return ConeBeamGeometry([0, -625.0, 0], [-(cols - 1) / 2 * ps, 375.0, (rows - 1) / 2 * ps],
                            [1.0, 0, 0], [0, 0, -1.0], (ps, ps), shape)


# --- distortion -----------------------------------------------------------------
@pytest.mark.parametrize("pose", [(0, 0), (30, -10), (-90, 45)])
def test_distortion_round_trip_within_0_01_px(pose):
    d = IIDistortion.for_pose((255.5, 255.5), 256.0, *pose, seed=1)
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 511, (20000, 2))
    raw = raw[np.linalg.norm(raw - 255.5, axis=1) <= 256]
    assert np.abs(d.ideal_to_raw(d.raw_to_ideal(raw)) - raw).max() <= 0.01
    ideal = raw
    assert np.abs(d.raw_to_ideal(d.ideal_to_raw(ideal)) - ideal).max() <= 0.01


def test_distortion_is_pincushion_and_depends_on_pose():
    a = IIDistortion.for_pose((255.5, 255.5), 256.0, 0, 0, seed=1)
    b = IIDistortion.for_pose((255.5, 255.5), 256.0, 60, 20, seed=1)
    edge = np.array([[255.5 + 200.0, 255.5]])
    r_raw = np.linalg.norm(a.ideal_to_raw(edge) - 255.5)
    assert 200 * 1.03 < r_raw < 200 * 1.10  # pincushion: ~5 % at 0.8 of the radius
    assert np.linalg.norm(a.ideal_to_raw(edge) - b.ideal_to_raw(edge)) > 0.5  # S-distortion varies with the pose
    np.testing.assert_allclose(a.ideal_to_raw([[255.5, 255.5]]), [[255.5, 255.5]], atol=1e-12)


def test_distortion_rejects_nonphysical_coefficients():
    with pytest.raises(DistortionError, match="physical range"):
        IIDistortion((0, 0), 100.0, k1=0.9)


def test_distortion_rejects_bad_radius():
    with pytest.raises(DistortionError, match="radius"):
        IIDistortion((0, 0), 0.0)


# --- analytic objects --------------------------------------------------------------
def test_sphere_chords_are_exact():
    s = Sphere([0, 0, 100.0], 2.0)
    d = np.array([[0, 0, 1.0], [np.sin(0.01), 0, np.cos(0.01)]])
    h = 100 * np.sin(0.01)
    np.testing.assert_allclose(s.chords(np.zeros(3), d), [4.0, 2 * np.sqrt(4 - h * h)], rtol=1e-12)


def test_cylinder_chords_are_exact():
    c = Cylinder([0, 0, 50.0], [0, 0, 80.0], 1.0)
    src = np.zeros(3)
    along = c.chords(src, np.array([[0, 0, 1.0]]))
    assert along[0] == pytest.approx(30.0)
    src2 = np.array([0, -100.0, 60.0])
    across = c.chords(src2, np.array([[0, 1.0, 0], [0, 1.0, 0.0]]) / 1.0)
    assert across[0] == pytest.approx(2.0)
    tilted = Cylinder([0, 0, 0], [0, 0, 10.0], 1.0).chords(np.array([-100.0, 0, 5.0 - 100 * np.tan(0.3)]),
                                                          np.array([[np.cos(0.3), 0, np.sin(0.3)]]))
    # crosses the axis at z = 5 at 0.3 rad: 2 r / cos(0.3), between the caps
    assert tilted[0] == pytest.approx(2.0 / np.cos(0.3), rel=1e-9)


def test_zero_length_cylinder_is_refused():
    with pytest.raises(SceneError, match="length"):
        Cylinder([0, 0, 1.0], [0, 0, 1.0], 1.0)


# --- image formation ------------------------------------------------------------------
IDEAL = DetectorModel(kind="flat_panel", noise=False, blur_sigma_px=0.0, supersample=8, bits_stored=16)


@pytest.mark.parametrize("centre", [(0.0, 80.0, 0.0), (35.0, 150.0, -28.0)])
def test_ball_shadow_centroid_equals_projected_centre(centre):
    geo = flat_geometry((64, 64), 0.4)
    c = np.array(centre)
    uv = geo.project(c)
    # shift the detector so the ball's shadow lies in it, off-axis for the second case
    rows, cols = geo.shape
    off = (uv - np.array([31.3, 32.6])) * 0.4
    geo = ConeBeamGeometry(geo.source_mm, geo.detector_origin_mm + off[0] * geo.detector_u + off[1] * geo.detector_v,
                           geo.detector_u, geo.detector_v, (0.4, 0.4), geo.shape)
    T = object_transmission([Sphere(c, 2.0)], geo, None, supersample=8)
    w = -np.log(T)  # line integral: its centroid is the quantity a bead detector estimates
    vv, uu = np.mgrid[0:rows, 0:cols]
    centroid = np.array([(w * uu).sum(), (w * vv).sum()]) / w.sum()
    truth = geo.project(c)
    assert np.linalg.norm(centroid - truth) < 0.05
    # the exact cone-beam bias (the chord-weighted centroid of a sphere's shadow is not the
    # projection of its centre) is far below that: a few 1e-3 px for 4 mm balls
    assert np.linalg.norm(centroid - truth) < 0.01


def test_ball_centroid_with_ii_distortion_matches_distorted_projection():
    geo = flat_geometry((128, 128), 1.0)
    d = IIDistortion.for_pose((63.5, 63.5), 64.0, 40, 10, seed=3, k1=0.08)
    c = np.array([30.0, 120.0, -15.0])  # 0.7 of the field radius off centre
    T = object_transmission([Sphere(c, 2.0)], geo, d, supersample=8)
    w = -np.log(T)
    vv, uu = np.mgrid[0:128, 0:128]
    centroid = np.array([(w * uu).sum(), (w * vv).sum()]) / w.sum()
    assert np.linalg.norm(centroid - d.ideal_to_raw(geo.project(c))) < 0.05


def test_beer_lambert_and_monochrome2():
    geo = flat_geometry((32, 32), 1.0)
    drr = np.zeros(geo.shape, np.float32)
    drr[:, 16:] = 1.0  # right half attenuates e^-1
    pixels, info = form_image(drr, geo, (), None, IDEAL)
    left, right = pixels[:, :16].astype(float) - IDEAL.dark_offset, pixels[:, 16:].astype(float) - IDEAL.dark_offset
    assert right.mean() / left.mean() == pytest.approx(np.exp(-1), rel=2e-3)  # denser = darker
    assert info["transmission_ref"] == pytest.approx(np.exp(-0.5), rel=0.7)


def test_quantum_noise_is_poisson_and_seeded():
    geo = flat_geometry((96, 96), 1.0)
    drr = np.full(geo.shape, 2.0, np.float32)
    det = DetectorModel(kind="flat_panel", blur_sigma_px=0.0, bits_stored=16, photons_ref=400.0)
    a, info = form_image(drr, geo, (), None, det, np.random.default_rng(1))
    b, _ = form_image(drr, geo, (), None, det, np.random.default_rng(1))
    c, _ = form_image(drr, geo, (), None, det, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    counts = (a.astype(float) - det.dark_offset) / info["gain_per_photon"]
    assert counts.mean() == pytest.approx(400.0, rel=0.02)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.1)  # Poisson: variance = mean


def test_wrong_drr_shape_is_refused():
    with pytest.raises(SceneError, match="differs from the detector"):
        form_image(np.zeros((3, 3), np.float32), flat_geometry((8, 8)), (), None, IDEAL)


def test_unknown_detector_kind_is_refused():
    with pytest.raises(SceneError, match="image_intensifier"):
        DetectorModel(kind="ccd")


# --- the scene --------------------------------------------------------------------
def test_carm_geometry_views_and_angles(sim):
    ap, lat = sim.carm_geometry("ap"), sim.carm_geometry("lat")
    np.testing.assert_allclose(-ap.detector_normal, [0, 1, 0], atol=1e-12)   # AP beam: anterior -> posterior
    np.testing.assert_allclose(-lat.detector_normal, [1, 0, 0], atol=1e-12)  # LAT beam: towards the left
    assert ap.source_to_detector_mm == pytest.approx(1000.0)
    np.testing.assert_allclose(ap.source_mm, [0, -625.0, 0], atol=1e-9)
    lao90 = sim.carm_geometry("ap", 90.0, 0.0)
    np.testing.assert_allclose(-lao90.detector_normal, [1, 0, 0], atol=1e-12)
    cran = sim.carm_geometry("ap", 0.0, 20.0)
    assert -cran.detector_normal[2] == pytest.approx(np.sin(np.radians(20)))  # detector towards the head
    np.testing.assert_allclose(ap.project(np.zeros(3)), [79.5, 79.5], atol=1e-9)  # isocentre at the centre


def test_acquire_gives_raw_image_and_truth(sim):
    shot = sim.acquire("ap", 10.0, -5.0)
    img = shot.image
    assert img.shape == (160, 160) and img.pixels.dtype == np.uint16 and img.photometric == "MONOCHROME2"
    assert (img.primary_angle_deg, img.secondary_angle_deg, img.sid_mm, img.view) == (10.0, -5.0, 1000.0, "ap")
    assert img.pixel_spacing_mm == (1.4, 1.4) and img.extra["sod_mm"] == 625.0
    assert img.pixels[0, 0] == 0  # outside the II's round field: black
    balls = shot.ball_pixels_raw(sim.cage)
    ap = np.concatenate([balls["ap_1"], balls["ap_2"]])
    seen = np.isfinite(ap[:, 0])
    assert seen.mean() > 0.6 and not np.isfinite(balls["lat_1"][:, 0]).any()
    # every visible ball is dark where its centre projects
    uv = np.rint(ap[seen]).astype(int)
    ring = np.median(img.pixels[np.clip(uv[:, 1] + 4, 0, 159), uv[:, 0]])
    assert np.median(img.pixels[uv[:, 1], uv[:, 0]]) < 0.6 * ring
    first = sim.cage.planes[0].balls_mm[:3]
    np.testing.assert_allclose(shot.project_raw(first),
                               shot.distortion.ideal_to_raw(shot.geometry_cage().project(first)))


def test_bone_is_darker_than_soft_tissue(sim):
    shot = sim.acquire("ap", with_cage=False, seed=1)
    g = shot.geometry_world
    bone = np.rint(g.project(np.array([0, 30.0, -20.0]))).astype(int)   # the bone column
    soft = np.rint(g.project(np.array([-60, 0.0, -20.0]))).astype(int)  # soft tissue only
    assert shot.image.pixels[bone[1], bone[0]] < 0.85 * shot.image.pixels[soft[1], soft[0]]


def test_default_cage_pose_clears_the_patient(sim):
    lo, hi = body_extent(sim.volume)
    world = lambda pts: pts @ sim.T_world_cage[:3, :3].T + sim.T_world_cage[:3, 3]
    assert world(sim.cage.balls_for("ap"))[:, 1].min() >= hi[1] + 29.9  # above the back
    assert world(sim.cage.balls_for("lat"))[:, 0].min() >= hi[0] + 29.9  # beside the left flank
    T = default_T_world_cage(sim.volume, sim.cage, clearance_mm=50)
    assert T[1, 3] == pytest.approx(sim.T_world_cage[1, 3] + 20)


def test_lateral_shot_sees_the_lateral_part(sim):
    shot = sim.acquire("lat")
    balls = shot.ball_pixels_raw(sim.cage)
    lat = np.concatenate([balls["lat_1"], balls["lat_2"]])
    assert np.isfinite(lat[:, 0]).mean() > 0.6 and not np.isfinite(balls["ap_1"][:, 0]).any()


def test_non_square_pixels():
    s = SimulatedOR(phantom=block_phantom(8.0), shape=(60, 80), pixel_spacing_mm=(2.0, 2.5))
    g = s.carm_geometry("lat")
    assert g.pixel_spacing_mm == (2.0, 2.5) and g.shape == (60, 80)
    assert s.acquire("lat").image.pixel_spacing_mm == (2.0, 2.5)


def test_bad_pixel_spacing_is_refused():
    with pytest.raises(SceneError, match="pixel spacing"):
        SimulatedOR(phantom=block_phantom(8.0), pixel_spacing_mm=(0.4, -1.0))


def test_flat_panel_has_no_distortion_and_no_round_field():
    s = SimulatedOR(phantom=block_phantom(6.0), detector="flat_panel", shape=(96, 96), pixel_spacing_mm=2.4)
    shot = s.acquire("ap")
    assert shot.distortion is None and shot.image.pixels[0, 0] > 0


def test_instruments_cast_shadows(sim):
    wire = Cylinder([0, 150.0, -40.0], [0, 150.0, 40.0], 1.0)
    a = sim.acquire("ap", with_cage=False, seed=4).image.pixels.astype(float)
    b = sim.acquire("ap", with_cage=False, instruments=[wire], seed=4).image.pixels.astype(float)
    assert (a - b)[60:100, 78:82].mean() > 0.2 * a[60:100, 78:82].mean()


def test_bad_view_is_refused(sim):
    with pytest.raises(SceneError, match="view"):
        sim.carm_geometry("oblique")


def test_bad_angles_are_refused(sim):
    with pytest.raises(SceneError, match="out of range"):
        sim.carm_geometry("ap", 0.0, 75.0)


def test_source_beyond_detector_is_refused():
    with pytest.raises(SceneError, match="source-to-isocentre"):
        SimulatedOR(phantom=block_phantom(8.0), sid_mm=600.0, sod_mm=700.0)


# --- plate -------------------------------------------------------------------------
def test_plate_shot_truth_and_dark_balls(sim):
    ps = sim.plate_shot("lat", 15.0, 5.0)
    seen = np.isfinite(ps.balls_raw_px[:, 0])
    assert 0.3 < seen.mean() < 1.0  # the 220 mm plate overfills the round field
    # plate balls sit on the detector face: magnification ~ 1000 / 985
    d = np.linalg.norm(ps.balls_world_mm[0] - ps.balls_world_mm[1])
    pix = np.linalg.norm(ps.balls_ideal_px[0] - ps.balls_ideal_px[1]) * 1.4
    assert pix / d == pytest.approx(1000 / 985, rel=1e-3)
    uv = np.rint(ps.balls_raw_px[seen]).astype(int)
    assert np.median(ps.image.pixels[uv[:, 1], uv[:, 0]]) < np.median(ps.image.pixels[ps.image.pixels > 0])


def test_plate_needs_enough_balls(sim):
    with pytest.raises(SceneError, match="N >= 4"):
        sim.plate_shot("ap", plate=(np.zeros((2, 2)), 2.0))


def test_bowel_gas_brightens_the_soft_tissue():
    vol = block_phantom(5.0)
    plain = SimulatedOR(seed=2, phantom=vol, shape=(96, 96), pixel_spacing_mm=2.4)
    gassy = SimulatedOR(seed=2, phantom=vol, shape=(96, 96), pixel_spacing_mm=2.4, bowel_gas=3)
    assert len(gassy.gas) == 3 and all(g.mu_per_mm < 0 for g in gassy.gas)
    a = plain.acquire("ap", with_cage=False, seed=1)
    b = gassy.acquire("ap", with_cage=False, seed=1)
    uv = np.rint(a.geometry_world.project(gassy.gas[0].centre_mm)).astype(int)
    # less attenuation where the gas is (the brightness control may rescale the whole image a little)
    ratio = b.image.pixels.astype(float) / np.maximum(a.image.pixels.astype(float), 1)
    assert ratio[uv[1], uv[0]] > 1.1 * np.median(ratio[a.image.pixels > 0])


def test_negative_gas_count_is_refused():
    with pytest.raises(SceneError, match="bowel_gas"):
        SimulatedOR(phantom=block_phantom(8.0), bowel_gas=-1)


def test_simulated_shot_survives_a_dicom_round_trip(sim, tmp_path):
    pytest.importorskip("core.imaging.dicom_read")
    from core.imaging.images import read_image, write_dicom_xa
    shot = sim.acquire("lat", -15.0, 10.0)
    back = read_image(write_dicom_xa(shot.image, tmp_path / "lat.dcm"))
    np.testing.assert_array_equal(back.pixels, shot.image.pixels)
    assert back.view == "lat" and back.bits_stored == 12 and back.photometric == "MONOCHROME2"
    assert back.pixel_spacing_mm == pytest.approx(sim.pixel_spacing_mm)
    assert back.sid_mm == pytest.approx(shot.geometry_world.source_to_detector_mm)
    assert (back.primary_angle_deg, back.secondary_angle_deg) == pytest.approx((-15.0, 10.0))


def test_the_room_build_stops_between_stages_when_cancelled():
    from core.simulation.scene import SceneCancelled
    asked = []

    def cancelled():              # False before the phantom, True after it
        asked.append(1)
        return len(asked) >= 2

    with pytest.raises(SceneCancelled, match="cancelled"):
        SimulatedOR(phantom=block_phantom(8.0), shape=(32, 32), cancelled=cancelled)
    assert len(asked) == 2
    assert SimulatedOR(phantom=block_phantom(8.0), shape=(32, 32), cancelled=lambda: False).volume is not None
