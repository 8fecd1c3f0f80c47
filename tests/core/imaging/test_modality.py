"""Only projection X-ray images become shots: CT, MR, secondary capture, RT objects and
colour photos are refused with one line saying what the file is."""
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.imaging.fluoro_image import ImageReadError
from core.imaging.images import read_image
from core.imaging.modality import NotAShotError, check_dataset, check_raster, classify, view_from_positioner

XA, ENH_XA, RF, ENH_XRF = ("1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.1.1",
                           "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.12.2.1")
DX, DX_PROC, CR = "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1"
CT, MR, SC = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7"
MG, RTSTRUCT, RTIMAGE = "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.1"


def header(sop, modality, image_type=None):
    ds = Dataset()
    if sop:
        ds.SOPClassUID = sop
    if modality:
        ds.Modality = modality
    if image_type:
        ds.ImageType = image_type
    return ds


def write(path, sop, modality, pixels=None, **tags):
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, modality
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.PixelData = 15, 0, pixels.tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("sop,modality", [(XA, "XA"), (ENH_XA, "XA"), (RF, "RF"), (ENH_XRF, "RF"),
                                          (DX, "DX"), (DX_PROC, "DX"), (CR, "CR"), (XA, ""), ("", "RF")])
def test_projection_xray_is_a_shot(sop, modality):
    assert classify(header(sop, modality, ["ORIGINAL", "PRIMARY", "SINGLE PLANE"])).is_shot


@pytest.mark.parametrize("sop,modality,words", [
    (CT, "CT", "a CT image (CT Image Storage)"),
    (MR, "MR", "an MR image (MR Image Storage)"),
    (SC, "OT", "a secondary capture (Secondary Capture Image Storage)"),
    (MG, "MG", "a mammogram (Digital Mammography X-Ray Image Storage - For Presentation)"),
    (RTSTRUCT, "RTSTRUCT", "an RT object (RT Structure Set Storage)"),
    (RTIMAGE, "RTIMAGE", "an RT object (RT Image Storage)"),
    (XA, "CT", "a CT image (Modality CT in X-Ray Angiographic Image Storage)"),   # disagreeing header
    ("", "MR", "an MR image (no SOP Class UID, Modality MR)"),
    ("", "", "a DICOM file that does not say what it holds (no SOP Class UID, no Modality; it may be cut short)"),
    ("1.2.3.4", "XA", "an XA object (SOP class 1.2.3.4)"),                       # unknown private class
])
def test_other_objects_are_refused_saying_what_they_are(sop, modality, words):
    v = classify(header(sop, modality))
    assert not v.is_shot and v.what == words
    with pytest.raises(NotAShotError) as e:
        check_dataset(header(sop, modality), "shot7.dcm")
    assert str(e.value) == f"shot7.dcm is {words}, not an X-ray projection shot"


def test_reconstructed_image_type_is_refused():
    v = classify(header(XA, "XA", ["DERIVED", "SECONDARY", "MPR"]))
    assert not v.is_shot and "reconstructed image (Image Type DERIVED\\SECONDARY\\MPR" in v.what


def test_ct_file_refused_by_the_shared_reader(tmp_path):
    path = write(tmp_path / "slice.dcm", CT, "CT")
    with pytest.raises(ImageReadError, match=r"slice.dcm is a CT image \(CT Image Storage\), not an X-ray projection shot$"):
        read_image(path)
    with pytest.raises(ImageReadError, match="is an MR image"):
        read_image(get_testdata_file("MR_small.dcm"))
    img = read_image(write(tmp_path / "dx.dcm", DX, "DX"))          # a DX of the same pixels is a shot
    assert img.extra["modality"] == "DX" and img.pixels.shape == (8, 8)


def test_raster_grey_kept_colour_photo_refused(tmp_path):
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4)
    np.testing.assert_array_equal(check_raster(grey, "a.png"), grey)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    np.testing.assert_array_equal(check_raster(rgba, "a.png"), grey)   # grey stored as RGBA is grey
    photo = np.dstack([grey, grey, grey + 1])
    with pytest.raises(NotAShotError, match=r"^body.png is a colour photo \(3 colour channels\), not an X-ray"):
        check_raster(photo, "body.png")
    import cv2
    cv2.imwrite(str(tmp_path / "body.png"), photo.astype(np.uint8))
    with pytest.raises(NotAShotError, match="body.png is a colour photo"):
        read_image(tmp_path / "body.png")


@pytest.mark.parametrize("angle,view", [(0.0, "ap"), (180.0, "ap"), (-179.0, "ap"), (15.0, "ap"),
                                        (90.0, "lat"), (-90.0, "lat"), (270.0, "lat"), (104.9, "lat"),
                                        (45.0, None), (25.0, None), (None, None), (float("nan"), None),
                                        ("junk", None)])
def test_view_from_positioner_primary_angle(angle, view):
    assert view_from_positioner(angle, tolerance_deg=15.0) == view
