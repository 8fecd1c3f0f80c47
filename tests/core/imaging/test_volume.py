"""Volume: index/world placement, trilinear sampling, HU -> attenuation, resampling, cropping."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.imaging.volume import HU_AIR, HU_CORTICAL_70KEV, MU_WATER_PER_MM, Volume, VolumeError, mu_bone, mu_water


def _oblique(hu=None, spacing=(0.7, 0.9, 2.5)):
    hu = np.zeros((6, 5, 4), np.float32) if hu is None else hu
    R = Rotation.from_euler("zyx", [25, -10, 40], degrees=True).as_matrix()
    return Volume.from_grid(hu, spacing, origin_mm=(-12.0, 30.5, 7.25), rotation=R), R


def test_index_world_round_trip_with_rotated_placement():
    vol, R = _oblique()
    rng = np.random.default_rng(1)
    idx = rng.uniform(-2, 8, (50, 3))
    w = vol.index_to_world(idx)
    assert np.allclose(vol.world_to_index(w), idx, atol=1e-9)
    # one step along i moves spacing_x along the first direction cosine
    step = vol.index_to_world([1, 0, 0]) - vol.index_to_world([0, 0, 0])
    assert np.allclose(step, 0.7 * R[:, 0], atol=1e-12)
    assert np.allclose(vol.index_to_world([0, 0, 0]), [-12.0, 30.5, 7.25])


def test_shape_xyz_and_bounds():
    vol, _ = _oblique()
    assert vol.shape_xyz == (4, 5, 6)
    corners = vol.bounds_world()
    assert corners.shape == (8, 3)
    # the farthest corner pair spans the diagonal of (3*0.7, 4*0.9, 5*2.5) mm
    d = np.max(np.linalg.norm(corners[:, None] - corners[None], axis=-1))
    assert d == pytest.approx(np.linalg.norm([2.1, 3.6, 12.5]), abs=1e-9)
    lo, hi = Volume(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0)).extent_world()
    assert np.allclose(lo, -0.5) and np.allclose(hi, 1.5)


def test_trilinear_sampling_is_exact_for_a_linear_field():
    vol0, R = _oblique()
    k, j, i = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    hu = (3.0 * i - 2.0 * j + 5.0 * k + 100.0).astype(np.float32)
    vol = Volume(hu, vol0.spacing_mm, vol0.T_world_voxel)
    rng = np.random.default_rng(2)
    idx = rng.uniform(0, [3, 4, 5], (40, 3))
    expected = 3 * idx[:, 0] - 2 * idx[:, 1] + 5 * idx[:, 2] + 100
    assert np.allclose(vol.sample(vol.index_to_world(idx)), expected, atol=1e-3)


def test_sampling_outside_is_air_and_keeps_shape():
    vol, _ = _oblique(np.full((6, 5, 4), 40.0, np.float32))
    far = vol.index_to_world([[50.0, 0, 0], [0, -9.0, 0]])
    assert np.allclose(vol.sample(far), HU_AIR)
    assert vol.sample(np.zeros((2, 3, 3))).shape == (2, 3)


def test_mu_follows_the_hounsfield_definition():
    hu = np.array([[[-1000, 0, 1000, -1200]]], np.int16)
    mu = Volume(hu, (1, 1, 1)).mu()
    assert mu.dtype == np.float32
    assert np.allclose(mu[0, 0], [0.0, MU_WATER_PER_MM, 2 * MU_WATER_PER_MM, 0.0], atol=1e-7)
    assert MU_WATER_PER_MM == pytest.approx(0.0193, abs=0.0003)   # NIST water, 70 keV
    assert mu_water(60.0) == pytest.approx(0.02059, rel=1e-6)       # a tabulated NIST point
    assert mu_water(50.0) > mu_water(100.0)


def test_bone_model_raises_bone_contrast_at_low_energy():
    hu = np.array([[[-1000, -500, 0, 0.5 * HU_CORTICAL_70KEV, HU_CORTICAL_70KEV]]], np.float32)
    vol = Volume(hu, (1, 1, 1))
    assert np.allclose(vol.mu(70.0, bone_model=True), vol.mu(), rtol=1e-5)   # same at the CT energy
    assert HU_CORTICAL_70KEV == pytest.approx(1600.0, abs=30.0)
    m50 = vol.mu(50.0, bone_model=True)[0, 0]
    assert m50[0] == 0.0 and m50[1] == pytest.approx(0.5 * mu_water(50.0), rel=1e-5)
    assert m50[4] == pytest.approx(mu_bone(50.0), rel=1e-5)                   # NIST: 0.4242 cm2/g x 1.92
    assert mu_bone(50.0) == pytest.approx(0.04242 * 1.92, rel=1e-6)
    assert m50[3] == pytest.approx(0.5 * (mu_water(50.0) + mu_bone(50.0)), rel=1e-5)
    # bone/water ratio is higher at 50 keV than the HU scale assumes
    assert m50[4] / m50[2] > 1.0 + HU_CORTICAL_70KEV / 1000.0 + 0.8


def test_resampled_keeps_the_world_box_and_values():
    vol0, _ = _oblique()
    k, j, i = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    vol = Volume((10.0 * i + k).astype(np.float32), vol0.spacing_mm, vol0.T_world_voxel)
    half = vol.resampled((0.35, 0.45, 1.25))
    assert half.shape_xyz == (7, 9, 11)
    assert np.allclose(half.index_to_world([0, 0, 0]), vol.index_to_world([0, 0, 0]))
    p = half.index_to_world([[3, 2, 5], [6, 8, 10]])
    assert np.allclose(half.sample(p), vol.sample(p), atol=1e-3)


def test_cropped_keeps_world_positions():
    vol0, _ = _oblique()
    hu = np.arange(120, dtype=np.float32).reshape(6, 5, 4)
    vol = Volume(hu, vol0.spacing_mm, vol0.T_world_voxel)
    sub = vol.cropped((1, 2, 3), (4, 5, 6))
    assert sub.hu.shape == (3, 3, 3)
    assert np.allclose(sub.index_to_world([0, 0, 0]), vol.index_to_world([1, 2, 3]))
    assert sub.hu[0, 0, 0] == vol.hu[3, 2, 1]


def test_cropped_to_world_box_holds_the_box():
    vol, _ = _oblique(np.zeros((20, 18, 16), np.float32))
    lo, hi = vol.center_world() - 2.0, vol.center_world() + 2.0
    sub = vol.cropped_to_world_box(lo, hi, margin_vox=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = sub.world_to_index(corners)
    assert np.all(ijk >= -1e-9) and np.all(ijk <= np.array(sub.shape_xyz) - 1 + 1e-9)
    assert np.all(np.array(sub.shape_xyz) < np.array(vol.shape_xyz))


def test_rejects_a_2d_array():
    with pytest.raises(VolumeError, match="3-D"):
        Volume(np.zeros((4, 4), np.float32), (1, 1, 1))


def test_rejects_float64_hu():
    with pytest.raises(VolumeError, match="float32 or int16"):
        Volume(np.zeros((2, 2, 2)), (1, 1, 1))


def test_rejects_non_positive_spacing():
    with pytest.raises(VolumeError, match="spacing"):
        Volume(np.zeros((2, 2, 2), np.float32), (1, 0, 1))


def test_rejects_affine_not_matching_spacing():
    T = np.diag([1.0, 1.0, 2.0, 1.0])
    with pytest.raises(VolumeError, match="column lengths"):
        Volume(np.zeros((2, 2, 2), np.float32), (1, 1, 1), T)


def test_rejects_sheared_or_mirrored_affine():
    T = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(VolumeError, match="rotation"):
        Volume(np.zeros((2, 2, 2), np.float32), (1, 1, 1), T)


def test_rejects_points_of_wrong_shape():
    vol, _ = _oblique()
    with pytest.raises(VolumeError, match=r"\(\.\.\., 3\)"):
        vol.world_to_index(np.zeros((4, 2)))


def test_rejects_energy_outside_table():
    with pytest.raises(VolumeError, match="keV"):
        mu_water(10.0)


def test_rejects_empty_crop():
    vol, _ = _oblique()
    with pytest.raises(VolumeError, match="empty crop"):
        vol.cropped((2, 2, 2), (2, 3, 3))
