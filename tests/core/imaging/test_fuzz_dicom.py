"""Fuzzed X-ray files never crash a reader (issue 15): each is read or refused with one line.

Over 1,000 seeded DICOM mutants (dicom_mutants.py) go through every reader the app and the
command line use; anything but ``ImageReadError`` fails, as does a read over 5 s or a
memory blow-up. Headers claiming absurd sizes (DICOM, PNG, TIFF) are refused before decoding.
"""
import collections
import io
import os
import resource
import signal
import struct
import zlib

import numpy as np
import pydicom
import pytest

import core.imaging.dicom_read as dicom_read
from core.imaging.dicom_read import dicom_summary, find_dicom_images, n_frames, read_dicom, read_dicom_frames
from core.imaging.fluoro_image import MAX_SIDE_PX, ImageReadError
from core.imaging.images import read_image
from dicom_mutants import as_xa, bases, mutants

READERS = (read_image, read_dicom_frames, n_frames, dicom_summary)
TIME_GUARD_S = 5


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_dicom_mutants_are_read_or_refused_with_one_line(tmp_path):
    rss_before = _rss_mb()
    counts, by_class, failures = collections.Counter(), collections.Counter(), []
    path = tmp_path / "shot.dcm"
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for label, data in mutants(str(tmp_path), seed=15):
            if data is None:            # pydicom would not encode that value for this base
                continue
            counts["mutants"] += 1
            path.write_bytes(data)
            for read in READERS:
                signal.setitimer(signal.ITIMER_REAL, TIME_GUARD_S)
                try:
                    read(path)
                    counts["read"] += 1
                except ImageReadError as e:
                    counts["refused"] += 1
                    by_class[label.split()[0]] += 1
                    msg = str(e)
                    if "\n" in msg or not msg.startswith(str(path)) and str(path) not in msg:
                        failures.append(f"{label} / {read.__name__}: message not one line naming the file: {msg!r}")
                except _Hang:
                    failures.append(f"{label} / {read.__name__}: over {TIME_GUARD_S} s")
                except BaseException as e:          # untyped, or a decoder panic
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    failures.append(f"{label} / {read.__name__}: {type(e).__name__}: {str(e)[:120]}")
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    grown = _rss_mb() - rss_before
    summary = (f"{counts['mutants']} mutants x {len(READERS)} readers: {counts['read']} read, "
               f"{counts['refused']} refused; refused by class {dict(sorted(by_class.items()))}; "
               f"peak memory grew {grown:.0f} MB")
    print(summary)
    assert counts["mutants"] >= 1000, summary
    assert not failures, f"{len(failures)} failures ({summary}):\n" + "\n".join(failures[:20])
    assert counts["read"] > 0 and counts["refused"] > 0, summary   # the mutants do reach both outcomes
    assert grown < 1024, summary                                     # no buffer for a claimed giant image


def _base(tmp_path, name):
    return dict(bases(str(tmp_path)))[name]


def _edited(raw, **changes):
    ds = pydicom.dcmread(io.BytesIO(raw))
    for k, v in changes.items():
        setattr(ds.file_meta if k == "TransferSyntaxUID" else ds, k, v)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def test_rle_decoder_panic_is_a_refusal(tmp_path):
    """pydicom's MR_small_RLE.dcm with Rows 63 makes the Rust RLE decoder panic (a BaseException)."""
    raw = _base(tmp_path, "xa16")
    rle = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files", "MR_small_RLE.dcm")
    if os.path.isfile(rle):
        raw = as_xa(open(rle, "rb").read())     # an MR is refused before its pixels are decoded
    p = tmp_path / "rle.dcm"
    p.write_bytes(_edited(raw, Rows=63))
    with pytest.raises(ImageReadError, match="pixel data cannot be decoded"):
        read_dicom(p)


def test_decoder_panic_is_caught_but_ctrl_c_is_not(tmp_path, monkeypatch):
    p = tmp_path / "ok.dcm"
    p.write_bytes(_base(tmp_path, "xa16"))
    assert read_dicom(p).shape == (48, 40)

    class PanicException(BaseException):   # what pyo3 raises for a Rust panic
        pass

    def panics(*a, **k):
        raise PanicException("index out of bounds")

    monkeypatch.setattr(dicom_read, "pixel_array", panics)
    with pytest.raises(ImageReadError, match="index out of bounds"):
        read_dicom(p)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dicom_read, "pixel_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_dicom(p)


def test_empty_and_unknown_transfer_syntax_are_named(tmp_path):
    raw = _base(tmp_path, "xa16")
    p = tmp_path / "ts.dcm"
    p.write_bytes(_edited(raw, TransferSyntaxUID=""))
    with pytest.raises(ImageReadError, match="no transfer syntax"):
        read_image(p)
    p.write_bytes(_edited(raw, TransferSyntaxUID="1.2.3.4.5"))
    with pytest.raises(ImageReadError, match=r"1\.2\.3\.4\.5 .*cannot be decoded"):
        read_image(p)


def test_flipped_vr_byte_is_a_damaged_file(tmp_path):
    raw = bytearray(_base(tmp_path, "xa16"))
    at = raw.find(struct.pack("<HH", 0x0028, 0x0010))       # Rows, explicit VR "US"
    assert raw[at + 4:at + 6] == b"US"
    raw[at + 4:at + 6] = b"Q\x8f"
    (tmp_path / "folder").mkdir()
    p = tmp_path / "folder" / "vr.dcm"
    p.write_bytes(bytes(raw))
    for read in READERS:
        with pytest.raises(ImageReadError, match="damaged"):
            read(p)
    assert find_dicom_images(tmp_path / "folder") == []                 # not offered in a folder either


def test_giant_dicom_header_refused_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "giant.dcm"
    p.write_bytes(_edited(_base(tmp_path, "xa16"), Rows=60000, Columns=60000))
    monkeypatch.setattr(dicom_read, "pixel_array", lambda *a, **k: pytest.fail("decoded a 60000 px image"))
    with pytest.raises(ImageReadError, match=f"60000 x 60000 px.*at most {MAX_SIDE_PX}"):
        read_image(p)


def test_multi_frame_run_too_large_to_read_at_once(tmp_path):
    p = tmp_path / "run.dcm"
    p.write_bytes(_edited(_base(tmp_path, "xa16x3"), NumberOfFrames=2 ** 31 - 1))
    with pytest.raises(ImageReadError, match="2147483647 frames"):
        read_dicom_frames(p)


def _png_header(width, height, bit_depth=16) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` greyscale pixels, with a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _tiff_header(width, height) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, min(2 * width * height, 2 ** 32 - 1))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", t, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
        for t, typ, n, v in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + 64) + b"\0" * 64 + ifd


@pytest.mark.parametrize("kind", ["png", "tiff"])
def test_giant_raster_header_refused_before_decoding(tmp_path, kind):
    p = tmp_path / f"giant.{kind}"
    p.write_bytes(_png_header(60000, 60000) if kind == "png" else _tiff_header(60000, 60000))
    rss = _rss_mb()
    with pytest.raises(ImageReadError, match="60000 x 60000 px"):
        read_image(p)
    assert _rss_mb() - rss < 512


def test_raster_header_parser_reads_real_files(tmp_path):
    """The size guard reads the same width and height as OpenCV for files OpenCV wrote."""
    import cv2
    from core.imaging.images import _raster_size
    a = (np.arange(37 * 53) % 4096).astype(np.uint16).reshape(37, 53)
    for ext, kind in ((".png", "png"), (".tif", "tiff")):
        p = tmp_path / f"shot{ext}"
        assert cv2.imwrite(str(p), a)
        assert _raster_size(p, kind) == (53, 37)
        assert np.array_equal(read_image(p).pixels, a)


@pytest.mark.parametrize("kind", ["png", "tiff"])
def test_damaged_raster_files_are_refused_with_one_line(tmp_path, kind):
    import cv2
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4096, size=(32, 24)).astype(np.uint16)
    good = tmp_path / f"good.{kind}"
    assert cv2.imwrite(str(good), a)
    raw = good.read_bytes()
    outcomes = collections.Counter()
    p = tmp_path / f"bad.{kind}"
    for k in range(60):
        b = bytearray(raw[: max(8, int(len(raw) * rng.uniform(0.1, 1.0)))] if k % 3 == 0 else raw)
        for pos in rng.integers(0, len(b), size=int(rng.integers(1, 6))):
            b[pos] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(b))
        try:
            read_image(p)
            outcomes["read"] += 1
        except ImageReadError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
    print(kind, dict(outcomes))
    assert outcomes["refused"] > 0, dict(outcomes)
