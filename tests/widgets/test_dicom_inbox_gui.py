"""The C-arm's DICOM shots in the running workstation: a pynetdicom SCU stores over loopback and
the shot appears in the viewer of its view; the DICOM pill says listening; a CT dropped on a
viewer is refused with the reader's line."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from app.config import load_config, load_defaults
from app.dicom_inbox import install_dicom_inbox
from app.main import Workstation
from devices.base import DeviceStatus
from devices.dicom_sender import CT, shot_dataset, store

pytestmark = pytest.mark.gui


@pytest.fixture
def station(qtbot, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[dicom]\nreceive = true\nport = 0\nallowed_calling_ae_titles = ["CARM1"]\n'
                   f'incoming_folder = "{tmp_path / "incoming"}"\n[session]\ndata_dir = "{tmp_path / "s"}"\n')
    st = Workstation(load_config(cfg), settings=QSettings(str(tmp_path / "f.ini"), QSettings.Format.IniFormat),
                     panels=False)
    qtbot.addWidget(st.window)
    install_dicom_inbox(st)
    yield st
    st.shutdown()
    st.window.close()


def test_stored_shot_appears_in_its_viewer(station, qtbot):
    w = station.window
    receiver = station.dicom_inbox.sources[0]
    status, message = w.status_bar.status("dicom")
    assert status is DeviceStatus.CONNECTED and f"listening as FLUORONAV on 127.0.0.1:{receiver.port}" in message
    assert "DICOM: connected" in w.status_bar.pill("dicom").text()
    px = (np.arange(200 * 240, dtype=np.uint16).reshape(200, 240) * 17) % 4096
    assert store(receiver.port, [shot_dataset(px, primary_deg=-90.0)]) == [0]
    qtbot.waitUntil(lambda: w.viewers["lat"]._raw is not None, timeout=10000)
    np.testing.assert_array_equal(w.viewers["lat"]._raw, px)
    assert w.viewers["ap"]._raw is None and station.session.shots.count("lat") == 1
    assert w.statusBar().currentMessage().startswith("DICOM: LAT shot 000001-")


def test_refused_ct_says_so_in_the_status_bar(station, qtbot):
    w = station.window
    receiver = station.dicom_inbox.sources[0]
    assert store(receiver.port, [shot_dataset(np.ones((8, 8)), sop=CT, modality="CT")]) == [0x0122]
    qtbot.waitUntil(lambda: "CT image" in w.statusBar().currentMessage(), timeout=10000)
    assert w.statusBar().currentMessage() == ("DICOM: received from CARM1 is a CT image (CT Image Storage), "
                                              "not an X-ray projection shot")
    assert station.session.image("ap") is None and station.session.image("lat") is None


def test_ct_dropped_on_a_viewer_is_refused(station, tmp_path, caplog):
    path = tmp_path / "slice.dcm"
    shot_dataset(np.ones((8, 8)), sop=CT, modality="CT").save_as(path, enforce_file_format=True)
    with caplog.at_level(logging.ERROR):
        assert station.window.viewers["ap"].load_file(str(path)) is None
    assert "slice.dcm is a CT image (CT Image Storage), not an X-ray projection shot" in caplog.text
    assert station.window.statusBar().currentMessage() == (
        f"AP: {path} is a CT image (CT Image Storage), not an X-ray projection shot")
    assert station.session.image("ap") is None


def test_disabled_by_default(qtbot, tmp_path):
    st = Workstation(load_defaults(), settings=QSettings(str(tmp_path / "f.ini"), QSettings.Format.IniFormat),
                     panels=False)
    qtbot.addWidget(st.window)
    inbox = install_dicom_inbox(st)
    try:
        assert inbox.sources == []
        status, message = st.window.status_bar.status("dicom")
        assert status is DeviceStatus.DISCONNECTED and message.startswith("disabled")
    finally:
        st.shutdown()
        st.window.close()


def test_files_are_read_off_the_gui_thread_and_asked_one_at_a_time(station, qtbot, monkeypatch):
    """Three angle-less shots in a row: each is decoded on the reader thread; the view is asked for
    one at a time (the second waits while the first question is on screen, however many events the
    question's own loop processes), in arrival order."""
    import threading
    import app.dicom_inbox as inbox_module
    readers = []
    real_read = inbox_module.read_received

    def read(path):
        readers.append(threading.current_thread() is threading.main_thread())
        return real_read(path)
    monkeypatch.setattr(inbox_module, "read_received", read)
    inbox = station.dicom_inbox
    receiver = inbox.sources[0]
    asked, depth, deepest = [], [0], [0]

    def ask(path):                      # a modal question: its own event loop runs while it is open
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        asked.append(path)
        if len(asked) == 1:
            assert store(receiver.port, [shot_dataset(np.full((16, 16), 7, np.uint16))]) == [0]
            assert store(receiver.port, [shot_dataset(np.full((16, 16), 9, np.uint16))]) == [0]
            qtbot.waitUntil(lambda: len(inbox._queue) == 2, timeout=10000)   # both read and waiting
        depth[0] -= 1
        return "ap" if len(asked) % 2 else "lat"
    inbox.inbox.ask_view = ask
    assert store(receiver.port, [shot_dataset(np.full((16, 16), 5, np.uint16))]) == [0]
    qtbot.waitUntil(lambda: len(asked) == 3, timeout=10000)
    assert deepest[0] == 1 and readers == [False, False, False]
    assert [p.rsplit("/", 1)[-1][:6] for p in asked] == ["000001", "000002", "000003"]
    s = station.session
    assert s.shots.count("ap") == 2 and s.shots.count("lat") == 1
    assert int(s.image("ap").pixels[0, 0]) == 9 and int(s.image("lat").pixels[0, 0]) == 7
