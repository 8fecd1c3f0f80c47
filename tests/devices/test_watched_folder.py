"""The watched export folder: a file is taken once its size and time have settled and it reads
completely; half-written files wait, refused ones are set aside, nothing is imported twice."""
import numpy as np
import pytest

from devices.base import DeviceError
from devices.dicom_sender import CT, shot_dataset
from devices.watched_folder import WatchedFolder


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _bytes(ds, tmp_path):
    p = tmp_path / "scratch.dcm"
    ds.save_as(p, enforce_file_format=True)
    data = p.read_bytes()
    p.unlink()
    return data


@pytest.fixture
def watched(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    got, refused, clock = [], [], Clock()
    w = WatchedFolder(folder, got.append, refused.append, settle_s=1.0, give_up_s=30.0, clock=clock)
    w.got, w.refused_lines, w.clock_ = got, refused, clock
    return w


def test_half_written_file_waits_until_complete(watched, tmp_path):
    px = (np.arange(128 * 96, dtype=np.uint16).reshape(96, 128) * 7) % 4096
    data = _bytes(shot_dataset(px, primary_deg=90.0), tmp_path)
    target = watched.folder / "IMG0001.dcm"
    target.write_bytes(data[: len(data) // 2])             # the C-arm is still writing
    assert watched.poll_once() == []
    watched.clock_.t += 5.0                                # stalled long past the settle time ...
    assert watched.poll_once() == [] and target.exists()   # ... but it does not decode: it waits
    with open(target, "ab") as f:                          # the rest arrives
        f.write(data[len(data) // 2:])
    assert watched.poll_once() == []                       # size changed: settle again
    watched.clock_.t += 0.5
    assert watched.poll_once() == []
    watched.clock_.t += 0.6
    taken = watched.poll_once()
    assert taken == [watched.folder / "imported" / "IMG0001.dcm"] and watched.got == taken
    assert not target.exists() and watched.refused_lines == []
    watched.clock_.t += 10.0
    assert watched.poll_once() == [] and len(watched.got) == 1          # never re-imported


def test_ct_set_aside_with_one_line(watched, tmp_path):
    (watched.folder / "slice.dcm").write_bytes(_bytes(shot_dataset(np.zeros((8, 8)), sop=CT, modality="CT"), tmp_path))
    (watched.folder / ".hidden.dcm").write_bytes(b"junk")
    (watched.folder / "next.dcm.part").write_bytes(b"junk")
    watched.poll_once()
    watched.clock_.t += 2.0
    assert watched.poll_once() == []
    assert watched.refused_lines == ["slice.dcm is a CT image (CT Image Storage), not an X-ray projection shot"]
    assert (watched.folder / "refused" / "slice.dcm").exists()
    assert sorted(p.name for p in watched.folder.iterdir() if p.is_file()) == [".hidden.dcm", "next.dcm.part"]


def test_never_readable_file_given_up_with_a_line(watched, tmp_path):
    data = _bytes(shot_dataset(np.ones((64, 64))), tmp_path)
    (watched.folder / "broken.dcm").write_bytes(data[: int(len(data) * 0.7)])   # an export cut short
    watched.poll_once()
    watched.clock_.t += 2.0
    assert watched.poll_once() == [] and watched.refused_lines == []
    watched.clock_.t += 40.0
    watched.poll_once()
    assert len(watched.refused_lines) == 1 and watched.refused_lines[0].startswith("broken.dcm stayed unreadable")
    assert (watched.folder / "refused" / "broken.dcm").exists()


def test_same_name_again_is_a_new_shot_not_an_overwrite(watched, tmp_path):
    data = _bytes(shot_dataset(np.ones((16, 16))), tmp_path)
    for _ in range(2):
        (watched.folder / "IMG.dcm").write_bytes(data)
        watched.poll_once()
        watched.clock_.t += 2.0
        watched.poll_once()
    assert [p.name for p in watched.got] == ["IMG.dcm", "IMG-1.dcm"]


def test_missing_folder_is_a_fault(tmp_path):
    w = WatchedFolder(tmp_path / "absent")
    with pytest.raises(DeviceError, match="does not exist: create it or fix dicom.watch_folder"):
        w.connect()
