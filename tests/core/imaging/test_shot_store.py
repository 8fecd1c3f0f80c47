"""ShotStore: where an earlier shot's full image comes from (its file, a frame of a
multi-frame DICOM, the session's saved copy, or a spilled copy), the LRU bound on the
images held, and the one-line error when a backing file is gone or damaged."""
from __future__ import annotations

import datetime as dt
import gc
import os
import types

import numpy as np
import pytest

from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_dicom_xa, write_png16
from core.imaging.shot_store import ShotMissingError, ShotStore


def shot(seed, shape=(64, 80), **kw):
    rng = np.random.default_rng(seed)
    meta = dict(pixel_spacing_mm=(0.1234567, 0.1301), sid_mm=1012.3456, primary_angle_deg=12.3456789,
                secondary_angle_deg=-3.25, view="ap", source=f"shot {seed}", bits_stored=14,
                acquired_at=dt.datetime(2026, 11, 21, 2, 3, 4, 567890, tzinfo=dt.timezone.utc),
                extra={"sod_mm": 640.5, "noise_seed": seed})
    meta.update(kw)
    return FluoroImage(rng.integers(0, 1 << 14, shape, dtype=np.uint16), **meta)


def reachable(root, kind):
    """Objects of ``kind`` reachable from ``root`` by references (not through modules or types)."""
    seen, found, todo = set(), {}, [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        if isinstance(obj, kind):
            found[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(found.values())


def test_spilled_images_come_back_exactly_and_only_keep_are_held(tmp_path):
    store = ShotStore(keep=3, spill_dir=tmp_path / "cache")
    originals = [shot(i) for i in range(8)]
    for im in originals:
        store.add("ap", im)
    assert store.count("ap") == 8 and store.count("lat") == 0
    held = reachable(store, FluoroImage)
    assert len(held) == 3 == len(store.held())                 # the last three, by reference walk
    assert store.held_bytes() == 3 * 64 * 80 * 2
    assert {id(h) for h in held} == {id(im) for im in originals[-3:]}
    for i in (0, 4):                                           # evicted: read back from the spill
        kind, path, frame = store.source("ap", i)
        assert kind == "spill" and os.path.dirname(path).startswith(str(tmp_path / "cache")) and frame is None
        back = store.get("ap", i)
        assert back is not originals[i]
        np.testing.assert_array_equal(back.pixels, originals[i].pixels)
        for field in ("pixel_spacing_mm", "sid_mm", "primary_angle_deg", "secondary_angle_deg", "view",
                      "acquired_at", "source", "bits_stored", "photometric"):
            assert getattr(back, field) == getattr(originals[i], field), field
        assert back.extra == originals[i].extra
    assert len(reachable(store, FluoroImage)) == 3
    spill = os.path.dirname(store.source("ap", 0)[1])
    store.close()
    assert not os.path.exists(spill)                           # the private copies are removed


def test_frame_of_a_multiframe_file_and_a_saved_dicom(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    frames = np.stack([shot(i).pixels for i in range(5)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "RF"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.NumberOfFrames = 1, "MONOCHROME2", 5
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "run.dcm", enforce_file_format=True)
    from core.imaging.dicom_read import read_dicom_frames
    read = read_dicom_frames(tmp_path / "run.dcm")
    acquired = shot(99, view="lat")
    write_dicom_xa(acquired, tmp_path / "lat-001.dcm")           # what the session saves
    store = ShotStore(keep=1, spill_dir=tmp_path / "cache")
    for i, f in enumerate(read):
        store.add("lat", f, path=tmp_path / "run.dcm", frame=i)
    store.add("lat", acquired, path=tmp_path / "lat-001.dcm", saved=True)
    del read
    assert not (tmp_path / "cache").exists()                    # nothing spilled: all have a file
    np.testing.assert_array_equal(store.get("lat", 3).pixels, frames[3])
    assert store.get("lat", 3).extra["frame"] == 3 and store.source("lat", 3) == ("file", str(tmp_path / "run.dcm"), 3)
    back = store.get("lat", 5)                                   # evicted by frame 3: read from the DICOM
    np.testing.assert_array_equal(back.pixels, acquired.pixels)
    # the DICOM rounds angles and spacing to 6 digits: the kept metadata is exact
    assert back.primary_angle_deg == 12.3456789 and back.pixel_spacing_mm == (0.1234567, 0.1301)
    assert back.sid_mm == 1012.3456 and back.view == "lat" and back.source == "shot 99"
    assert len(store.held()) == 1


def test_png_file_and_bad_input(tmp_path):
    im = FluoroImage(shot(3).pixels, source="x.png")
    write_png16(im, tmp_path / "x.png")
    store = ShotStore(keep=1)
    store.add("ap", im, path=tmp_path / "x.png")
    store.add("ap", shot(4))
    np.testing.assert_array_equal(store.get("ap", 0).pixels, im.pixels)
    with pytest.raises(IndexError, match=r"no AP shot #3 in the strip \(2 shots\)"):
        store.get("ap", 2)
    with pytest.raises(IndexError):
        store.get("ap", -1)
    with pytest.raises(ValueError, match="unknown view 'pa'"):
        store.add("pa", im)
    with pytest.raises(TypeError, match="FluoroImage"):
        store.add("ap", im.pixels)
    with pytest.raises(ValueError, match="at least 1"):
        ShotStore(keep=0)
    store.close()


@pytest.mark.parametrize("damage, why", [
    ("delete", "the file was moved or deleted: "),
    ("truncate", "the file is damaged ("),
    ("replace", "the file was changed since (other pixels): "),
])
def test_a_vanished_or_damaged_file_is_one_line_and_marked(tmp_path, damage, why):
    path = write_dicom_xa(shot(1), tmp_path / "ap-001.dcm")
    store = ShotStore(keep=1)
    store.add("ap", shot(1), path=path, saved=False)
    store.add("ap", shot(2))                                      # evicts entry 0
    if damage == "delete":
        os.remove(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-3000])
    else:
        write_dicom_xa(shot(7), path)
    with pytest.raises(ShotMissingError) as e:
        store.get("ap", 0)
    text = str(e.value)
    assert text.startswith(why) and text.endswith(str(path)) and "\n" not in text
    assert store.missing("ap", 0) == text and store.missing("ap", 1) is None
    if damage == "delete":                                        # put back: it reads again
        write_dicom_xa(shot(1), path)
        np.testing.assert_array_equal(store.get("ap", 0).pixels, shot(1).pixels)
        assert store.missing("ap", 0) is None


def test_spill_failure_keeps_the_image_in_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")                                       # mkdtemp under a file fails
    store = ShotStore(keep=1, spill_dir=blocker)
    a, b = shot(1), shot(2)
    store.add("ap", a)
    store.add("ap", b)
    assert store.source("ap", 0)[0] == "memory" and store.get("ap", 0) is a
    assert len(store.held()) == 2                                 # the pinned one, and the LRU one


def test_two_hundred_large_shots_hold_under_20_mb(tmp_path):
    """200 shots of 1024² 16-bit (400 MB as pixels) held as file sources: only the LRU stays."""
    path = tmp_path / "stand-in.dcm"
    path.write_bytes(b"")                                         # add() reads nothing
    store = ShotStore(keep=4)
    base = np.zeros((1024, 1024), np.uint16)
    for i in range(200):
        view = ("ap", "lat")[i % 2]
        store.add(view, FluoroImage(base + i, view=view), path=path, frame=i)
    held = reachable(store, np.ndarray)
    total = sum(a.nbytes for a in held)
    assert len(reachable(store, FluoroImage)) == 8                # 4 per view
    assert total == store.held_bytes() == 8 * 1024 * 1024 * 2     # 16 MiB: the LRU and nothing else
    assert total < 20e6
