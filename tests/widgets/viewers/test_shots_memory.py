"""The Shots strip does not keep every shot in memory: a multi-frame run and
several acquisitions leave at most the LRU bound of full images in the strip; an old
entry comes back exact (pixels and geometry); a backing file that vanished gives one
line, a marked entry, and the current image stays."""
from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from app.session import Session
from app.viewer_tools import ViewerTools
from core.imaging.fluoro_image import FluoroImage
from core.imaging.shot_store import DEFAULT_KEEP
from tests.core.imaging.test_shot_store import reachable
from tests.widgets.viewers.test_viewer_tools import dicom_file, ramp
from widgets.main_window import MainWindow
from widgets.viewers.thumbnail_strip import THUMB_PX

pytestmark = pytest.mark.gui


def make_station(qtbot, tmp_path, save_images=True):
    window = MainWindow(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    session = Session(tmp_path / "sessions", save_images=save_images)
    session.image_changed.connect(lambda view, image: window.viewers[view].set_image(image))
    tools = ViewerTools(window, session)          # its own loader: session.set_image
    tools.ask_view = lambda path: "ap"
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    said = []
    tools.message.connect(lambda text, err: said.append((text, err)))
    return window, session, tools, said


def acquired(seed, view, angle):
    """What the C-arm hands over: pixels and geometry with more digits than DICOM keeps."""
    return FluoroImage(ramp(64, 64, seed=seed, bits=14), pixel_spacing_mm=(0.1543217, 0.1543217),
                       sid_mm=1010.123456, primary_angle_deg=angle, secondary_angle_deg=-1.0 / 3.0,
                       view=view, bits_stored=14, source="simulated C-arm",
                       acquired_at=dt.datetime(2026, 11, 21, 2, 30, seed, tzinfo=dt.timezone.utc))


def images_referenced(obj):
    """FluoroImage objects reachable from ``obj``'s Python objects (walk of references)."""
    return reachable(obj.__dict__, FluoroImage)


GEOMETRY = ("view", "primary_angle_deg", "secondary_angle_deg", "pixel_spacing_mm", "sid_mm",
            "bits_stored", "photometric", "acquired_at")


@pytest.mark.parametrize("save_images", [True, False], ids=["session_saves", "memory_only"])
def test_strip_holds_the_lru_bound_and_brings_back_exact(qtbot, tmp_path, save_images):
    window, session, tools, said = make_station(qtbot, tmp_path, save_images)
    n = 7
    frames = np.stack([ramp(48, 64, seed=10 + i) for i in range(n)])
    assert tools.open_path(dicom_file(tmp_path / "run.dcm", frames, modality="RF", view="AP"))
    shots = [acquired(i, "ap", 10.0 + i / 7.0) for i in range(5)]
    for s in shots:
        session.set_image("ap", s)                                 # what an acquisition does
    assert tools.strip.count("ap") == n + 5
    assert images_referenced(tools.strip) == []                     # the widget renders, the session holds
    held = images_referenced(session.shots)
    assert len(held) <= DEFAULT_KEEP and len(held) == len(session.shots.store.held())
    kind = session.shots.store.source("ap", n)[0]
    assert kind == ("saved" if save_images else "spill")
    for index, truth in ((n, shots[0]), (n + 1, shots[1])):     # acquisitions long evicted
        assert tools.bring_back("ap", index)
        back = session.image("ap")
        np.testing.assert_array_equal(back.pixels, truth.pixels)
        np.testing.assert_array_equal(window.viewers["ap"]._raw, truth.pixels)
        for field in GEOMETRY:
            assert getattr(back, field) == getattr(truth, field), field
        assert tools.strip.current("ap") == index and not said[-1][1]
    tools.strip.activate("ap", 5)                                  # frame 6 of the run, read alone
    np.testing.assert_array_equal(session.image("ap").pixels, frames[5])
    assert session.image("ap").pixel_spacing_mm == (0.25, 0.2)     # Imager Pixel Spacing 0.2\0.25 reversed
    assert len(images_referenced(session.shots)) <= DEFAULT_KEEP and images_referenced(tools.strip) == []
    assert tools.strip.count("ap") == n + 5 == session.shots.count("ap")                        # bringing back adds no entry


def test_a_deleted_backing_file_is_one_line_and_the_current_image_stays(qtbot, tmp_path):
    window, session, tools, said = make_station(qtbot, tmp_path)
    first = ramp(seed=1)
    path = dicom_file(tmp_path / "first.dcm", first, view="AP")
    assert tools.open_path(path)
    for i in range(DEFAULT_KEEP + 1):                              # entry 0 leaves the LRU
        session.set_image("ap", acquired(i, "ap", 0.0))
    current = session.image("ap")
    os.remove(path)
    item = tools.strip.lists["ap"].item(0)                         # a real click on the first thumbnail
    rect = tools.strip.lists["ap"].visualItemRect(item)
    QTest.mouseClick(tools.strip.lists["ap"].viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    text, err = said[-1]
    assert err and "\n" not in text
    assert text == f"Cannot show AP first.dcm again: the file was moved or deleted: {path}"
    assert window.statusBar().currentMessage() == text and tools.notice.isVisible()
    assert session.image("ap") is current                          # nothing replaced
    np.testing.assert_array_equal(window.viewers["ap"]._raw, current.pixels)
    assert tools.strip.current("ap") == DEFAULT_KEEP + 1           # the mark stays on the shot shown
    assert tools.strip.is_missing("ap", 0) and not tools.strip.is_missing("ap", 1)
    assert "moved or deleted" in item.toolTip() and item.icon().cacheKey() != tools.strip._icons["ap"][0].cacheKey()
    # the session's own copy of an acquisition deleted too
    saved = session.folder / session.to_dict()["images"]["ap"][1]   # [0] is first.dcm's copy
    os.remove(saved)
    assert not tools.bring_back("ap", 1)
    assert said[-1] == (f"Cannot show AP 2. ap-002.dcm again: the session's file was moved or deleted: {saved}",
                        True)
    assert session.image("ap") is current
    dicom_file(path, first, view="AP")                             # the file is back: so is the shot
    assert tools.bring_back("ap", 0) and not tools.strip.is_missing("ap", 0)
    np.testing.assert_array_equal(session.image("ap").pixels, first)
    assert item.toolTip() == "first.dcm"


def test_two_hundred_large_shots_hold_little(qtbot, tmp_path):
    """200 acquisitions of 1024² 16-bit (400 MB of pixels) into the strip, memory-only session:
    the strip holds the LRU (3 per view, 12.6 MB) and 200 thumbnails of ≤ 96² (≤ 2 MB)."""
    window, session, tools, _ = make_station(qtbot, tmp_path, save_images=False)
    session.shots.store._spill = lambda view, index, pixels: tmp_path / "none"   # no 400 MB of disk writes here
    base = np.zeros((1024, 1024), np.uint16)
    base[::7] = 3000
    for i in range(200):
        view = ("ap", "lat")[i % 2]
        session.shots.add(view, FluoroImage(base + i, view=view), f"{i}", path=None)
    assert tools.strip.count("ap") == tools.strip.count("lat") == 100
    full = sum(a.nbytes for a in reachable([tools.strip.__dict__, session.shots.__dict__], np.ndarray))
    side = -(-1024 // -(-1024 // THUMB_PX))                         # 1024 subsampled to <= THUMB_PX
    pixmaps = [icon.pixmap(THUMB_PX, THUMB_PX) for v in ("ap", "lat") for icon in tools.strip._icons[v]]
    assert len(pixmaps) == 200 and {(p.width(), p.height()) for p in pixmaps} == {(side, side)}
    thumbs = sum(p.width() * p.height() * p.depth() // 8 for p in pixmaps)
    assert full == 2 * DEFAULT_KEEP * 1024 * 1024 * 2               # 12.6 MB: the LRU only
    assert thumbs <= 200 * side * side * 4                         # 32 bits per pixel
    assert full + thumbs < 20e6
