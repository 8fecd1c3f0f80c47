"""[tracker] in the configuration: the NDI driver built from it, its checks, and a driver
missing from the installation shown as a fault (pill and log), never as "disconnected"."""
import logging

import pytest

from app.config import ConfigError, load_config, load_defaults
from app.devices_controller import DRIVERS, DevicesController, DriverMissing, driver_factory
from app.session import Session
from devices.base import DeviceStatus
from devices.ndi import NdiTracker


def config(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        config(tmp_path, text)
    return e.value.problems


def test_ndi_driver_built_from_the_configuration(tmp_path):
    c = config(tmp_path, '[tracker]\nkind = "ndi"\nhost = "10.0.0.9"\nport = 8766\n'
                         'tool_names = ["robot_ref", "patient_ref", "probe"]\n'
                         'tool_roms = ["/roms/r.rom", "/roms/p.rom", ""]\nreply_format = "tx"\nrate_hz = 40\n')
    factory, why = driver_factory("tracker", c)
    t = factory()
    assert why == "" and isinstance(t, NdiTracker)
    assert (t.host, t.port, t.serial_port, t.reply) == ("10.0.0.9", 8766, "", "tx")
    assert t.tools == ("robot_ref", "patient_ref", "probe") and t.tool_roms == ("/roms/r.rom", "/roms/p.rom", "")
    assert abs(t.period_s - 1 / 40) < 1e-12
    s = driver_factory("tracker", config(tmp_path, '[tracker]\nkind = "ndi"\nserial_port = "/dev/ttyUSB0"\n'
                                                   'serial_baud = 921600\n'))[0]()
    assert (s.serial_port, s.baud) == ("/dev/ttyUSB0", 921600)


def test_defaults_name_the_two_reference_markers():
    tr = load_defaults().tracker
    assert tr.kind == "simulated" and tr.port == 8765
    assert list(tr.tool_names) == list(tr.control_tools) == ["robot_ref", "patient_ref"]


@pytest.mark.parametrize("text, words", [
    ('kind = "ndi"\n', "tracker.host (Vega, TCP) or tracker.serial_port"),
    ('kind = "ndi"\nhost = "h"\ntool_roms = ["a.rom"]\n', "one ROM file"),
    ('control_tools = ["tool"]\n', "not in tracker.tool_names"),
    ('tool_names = ["a", "a"]\ntool_roms = ["", ""]\ncontrol_tools = []\n', "distinct"),
    ('serial_baud = 12345\n', "tracker.serial_baud must be one of"),
    ('kind = "polaris"\n', "tracker.kind must be one of"),
    ('reply_format = "gx"\n', "tracker.reply_format must be one of"),
])
def test_bad_tracker_settings_each_get_one_line(tmp_path, text, words):
    (msg,) = problems(tmp_path, "[tracker]\n" + text)
    assert words in msg


def test_a_missing_driver_raises_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(DRIVERS, ("tracker", "simulated"), ("devices.no_such_tracker", "SimulatedTracker", {}))
    with pytest.raises(DriverMissing, match=r"simulated tracker driver \(devices.no_such_tracker.SimulatedTracker\) "
                                            r"is missing from this installation .*set tracker.kind"):
        driver_factory("tracker", load_defaults())


def test_a_missing_driver_is_a_fault_in_the_pill_and_the_log(qtbot, tmp_path, monkeypatch, caplog):
    for device in ("carm", "tracker"):
        monkeypatch.setitem(DRIVERS, (device, "simulated"), ("devices.no_such_module", "Missing", {}))
    session = Session(tmp_path, save_images=False)
    devices = DevicesController(load_defaults(), session)
    with caplog.at_level(logging.ERROR, logger="app.devices_controller"):
        devices.start()
    try:
        status, message = session.device_status("tracker")
        assert status is DeviceStatus.FAULT and "missing from this installation" in message
        assert "tracker" not in devices.workers
        assert any("tracker" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)
    finally:
        devices.shutdown()
