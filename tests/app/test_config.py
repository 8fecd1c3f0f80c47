"""The user configuration: defaults, overrides, and one clear message per bad key."""
from __future__ import annotations

import pytest

from app.config import SCHEMA, ConfigError, load_config, load_defaults, user_config_path


def write(tmp_path, text: str):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def problems_of(path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return e.value.problems


def test_defaults_cover_every_schema_key_and_choose_the_simulated_room():
    c = load_defaults()
    for section, keys in SCHEMA.items():
        assert set(c[section]) == set(keys), section
    assert (c.carm.kind, c.robot.kind, c.force_sensor.kind, c.tracker.kind) == ("simulated",) * 4
    assert c.ui.font_pt >= 14


def test_no_user_file_gives_the_defaults():
    assert not user_config_path().exists()
    assert load_config().as_dict() == load_defaults().as_dict()


def test_user_file_in_xdg_config_home_is_read(isolated_user_dirs):
    p = isolated_user_dirs / "config" / "fluoronav" / "config.toml"
    p.parent.mkdir(parents=True)
    p.write_text('[force_sensor]\nkind = "ati_netft"\nhost = "10.0.0.7"\n')
    c = load_config()
    assert (c.force_sensor.kind, c.force_sensor.host, c.force_sensor.port) == ("ati_netft", "10.0.0.7", 49152)
    assert c.sources[-1] == p


def test_override_keeps_other_defaults_and_coerces_int_to_float(tmp_path):
    c = load_config(write(tmp_path, '[carm]\nkind = "dicom_folder"\ndicom_folder = "/srv/dicom"\n'
                                    'acquire_timeout_s = 12\n'))
    assert c.carm.kind == "dicom_folder" and c.carm.dicom_folder == "/srv/dicom"
    assert c.carm.acquire_timeout_s == 12.0 and isinstance(c.carm.acquire_timeout_s, float)
    assert c.robot.kind == "simulated"


def test_unknown_key_is_named_with_the_known_ones(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[carm]\nkindd = "simulated"\n'))
    assert "unknown key carm.kindd" in msg and "kind" in msg


def test_unknown_section_is_named(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[camera]\nkind = "simulated"\n'))
    assert "unknown section [camera]" in msg


def test_wrong_type_names_key_and_expected_type(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[force_sensor]\nport = "49152"\n'))
    assert msg == "force_sensor.port must be an integer, got '49152'"


def test_bool_is_not_accepted_as_a_number(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[ui]\nfont_pt = true\n'))
    assert msg == "ui.font_pt must be an integer, got True"


def test_out_of_range_gives_the_range(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[force_sensor]\nport = 0\n'))
    assert msg == "force_sensor.port = 0 is out of range [1, 65535]"


def test_non_finite_number_is_refused(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[devices]\nstatus_poll_s = nan\n'))
    assert "status_poll_s must be a finite number" in msg


def test_bad_choice_lists_the_choices(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[robot]\nkind = "kuka"\n'))
    assert msg == "robot.kind must be one of 'simulated', 'none', got 'kuka'"


def test_every_bad_key_gets_its_own_line(tmp_path):
    probs = problems_of(write(tmp_path, '[carm]\nkind = 3\nfoo = 1\n[ui]\nfont_pt = 99\n'))
    assert len(probs) == 3
    assert any("carm.kind must be a string" in p for p in probs)
    assert any("unknown key carm.foo" in p for p in probs)
    assert any("ui.font_pt = 99 is out of range [10, 32]" in p for p in probs)


def test_dicom_folder_source_needs_its_folder(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[carm]\nkind = "dicom_folder"\n'))
    assert "carm.dicom_folder must name a folder" in msg


def test_netft_needs_a_host(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[force_sensor]\nkind = "ati_netft"\nhost = ""\n'))
    assert "force_sensor.host must be set" in msg


def test_section_that_is_not_a_table(tmp_path):
    (msg,) = problems_of(write(tmp_path, 'robot = "simulated"\n'))
    assert "robot must be a table" in msg


def test_invalid_toml_says_so_with_the_path(tmp_path):
    p = write(tmp_path, '[carm\nkind = "simulated"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "not valid TOML" in str(e.value) and str(p) in str(e.value)


def test_missing_explicit_file(tmp_path):
    (msg,) = problems_of(tmp_path / "nope.toml")
    assert "configuration file not found" in msg


def test_config_is_read_only():
    c = load_defaults()
    with pytest.raises(TypeError):
        c["carm"]["kind"] = "dicom_folder"
    with pytest.raises(AttributeError):
        c.carm.nothing


def test_igtl_off_by_default_and_checked(tmp_path):
    igtl = load_defaults().igtl
    assert (igtl.enabled, igtl.mode, igtl.port) == (False, "server", 18944)
    (msg,) = problems_of(write(tmp_path, '[igtl]\nenabled = true\nmode = "client"\nhost = " "\n'))
    assert "igtl.host must name the Slicer computer" in msg
    assert problems_of(write(tmp_path, '[igtl]\nmode = "both"\nport = 0\n')) == [
        "igtl.mode must be one of 'server', 'client', got 'both'", "igtl.port = 0 is out of range [1, 65535]"]
    cfg = load_config(write(tmp_path, '[igtl]\nenabled = true\nhost = "0.0.0.0"\npose_rate_hz = 100\n'))
    assert cfg.igtl.enabled and cfg.igtl.pose_rate_hz == 100.0 and cfg.igtl.heartbeat_s == 1.0
def test_dicom_receiver_off_by_default_on_loopback():
    d = load_defaults().dicom
    assert d.receive is False and d.bind_address == "127.0.0.1" and d.watch_folder == ""
    assert d.allowed_calling_ae_titles == [] and d.acse_timeout_s <= 10 and d.max_associations <= 8


def test_dicom_receiver_needs_the_carms_ae_title(tmp_path):
    (msg,) = problems_of(write(tmp_path, '[dicom]\nreceive = true\n'))
    assert "dicom.allowed_calling_ae_titles must list the C-arm's AE title" in msg
    (msg,) = problems_of(write(tmp_path, '[dicom]\nallowed_calling_ae_titles = ["CARM", 3]\n'))
    assert msg == "dicom.allowed_calling_ae_titles must be a list of strings, got ['CARM', 3]"
    (msg,) = problems_of(write(tmp_path, '[dicom]\nallowed_calling_ae_titles = ["SEVENTEEN_CHARS_X"]\n'))
    assert "AE title 'SEVENTEEN_CHARS_X' in [dicom] is not valid" in msg
    ok = load_config(write(tmp_path, '[dicom]\nreceive = true\nallowed_calling_ae_titles = ["CARM1"]\nport = 0\n'))
    assert ok.dicom.allowed_calling_ae_titles == ["CARM1"] and ok.dicom.port == 0
