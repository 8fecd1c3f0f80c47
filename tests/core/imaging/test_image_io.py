"""Round trips of fluoroscopy image files and one test per read failure."""
import datetime as dt

import numpy as np
import pydicom
import pytest

from core.imaging.fluoro_image import FluoroImage, ImageReadError
from core.imaging.images import read_image, write_dicom_xa, write_png16


def _shot(dtype=np.uint16, photometric="MONOCHROME2", bits=16):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 1 << bits, size=(37, 53)).astype(dtype)
    return FluoroImage(pixels=pixels, photometric=photometric, pixel_spacing_mm=(0.30, 0.42),
                       sid_mm=1012.5, primary_angle_deg=-12.5, secondary_angle_deg=7.25, view="lat",
                       acquired_at=dt.datetime(2026, 11, 20, 10, 11, 12, 345678, tzinfo=dt.timezone.utc),
                       bits_stored=bits, extra={"sod_mm": 640.0})


def test_png16_round_trip_is_bit_exact(tmp_path):
    img = _shot()
    path = write_png16(img, tmp_path / "a.png")
    back = read_image(path)
    assert back.pixels.dtype == np.uint16 and back.shape == (37, 53)
    np.testing.assert_array_equal(back.pixels, img.pixels)
    assert back.photometric == "MONOCHROME2" and back.pixel_spacing_mm is None
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp file left behind


def test_png16_of_monochrome1_is_inverted_to_monochrome2(tmp_path):
    img = _shot(photometric="MONOCHROME1", bits=12)
    back = read_image(write_png16(img, tmp_path / "m1.png"))
    np.testing.assert_array_equal(back.pixels, 4095 - img.pixels.astype(np.int64))
    np.testing.assert_allclose(back.display(), img.display())


def test_tiff_and_8bit_png_read(tmp_path):
    import cv2
    a8 = (np.arange(12 * 9) % 256).astype(np.uint8).reshape(12, 9)
    cv2.imwrite(str(tmp_path / "e.png"), a8)
    cv2.imwrite(str(tmp_path / "s.tif"), a8.astype(np.uint16) * 200)
    p8 = read_image(tmp_path / "e.png")
    assert p8.bits_stored == 8 and p8.pixels.dtype == np.uint8
    np.testing.assert_array_equal(p8.pixels, a8)
    np.testing.assert_array_equal(read_image(tmp_path / "s.tif").pixels, a8.astype(np.uint16) * 200)


def test_dicom_xa_tags(tmp_path):
    img = _shot()
    ds = pydicom.dcmread(write_dicom_xa(img, tmp_path / "x.dcm"))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.12.1" and ds.Modality == "XA"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert [float(x) for x in ds.ImagerPixelSpacing] == [0.42, 0.30]  # row spacing first
    assert float(ds.DistanceSourceToDetector) == pytest.approx(1012.5)
    assert float(ds.DistanceSourceToPatient) == pytest.approx(640.0)
    assert float(ds.PositionerPrimaryAngle) == pytest.approx(-12.5)
    assert float(ds.PositionerSecondaryAngle) == pytest.approx(7.25)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 16
    assert ds.ViewPosition == "LL" and ds.StudyDate == "20261120"
    np.testing.assert_array_equal(ds.pixel_array, img.pixels)


def test_dicom_xa_round_trip_through_read_image(tmp_path):
    pytest.importorskip("core.imaging.dicom_read")
    img = _shot(photometric="MONOCHROME1", bits=12)
    back = read_image(write_dicom_xa(img, tmp_path / "x.dcm"))
    np.testing.assert_array_equal(back.pixels, img.pixels)
    assert back.photometric == "MONOCHROME1" and back.bits_stored == 12 and back.view == "lat"
    assert back.pixel_spacing_mm == pytest.approx((0.30, 0.42))
    assert back.sid_mm == pytest.approx(1012.5)
    assert back.primary_angle_deg == pytest.approx(-12.5)
    assert back.secondary_angle_deg == pytest.approx(7.25)
    assert abs((back.acquired_at.replace(tzinfo=None) - img.acquired_at.replace(tzinfo=None)).total_seconds()) < 1e-3


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_unsupported_content(tmp_path):
    (tmp_path / "a.png").write_text("this is a text file, not a picture")
    with pytest.raises(ImageReadError, match="not a DICOM, PNG or TIFF"):
        read_image(tmp_path / "a.png")


def test_truncated_png(tmp_path):
    data = write_png16(_shot(), tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:60])
    with pytest.raises(ImageReadError, match="corrupt"):
        read_image(tmp_path / "cut.png")


def test_colour_png(tmp_path):
    import cv2
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 2] = 200
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    with pytest.raises(ImageReadError, match="colour"):
        read_image(tmp_path / "c.png")


def test_float_tiff(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / "f.tif"), np.ones((6, 6), np.float32))
    with pytest.raises(ImageReadError, match="float32"):
        read_image(tmp_path / "f.tif")
