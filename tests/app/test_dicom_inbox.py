"""Shots from the C-arm over DICOM (and its export folder) into the session, headless: a real
pynetdicom SCU stores over loopback; the viewer is chosen from the positioner angle."""
import queue

import numpy as np
import pytest

from app.config import load_config
from app.dicom_inbox import ShotInbox, build_sources, incoming_folder
from app.session import Session
from devices.dicom_receiver import DicomReceiver
from devices.dicom_sender import CT, shot_dataset, store
from devices.watched_folder import WatchedFolder


@pytest.fixture
def room(tmp_path):
    """A session, an inbox whose questions are recorded, and a receiver feeding a queue."""
    session = Session(tmp_path / "sessions", save_images=False)
    asked, lines = [], []
    inbox = ShotInbox(session, ask_view=lambda p: asked.append(p) or "lat",
                      say=lambda text, error=False: lines.append((text, error)), tolerance_deg=20.0)
    arrived = queue.Queue()
    config = load_config(_config(tmp_path))
    (receiver,) = build_sources(config, arrived.put, lambda line: arrived.put(("refused", line)))
    receiver.connect()
    yield session, inbox, receiver, arrived, asked, lines
    receiver.disconnect()


def _config(tmp_path, extra=""):
    p = tmp_path / "config.toml"
    p.write_text('[dicom]\nreceive = true\nport = 0\nallowed_calling_ae_titles = ["CARM1"]\n'
                 f'incoming_folder = "{tmp_path / "incoming"}"\n' + extra)
    return p


def _arrive(arrived, inbox):
    item = arrived.get(timeout=5)
    return inbox.take(item) if not isinstance(item, tuple) else item


@pytest.mark.parametrize("angle,view", [(0.0, "ap"), (178.0, "ap"), (90.0, "lat"), (-92.0, "lat")])
def test_xa_over_the_network_becomes_the_shot_of_its_view(room, angle, view):
    session, inbox, receiver, arrived, asked, lines = room
    px = (np.arange(96 * 128, dtype=np.uint16).reshape(96, 128) * 11) % 4096
    assert store(receiver.port, [shot_dataset(px, primary_deg=angle)]) == [0]
    assert _arrive(arrived, inbox) == view
    image = session.image(view)
    np.testing.assert_array_equal(image.pixels, px)
    assert image.primary_angle_deg == pytest.approx(angle) and image.pixel_spacing_mm == pytest.approx((0.2, 0.2))
    other = "lat" if view == "ap" else "ap"
    assert session.image(other) is None and session.shots.count(view) == 1 and asked == []
    assert lines[-1][0].startswith(f"DICOM: {view.upper()} shot 000001-") and not lines[-1][1]


def test_missing_or_oblique_angle_asks_like_file_open(room):
    session, inbox, receiver, arrived, asked, lines = room
    assert store(receiver.port, [shot_dataset(np.ones((16, 16)))]) == [0]             # no positioner angle
    assert _arrive(arrived, inbox) == "lat" and len(asked) == 1
    assert store(receiver.port, [shot_dataset(np.ones((16, 16)), primary_deg=45.0)]) == [0]
    assert _arrive(arrived, inbox) == "lat" and len(asked) == 2 and session.shots.count("lat") == 2
    inbox.ask_view = lambda p: None                                                   # the user cancels
    assert store(receiver.port, [shot_dataset(np.ones((16, 16)), primary_deg=45.0)]) == [0]
    assert _arrive(arrived, inbox) is None and session.shots.count("lat") == 2
    assert "not loaded: no view chosen (positioner primary angle 45°)" in lines[-1][0]


def test_ct_over_the_network_refused_with_one_line(room):
    session, inbox, receiver, arrived, asked, lines = room
    assert store(receiver.port, [shot_dataset(np.ones((16, 16)), sop=CT, modality="CT")]) == [0x0122]
    assert _arrive(arrived, inbox) == ("refused", "received from CARM1 is a CT image (CT Image Storage), "
                                                  "not an X-ray projection shot")
    assert session.image("ap") is None and session.image("lat") is None


def test_a_file_that_is_not_a_shot_is_refused_by_the_inbox_too(room, tmp_path):
    """Whatever way a file reaches the inbox, the shared reader refuses a non-projection."""
    session, inbox, *_ , lines = room
    path = tmp_path / "mr.dcm"
    shot_dataset(np.ones((8, 8)), sop="1.2.840.10008.5.1.4.1.1.4", modality="MR").save_as(path, enforce_file_format=True)
    assert inbox.take(path) is None
    assert lines[-1] == ("DICOM: mr.dcm is an MR image (MR Image Storage), not an X-ray projection shot", True)
    assert session.shots.count("ap") == session.shots.count("lat") == 0


def test_watched_folder_from_the_config_feeds_the_inbox(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    config = load_config(_config(tmp_path, f'watch_folder = "{export}"\nwatch_settle_s = 0.1\n'))
    sources = build_sources(config, lambda p: None, lambda line: None)
    assert [type(s) for s in sources] == [DicomReceiver, WatchedFolder]
    assert sources[0].config.incoming == incoming_folder(config) == tmp_path / "incoming"
    session = Session(tmp_path / "s", save_images=False)
    inbox = ShotInbox(session)
    folder = sources[1]
    folder.on_shot = inbox.take
    shot_dataset(np.full((8, 8), 5), primary_deg=-90.0).save_as(export / "IMG1.dcm", enforce_file_format=True)
    t = [0.0]
    folder.clock = lambda: t[0]
    folder.poll_once()
    t[0] = 1.0
    assert folder.poll_once() == [export / "imported" / "IMG1.dcm"]
    assert session.image("lat") is not None and session.image("ap") is None
