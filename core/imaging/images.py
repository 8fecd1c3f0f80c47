"""Fluoroscopy image files: reading any supported file into a ``FluoroImage`` (DICOM via
``dicom_read``, 16-bit PNG/TIFF here) and writing PNG16 and DICOM XA.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from core.formats.files import write_atomic
from core.imaging.fluoro_image import FluoroImage, ImageReadError, check_image_size

__all__ = ["read_image", "read_shots", "write_png16", "write_dicom_xa"]


# --- files ------------------------------------------------------------------

_XA_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")


def _sniff(path: Path) -> str:
    """"dicom", "png", "tiff" from the file's first bytes (never from its name)."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    return "unknown"


def read_image(path) -> FluoroImage:
    """Read a fluoroscopy image: DICOM (with its geometry) or 8/16-bit PNG/TIFF (none).

    Dispatches on content. Raises ``ImageReadError`` (one line) for a missing,
    corrupt or unsupported file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image file not found: {p}")
    try:
        kind = _sniff(p)
    except OSError as e:
        raise ImageReadError(f"cannot open image file {p}: {e.strerror or e}") from None
    if kind == "dicom":
        from core.imaging.dicom_read import read_dicom   # pydicom costs ~0.17 s: not at start-up
        img = read_dicom(p, frame=0)
        return img if img.view is not None else img.with_view(_dicom_view(p))
    if kind in ("png", "tiff"):
        return _read_raster(p)
    raise ImageReadError(f"{p} is not a DICOM, PNG or TIFF image: export the shot as DICOM or 16-bit PNG")


def read_shots(path) -> list:
    """All images of one file: the frames of a multi-frame DICOM, else one image. Every entry
    point (File → Open, folder, the DICOM receiver, the watched folder) reads through this.
    Raises ImageReadError (one line) for a missing, broken, unsupported or refused file."""
    image = read_image(path)          # sniffs the content; checks and decodes frame 0
    if int(image.extra.get("n_frames", 1)) <= 1:
        return [image]
    from core.imaging.dicom_read import read_dicom_frames
    return [f if f.view is not None else f.with_view(image.view) for f in read_dicom_frames(path)]


_VIEW_POSITIONS = {"AP": "ap", "PA": "ap", "LL": "lat", "RL": "lat", "LAT": "lat", "LATERAL": "lat"}


def _dicom_view(p: Path) -> str | None:
    """"ap" / "lat" from View Position (0018,5101) when the file states it, else None."""
    import pydicom
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except Exception:  # the reader above already accepted the file; a view is optional
        return None
    return _VIEW_POSITIONS.get(str(ds.get("ViewPosition", "")).strip().upper())


def _raster_size(p: Path, kind: str) -> tuple[int, int] | None:
    """(width, height) that a PNG's IHDR or a TIFF's first IFD claims, None when unreadable
    (the decoder then says what is wrong); read before decoding, so a damaged header claiming
    60000 x 60000 px is refused before OpenCV allocates gigabytes for it."""
    import struct
    with open(p, "rb") as f:
        if kind == "png":
            head = f.read(24)
            return struct.unpack(">II", head[16:24]) if len(head) == 24 and head[12:16] == b"IHDR" else None
        head = f.read(8)
        if len(head) < 8:
            return None
        end = "<" if head[:2] == b"II" else ">"
        f.seek(struct.unpack(end + "I", head[4:8])[0])
        count = f.read(2)
        if len(count) < 2:
            return None
        n = struct.unpack(end + "H", count)[0]
        entries = f.read(12 * min(n, 4096))
    size = {}
    for i in range(len(entries) // 12):
        tag, typ, _, value = struct.unpack(end + "HHI4s", entries[12 * i:12 * i + 12])
        if tag in (256, 257):                    # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), value[:2] if typ == 3 else value)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _read_raster(p: Path) -> FluoroImage:
    import cv2
    try:
        size = _raster_size(p, "png" if _sniff(p) == "png" else "tiff")
    except OSError as e:
        raise ImageReadError(f"cannot open image file {p}: {e.strerror or e}") from None
    if size is not None:
        check_image_size(str(p), rows=size[1], columns=size[0])
    try:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:      # OpenCV's own refusals (its size limit, a broken stream)
        detail = (str(e).strip().splitlines() or ["no detail"])[-1][:120]
        raise ImageReadError(f"{p} cannot be decoded ({detail}): export the image again") from None
    if a is None:
        raise ImageReadError(f"{p} is corrupt or truncated: export the image again")
    from core.imaging.modality import check_raster
    a = check_raster(a, p)            # a colour photo is no shot
    if a.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{p} has {a.dtype} pixels: only 8- or 16-bit unsigned images are supported")
    mtime = _dt.datetime.fromtimestamp(p.stat().st_mtime, tz=_dt.timezone.utc)
    return FluoroImage(pixels=a, photometric="MONOCHROME2", acquired_at=mtime, source=str(p),
                       bits_stored=8 * a.dtype.itemsize)


def write_png16(img: FluoroImage, path) -> Path:
    """Write the pixels as a 16-bit grayscale PNG (MONOCHROME2: a PNG has no photometric tag).

    A MONOCHROME1 image is inverted so that the file reads brighter = less dense.
    No geometry is kept: use ``write_dicom_xa`` for that. Written atomically.
    """
    import cv2
    a = img.pixels
    if img.photometric == "MONOCHROME1":
        a = ((1 << img.bits_stored) - 1) - a.astype(np.int64)
    a = np.clip(a, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ImageReadError(f"could not encode {path} as PNG")
    p = Path(path)
    write_atomic(p, buf.tobytes())
    return p


def _view_position(view: str | None) -> str:
    return {"ap": "AP", "lat": "LL"}.get(view, "")


def write_dicom_xa(img: FluoroImage, path, *, patient_name: str = "PHANTOM^SPINE",
                   patient_id: str = "FLUORONAV-SIM") -> Path:
    """Write an X-Ray Angiographic Image (single frame, explicit VR little endian).

    Geometry tags (DESIGN.md): Imager Pixel Spacing (0018,1164) in DICOM's
    row-then-column order, Distance Source to Detector (0018,1110), Positioner
    Primary/Secondary Angle (0018,1510/1511). Written atomically (temp file + os.replace).
    """
    import io

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    when = img.acquired_at or _dt.datetime.now(_dt.timezone.utc)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _XA_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _XA_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = img.extra.get("study_uid") or generate_uid()
    ds.SeriesInstanceUID = img.extra.get("series_uid") or generate_uid()
    ds.Modality = "XA"
    ds.Manufacturer = "fluoronav"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PositionerMotion = "STATIC"
    if img.view:
        ds.ViewPosition = _view_position(img.view)
        ds.SeriesDescription = f"fluoronav {img.view.upper()}"
    if img.pixel_spacing_mm is not None:
        col, row = img.pixel_spacing_mm
        ds.ImagerPixelSpacing = [f"{row:.6g}", f"{col:.6g}"]  # DICOM: row spacing first
    if img.sid_mm is not None:
        ds.DistanceSourceToDetector = f"{img.sid_mm:.6g}"
    pad = img.extra.get("padding")
    if pad is not None:                    # kept, so that a saved shot reads back alike
        ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = int(pad[0]), int(pad[1])
    if img.extra.get("sod_mm") is not None:
        ds.DistanceSourceToPatient = f"{img.extra['sod_mm']:.6g}"
    if img.primary_angle_deg is not None:
        ds.PositionerPrimaryAngle = f"{img.primary_angle_deg:.6g}"
    if img.secondary_angle_deg is not None:
        ds.PositionerSecondaryAngle = f"{img.secondary_angle_deg:.6g}"
    a = img.pixels
    bits = 8 if a.dtype == np.uint8 else 16
    if a.dtype not in (np.uint8, np.uint16):
        if a.min() < 0 or a.max() > 65535:
            raise ImageReadError("pixels out of the 16-bit range cannot be written as DICOM")
        a = a.astype(np.uint16)
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = img.photometric
    ds.BitsAllocated = bits
    ds.BitsStored = min(img.bits_stored, bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(a).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    p = Path(path)
    write_atomic(p, buf.getvalue())
    return p
