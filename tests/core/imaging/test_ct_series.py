"""CT series: write then load round trips (axial, oblique, rescaled, compressed) and each loader error."""
import random

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless
from scipy.spatial.transform import Rotation

from core.imaging.ct_series import CTSeriesError, list_series, load_ct_series, write_ct_series
from core.imaging.volume import Volume


def _volume(oblique=False, spacing=(0.8, 0.7, 2.5), dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 2000, (7, 12, 10)).astype(dtype)
    R = Rotation.from_euler("zyx", [20, -15, 30], degrees=True).as_matrix() if oblique else np.eye(3)
    return Volume.from_grid(hu, spacing, origin_mm=(-100.25, 37.5, -612.0), rotation=R)


def _assert_same(a: Volume, b: Volume, atol_hu=0.0):
    assert a.hu.shape == b.hu.shape
    assert np.allclose(a.spacing_mm, b.spacing_mm, atol=1e-6)
    assert np.allclose(a.T_world_voxel, b.T_world_voxel, atol=1e-5)
    assert np.max(np.abs(a.hu.astype(float) - b.hu.astype(float))) <= atol_hu


def test_axial_round_trip_is_exact(tmp_path):
    vol = _volume()
    write_ct_series(vol, tmp_path)
    back = load_ct_series(tmp_path)
    _assert_same(back, vol)
    assert back.hu.dtype == np.int16                # slope 1, integral intercept


def test_oblique_round_trip_from_shuffled_files(tmp_path):
    vol = _volume(oblique=True)
    files = write_ct_series(vol, tmp_path)
    random.Random(3).shuffle(files)                  # order comes from the positions, not the names
    back = load_ct_series(files)
    _assert_same(back, vol)
    p = vol.index_to_world([4.0, 5.0, 3.0])
    assert back.sample(p) == pytest.approx(float(vol.hu[3, 5, 4]))


def test_rescale_slope_and_intercept(tmp_path):
    vol = _volume(dtype=np.float32)
    write_ct_series(vol, tmp_path, rescale_slope=0.5, rescale_intercept=-2048.0)
    ds = pydicom.dcmread(sorted(tmp_path.iterdir())[0])
    assert float(ds.RescaleSlope) == 0.5 and float(ds.RescaleIntercept) == -2048.0
    back = load_ct_series(tmp_path)
    assert back.hu.dtype == np.float32
    _assert_same(back, vol, atol_hu=0.25)           # quantised to half a HU


def test_rle_compressed_series_loads(tmp_path):
    vol = _volume(oblique=True)
    for p in write_ct_series(vol, tmp_path):
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p, enforce_file_format=True)
    _assert_same(load_ct_series(tmp_path), vol)


def test_phantom_round_trip(tmp_path):
    from core.simulation.phantom import make_spine_phantom
    vol = make_spine_phantom(spacing_mm=4.0, levels=("L3",), shape=(12, 30, 40)).volume
    write_ct_series(vol, tmp_path)
    back = load_ct_series(tmp_path)
    _assert_same(back, vol, atol_hu=0.5)            # float HU rounded to integers


def test_selects_a_named_series_and_lists_them(tmp_path):
    a, b = _volume(seed=1), _volume(seed=2, spacing=(1.0, 1.0, 3.0))
    write_ct_series(a, tmp_path, description="A")
    write_ct_series(b, tmp_path, description="B")
    series = list_series(tmp_path)
    assert sorted(s["description"] for s in series.values()) == ["A", "B"]
    uid_b = next(u for u, s in series.items() if s["description"] == "B")
    _assert_same(load_ct_series(tmp_path, series_uid=uid_b), b)


def test_ignores_a_stray_non_dicom_file_in_a_folder(tmp_path):
    vol = _volume()
    write_ct_series(vol, tmp_path)
    (tmp_path / "README.txt").write_text("exported by the scanner")
    _assert_same(load_ct_series(tmp_path), vol)


def test_skips_a_localizer_in_the_same_series(tmp_path):
    vol = _volume()
    files = write_ct_series(vol, tmp_path)
    scout = pydicom.dcmread(files[0])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(tmp_path / "scout.dcm", enforce_file_format=True)
    _assert_same(load_ct_series(tmp_path), vol)


def test_rejects_an_empty_folder(tmp_path):
    with pytest.raises(CTSeriesError, match="holds no files"):
        load_ct_series(tmp_path)


def test_rejects_a_missing_folder(tmp_path):
    with pytest.raises(CTSeriesError, match="does not exist"):
        load_ct_series(tmp_path / "nowhere")


def test_rejects_a_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("not an image")
    with pytest.raises(CTSeriesError, match="no DICOM file"):
        load_ct_series(tmp_path)


def test_rejects_a_listed_non_dicom_file(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 200)
    with pytest.raises(CTSeriesError, match="is not a DICOM file"):
        load_ct_series(files + [junk])


def test_rejects_mixed_series(tmp_path):
    write_ct_series(_volume(seed=1), tmp_path)
    write_ct_series(_volume(seed=2), tmp_path)
    with pytest.raises(CTSeriesError, match="2 series are mixed"):
        load_ct_series(tmp_path)


def test_rejects_an_unknown_series_uid(tmp_path):
    write_ct_series(_volume(), tmp_path)
    with pytest.raises(CTSeriesError, match="is not in the files"):
        load_ct_series(tmp_path, series_uid="1.2.3.4")


def test_rejects_missing_slices(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    files[3].unlink()
    with pytest.raises(CTSeriesError, match="1 slice\\(s\\) missing"):
        load_ct_series(tmp_path)


def test_rejects_non_uniform_spacing(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.6
    ds.save_as(files[3], enforce_file_format=True)
    with pytest.raises(CTSeriesError, match="non-uniform slice spacing"):
        load_ct_series(tmp_path)


def test_rejects_inconsistent_orientation(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    ds = pydicom.dcmread(files[2])
    c, s = np.cos(0.1), np.sin(0.1)
    ds.ImageOrientationPatient = [c, s, 0.0, -s, c, 0.0]
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(CTSeriesError, match="inconsistent orientation"):
        load_ct_series(tmp_path)


def test_rejects_duplicate_positions(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = pydicom.dcmread(files[1]).ImagePositionPatient
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(CTSeriesError, match="same position"):
        load_ct_series(tmp_path)


def test_rejects_unsupported_compression(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    for p in files:
        ds = pydicom.dcmread(p)
        ds.PixelData = encapsulate([ds.PixelData])
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"   # MPEG2: no decoder
        ds.save_as(p, enforce_file_format=True)
    with pytest.raises(CTSeriesError, match="unsupported compression"):
        load_ct_series(tmp_path)


def test_rejects_a_slice_without_geometry(tmp_path):
    files = write_ct_series(_volume(), tmp_path)
    ds = pydicom.dcmread(files[0])
    del ds.ImagePositionPatient
    ds.save_as(files[0], enforce_file_format=True)
    with pytest.raises(CTSeriesError, match="no ImagePositionPatient"):
        load_ct_series(tmp_path)


def test_rejects_writing_something_else_than_a_volume(tmp_path):
    with pytest.raises(CTSeriesError, match="needs a Volume"):
        write_ct_series(np.zeros((3, 3, 3)), tmp_path)
