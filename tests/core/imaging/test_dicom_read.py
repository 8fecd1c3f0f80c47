"""read_dicom: every DICOM flavour a C-arm writes, built here with pydicom.

Compressed flavours are encoded with pydicom's own encoders (RLE natively,
JPEG 2000 through pylibjpeg-openjpeg), with Pillow for JPEG baseline, or, where
no encoder is installed (JPEG-LS, JPEG extended 12-bit), by moving the
encapsulated stream of a file that ships with pydicom into an XA dataset.
"""
import datetime as dt
import io
import os

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless,
                         RLELossless, generate_uid)

from core.imaging.dicom_read import dicom_summary, n_frames, read_dicom, read_dicom_frames
from core.imaging.fluoro_image import FluoroImage, ImageReadError

XA = "1.2.840.10008.5.1.4.1.1.12.1"
RF = "1.2.840.10008.5.1.4.1.1.12.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


def ramp(rows=48, cols=64, bits=16, seed=0):
    """A non-symmetric test image (column and row ramps + noise) filling ``bits``."""
    rng = np.random.default_rng(seed)
    a = np.add.outer(np.arange(rows) * 7, np.arange(cols) * 3) + rng.integers(0, 50, (rows, cols))
    return (a * ((1 << bits) - 1) // a.max()).astype(np.uint8 if bits <= 8 else np.uint16)


def make_ds(pixels, sop=XA, modality="XA", photometric="MONOCHROME2", bits_stored=None, signed=False,
            ts=ExplicitVRLittleEndian, **tags):
    """A minimal valid single- or multi-frame greyscale image dataset."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, modality
    ds.PatientName, ds.PatientID = "Phantom^Spine", "P0"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = pixels.tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def save(ds, tmp_path, name="img.dcm", **encoding):
    p = tmp_path / name
    ds.save_as(p, enforce_file_format=True, **encoding)
    return p


# --- uncompressed flavours and geometry ---------------------------------------
def test_xa_monochrome2_16bit_geometry(tmp_path):
    px = ramp()
    p = save(make_ds(px, ImagerPixelSpacing=[0.2, 0.3], PixelSpacing=[9, 9], DistanceSourceToDetector="1010.5",
                     PositionerPrimaryAngle=-3.5, PositionerSecondaryAngle=91.0,
                     AcquisitionDateTime="20260314101502.250000"), tmp_path)
    im = read_dicom(p)
    assert isinstance(im, FluoroImage)
    np.testing.assert_array_equal(im.pixels, px)
    assert im.pixels.dtype == np.uint16 and im.shape == (48, 64) and im.bits_stored == 16
    assert im.pixel_spacing_mm == pytest.approx((0.3, 0.2))  # (column, row): DICOM lists row first
    assert im.sid_mm == pytest.approx(1010.5)
    assert im.primary_angle_deg == pytest.approx(-3.5) and im.secondary_angle_deg == pytest.approx(91.0)
    assert im.acquired_at == dt.datetime(2026, 3, 14, 10, 15, 2, 250000)
    assert im.source == str(p) and im.photometric == "MONOCHROME2"
    assert im.extra["modality"] == "XA" and im.extra["n_frames"] == 1 and im.extra["notes"] == []


def test_pixel_spacing_fallback_is_noted(tmp_path):
    im = read_dicom(save(make_ds(ramp(), PixelSpacing=[0.15, 0.25], AcquisitionDate="20250101",
                                 AcquisitionTime="0930"), tmp_path))
    assert im.pixel_spacing_mm == pytest.approx((0.25, 0.15))
    assert any("Pixel Spacing (0028,0030)" in n for n in im.extra["notes"])
    assert im.acquired_at == dt.datetime(2025, 1, 1, 9, 30)


def test_no_geometry_gives_none_with_note(tmp_path):
    im = read_dicom(save(make_ds(ramp()), tmp_path))
    assert im.pixel_spacing_mm is None and im.sid_mm is None and im.primary_angle_deg is None
    assert im.acquired_at is None
    assert any("no pixel spacing" in n for n in im.extra["notes"])


def test_monochrome1_kept_raw(tmp_path):
    px = ramp(bits=12).astype(np.uint16)
    im = read_dicom(save(make_ds(px, photometric="MONOCHROME1", bits_stored=12), tmp_path))
    np.testing.assert_array_equal(im.pixels, px)
    assert im.photometric == "MONOCHROME1" and im.bits_stored == 12
    # display() inverts MONOCHROME1 within the 12 stored bits
    np.testing.assert_allclose(im.display(), 4095.0 - px)


@pytest.mark.parametrize("sop,modality", [(RF, "RF"), (DX, "DX"), (CR, "CR")])
def test_rf_dx_cr(tmp_path, sop, modality):
    px = ramp(seed=3)
    im = read_dicom(save(make_ds(px, sop=sop, modality=modality, ImagerPixelSpacing=[0.14, 0.14]), tmp_path))
    np.testing.assert_array_equal(im.pixels, px)
    assert im.extra["modality"] == modality and im.pixel_spacing_mm == pytest.approx((0.14, 0.14))


def test_8bit(tmp_path):
    px = ramp(bits=8)
    im = read_dicom(save(make_ds(px), tmp_path))
    assert im.pixels.dtype == np.uint8 and im.bits_stored == 8
    np.testing.assert_array_equal(im.pixels, px)


def test_pixel_padding_is_no_signal_whatever_its_grey(tmp_path):
    """MONOCHROME1 padded with 0 (which would display white): the padded surround displays
    as 0, the exposed pixels invert as usual, and a saved copy keeps the padding."""
    from core.imaging.images import read_image, write_dicom_xa
    px = (ramp(bits=12) | 1).astype(np.uint16)          # no exposed pixel stores 0
    px[:, :8] = 0                                        # the padded surround
    im = read_dicom(save(make_ds(px, photometric="MONOCHROME1", bits_stored=12, PixelPaddingValue=0), tmp_path))
    assert im.extra["padding"] == (0, 0)
    d = im.display()
    assert (d[:, :8] == 0).all()
    np.testing.assert_allclose(d[:, 8:], 4095.0 - px[:, 8:])
    back = read_image(write_dicom_xa(im, tmp_path / "copy.dcm"))
    np.testing.assert_array_equal(back.display(), d)


def test_pixel_padding_range_of_signed_data_shifted_with_the_pixels(tmp_path):
    signed = np.array([[-2048, -2000, 0], [7, 2000, 2047]], np.int16)
    im = read_dicom(save(make_ds(signed, signed=True, bits_stored=12, PixelPaddingValue=-2048,
                                 PixelPaddingRangeLimit=-2000), tmp_path))
    assert im.extra["padding"] == (0, 48)
    assert (im.display()[0, :2] == 0).all() and im.display()[1, 2] == 4095


def test_signed_16bit_shifted_to_unsigned(tmp_path):
    signed = np.array([[-32768, -1, 0], [1, 100, 32767]], np.int16)
    im = read_dicom(save(make_ds(signed, signed=True), tmp_path))
    assert im.pixels.dtype == np.uint16 and im.extra["signed_offset"] == 32768
    np.testing.assert_array_equal(im.pixels.astype(int), signed.astype(int) + 32768)
    assert any("signed" in n for n in im.extra["notes"])


def test_signed_12bit_in_16_shifted_by_2048(tmp_path):
    signed = np.array([[-2048, -5, 0], [7, 2000, 2047]], np.int16)
    im = read_dicom(save(make_ds(signed, signed=True, bits_stored=12), tmp_path))
    np.testing.assert_array_equal(im.pixels.astype(int), signed.astype(int) + 2048)
    assert im.pixels.max() <= 4095


def test_implicit_vr_and_deflated(tmp_path):
    px = ramp(seed=5)
    for ts in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        p = save(make_ds(px, ts=ts), tmp_path, f"{ts}.dcm")
        np.testing.assert_array_equal(read_dicom(p).pixels, px)


# --- multi-frame ----------------------------------------------------------------
def test_multiframe_xa_frames_and_angles(tmp_path):
    frames = np.stack([ramp(seed=i) for i in range(4)])
    ds = make_ds(frames, PositionerPrimaryAngle=0.0, PositionerPrimaryAngleIncrement=[0.0, 1.5, 3.0, 4.5],
                 ImagerPixelSpacing=[0.2, 0.2])
    p = save(ds, tmp_path)
    assert n_frames(p) == 4
    for i in range(4):
        im = read_dicom(p, frame=i)
        np.testing.assert_array_equal(im.pixels, frames[i])
        assert im.primary_angle_deg == pytest.approx(1.5 * i) and im.extra["frame"] == i
    all_frames = read_dicom_frames(p)
    assert len(all_frames) == 4 and np.array_equal(all_frames[3].pixels, frames[3])
    assert dicom_summary(p)["n_frames"] == 4


def test_multiframe_rle(tmp_path):
    frames = np.stack([ramp(seed=i) for i in range(3)])
    ds = make_ds(frames, sop=RF, modality="RF")
    ds.compress(RLELossless)
    p = save(ds, tmp_path)
    assert n_frames(p) == 3
    np.testing.assert_array_equal(read_dicom(p, 2).pixels, frames[2])


@pytest.mark.parametrize("frame", [-1, 4, 1.0])
def test_frame_out_of_range(tmp_path, frame):
    p = save(make_ds(np.stack([ramp(seed=i) for i in range(4)])), tmp_path)
    with pytest.raises(ImageReadError, match="frame .* does not exist; the file has 4 frame"):
        read_dicom(p, frame=frame)


# --- compressed transfer syntaxes -------------------------------------------------
@pytest.mark.parametrize("ts", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_roundtrip(tmp_path, ts):
    px = ramp(bits=16, seed=7)
    ds = make_ds(px, ImagerPixelSpacing=[0.3, 0.3])
    ds.compress(ts)
    p = save(ds, tmp_path)
    im = read_dicom(p)
    assert im.extra["transfer_syntax"] == ts
    np.testing.assert_array_equal(im.pixels, px)


def test_jpeg2000_lossy(tmp_path):
    px = ramp(bits=12, seed=8)
    ds = make_ds(px, bits_stored=12)
    ds.compress(JPEG2000, j2k_psnr=[60])
    im = read_dicom(save(ds, tmp_path))
    err = np.abs(im.pixels.astype(float) - px)
    assert im.extra["transfer_syntax"] == JPEG2000 and err.mean() < 8.0  # of 4095 levels


def test_jpeg_baseline_8bit(tmp_path):
    px = ramp(bits=8, seed=9)
    buf = io.BytesIO()
    Image.fromarray(px, mode="L").save(buf, format="JPEG", quality=95)
    ds = make_ds(px, ts=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    im = read_dicom(save(ds, tmp_path))
    assert im.pixels.dtype == np.uint8 and im.shape == px.shape
    assert np.abs(im.pixels.astype(float) - px).mean() < 3.0


def _transplant(source_file, ts, tmp_path, **kw):
    """An XA dataset carrying the encapsulated stream of a file shipped with pydicom."""
    src = pydicom.dcmread(get_testdata_file(source_file))
    reference = src.pixel_array
    ds = make_ds(np.zeros((src.Rows, src.Columns), np.uint16), ts=ts,
                 bits_stored=src.BitsStored, signed=bool(src.PixelRepresentation), **kw)
    ds.PixelData = src.PixelData
    ds["PixelData"].VR = "OB"
    return save(ds, tmp_path), reference, src


def test_jpeg_ls_lossless_signed(tmp_path):
    p, reference, src = _transplant("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, tmp_path)
    uncompressed = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(reference, uncompressed)  # the shipped stream is truly lossless
    im = read_dicom(p)
    offset = 1 << (src.BitsStored - 1)
    np.testing.assert_array_equal(im.pixels.astype(int), uncompressed.astype(int) + offset)


def test_jpeg_extended_12bit(tmp_path):
    p, reference, _ = _transplant("JPGExtended.dcm", JPEGExtended12Bit, tmp_path)
    im = read_dicom(p)
    np.testing.assert_array_equal(im.pixels, reference)
    assert im.bits_stored == 12 and im.pixels.max() <= 4095


# --- unsupported and broken files --------------------------------------------------
def test_video_transfer_syntax_named(tmp_path):
    ds = make_ds(ramp(), ts=UID("1.2.840.10008.1.2.4.100"))  # MPEG2 video of a fluoro run: no decoder
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match=r"transfer syntax MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.* cannot be decoded"):
        read_dicom(save(ds, tmp_path))


def test_jpeg_xl_transfer_syntax_named(tmp_path):
    # pydicom 3.0 does not know JPEG XL (4.110) and will not write it: write HTJ2K (same UID length), then patch
    ds = make_ds(ramp(), ts=UID("1.2.840.10008.1.2.4.201"))
    ds.PixelData = encapsulate([b"\xff\x0a" + bytes(64)])
    ds["PixelData"].VR = "OB"
    p = save(ds, tmp_path)
    p.write_bytes(p.read_bytes().replace(b"1.2.840.10008.1.2.4.201", b"1.2.840.10008.1.2.4.110"))
    with pytest.raises(ImageReadError, match=r"transfer syntax JPEG XL Lossless \(1\.2\.840\.10008\.1\.2\.4\.110\) cannot be decoded"):
        read_dicom(p)


def test_private_transfer_syntax_named(tmp_path):
    ds = make_ds(ramp(), ts=UID("1.3.46.670589.33.1.4.1"))  # a vendor-private compression
    ds.PixelData = encapsulate([bytes(64)])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match=r"transfer syntax 1\.3\.46\.670589\.33\.1\.4\.1 cannot be decoded"):
        read_dicom(save(ds, tmp_path, implicit_vr=False, little_endian=True))


def test_corrupt_compressed_stream(tmp_path):
    ds = make_ds(ramp(), ts=JPEG2000Lossless)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match="cannot be decoded .*damaged or truncated"):
        read_dicom(save(ds, tmp_path))


def test_truncated_file(tmp_path):
    p = save(make_ds(ramp(96, 96)), tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 4000])
    with pytest.raises(ImageReadError, match="damaged or truncated"):
        read_dicom(p)


def test_truncated_header(tmp_path):
    p = save(make_ds(ramp()), tmp_path)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="damaged or truncated|no valid|without an image"):
        read_dicom(p)


def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_bytes(b"hello, this is not a DICOM file" * 10)
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        read_dicom(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_dicom(tmp_path / "absent.dcm")


def test_structured_report_rejected():
    # refused for what it is (core.imaging.modality) before its missing pixels are looked at
    with pytest.raises(ImageReadError, match=r"test-SR.dcm is a structured report \(.*SR Storage\), not an X-ray"):
        read_dicom(get_testdata_file("test-SR.dcm"))


def test_colour_rejected(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    ds = make_ds(rgb[..., 0], photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PixelData = 3, 0, rgb.tobytes()
    with pytest.raises(ImageReadError, match="colour or non-greyscale image \\(RGB, 3 samples"):
        read_dicom(save(ds, tmp_path))


def test_colour_jpeg_rejected():
    with pytest.raises(ImageReadError, match=r"is a secondary capture \(Secondary Capture Image Storage\)"):
        read_dicom(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))


def test_32bit_rejected(tmp_path):
    ds = make_ds(ramp().astype(np.uint32))
    with pytest.raises(ImageReadError, match="32 bits stored in 32 allocated is not supported"):
        read_dicom(save(ds, tmp_path))


def as_xa(name, tmp_path):
    """pydicom's test file ``name`` (an MR) relabelled as an XA shot, its encoding kept: the MR
    itself is refused for what it is (core.imaging.modality) before its pixels are read."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = XA
    ds.Modality = "XA"
    out = tmp_path / name
    ds.save_as(out)
    return out


def test_pixel_data_shorter_than_header_says(tmp_path):
    with pytest.raises(ImageReadError, match=r"cannot be decoded .*less than expected.*copy it again"):
        read_dicom(as_xa("MR_truncated.dcm", tmp_path))


def test_enhanced_multiframe_geometry_from_functional_groups(tmp_path):
    """Enhanced XA keeps spacing, angles and times per frame in functional groups, SID shared."""
    frames = np.stack([ramp(seed=i) for i in range(3)])
    ds = make_ds(frames, sop="1.2.840.10008.5.1.4.1.1.12.1.1")  # Enhanced XA Image Storage
    per_frame = []
    for i in range(3):
        props, pos, content, item = Dataset(), Dataset(), Dataset(), Dataset()
        props.ImagerPixelSpacing = [0.2 + 0.01 * i, 0.25]
        pos.PositionerPrimaryAngle, pos.PositionerSecondaryAngle = 10.0 * i, -5.0
        content.FrameAcquisitionDateTime = f"2026031410150{i}"
        item.FramePixelDataPropertiesSequence = [props]
        item.PositionerPositionSequence = [pos]
        item.FrameContentSequence = [content]
        per_frame.append(item)
    geometry, shared = Dataset(), Dataset()
    geometry.DistanceSourceToDetector = 1195.0
    shared.XRayGeometrySequence = [geometry]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.SharedFunctionalGroupsSequence = [shared]
    p = save(ds, tmp_path)
    for i in range(3):
        im = read_dicom(p, frame=i)
        assert im.pixel_spacing_mm == pytest.approx((0.25, 0.2 + 0.01 * i))
        assert im.primary_angle_deg == pytest.approx(10.0 * i) and im.secondary_angle_deg == pytest.approx(-5.0)
        assert im.sid_mm == pytest.approx(1195.0)
        assert im.acquired_at == dt.datetime(2026, 3, 14, 10, 15, i)
        np.testing.assert_array_equal(im.pixels, frames[i])


def test_find_dicom_images_in_a_folder(tmp_path):
    from core.imaging.dicom_read import find_dicom_images

    sub = tmp_path / "export" / "series1"
    sub.mkdir(parents=True)
    series = generate_uid()
    for i, time in enumerate(["101500", "101200", "101800"]):  # written out of time order
        ds = make_ds(ramp(seed=i), SeriesInstanceUID=series, InstanceNumber=i + 1,
                     AcquisitionDate="20260314", AcquisitionTime=time)
        save(ds, sub, f"IMG{i}.dcm")
    save(make_ds(np.stack([ramp(seed=9)] * 2), SeriesInstanceUID=series), tmp_path, "run.dcm")
    (tmp_path / "notes.txt").write_text("not an image")
    rgb = make_ds(np.zeros((4, 4), np.uint8), photometric="RGB")
    rgb.SamplesPerPixel = 3
    save(rgb, tmp_path, "colour.dcm")
    found = find_dicom_images(tmp_path)
    names = [os.path.basename(e["path"]) for e in found]
    assert names == ["run.dcm", "IMG1.dcm", "IMG0.dcm", "IMG2.dcm"]  # no time first, then by time
    assert found[0]["n_frames"] == 2 and found[1]["acquired_at"] == dt.datetime(2026, 3, 14, 10, 12)
    assert [os.path.basename(e["path"]) for e in find_dicom_images(tmp_path, recursive=False)] == ["run.dcm"]


def test_find_dicom_images_missing_folder(tmp_path):
    from core.imaging.dicom_read import find_dicom_images

    with pytest.raises(ImageReadError, match="no such folder"):
        find_dicom_images(tmp_path / "absent")


def test_big_endian_file_reads_like_little_endian(tmp_path):
    """Explicit VR Big Endian (retired, still written by old systems): same pixels as the LE original."""
    big = read_dicom(as_xa("MR_small_bigendian.dcm", tmp_path))
    little = read_dicom(as_xa("MR_small.dcm", tmp_path))
    assert big.extra["transfer_syntax"] == "1.2.840.10008.1.2.2"
    np.testing.assert_array_equal(big.pixels, little.pixels)
    assert big.pixel_spacing_mm == little.pixel_spacing_mm  # Pixel Spacing fallback, noted
    assert any("Pixel Spacing (0028,0030)" in n for n in big.extra["notes"])


# --- JPEG lossless (process 14): no encoder is installed, so the test writes the stream itself ----------
def _jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """A baseline JPEG lossless (SOF3) stream, selection value 1 (left predictor), ITU T.81 H.1.

    One Huffman table with every difference category 0-16 coded on 5 bits keeps the
    writer tiny; the decoder (pylibjpeg-libjpeg) is what is under test.
    """
    rows, cols = pixels.shape
    x = pixels.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]   # first line: the left neighbour
    pred[1:, 0] = x[:-1, 0]   # first column: the neighbour above
    pred[1:, 1:] = x[1:, :-1]  # predictor 1: left
    diff = (x - pred) & 0xFFFF
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff).ravel()
    bits = []
    for d in diff.tolist():
        ssss = 16 if d == -32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))  # Huffman code of category ssss (all 5 bits long)
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else d + (1 << ssss) - 1, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i:i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    counts = [0] * 16
    counts[4] = 17  # seventeen codes of length 5, symbols 0..16
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sof = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1, tables 0, Ss=1 (predictor), Se=0, Ah/Al=0

    def segment(marker, body):
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return (b"\xff\xd8" + segment(0xC3, sof) + segment(0xC4, dht) + segment(0xDA, sos) + bytes(data)
            + b"\xff\xd9")


@pytest.mark.parametrize("bits,ts", [(12, "1.2.840.10008.1.2.4.70"), (16, "1.2.840.10008.1.2.4.70"),
                                     (16, "1.2.840.10008.1.2.4.57")])
def test_jpeg_lossless_process_14(tmp_path, bits, ts):
    px = ramp(40, 52, bits=bits, seed=13).astype(np.uint16)
    ds = make_ds(px, ts=UID(ts), bits_stored=bits)
    ds.PixelData = encapsulate([_jpeg_lossless(px, bits)])
    ds["PixelData"].VR = "OB"
    im = read_dicom(save(ds, tmp_path))
    assert im.extra["transfer_syntax"] == ts and im.bits_stored == bits
    np.testing.assert_array_equal(im.pixels, px)


def test_jpeg_ls_near_lossless(tmp_path):
    from pydicom.uid import JPEGLSNearLossless

    p, reference, src = _transplant("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless, tmp_path)
    im = read_dicom(p)
    assert im.extra["transfer_syntax"] == JPEGLSNearLossless
    np.testing.assert_array_equal(im.pixels, reference)  # the same decode as pydicom's own file


def test_frames_read_the_file_once(tmp_path, monkeypatch):
    import core.imaging.dicom_read as dr

    p = save(make_ds(np.stack([ramp(seed=i) for i in range(5)])), tmp_path)
    reads = []
    real = dr.pydicom.dcmread
    monkeypatch.setattr(dr.pydicom, "dcmread", lambda *a, **k: reads.append(a) or real(*a, **k))
    frames = read_dicom_frames(p)
    assert len(frames) == 5 and len(reads) == 1
    assert [f.extra["frame"] for f in frames] == list(range(5))


def test_n_frames_of_a_report_is_refused():
    with pytest.raises(ImageReadError, match="not a greyscale X-ray image"):
        n_frames(get_testdata_file("test-SR.dcm"))
