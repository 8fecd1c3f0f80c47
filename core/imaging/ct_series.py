"""A CT series (one DICOM file per axial slice) to and from a ``Volume``.

Geometry per DICOM PS3.3 C.7.6.2 (Image Plane module): ImageOrientationPatient
gives the direction cosines of a row (the direction of increasing column index,
our i axis) and of a column (increasing row index, j); PixelSpacing is
(row spacing, column spacing) = (sy, sx); the slice axis k is row x column and
slices are ordered by ImagePositionPatient projected on it, their spacing taken
from the positions (never from SliceThickness). DICOM patient coordinates are
LPS, the fluoroscopy world frame, so ``T_world_voxel`` maps straight into it.
HU = stored * RescaleSlope + RescaleIntercept, per slice. Files are read with
pydicom without ``force=True``: a file that is not DICOM Part 10 is refused.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from core.imaging.volume import Volume

__all__ = ["CTSeriesError", "load_ct_series", "write_ct_series", "list_series"]

_ORIENT_TOL = 1e-4       # direction cosines
_SPACING_RTOL = 0.01     # relative slice-spacing tolerance


class CTSeriesError(ValueError):
    """A CT series that cannot be loaded; the message says which files and what to do."""


def _files(source) -> tuple[list[Path], bool]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise CTSeriesError(f"{folder} does not exist: check the path of the CT series")
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")
            if not files:
                raise CTSeriesError(f"{folder} holds no files: copy the CT series into it")
            return files, True
        return [folder], False
    files = [Path(p) for p in source]
    if not files:
        raise CTSeriesError("no files given: pass a folder or a list of DICOM slice files")
    return files, False


def _read_headers(files: list[Path], skip_non_dicom: bool) -> list[pydicom.Dataset]:
    out, rejected = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f, defer_size="4 KB")
        except (InvalidDicomError, EOFError, OSError) as e:
            if not skip_non_dicom:
                raise CTSeriesError(f"{f} is not a DICOM file ({type(e).__name__}): remove it from the list") from e
            rejected.append(f)
            continue
        ds.filename = str(f)
        out.append(ds)
    if not out:
        first = rejected[0] if rejected else files[0]
        raise CTSeriesError(f"no DICOM file found (e.g. {first} is not DICOM): export the CT as DICOM")
    return out


def list_series(source) -> dict[str, dict]:
    """Series in a folder: UID -> {"slices": n, "description": str, "modality": str}."""
    files, is_dir = _files(source)
    groups = _group(_read_headers(files, is_dir))
    return {uid: {"slices": len(g), "description": str(g[0].get("SeriesDescription", "")),
                  "modality": str(g[0].get("Modality", ""))} for uid, g in groups.items()}


def _group(datasets) -> dict[str, list]:
    groups = defaultdict(list)
    for ds in datasets:
        if "PixelData" not in ds or "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]:
            continue      # not an image, or the scout view stored in the same series
        groups[str(ds.get("SeriesInstanceUID", "unknown"))].append(ds)
    if not groups:
        raise CTSeriesError("the DICOM files hold no images (no Pixel Data): export the CT image series")
    return dict(groups)


def _pick_series(groups: dict[str, list], series_uid: str | None) -> list:
    if series_uid is not None:
        if series_uid not in groups:
            raise CTSeriesError(f"series {series_uid} is not in the files (found: {', '.join(groups)})")
        return groups[series_uid]
    if len(groups) > 1:
        desc = "; ".join(f"{uid} ({len(g)} slices, '{g[0].get('SeriesDescription', '')}')"
                         for uid, g in groups.items())
        raise CTSeriesError(f"{len(groups)} series are mixed in the files: name one with series_uid ({desc})")
    return next(iter(groups.values()))


def _geometry(series: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row cosine, column cosine, normal) shared by all slices, and each slice's checks."""
    for ds in series:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CTSeriesError(f"{ds.filename} is a multi-frame (enhanced) image: export single-frame CT slices")
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise CTSeriesError(f"{ds.filename} has no {tag}: this is not a CT slice with geometry")
    iop = np.array([np.asarray(ds.ImageOrientationPatient, float) for ds in series])
    if np.max(np.abs(iop - iop[0])) > _ORIENT_TOL:
        bad = series[int(np.argmax(np.max(np.abs(iop - iop[0]), axis=1)))].filename
        raise CTSeriesError(f"inconsistent orientation: {bad} is tilted against the other slices; "
                            "load one orientation (one series, one stack) at a time")
    row, col = iop[0, :3], iop[0, 3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise CTSeriesError(f"ImageOrientationPatient {iop[0].tolist()} is not two orthonormal directions")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


def _order(series: list, normal: np.ndarray) -> tuple[list, float]:
    """Slices sorted along the normal, and their uniform spacing (errors on gaps and doubles)."""
    pos = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in series])
    d = pos @ normal
    idx = np.argsort(d)
    series, pos, d = [series[i] for i in idx], pos[idx], d[idx]
    if len(series) < 2:
        raise CTSeriesError("the series has a single slice: a CT volume needs at least two")
    steps = np.diff(d)
    if np.any(steps < 1e-3):
        i = int(np.argmin(steps))
        raise CTSeriesError(f"two slices at the same position ({series[i].filename}, {series[i + 1].filename}): "
                            "the folder mixes acquisitions; keep one")
    step = float(np.min(steps))
    ratio = steps / step
    if np.any(np.abs(ratio - 1) > _SPACING_RTOL):
        i = int(np.argmax(ratio))
        n_missing = int(round(ratio[i])) - 1
        if n_missing >= 1 and abs(ratio[i] - round(ratio[i])) < 0.05:
            raise CTSeriesError(f"missing slices: {n_missing} slice(s) missing between positions "
                                f"{d[i]:.2f} and {d[i + 1]:.2f} mm ({Path(series[i].filename).name}); "
                                "re-export the complete series")
        raise CTSeriesError(f"non-uniform slice spacing ({steps.min():.3f} to {steps.max():.3f} mm): "
                            "resample the series to a constant spacing")
    step = float(np.mean(steps))
    drift = pos - pos[0] - np.outer(d - d[0], normal)
    if np.max(np.linalg.norm(drift, axis=1)) > 0.01 * step + 1e-3:
        raise CTSeriesError("slice positions drift in-plane (gantry tilt or sheared stack): "
                            "reconstruct without tilt before loading")
    return series, step


def _pixels(ds) -> np.ndarray:
    ts = ds.file_meta.get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except Exception as e:   # pydicom raises NotImplementedError/RuntimeError/ValueError per decoder
        name = getattr(ts, "name", str(ts))
        if ts is not None and ts.is_compressed:
            raise CTSeriesError(f"{ds.filename}: unsupported compression {name}; export the series "
                                "uncompressed or JPEG/JPEG 2000/RLE lossless") from e
        raise CTSeriesError(f"{ds.filename}: pixel data cannot be read ({e}); the file is damaged") from e


def _hu(series: list) -> np.ndarray:
    rows, cols = int(series[0].Rows), int(series[0].Columns)
    slopes = np.array([float(ds.get("RescaleSlope", 1.0)) for ds in series])
    inters = np.array([float(ds.get("RescaleIntercept", 0.0)) for ds in series])
    integral = np.all(slopes == 1.0) and np.all(inters == np.round(inters))
    out = np.empty((len(series), rows, cols), np.float32)
    for k, ds in enumerate(series):
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise CTSeriesError(f"{ds.filename} is {ds.Rows}x{ds.Columns}, the others {rows}x{cols}: mixed series")
        out[k] = _pixels(ds).astype(np.float32) * np.float32(slopes[k]) + np.float32(inters[k])
    if integral and out.min() >= -32768 and out.max() <= 32767:
        return out.astype(np.int16)
    return out


def load_ct_series(source, series_uid: str | None = None) -> Volume:
    """Volume (HU, world = DICOM patient LPS) from a folder or a list of single-slice DICOM files."""
    files, is_dir = _files(source)
    series = _pick_series(_group(_read_headers(files, skip_non_dicom=is_dir)), series_uid)
    row, col, normal = _geometry(series)
    series, sz = _order(series, normal)
    spacing = {tuple(np.round(np.asarray(ds.PixelSpacing, float), 6)) for ds in series}
    if len(spacing) > 1:
        raise CTSeriesError(f"slices have different PixelSpacing {sorted(spacing)}: mixed series")
    sy, sx = (float(v) for v in series[0].PixelSpacing)
    if sx <= 0 or sy <= 0:
        raise CTSeriesError(f"PixelSpacing {series[0].PixelSpacing} is not positive: the header is damaged")
    T = np.eye(4)
    T[:3, :3] = np.column_stack([row * sx, col * sy, normal * sz])
    T[:3, 3] = np.asarray(series[0].ImagePositionPatient, float)
    return Volume(_hu(series), (sx, sy, sz), T)


def _slice_dataset(volume: Volume, k: int, uids: dict, stored: np.ndarray, slope, intercept) -> pydicom.Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^Spine", "FLUORONAV-PHANTOM"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID, ds.SeriesDescription = uids["frame"], uids["description"]
    ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
    R = volume.rotation
    sx, sy, sz = volume.spacing_mm
    ds.ImageOrientationPatient = [float(f"{v:.10f}") for v in (*R[:, 0], *R[:, 1])]
    ds.ImagePositionPatient = [float(f"{v:.6f}") for v in volume.index_to_world([0.0, 0.0, float(k)])]
    ds.PixelSpacing = [float(f"{sy:.8g}"), float(f"{sx:.8g}")]
    ds.SliceThickness = float(f"{sz:.8g}")
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:.8g}", f"{intercept:.8g}", "HU"
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def write_ct_series(volume: Volume, folder, rescale_slope: float = 1.0, rescale_intercept: float = -1024.0,
                    description: str = "fluoronav phantom") -> list[Path]:
    """One uncompressed 16-bit CT slice file per k index into ``folder``; returns the paths.

    Stored value = round((HU - intercept) / slope), unsigned 16 bit (values outside clip).
    The slice axis must be right-handed with the rows and columns (it is for any ``Volume``).
    """
    if not isinstance(volume, Volume):
        raise CTSeriesError(f"write_ct_series needs a Volume, got {type(volume).__name__}")
    if not np.isfinite(rescale_slope) or rescale_slope <= 0 or not np.isfinite(rescale_intercept):
        raise CTSeriesError(f"rescale slope must be > 0 and intercept finite, got {rescale_slope}, {rescale_intercept}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid(), "description": description}
    stored = np.clip(np.round((volume.hu.astype(np.float64) - rescale_intercept) / rescale_slope), 0, 65535)
    paths = []
    for k in range(volume.hu.shape[0]):
        ds = _slice_dataset(volume, k, uids, stored[k], rescale_slope, rescale_intercept)
        p = out / f"CT_{uids['series'][-8:]}_{k + 1:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
