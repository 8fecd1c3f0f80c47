"""Which files may become shots: projection X-ray images only (XA, RF, DX, CR).

Every entry point (File → Open, drag and drop, the watched folder, the DICOM
receiver) reads through ``core.imaging.dicom_read`` / ``images.read_image``, which
call ``check_dataset`` / ``check_raster`` here, so a CT slice, an MR image, a
secondary capture, an RT object or a colour photo is refused the same way
everywhere, with one line saying what the file is.

Accepted: X-Ray Angiographic and X-Ray Radiofluoroscopic (classic and Enhanced),
Digital X-Ray (for presentation and for processing) and Computed Radiography. Those
are what a C-arm or a radiography room acquires: a cone-beam projection whose
geometry (Imager Pixel Spacing, SID, positioner angles) the calibration uses.
Refused although they are projections: mammography (MG), intra-oral (IO) and
panoramic (PX) X-ray. Their units never image a spine, their geometry (breast
compression, scanning slit) is not a C-arm's, and one of them arriving at the
workstation is a misrouted study, not a shot to plan on. 3D X-ray (XA/XRF 3D) and
image types that say a volume was reformatted (MPR, MIP, localizer) are refused too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from core.imaging.fluoro_image import ImageReadError

__all__ = ["NotAShotError", "Verdict", "classify", "check_dataset", "check_raster",
           "PROJECTION_SOP_CLASSES", "view_from_positioner"]

PROJECTION_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "Enhanced XRF Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
}
PROJECTION_MODALITIES = ("XA", "RF", "DX", "CR")

# What a refused modality is, in words a technician reads on the status bar.
_MODALITY_WORDS = {
    "CT": "a CT image", "MR": "an MR image", "PT": "a PET image", "NM": "a nuclear medicine image",
    "US": "an ultrasound image", "MG": "a mammogram", "IO": "an intra-oral X-ray",
    "PX": "a panoramic dental X-ray", "OT": "a secondary capture", "SC": "a secondary capture",
    "XC": "a photograph", "ES": "an endoscopy image", "GM": "a microscopy image",
    "SM": "a slide microscopy image", "OP": "an ophthalmic photograph", "SR": "a structured report",
    "DOC": "a document", "PR": "a presentation state", "KO": "a key object selection",
    "SEG": "a segmentation", "REG": "a registration object", "RTIMAGE": "an RT image",
    "RTSTRUCT": "an RT structure set", "RTPLAN": "an RT plan", "RTDOSE": "an RT dose",
    "RTRECORD": "an RT treatment record",
}
# SOP classes whose name alone says what the file is (the modality may be absent or vague).
_SOP_PREFIX_WORDS = (
    ("1.2.840.10008.5.1.4.1.1.7", "a secondary capture"),
    ("1.2.840.10008.5.1.4.1.1.481", "an RT object"),
    ("1.2.840.10008.5.1.4.1.1.77", "a photograph"),
    ("1.2.840.10008.5.1.4.1.1.88", "a structured report"),
    ("1.2.840.10008.5.1.4.1.1.2", "a CT image"),
    ("1.2.840.10008.5.1.4.1.1.4", "an MR image"),
    ("1.2.840.10008.5.1.4.1.1.13", "a 3D X-ray volume"),
    ("1.2.840.10008.5.1.4.1.1.1.2", "a mammogram"),
    ("1.2.840.10008.5.1.4.1.1.1.3", "an intra-oral X-ray"),
    ("1.2.840.10008.5.1.4.1.1.12.3", "a 3D X-ray volume"),
)
_RECONSTRUCTED = ("LOCALIZER", "MPR", "MIP", "VOLUME", "REFORMATTED", "RECONSTRUCTION", "3D")


class NotAShotError(ImageReadError):
    """The file is readable but is not a projection X-ray image (one line: what it is)."""


@dataclass(frozen=True)
class Verdict:
    """``is_shot`` and, when not, ``what`` the file is ("a CT image (CT Image Storage)")."""
    is_shot: bool
    what: str = ""


def header_text(value, limit: int = 24) -> str:
    """A header value fit for a one-line message: printable ASCII only, at most ``limit``
    characters (a damaged element can hold kilobytes of pixel bytes and line breaks)."""
    text = str(value if value is not None else "").strip()
    if not text.isascii() or not text.isprintable():
        return "unreadable"
    return text if len(text) <= limit else text[:limit] + "…"


def _sop_name(uid: str) -> str:
    if uid in PROJECTION_SOP_CLASSES:
        return PROJECTION_SOP_CLASSES[uid]
    try:
        from pydicom.uid import UID   # names for every registered SOP class
        name = UID(uid).name
    except Exception:  # a malformed UID: say the number
        name = uid
    uid = header_text(uid, 64)
    name = header_text(name, 64)
    return name if name and name != uid else (f"SOP class {uid}" if uid else "no SOP class")


def _words_for(uid: str, modality: str) -> str:
    for prefix, words in _SOP_PREFIX_WORDS:
        if uid == prefix or uid.startswith(prefix + "."):
            return words
    if modality in _MODALITY_WORDS:
        return _MODALITY_WORDS[modality]
    if not modality:
        return "an object of unknown modality"
    article = "an" if modality[0] in "AEFHILMNORSX" else "a"     # letters said with a vowel sound
    return f"{article} {modality} object"


def classify(ds) -> Verdict:
    """Is this DICOM dataset (header enough) a projection X-ray shot? Decided by SOP Class
    UID, then Modality (which must agree), then Image Type (no reconstructions)."""
    uid = str(ds.get("SOPClassUID", "") or "").strip()
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    modality = header_text(ds.get("Modality", "") or "").upper()
    sop = _sop_name(uid)
    if uid in PROJECTION_SOP_CLASSES:
        if modality and modality not in PROJECTION_MODALITIES:
            return Verdict(False, f"{_words_for('', modality)} (Modality {modality} in {sop})")
    elif uid:
        return Verdict(False, f"{_words_for(uid, modality)} ({sop})")
    elif not modality:                            # a cut header, or a file from a broken exporter
        return Verdict(False, "a DICOM file that does not say what it holds (no SOP Class UID, no Modality; "
                              "it may be cut short)")
    elif modality not in PROJECTION_MODALITIES:   # no SOP class: the modality must say X-ray
        return Verdict(False, f"{_words_for('', modality)} (no SOP Class UID"
                              + (f", Modality {modality})" if modality else ", no Modality)"))
    image_type = ds.get("ImageType", None)
    if image_type is None or isinstance(image_type, (str, bytes)):
        image_type = [image_type or ""]
    values = [str(v).strip().upper() for v in image_type]
    if any(v in _RECONSTRUCTED for v in values):
        shown = "\\".join(values)
        return Verdict(False, f"a reconstructed image (Image Type {shown} in {sop})")
    return Verdict(True)


def check_dataset(ds, name) -> None:
    """Raise ``NotAShotError`` "NAME is a CT image (CT Image Storage), not an X-ray projection
    shot" unless ``ds`` is a projection X-ray image."""
    verdict = classify(ds)
    if not verdict.is_shot:
        raise NotAShotError(f"{os.fspath(name)} is {verdict.what}, not an X-ray projection shot")


def check_raster(pixels: np.ndarray, name) -> np.ndarray:
    """A PNG/TIFF's pixels as one grey plane: grayscale kept, a colour photo (channels that
    differ) refused with ``NotAShotError``; alpha is dropped."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise NotAShotError(f"{os.fspath(name)} has an image of shape {a.shape}, not a grayscale X-ray shot")
    planes = a[:, :, :3] if a.shape[2] >= 3 else a[:, :, :1]
    grey = planes[:, :, 0]
    if any(not np.array_equal(grey, planes[:, :, c]) for c in range(1, planes.shape[2])):
        raise NotAShotError(f"{os.fspath(name)} is a colour photo ({planes.shape[2]} colour channels), "
                            "not an X-ray projection shot: export the shot as grayscale (8 or 16 bit)")
    return np.ascontiguousarray(grey)


def view_from_positioner(primary_deg, tolerance_deg: float = 20.0) -> str | None:
    """"ap" when Positioner Primary Angle (0018,1510) is within ``tolerance_deg`` of 0 or 180,
    "lat" near ±90, None when it is missing or oblique (the user is asked)."""
    if primary_deg is None:
        return None
    try:
        a = float(primary_deg)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(a):
        return None
    a = (a + 180.0) % 360.0 - 180.0                 # (-180, 180]
    off_ap = min(abs(a), 180.0 - abs(a))
    off_lat = abs(abs(a) - 90.0)
    if off_ap <= tolerance_deg:
        return "ap"
    if off_lat <= tolerance_deg:
        return "lat"
    return None
