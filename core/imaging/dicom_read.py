"""Reading X-ray shots from DICOM files into ``FluoroImage`` (DESIGN.md: DICOM).

pydicom reads the file, never with ``force=True``: a file without the DICOM
preamble is refused. Supported: single and multi-frame XA/RF/DX/CR (others are
refused by ``core.imaging.modality``), MONOCHROME1/2, 8-16 bits stored, signed or
unsigned, uncompressed or in a compressed transfer syntax that one of pydicom's
decoders can read (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE with
pylibjpeg and its plugins). Pixels stay as stored, except that signed data are
shifted to unsigned (noted in ``extra["signed_offset"]``).

Geometry: Imager Pixel Spacing (0018,1164) lists (row, column) spacing: it is
reversed into ``pixel_spacing_mm`` = (column, row). Without it, Pixel Spacing
(0028,0030) is used and ``extra["notes"]`` says so.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import warnings

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array
from pydicom.valuerep import DA, DT, TM

from core.imaging.fluoro_image import FluoroImage, ImageReadError, check_image_size
from core.imaging.modality import check_dataset, header_text

__all__ = ["read_dicom", "read_dicom_frames", "n_frames", "dicom_summary", "find_dicom_images"]

_MONO = ("MONOCHROME1", "MONOCHROME2")


def _open(path) -> pydicom.Dataset:
    """Parse the file (header and pixel bytes) or raise a one-line ImageReadError."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ImageReadError(f"{name}: no such file")
    try:
        with _quiet():
            ds = pydicom.dcmread(name)
            _convert_all(ds)
        return ds
    except InvalidDicomError:
        raise ImageReadError(f"{name}: not a DICOM file (no 'DICM' preamble); "
                             "export the image from the C-arm as DICOM, PNG or TIFF") from None
    except Exception as e:  # pydicom raises many types on damaged files
        raise ImageReadError(f"{name}: damaged or truncated DICOM file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no detail'}); "
                             "copy the file again from the C-arm") from None


@contextlib.contextmanager
def _quiet():
    """pydicom warns (multi-line, on stderr) of each value that breaks its VR's rules, e.g. a
    UID with a letter: noise for a technician, and the values used here are checked anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _convert_all(ds: pydicom.Dataset) -> None:
    """Decode every element now (pydicom does it lazily, on first use): a damaged element
    (an unknown VR, a bad length) then fails here, inside the reader's error handling."""
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.walk(lambda d, e: None)
    ds.walk(lambda d, e: None)


def _int(ds: pydicom.Dataset, keyword: str, default: int, name: str) -> int:
    """A header element that must be one whole number, ``default`` when absent or empty."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ImageReadError(f"{name}: the header's {keyword} is {str(value)[:40]!r}, not a whole number: "
                             "the file is damaged") from None


def _guarded(read):
    """A reader whose refusals are all ImageReadError: a header value of the wrong type that
    the checks did not foresee (pydicom keeps what the file says) is named, not a traceback."""
    @functools.wraps(read)
    def wrapper(path, *args, **kwargs):
        try:
            return read(path, *args, **kwargs)
        except ImageReadError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as e:
            detail = str(e).splitlines()[0][:120] if str(e) else "no detail"
            raise ImageReadError(f"{os.fspath(path)}: damaged DICOM header ({type(e).__name__}: {detail}); "
                                 "copy the file again from the C-arm") from None
    return wrapper


def _check_image(ds: pydicom.Dataset, name: str) -> None:
    """Refuse what is not a greyscale X-ray image, with the reason."""
    if "PixelData" not in ds:
        kind = header_text(ds.get("Modality", "")) or "unknown modality"
        sop = header_text(getattr(ds.get("SOPClassUID", None), "name", ""), 64) or "unknown SOP class"
        raise ImageReadError(f"{name}: DICOM without an image ({kind}, {sop}); open an X-ray image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    spp = _int(ds, "SamplesPerPixel", 1, name)
    if photometric not in _MONO or spp != 1:
        raise ImageReadError(f"{name}: colour or non-greyscale image ({photometric or 'no photometric'}, "
                             f"{spp} samples per pixel); only MONOCHROME1/2 X-ray images can be used")
    alloc = _int(ds, "BitsAllocated", 0, name)
    stored = _int(ds, "BitsStored", alloc, name) or alloc
    if alloc not in (8, 16) or not 1 <= stored <= alloc:
        raise ImageReadError(f"{name}: {stored} bits stored in {alloc} allocated is not supported; "
                             "only 8-16 bit images can be used")
    for tag in ("Rows", "Columns"):
        if _int(ds, tag, 0, name) < 1:
            raise ImageReadError(f"{name}: the header has no valid {tag}: the file is damaged")
    if _int(ds, "PixelRepresentation", 0, name) not in (0, 1):
        raise ImageReadError(f"{name}: Pixel Representation {ds.PixelRepresentation} is neither 0 (unsigned) "
                             "nor 1 (signed): the file is damaged")
    check_image_size(name, _int(ds, "Rows", 0, name), _int(ds, "Columns", 0, name))


# Transfer syntaxes newer than pydicom 3.0's own dictionary: named here so that the message is
# the same whether or not another library (pynetdicom) has added them to pydicom's registry.
_NEWER_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
}


def _check_decodable(ds: pydicom.Dataset, name: str) -> None:
    """Raise naming the transfer syntax when no installed decoder can read it."""
    ts = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    ts = pydicom.uid.UID(str(ts).strip("\x00 ")) if ts is not None else None
    if not ts:
        raise ImageReadError(f"{name}: no transfer syntax in the file meta information; the file is damaged")
    known = _NEWER_TRANSFER_SYNTAXES.get(str(ts)) or (ts.name if ts.name != ts else "")
    label = f"{known} ({ts})" if known else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageReadError(f"{name}: transfer syntax {label} cannot be decoded; "
                             "export the image uncompressed or as JPEG/JPEG 2000/RLE") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise ImageReadError(f"{name}: transfer syntax {label} cannot be decoded here (needs {missing})")


def _frame_count(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _in_items(items, keyword: str):
    """Depth-first search of ``keyword`` in sequence items (functional group macros nest one level)."""
    for item in items:
        if keyword in item:
            return item.get(keyword)
        for elem in item:
            if elem.VR == "SQ":
                found = _in_items(elem.value, keyword)
                if found is not None:
                    return found
    return None


def _find(ds: pydicom.Dataset, keyword: str, frame: int = 0):
    """``keyword`` at the top level, else in the frame's per-frame functional groups, else in
    the shared ones (enhanced multi-frame XA/XRF keep geometry there); None when absent."""
    if keyword in ds:
        return ds.get(keyword)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and frame < len(per_frame):
        found = _in_items([per_frame[frame]], keyword)
        if found is not None:
            return found
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    return _in_items(shared, keyword) if shared is not None else None


def _spacing(ds: pydicom.Dataset, notes: list, frame: int = 0) -> tuple[float, float] | None:
    """(column, row) spacing in mm at the detector; DICOM lists row first."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = _find(ds, keyword, frame)
        if value is None:
            continue
        try:
            row, col = (float(x) for x in value)
        except (TypeError, ValueError):
            notes.append(f"{keyword} {value!r} is not two numbers: ignored")
            continue
        if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
            notes.append(f"{keyword} {value!r} is not positive: ignored")
            continue
        if keyword == "PixelSpacing":
            notes.append("no Imager Pixel Spacing (0018,1164): used Pixel Spacing (0028,0030), "
                         "which may be calibrated at the patient rather than at the detector")
        return (col, row)
    notes.append("no pixel spacing in the file")
    return None


def _float(ds: pydicom.Dataset, keyword: str, notes: list, frame: int = 0) -> float | None:
    value = _find(ds, keyword, frame)
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        notes.append(f"{keyword} {value!r} is not a number: ignored")
        return None
    return x if np.isfinite(x) else None


def _angle(ds: pydicom.Dataset, keyword: str, frame: int, notes: list) -> float | None:
    """Positioner angle in degrees; per frame for a rotational run (…AngleIncrement)."""
    increments = ds.get(keyword + "Increment", None)
    if increments is not None:
        try:
            values = [float(x) for x in (increments if isinstance(increments, (list, tuple, pydicom.multival.MultiValue))
                                         else [increments])]
            if frame < len(values):
                return values[frame]
        except (TypeError, ValueError):
            notes.append(f"{keyword}Increment is not numeric: ignored")
    return _float(ds, keyword, notes, frame)


def _acquired_at(ds: pydicom.Dataset, notes: list, frame: int = 0) -> _dt.datetime | None:
    """Frame / Acquisition DateTime, else Acquisition / Content / Series / Study date and time."""
    try:
        for keyword in ("FrameAcquisitionDateTime", "AcquisitionDateTime"):
            value = _find(ds, keyword, frame)
            if value:
                return DT(value)
        for prefix in ("Acquisition", "Content", "Series", "Study"):
            date = ds.get(prefix + "Date", None)
            if date:
                time = ds.get(prefix + "Time", None)
                d = DA(date)
                t = TM(time) if time else _dt.time()
                return _dt.datetime.combine(d, t)
    except (TypeError, ValueError) as e:
        notes.append(f"acquisition date/time unreadable ({e}): ignored")
    return None


def _to_unsigned(a: np.ndarray, ds: pydicom.Dataset, bits_stored: int, extra: dict) -> np.ndarray:
    """Signed data shifted by 2**(BitsStored-1) to [0, 2**BitsStored - 1]; noted in extra."""
    if int(ds.get("PixelRepresentation", 0) or 0) == 0 and a.dtype.kind == "u":
        return a
    offset = 1 << (bits_stored - 1)
    out_type = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    shifted = a.astype(np.int32) + offset
    extra["signed_offset"] = offset
    extra["notes"].append(f"signed pixels shifted by +{offset} to unsigned")
    return np.clip(shifted, 0, (1 << bits_stored) - 1).astype(out_type)


def _padding(ds: pydicom.Dataset, extra: dict, notes: list) -> tuple[int, int] | None:
    """Pixel Padding Value (0028,0120) and Range Limit (0028,0121) as an inclusive range of
    stored values (shifted like the pixels when signed): pixels outside the exposed field,
    which must not count as signal whatever grey they happen to be (PS3.3 C.7.5.1.1.2)."""
    if "PixelPaddingValue" not in ds:
        return None
    try:
        lo = int(ds.PixelPaddingValue)
        hi = int(ds.get("PixelPaddingRangeLimit", lo))
    except (TypeError, ValueError):
        notes.append("Pixel Padding Value unreadable: ignored")
        return None
    off = int(extra.get("signed_offset", 0))
    return (min(lo, hi) + off, max(lo, hi) + off)


def _decode(ds: pydicom.Dataset, frame: int, name: str) -> np.ndarray:
    try:
        with _quiet():
            a = pixel_array(ds, index=frame if _frame_count(ds) > 1 else None)
    except BaseException as e:  # decoders raise ValueError, RuntimeError, struct.error, ...
        # ... and the Rust ones (pylibjpeg-rle) a pyo3 PanicException on a damaged frame: a
        # BaseException that ``except Exception`` misses and that would end the process.
        # Only that one is caught besides Exception: Ctrl-C and exit still go through.
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{name}: the pixel data cannot be decoded ({detail}); "
                             "the file is damaged or truncated: copy it again from the C-arm") from None
    a = np.asarray(a)
    if a.ndim == 3 and _frame_count(ds) == 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ImageReadError(f"{name}: decoded image has shape {a.shape}, expected one 2-D greyscale frame")
    return a


@_guarded
def read_dicom(path, frame: int = 0) -> FluoroImage:
    """One frame of a DICOM X-ray image as a raw ``FluoroImage``; raises ImageReadError."""
    name = os.fspath(path)
    ds = _open_image(name)
    count = _frame_count(ds)
    if not isinstance(frame, (int, np.integer)) or not 0 <= frame < count:
        raise ImageReadError(f"{name}: frame {frame} does not exist; the file has {count} frame(s)")
    return _frame_image(ds, name, int(frame))


def _open_image(name: str) -> pydicom.Dataset:
    ds = _open(name)
    check_dataset(ds, name)       # a CT, MR, secondary capture or RT object is no shot
    _check_image(ds, name)
    _check_decodable(ds, name)
    return ds


def _frame_image(ds: pydicom.Dataset, name: str, frame: int) -> FluoroImage:
    """Frame ``frame`` of an opened, checked dataset, with its geometry."""
    bits_stored = int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated)
    notes: list[str] = []
    extra = {"notes": notes, "modality": str(ds.get("Modality", "")),
             "sop_class_uid": str(ds.get("SOPClassUID", "")),
             "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
             "n_frames": _frame_count(ds), "frame": frame}
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                    "DistanceSourceToPatient", "ImageType", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword in ds:
            value = ds.get(keyword)
            extra[keyword] = list(value) if isinstance(value, pydicom.multival.MultiValue) else value
    pixels = _to_unsigned(_decode(ds, frame, name), ds, bits_stored, extra)
    padding = _padding(ds, extra, notes)
    if padding is not None:
        extra["padding"] = padding
    return FluoroImage(
        pixels=pixels, photometric=str(ds.PhotometricInterpretation).strip(),
        pixel_spacing_mm=_spacing(ds, notes, frame),
        sid_mm=_float(ds, "DistanceSourceToDetector", notes, frame),
        primary_angle_deg=_angle(ds, "PositionerPrimaryAngle", frame, notes),
        secondary_angle_deg=_angle(ds, "PositionerSecondaryAngle", frame, notes),
        acquired_at=_acquired_at(ds, notes, frame), source=name, bits_stored=bits_stored, extra=extra)


@_guarded
def n_frames(path) -> int:
    """Number of frames of a DICOM X-ray image (1 for a single shot), from the header only."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ImageReadError(f"{name}: no such file")
    try:
        with _quiet():
            ds = pydicom.dcmread(name, stop_before_pixels=True)
            _convert_all(ds)
    except InvalidDicomError:
        raise ImageReadError(f"{name}: not a DICOM file (no 'DICM' preamble)") from None
    except Exception as e:
        raise ImageReadError(f"{name}: damaged or truncated DICOM header ({type(e).__name__})") from None
    if not _looks_like_image(ds):
        raise ImageReadError(f"{name}: not a greyscale X-ray image (8-16 bit MONOCHROME1/2)")
    return _frame_count(ds)


@_guarded
def read_dicom_frames(path) -> list[FluoroImage]:
    """Every frame of a (multi-frame XA/RF) DICOM file, e.g. for a thumbnail strip.

    The file is read once and each frame decoded once (not one file read per frame).
    """
    name = os.fspath(path)
    ds = _open_image(name)
    check_image_size(name, int(ds.Rows), int(ds.Columns), _frame_count(ds))
    return [_frame_image(ds, name, i) for i in range(_frame_count(ds))]


@_guarded
def dicom_summary(path) -> dict:
    """What a file holds, without decoding pixels: for a file browser or a log line."""
    name = os.fspath(path)
    ds = _open(name)
    _check_image(ds, name)
    return {"modality": str(ds.get("Modality", "")), "rows": int(ds.Rows), "columns": int(ds.Columns),
            "n_frames": _frame_count(ds), "photometric": str(ds.PhotometricInterpretation),
            "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
            "bits_stored": int(ds.get("BitsStored", ds.BitsAllocated))}


def find_dicom_images(folder, recursive: bool = True) -> list[dict]:
    """The X-ray images in a folder (e.g. a C-arm export or a DICOMDIR tree), for "open folder".

    Reads headers only. Each entry is ``dicom_summary`` plus ``path``, ``series``,
    ``instance`` and ``acquired_at`` (None when unknown), sorted by series, time,
    instance number and name. Files that are not DICOM images (DICOMDIR, reports,
    colour images, other files) are skipped; an unreadable folder is an ImageReadError.
    """
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise ImageReadError(f"{root}: no such folder")
    walker = os.walk(root) if recursive else [(root, [], os.listdir(root))]
    found = []
    for base, _, files in walker:
        for name in files:
            path = os.path.join(base, name)
            try:
                with _quiet():
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    _convert_all(ds)
            except Exception:  # not DICOM, or unreadable: not an image to offer
                continue
            if not _looks_like_image(ds):
                continue
            notes: list[str] = []
            try:
                entry = {"path": path, "modality": str(ds.get("Modality", "")), "rows": int(ds.Rows),
                          "columns": int(ds.Columns), "n_frames": _frame_count(ds),
                          "photometric": str(ds.PhotometricInterpretation).strip(),
                          "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
                          "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
                          "series": str(ds.get("SeriesInstanceUID", "")),
                          "instance": int(ds.get("InstanceNumber", 0) or 0),
                          "acquired_at": _acquired_at(ds, notes)}
            except (TypeError, ValueError, OverflowError):   # a damaged header: not offered either
                continue
            found.append(entry)
    far_past = _dt.datetime.min
    return sorted(found, key=lambda e: (e["series"], (e["acquired_at"] or far_past).replace(tzinfo=None),
                                        e["instance"], e["path"]))


def _looks_like_image(ds: pydicom.Dataset) -> bool:
    """Header test for ``find_dicom_images`` (pixels were not read: no PixelData check)."""
    try:
        return _looks_like_image_unchecked(ds)
    except (TypeError, ValueError, OverflowError):      # a header value of the wrong type
        return False


def _looks_like_image_unchecked(ds: pydicom.Dataset) -> bool:
    return (str(ds.get("PhotometricInterpretation", "")).strip() in _MONO
            and int(ds.get("SamplesPerPixel", 1) or 1) == 1
            and int(ds.get("BitsAllocated", 0) or 0) in (8, 16)
            and int(ds.get("Rows", 0) or 0) > 0 and int(ds.get("Columns", 0) or 0) > 0)
