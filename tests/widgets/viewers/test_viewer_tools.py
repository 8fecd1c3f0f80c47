"""Viewer tools: File → Open image/folder (each supported flavour), the message for a broken
file, the Shots strip bringing a shot back, and the calibration reaching the viewers."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from app.session import Session
from app.viewer_tools import ViewerTools, install_viewer_tools, read_shots
from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_png16
from widgets.main_window import MainWindow

pytestmark = pytest.mark.gui

SOP = {"XA": "1.2.840.10008.5.1.4.1.1.12.1", "RF": "1.2.840.10008.5.1.4.1.1.12.2",
       "DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


def ramp(rows=40, cols=56, seed=0, bits=12):
    rng = np.random.default_rng(seed)
    a = np.add.outer(np.arange(rows) * 7, np.arange(cols) * 3) + rng.integers(0, 50, (rows, cols))
    return (a * ((1 << bits) - 1) // a.max()).astype(np.uint16)


def dicom_file(path, pixels, modality="XA", photometric="MONOCHROME2", view=None, ts=None, bits=12):
    """A minimal greyscale DICOM image (frames first when 3-D), optionally compressed."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SOP[modality], meta.MediaStorageSOPInstanceUID, modality
    ds.PatientName, ds.PatientID = "Phantom^Spine", "P0"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.ImagerPixelSpacing = [0.2, 0.25]
    if view:
        ds.ViewPosition = view
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if ts is not None:
        ds.compress(ts)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def station(qtbot, tmp_path):
    """Main window + session wired as the workstation wires them, and the tools."""
    window = MainWindow(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    session = Session(tmp_path / "sessions")
    session.image_changed.connect(lambda view, image: window.viewers[view].set_image(image))
    tools = ViewerTools(window, session)
    asked = []
    tools.ask_view = lambda path: asked.append(path) or "ap"
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    return window, session, tools, asked


FLAVOURS = [  # (name, writer(tmp) -> path, expected view, asked?)
    ("xa_mono2_lat", lambda p, a: dicom_file(p / "xa.dcm", a, view="LL"), "lat", False),
    ("cr_mono1", lambda p, a: dicom_file(p / "cr.dcm", a, modality="CR", photometric="MONOCHROME1"), "ap", True),
    ("dx_ap", lambda p, a: dicom_file(p / "dx.dcm", a, modality="DX", view="AP"), "ap", False),
    ("xa_jpeg2000_lossless", lambda p, a: dicom_file(p / "j2k.dcm", a, view="PA", ts=JPEG2000Lossless), "ap", False),
    ("png16", lambda p, a: write_png16(FluoroImage(a), p / "shot.png"), "ap", True),
    ("tiff16", lambda p, a: _tiff(p / "shot.tif", a), "ap", True),
]


def _tiff(path, a):
    import cv2
    assert cv2.imwrite(str(path), a)
    return path


@pytest.mark.parametrize("name, write, view, asked_view", FLAVOURS, ids=[f[0] for f in FLAVOURS])
def test_open_each_flavour(station, tmp_path, name, write, view, asked_view):
    window, session, tools, asked = station
    a = ramp()
    path = write(tmp_path, a)
    assert tools.open_path(path)
    np.testing.assert_array_equal(window.viewers[view]._raw, a)      # raw pixels, as stored
    assert session.image(view) is not None and tools.strip.count(view) == 1
    assert bool(asked) == asked_view
    if name == "cr_mono1":   # MONOCHROME1 shows inverted: a large stored value is dark
        assert window.viewers[view]._display[0, 0] > window.viewers[view]._display[-1, -1]


def test_multiframe_rle_fills_the_strip_and_frames_come_back(station, tmp_path):
    window, session, tools, _ = station
    frames = np.stack([ramp(seed=i) for i in range(3)])
    path = dicom_file(tmp_path / "rf.dcm", frames, modality="RF", view="LL", ts=RLELossless)
    assert tools.open_path(path)
    assert tools.strip.count("lat") == 3 and tools.strip.label("lat", 2).endswith("[3/3]")
    np.testing.assert_array_equal(window.viewers["lat"]._raw, frames[0])
    item = tools.strip.lists["lat"].item(2)                         # a real click on the 3rd thumbnail
    rect = tools.strip.lists["lat"].visualItemRect(item)
    QTest.mouseClick(tools.strip.lists["lat"].viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    np.testing.assert_array_equal(window.viewers["lat"]._raw, frames[2])
    assert tools.strip.current("lat") == 2 and tools.strip.count("lat") == 3   # no duplicate entry


def test_thumbnail_brings_back_an_earlier_shot(station, tmp_path):
    window, session, tools, _ = station
    first, second = ramp(seed=1), ramp(seed=2)
    tools.open_path(dicom_file(tmp_path / "a.dcm", first, view="AP"))
    session.set_image("ap", FluoroImage(second, source="acquired"))    # e.g. a new acquisition
    assert tools.strip.count("ap") == 2
    np.testing.assert_array_equal(window.viewers["ap"]._raw, second)
    tools.strip.activate("ap", 0)
    np.testing.assert_array_equal(window.viewers["ap"]._raw, first)
    np.testing.assert_array_equal(session.image("ap").pixels, first)
    with pytest.raises(IndexError, match="no AP shot #5"):
        tools.strip.activate("ap", 4)


@pytest.mark.parametrize("content, why", [
    (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI", "does not say what it holds"),   # a cut header
    (b"hello, this is not an image", "not a DICOM, PNG or TIFF"),
])
def test_a_broken_file_gives_one_clear_line(station, tmp_path, content, why):
    window, session, tools, _ = station
    path = tmp_path / "broken.dcm"
    path.write_bytes(content)
    said = []
    tools.message.connect(lambda text, err: said.append((text, err)))
    assert not tools.open_path(path)
    text, err = said[-1]
    assert err and why in text and text.startswith("Cannot open broken.dcm: ") and "\n" not in text
    assert str(tmp_path) not in text                                   # said once, by name
    assert tools.notice.isVisible() and not tools.notice.isModal()     # non-modal: work goes on
    assert window.statusBar().currentMessage() == text
    assert session.image("ap") is None and tools.strip.count("ap") == 0


def test_truncated_pixel_data_is_refused(station, tmp_path):
    window, session, tools, _ = station
    path = dicom_file(tmp_path / "cut.dcm", ramp(), view="AP")
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    assert not tools.open_path(path)
    assert session.image("ap") is None


def test_open_folder_sorts_views_and_reports_failures(station, tmp_path):
    window, session, tools, asked = station
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    a1, a2, l1 = ramp(seed=1), ramp(seed=2), ramp(seed=3)
    dicom_file(folder / "1.dcm", a1, view="AP")
    dicom_file(folder / "sub" / "2.dcm", l1, view="LL")
    write_png16(FluoroImage(a2), folder / "3.png")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    said = []
    tools.message.connect(lambda text, err: said.append((text, err)))
    assert tools.open_folder(folder) == 3
    assert tools.strip.count("ap") == 2 and tools.strip.count("lat") == 1 and len(asked) == 1  # the PNG
    assert any(err and "bad.png" in text for text, err in said)
    assert tools.open_folder(tmp_path / "nowhere") == 0 and "no such folder" in said[-1][0]


def test_cancelled_view_question_loads_nothing(station, tmp_path):
    window, session, tools, _ = station
    tools.ask_view = lambda path: None
    assert not tools.open_path(write_png16(FluoroImage(ramp()), tmp_path / "x.png"))
    assert session.image("ap") is None and session.image("lat") is None


def test_calibration_reaches_the_viewers(station):
    from core.simulation.distortion import IIDistortion
    window, session, tools, _ = station

    class Calib:
        views = {"ap": type("VC", (), {"distortion": IIDistortion((27.5, 19.5), 20.0), "planes": [], "P": None})(),
                 "lat": type("VC", (), {"distortion": None, "planes": [], "P": None})()}
    session.set_calibration(Calib())
    assert window.viewers["ap"].undistort_button.isEnabled()
    assert not window.viewers["lat"].undistort_button.isEnabled()


def test_read_shots_of_a_missing_file(tmp_path):
    from core.imaging.fluoro_image import ImageReadError
    with pytest.raises(ImageReadError, match="not found"):
        read_shots(tmp_path / "none.dcm")


def test_install_on_the_workstation(qtbot, tmp_path):
    from app.main import Workstation
    settings = QSettings(str(tmp_path / "ws.ini"), QSettings.Format.IniFormat)
    try:
        ws = Workstation(settings=settings, panels=False)   # the shell only: no robot process
    except TypeError:                                        # a workstation without that option
        ws = Workstation(settings=settings)
    qtbot.addWidget(ws.window)
    tools = getattr(ws, "viewer_tools", None) or install_viewer_tools(ws)
    assert ws.viewer_tools is tools and "Shots" in ws.window.docks
    texts = [a.text() for a in ws.window.menuBar().actions()[0].menu().actions()]
    assert "Open image…" in texts and "Open folder…" in texts
    ws.session.set_image("lat", FluoroImage(ramp(), source="/x/lat-001.dcm"))   # what an acquisition does
    label = tools.strip.label("lat", 0)      # the file the session saved it to, else the source's name
    assert tools.strip.count("lat") == 1 and label.endswith("lat-001.dcm"), label
    ws.shutdown()
