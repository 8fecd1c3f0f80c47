"""A simulated C-arm on the DICOM network (pynetdicom's Storage SCU): it sends shots to a
receiver as a real C-arm does, for the tests, ``fluoronav bench dicom`` and trying a setup."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["shot_dataset", "store", "XA", "CT"]

XA = "1.2.840.10008.5.1.4.1.1.12.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def shot_dataset(pixels, sop=XA, modality="XA", primary_deg=None, **tags) -> Dataset:
    """A 16-bit greyscale image dataset as a C-arm sends it (Positioner Primary Angle when given)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = tags.pop("PatientName", "PHANTOM^SPINE"), tags.pop("PatientID", "SIM")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.DistanceSourceToDetector = 1000.0
    if primary_deg is not None:
        ds.PositionerPrimaryAngle, ds.PositionerSecondaryAngle = primary_deg, 0.0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    return ds


def store(port, datasets, calling="CARM1", called="FLUORONAV", timeout_s=5.0) -> list:
    """Associate as ``calling`` and C-STORE each dataset; the statuses (None: not associated)."""
    from pynetdicom import AE
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return [None] * len(datasets)
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()
