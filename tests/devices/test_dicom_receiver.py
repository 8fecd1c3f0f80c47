"""The C-STORE receiver: a real pynetdicom SCU (the simulated C-arm) stores over loopback."""
import socket
import threading
import time

import numpy as np
import pydicom
import pytest

from devices.base import DeviceError, DeviceStatus
from devices.dicom_receiver import DicomReceiver, ReceiverConfig
from devices.dicom_sender import CT, shot_dataset, store


@pytest.fixture
def receiver(tmp_path):
    got, refused = [], []
    r = DicomReceiver(ReceiverConfig(port=0, allowed_calling_ae_titles=["CARM1"], incoming=tmp_path / "in",
                                     acse_timeout_s=3, dimse_timeout_s=3, network_timeout_s=3,
                                     max_associations=2, max_pending=8),
                      on_shot=got.append, on_refused=refused.append)
    r.connect()
    r.got, r.refused_lines = got, refused
    yield r
    r.disconnect()


def test_xa_shot_filed_under_a_name_not_from_its_fields(receiver):
    px = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 13) % 4096
    ds = shot_dataset(px, primary_deg=90.0, PatientName="../../evil", PatientID="../x",
                      SOPInstanceUID="1.2.3.4")
    assert receiver.status() is DeviceStatus.CONNECTED and receiver.port > 0
    assert store(receiver.port, [ds]) == [0x0000]
    assert len(receiver.got) == 1
    path = receiver.got[0]
    assert path.parent == receiver.config.incoming and path.name.startswith("000001-") and path.suffix == ".dcm"
    assert "evil" not in path.name and "1.2.3.4" not in path.name
    assert [p.name for p in receiver.config.incoming.iterdir()] == [path.name]   # no temp file left
    back = pydicom.dcmread(path)
    np.testing.assert_array_equal(back.pixel_array, px)
    assert float(back.PositionerPrimaryAngle) == 90.0 and back.SOPInstanceUID == "1.2.3.4"
    assert "1 received" in receiver.last_message


def test_unknown_calling_ae_rejected_at_association(receiver):
    assert store(receiver.port, [shot_dataset(np.zeros((8, 8)))], calling="INTRUDER") == [None]
    assert receiver.got == [] and list(receiver.config.incoming.iterdir()) == []


def test_ct_refused_with_one_line_nothing_filed(receiver):
    status = store(receiver.port, [shot_dataset(np.zeros((8, 8)), sop=CT, modality="CT")])
    assert status == [0x0122]                      # SOP class not supported, for the C-arm's log
    assert receiver.refused_lines == ["received from CARM1 is a CT image (CT Image Storage), "
                                      "not an X-ray projection shot"]
    assert receiver.got == [] and list(receiver.config.incoming.iterdir()) == []


def test_config_refuses_an_open_door(tmp_path):
    with pytest.raises(DeviceError, match="allowed_calling_ae_titles is empty"):
        ReceiverConfig(allowed_calling_ae_titles=[" "], incoming=tmp_path)
    with pytest.raises(DeviceError, match="AE title 'A_TITLE_FAR_TOO_LONG' is not valid"):
        ReceiverConfig(allowed_calling_ae_titles=["A_TITLE_FAR_TOO_LONG"], incoming=tmp_path)


def test_port_in_use_is_a_fault_with_a_line(receiver, tmp_path):
    other = DicomReceiver(ReceiverConfig(port=receiver.port, allowed_calling_ae_titles=["CARM1"],
                                         incoming=tmp_path / "b"))
    with pytest.raises(DeviceError, match=f"cannot listen on 127.0.0.1:{receiver.port}.*change dicom.port"):
        other.connect()
    assert other.status() is DeviceStatus.FAULT


def _junk(port, stop, kind, rng):
    """One hostile peer: garbage bytes, a silent connection, or a dribble of a valid-looking header."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except OSError:
        return
    try:
        if kind == "garbage":
            s.sendall(rng.bytes(512))
        elif kind == "dribble":
            for b in b"\x01\x00\x00\x00\x10\x00":          # an A-ASSOCIATE-RQ header that never ends
                if stop.is_set():
                    break
                s.sendall(bytes([b]))
                stop.wait(0.3)
        stop.wait(4.0)                                    # then hold the socket open, silent
    except OSError:
        pass
    finally:
        s.close()


def test_flood_of_junk_and_slow_connections_does_not_lock_the_carm_out(receiver):
    """24 hostile connections (garbage, silent, dribbling) at once; the C-arm's store still
    completes within the 2 s the issue demands, and the receiver stays up."""
    rng = np.random.default_rng(7)
    stop = threading.Event()
    kinds = ["garbage", "silent", "dribble"] * 8
    peers = [threading.Thread(target=_junk, args=(receiver.port, stop, k, np.random.default_rng(i)), daemon=True)
             for i, k in enumerate(kinds)]
    try:
        for t in peers:
            t.start()
        time.sleep(0.3)                                   # the flood is in place before the C-arm comes
        px = rng.integers(0, 4096, (256, 256)).astype(np.uint16)
        t0 = time.perf_counter()
        statuses = store(receiver.port, [shot_dataset(px, primary_deg=0.0)], timeout_s=2.0)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        for t in peers:
            t.join(timeout=5)
    assert statuses == [0x0000] and len(receiver.got) == 1
    assert elapsed < 2.0, f"the C-arm's store took {elapsed:.2f} s under the flood"
    assert receiver.status() is DeviceStatus.CONNECTED
    assert store(receiver.port, [shot_dataset(px)]) == [0x0000]       # and after it


def test_established_associations_capped(receiver):
    """Two associations held open (the cap); a third is aborted; once one is released, a store goes through."""
    from pynetdicom import AE
    from devices.dicom_sender import XA
    held = []
    for _ in range(2):
        ae = AE(ae_title="CARM1")
        ae.add_requested_context(XA)
        held.append(ae.associate("127.0.0.1", receiver.port, ae_title="FLUORONAV"))
    assert all(a.is_established for a in held)
    ae = AE(ae_title="CARM1")
    ae.add_requested_context(XA)
    third = ae.associate("127.0.0.1", receiver.port, ae_title="FLUORONAV")
    deadline = time.monotonic() + 10.0     # a deadline, not a figure: it ends as soon as the abort lands
    while third.is_established and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not third.is_established and (third.is_aborted or not third.is_alive())
    held[0].release()
    assert store(receiver.port, [shot_dataset(np.zeros((8, 8)))]) == [0x0000]
    held[1].release()
