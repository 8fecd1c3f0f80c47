"""The simulated C-arm and the DICOM folder source behind one interface."""
import threading
import time

import numpy as np
import pytest

from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_dicom_xa
from core.simulation.block_phantom import block_phantom
from devices.base import DeviceError, DeviceStatus
from devices.carm import CArmSource, DicomFolderCArm, DicomFolderSource, SimulatedCArm


@pytest.fixture(scope="module")
def carm():
    c = SimulatedCArm(seed=3, shape=(128, 128), latency_s=0.05, phantom=block_phantom(4.0),
                      pixel_spacing_mm=1.8)
    c.connect()
    assert c.wait_ready(120)
    return c


def test_simulated_carm_returns_a_shot_with_metadata(carm):
    assert isinstance(carm, CArmSource) and carm.status() == DeviceStatus.SIMULATED
    carm.set_pose(12.0, -8.0)
    t0 = time.monotonic()
    img = carm.acquire("lat")
    assert time.monotonic() - t0 >= 0.05  # latency like an exposure: a lower bound, which load only lengthens
    assert isinstance(img, FluoroImage) and img.shape == (128, 128) and img.pixels.dtype == np.uint16
    assert img.view == "lat" and img.photometric == "MONOCHROME2" and img.bits_stored == 12
    assert img.pixel_spacing_mm == (1.8, 1.8) and img.sid_mm == 1000.0
    assert img.primary_angle_deg == 12.0 and img.secondary_angle_deg == -8.0
    shot = carm.last_shots["lat"]
    assert shot is carm.last_shot and shot.image is img
    beam = -shot.geometry_world.detector_normal  # source -> detector
    # LAT beam (+x) tilted 8° caudal (towards -z), then turned 12° LAO about the long axis
    c8, s8, c12, s12 = np.cos(np.radians(8)), np.sin(np.radians(8)), np.cos(np.radians(12)), np.sin(np.radians(12))
    np.testing.assert_allclose(beam / np.linalg.norm(beam), [c8 * c12, -c8 * s12, -s8], atol=1e-9)
    assert img.pixels.max() > 1000 and img.pixels.min() == 0  # exposure, and black outside the II field


def test_pose_given_to_acquire_overrides_set_pose(carm):
    carm.set_pose(0.0, 0.0)
    img = carm.acquire("ap", primary_deg=-20.0, secondary_deg=5.0)
    assert (img.primary_angle_deg, img.secondary_angle_deg) == (-20.0, 5.0)
    b = carm.last_shot.geometry_world.detector_normal
    assert np.degrees(np.arccos(abs(b[1]))) == pytest.approx(np.hypot(20, 5), abs=0.3)


def test_cage_pose_from_configuration_moves_the_balls(carm):
    T = carm.scene.T_world_cage.copy()
    before = carm.acquire("ap")
    uv0 = carm.last_shot.ball_pixels_raw(carm.scene.cage)["ap_1"]
    T2 = T.copy()
    T2[0, 3] += 10.0
    carm.set_cage_pose(T2)
    try:
        carm.acquire("ap")
        uv1 = carm.last_shot.ball_pixels_raw(carm.scene.cage)["ap_1"]
    finally:
        carm.set_cage_pose(T)
    shift = np.nanmedian(uv1[:, 0] - uv0[:, 0])
    assert shift > 3.0  # 10 mm at magnification ~1.3 and 1.8 mm pixels: ~7 px (II distortion aside)
    assert before.view == "ap"


def test_unknown_view_is_refused(carm):
    with pytest.raises(DeviceError, match="unknown view"):
        carm.acquire("pa")


def test_angles_out_of_range_are_refused(carm):
    with pytest.raises(DeviceError, match="out of range"):
        carm.set_pose(150.0, 0.0)


def test_connect_returns_before_the_room_is_built_and_acquire_waits_for_it():
    c = SimulatedCArm(seed=1, shape=(64, 64), latency_s=0.0, phantom=block_phantom(8.0), pixel_spacing_mm=4.0)
    c.connect()
    if not c._ready.is_set():     # a busy machine may not have finished the small build yet
        assert c.status() == DeviceStatus.DISCONNECTED and c.last_message.startswith("building the simulated room")
    img = c.acquire("ap")
    assert img.shape == (64, 64) and c.status() == DeviceStatus.SIMULATED and c.scene is not None


def test_disconnect_abandons_the_build_and_nothing_waits_for_it(monkeypatch):
    import core.simulation.scene as scene_module
    started = threading.Event()

    class EndlessRoom:            # a build that ends only when it is abandoned
        def __init__(self, cancelled, **_):
            started.set()
            while not cancelled():
                time.sleep(0.01)
            raise scene_module.SceneCancelled("cancelled")

    monkeypatch.setattr(scene_module, "SimulatedOR", EndlessRoom)
    c = SimulatedCArm(seed=2, shape=(64, 64), phantom=block_phantom(8.0), pixel_spacing_mm=4.0)
    c.connect()                   # returns while the room is being built
    assert started.wait(10) and c.status() == DeviceStatus.DISCONNECTED and c.last_message.startswith("building the simulated room: phantom CT (1 of 3), ")
    builder = c._builder
    c.disconnect()                # returns at once; the build stops at its next stage
    assert c.status() == DeviceStatus.DISCONNECTED and c.last_message == "disconnected"
    builder.join(10)
    assert not builder.is_alive() and c.scene is None and c._builder is None
    monkeypatch.undo()
    c.connect()                   # a connect after that builds the room again
    assert c.wait_ready(60) and c.status() == DeviceStatus.SIMULATED and c.scene is not None


def test_a_failed_build_is_a_fault_with_its_reason():
    c = SimulatedCArm(seed=0, sid_mm=500.0, sod_mm=800.0, phantom=block_phantom(8.0))
    c.connect()
    assert not c.wait_ready(60) and c.status() == DeviceStatus.FAULT
    assert c.last_message.startswith("simulation could not start: need 0 < source-to-isocentre")
    with pytest.raises(DeviceError, match="simulation could not start"):
        c.acquire("ap")


def test_acquire_before_connect_is_refused():
    with pytest.raises(DeviceError, match="not connected"):
        SimulatedCArm(phantom=block_phantom(6.0)).acquire("ap")


def _image(v=100):
    return FluoroImage(pixels=np.full((16, 20), v, np.uint16), pixel_spacing_mm=(0.3, 0.3), sid_mm=1000.0,
                       primary_angle_deg=5.0, secondary_angle_deg=0.0)


def test_folder_source_picks_up_a_new_file(tmp_path):
    write_dicom_xa(_image(7), tmp_path / "old.dcm")  # present before connect: ignored
    src = DicomFolderCArm(tmp_path, timeout_s=5.0, poll_s=0.05, settle_s=0.1)
    assert DicomFolderCArm is DicomFolderSource
    src.connect()
    assert src.status() == DeviceStatus.CONNECTED
    threading.Timer(0.3, lambda: write_dicom_xa(_image(123), tmp_path / "new.dcm")).start()
    t0 = time.monotonic()
    img = src.acquire("ap")
    # not before the file exists (a lower bound, which load only lengthens); that it came at all
    # within timeout_s is the upper bound (else DeviceError). Measured 0.41-0.47 s (5 runs, load 2.5).
    assert time.monotonic() - t0 >= 0.3
    assert img.view == "ap" and int(img.pixels[0, 0]) == 123 and img.sid_mm == 1000.0
    assert "new.dcm" in src.last_message


def test_folder_source_times_out_clearly(tmp_path):
    src = DicomFolderSource(tmp_path, timeout_s=0.3, poll_s=0.05)
    src.connect()
    with pytest.raises(DeviceError, match="no new image .* after 0.3 s"):
        src.acquire("lat")


def test_folder_source_reports_an_unreadable_file(tmp_path):
    src = DicomFolderSource(tmp_path, timeout_s=3.0, poll_s=0.05, settle_s=0.05)
    src.connect()
    (tmp_path / "junk.dcm").write_bytes(b"not an image at all")
    with pytest.raises(DeviceError, match="could not be read"):
        src.acquire("ap")


def test_folder_source_needs_an_existing_folder(tmp_path):
    with pytest.raises(DeviceError, match="does not exist"):
        DicomFolderSource(tmp_path / "missing").connect()


def test_folder_that_disappears_is_a_fault(tmp_path):
    d = tmp_path / "share"
    d.mkdir()
    src = DicomFolderSource(d)
    src.connect()
    d.rmdir()
    assert src.status() == DeviceStatus.FAULT and "gone" in src.last_message


def test_folder_source_cannot_be_positioned(tmp_path):
    with pytest.raises(DeviceError, match="cannot be positioned"):
        DicomFolderSource(tmp_path).set_pose(10, 0)


def test_presets_set_the_detector():
    from devices.carm import carm_preset
    p = carm_preset("flat_panel_30cm")
    assert p["detector"] == "flat_panel" and p["shape"] == (1024, 1024) and p["sid_mm"] == 1100.0
    c = SimulatedCArm(preset="ii_12in", phantom=block_phantom(8.0), shape=(64, 64), pixel_spacing_mm=4.7,
                      latency_s=0.0)
    c.connect()
    img = c.acquire("ap")
    assert img.shape == (64, 64) and c.scene.field_diameter_mm == 300.0  # explicit arguments win


def test_unknown_preset_is_refused():
    with pytest.raises(DeviceError, match="unknown C-arm preset 'ii_99'"):
        SimulatedCArm(preset="ii_99")


def test_the_status_names_each_stage_of_the_build_and_its_seconds(monkeypatch):
    import core.simulation.scene as scene_module
    seen, go_on = [], threading.Event()

    class StagedRoom:             # asks between its stages, as SimulatedOR does
        def __init__(self, cancelled, **_):
            for _ in range(3):
                cancelled()
                seen.append(c.last_message)
            go_on.wait(10)
            raise ValueError("no phantom file")

    monkeypatch.setattr(scene_module, "SimulatedOR", StagedRoom)
    c = SimulatedCArm(seed=2, shape=(64, 64), phantom=block_phantom(8.0), pixel_spacing_mm=4.0)
    c.connect()
    for _ in range(1000):
        if len(seen) == 3:
            break
        time.sleep(0.01)
    assert [m.split(",")[0] for m in seen] == [
        "building the simulated room: phantom CT (1 of 3)",
        "building the simulated room: cage and attenuation grid (2 of 3)",
        "building the simulated room: X-ray renderer (3 of 3)"]
    assert all(m.endswith(" s…") for m in seen)
    go_on.set()
    assert not c.wait_ready(10)   # the failed build says why, without a stage
    assert c.status() == DeviceStatus.FAULT and c.last_message == "simulation could not start: no phantom file"
