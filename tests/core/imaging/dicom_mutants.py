"""Deterministic DICOM mutants for the fuzz tests: damaged copies of valid files.

Bases are X-ray shots written here with the app's own writer (8/16 bit, MONOCHROME1/2,
signed, multi-frame) plus pydicom's bundled test files that are on disk (RLE, JPEG,
JPEG-LS, JPEG 2000, big endian, implicit VR); never downloaded. Each mutant is
``(label, bytes)``; the label's first word is its class (``flip``, ``rows``, ...).
"""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import pydicom
import pydicom.datadict
import pydicom.tag
from pydicom.dataelem import RawDataElement
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGBaseline8Bit, RLELossless, DeflatedExplicitVRLittleEndian)

from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_dicom_xa

# pydicom's bundled files used as bases when they are on disk (pydicom ships them)
BUNDLED = ("MR_small_RLE.dcm", "MR_small.dcm", "CT_small.dcm", "MR_small_jp2klossless.dcm",
           "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm", "JPEGLSNearLossless_16.dcm",
           "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "rtdose_rle.dcm", "SC_rgb_rle.dcm")


def _bundled_dir() -> str:
    import pydicom.data
    return os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")


def bases(tmp) -> list[tuple[str, bytes]]:
    """Valid files: ours (written with ``write_dicom_xa``) and pydicom's bundled ones."""
    rng = np.random.default_rng(7)
    out = []
    for name, dtype, bits, photo in (("xa16", np.uint16, 12, "MONOCHROME2"), ("xa8", np.uint8, 8, "MONOCHROME1")):
        a = rng.integers(0, 1 << bits, size=(48, 40)).astype(dtype)
        img = FluoroImage(pixels=a, photometric=photo, pixel_spacing_mm=(0.3, 0.3), sid_mm=1000.0,
                          primary_angle_deg=0.0, bits_stored=bits, view="ap")
        p = write_dicom_xa(img, os.path.join(tmp, f"{name}.dcm"))
        out.append((name, p.read_bytes()))
    ds = pydicom.dcmread(io.BytesIO(out[0][1]))
    frames = rng.integers(0, 4096, size=(3, 48, 40)).astype(np.uint16)     # a 3-frame run
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    out.append(("xa16x3", _write(ds)))
    ds = pydicom.dcmread(io.BytesIO(out[0][1]))
    ds.PixelRepresentation = 1                                              # signed pixels
    ds.PixelData = (rng.integers(-2048, 2048, size=(48, 40)).astype(np.int16)).tobytes()
    out.append(("xa16signed", _write(ds)))
    root = _bundled_dir()
    for name in BUNDLED:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                raw = f.read()
            out.append((name, as_xa(raw) if name.startswith(("MR_", "JPEG")) else raw))
    return out


XA_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.12.1"


def as_xa(raw: bytes) -> bytes:
    """pydicom's MR/JPEG samples relabelled as X-ray angiography, so that the projection-shot
    check lets them through and the mutants reach the pixel decoders (RLE, JPEG, JPEG 2000,
    JPEG-LS, big endian, implicit VR); CT, RT dose and secondary capture stay as they are."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = XA_IMAGE_STORAGE
    ds.Modality = "XA"
    return _write(ds)


def _write(ds) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def _edit(raw: bytes, **changes) -> bytes | None:
    """The file with header elements changed (None deletes), re-encoded as the original was."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    for key, value in changes.items():
        if key == "TransferSyntaxUID":
            if value is None:
                del ds.file_meta.TransferSyntaxUID
            else:
                ds.file_meta.TransferSyntaxUID = value
            continue
        if value is None:
            if key in ds:
                delattr(ds, key)
        elif isinstance(value, str) and key == "NumberOfFrames":    # kept as written, even if not a number
            tag = pydicom.datadict.tag_for_keyword(key)
            text = value.encode() + (b" " if len(value) % 2 else b"")
            ds._dict[tag] = RawDataElement(pydicom.tag.Tag(tag), "IS", len(text), text, 0,
                                           ds.is_implicit_VR if ds.is_implicit_VR is not None else False,
                                           ds.is_little_endian if ds.is_little_endian is not None else True)
        else:
            setattr(ds, key, value)
    try:
        return _write(ds)
    except Exception:       # a value pydicom refuses to encode: not a mutant this base yields
        return None


def _tag_offsets(raw: bytes, group: int, elem: int) -> list[int]:
    """Where the little-endian tag (group, elem) occurs in the bytes (data set and file meta)."""
    needle = struct.pack("<HH", group, elem)
    found, i = [], raw.find(needle)
    while i >= 0:
        found.append(i)
        i = raw.find(needle, i + 1)
    return found


_HEADER_TAGS = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0103),
                (0x0028, 0x0004), (0x0028, 0x0008), (0x0002, 0x0010), (0x0008, 0x0060), (0x0018, 0x1164),
                (0x7FE0, 0x0010), (0x0028, 0x0002)]


def mutants(tmp, seed: int = 15):
    """Yield ``(label, bytes)``: about 60 mutants per base, the same ones for the same seed."""
    rng = np.random.default_rng(seed)
    for name, raw in bases(tmp):
        yield from _of_base(name, raw, rng)


def _of_base(name: str, raw: bytes, rng):
    n = len(raw)
    for k in range(12):                                           # byte flips, more past the header
        b = bytearray(raw)
        lo = 128 if k % 2 else min(n - 1, 132 + 200)
        for pos in rng.integers(lo, n, size=int(rng.integers(1, 9))):
            b[pos] ^= int(rng.integers(1, 256))
        yield f"flip {name} #{k}", bytes(b)
    for k, frac in enumerate((0.0, 0.05, 0.2, 0.5, 0.8, 0.99)):   # truncations
        cut = max(0, int(n * frac) - int(rng.integers(0, 4)))
        yield f"truncate {name} at {cut}", raw[:cut]
    yield f"truncate {name} after preamble", raw[:132]
    for rows in (0, 1, 63, 65535):
        yield f"rows {name} = {rows}", _edit(raw, Rows=rows)
    for cols in (0, 3, 65535):
        yield f"columns {name} = {cols}", _edit(raw, Columns=cols)
    yield f"rows+columns {name} 60000x60000", _edit(raw, Rows=60000, Columns=60000)
    for bits in (0, 1, 12, 32, 64):
        yield f"bits_allocated {name} = {bits}", _edit(raw, BitsAllocated=bits)
    for bits in (0, 17, 40):
        yield f"bits_stored {name} = {bits}", _edit(raw, BitsStored=bits)
    for rep in (1, 2, 0):
        yield f"pixel_representation {name} = {rep}", _edit(raw, PixelRepresentation=rep)
    for photo in ("MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL_422", "", None):
        yield f"photometric {name} = {photo!r}", _edit(raw, PhotometricInterpretation=photo)
    for spp in (0, 3):
        yield f"samples {name} = {spp}", _edit(raw, SamplesPerPixel=spp)
    for frames in (0, 2, 1000, 2**31 - 1, "-1", "abc", None):
        yield f"frames {name} = {frames!r}", _edit(raw, NumberOfFrames=frames)
    for ts in ("", "1.2.3.4.5", ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
               RLELossless, JPEGBaseline8Bit, JPEG2000Lossless, DeflatedExplicitVRLittleEndian, None):
        label = {"": "empty", None: "missing"}.get(ts, str(ts))
        yield f"transfer_syntax {name} = {label}", _edit(raw, TransferSyntaxUID=ts)
    yield f"no_pixel_data {name}", _edit(raw, PixelData=None)
    for group, elem in _HEADER_TAGS:                               # huge lengths and flipped VRs
        for at in _tag_offsets(raw, group, elem)[:1]:
            b = bytearray(raw)
            vr = bytes(b[at + 4:at + 6])
            if vr.isalpha():                                        # explicit VR: length after it
                long_vr = vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV")
                if long_vr:
                    b[at + 8:at + 12] = struct.pack("<I", 0xFFFFFFF0)
                else:
                    b[at + 6:at + 8] = struct.pack("<H", 0xFFF0)
            else:                                                   # implicit VR: 4-byte length
                b[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFF0)
            yield f"huge_length {name} ({group:04X},{elem:04X})", bytes(b)
            if vr.isalpha():
                c = bytearray(raw)
                c[at + 4:at + 6] = bytes([int(rng.integers(65, 91)), int(rng.integers(0, 256))])
                yield f"vr_flip {name} ({group:04X},{elem:04X})", bytes(c)
