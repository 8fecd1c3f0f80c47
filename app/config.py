"""The user configuration: which devices are real or simulated, and their parameters.

Defaults live in ``resources/config/default.toml``; the user file
(``$XDG_CONFIG_HOME/fluoronav/config.toml``, default ``~/.config/...``) overrides
any of them. Every key is checked against ``SCHEMA`` at start: an unknown key, a
wrong type or a value out of range each give one line in ``ConfigError.problems``.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import resources

__all__ = ["Config", "ConfigError", "SCHEMA", "load_config", "user_config_path",
           "default_config_path"]


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` holds one actionable line per bad key."""

    def __init__(self, problems: list[str], path: Path | None = None):
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(self.problems))


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, allowed choices or range, and meaning."""
    type: type
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""


SCHEMA: dict[str, dict[str, Key]] = {
    "carm": {
        "kind": Key(str, choices=("simulated", "dicom_folder"), help="C-arm image source"),
        "dicom_folder": Key(str, help="folder the C-arm writes DICOM files into"),
        "acquire_timeout_s": Key(float, min=0.5, max=600.0, help="longest wait for an image"),
        "seed": Key(int, min=0, max=2**31 - 1, help="noise seed of the simulated C-arm"),
    },
    "robot": {"kind": Key(str, choices=("simulated", "none"))},
    "force_sensor": {
        "kind": Key(str, choices=("simulated", "ati_netft")),
        "host": Key(str, help="address of the ATI Net F/T box"),
        "port": Key(int, min=1, max=65535),
        "rate_hz": Key(float, min=1.0, max=7000.0),
    },
    "tracker": {
        "kind": Key(str, choices=("simulated", "ndi", "none"), help="optical tracker"),
        "host": Key(str, help="ndi: address of a Polaris Vega (TCP); unused with serial_port"),
        "port": Key(int, min=1, max=65535, help="ndi: TCP port of the Vega (NDI's is 8765)"),
        "serial_port": Key(str, help="ndi: serial device of a Polaris or Aurora; set: serial, not TCP"),
        "serial_baud": Key(int, choices=(9600, 14400, 19200, 38400, 57600, 115200, 230400, 921600, 1228739),
                           help="ndi: serial rate after COMM (the link starts at 9600)"),
        "tool_names": Key(list, help="the tools, in order (robot_ref, patient_ref, …)"),
        "tool_roms": Key(list, help="ndi: one ROM file per tool name; \"\" for a wired tool"),
        "control_tools": Key(list, help="tools the tracked loop needs: a banner when one is not seen"),
        "reply_format": Key(str, choices=("bx", "tx"), help="ndi: binary BX or text TX replies"),
        "rate_hz": Key(float, min=1.0, max=500.0, help="ndi: frames asked per second"),
    },
    "devices": {"status_poll_s": Key(float, min=0.05, max=60.0)},
    "ui": {"font_pt": Key(int, min=10, max=32)},
    "session": {"data_dir": Key(str), "save_images": Key(bool)},
    "igtl": {
        "enabled": Key(bool, help="stream to 3D Slicer over OpenIGTLink"),
        "mode": Key(str, choices=("server", "client"), help="server: Slicer connects to us (its default)"),
        "host": Key(str, help="server: address to listen on; client: Slicer's address"),
        "port": Key(int, min=1, max=65535),
        "pose_rate_hz": Key(float, min=1.0, max=1000.0, help="most tool poses sent per second"),
        "heartbeat_s": Key(float, min=0.05, max=60.0, help="STATUS heartbeat period"),
        "peer_timeout_s": Key(float, min=0.0, max=3600.0, help="drop a peer silent this long (0: never)"),
        "send_images": Key(bool, help="send each shot as an IMAGE"),
    },
    "dicom": {
        "receive": Key(bool, help="listen for C-STORE from the C-arm"),
        "ae_title": Key(str, help="this workstation's AE title"),
        "bind_address": Key(str, help="interface to listen on"),
        "port": Key(int, min=0, max=65535, help="TCP port (0: any free one)"),
        "allowed_calling_ae_titles": Key(list, help="AE titles allowed to send"),
        "acse_timeout_s": Key(float, min=0.5, max=60.0),
        "dimse_timeout_s": Key(float, min=0.5, max=120.0),
        "network_timeout_s": Key(float, min=0.5, max=120.0),
        "max_associations": Key(int, min=1, max=32),
        "max_pending_connections": Key(int, min=1, max=256),
        "max_pdu_bytes": Key(int, min=0, max=16_777_216),
        "incoming_folder": Key(str, help="where received files are kept"),
        "watch_folder": Key(str, help="folder the C-arm exports into; empty: none"),
        "watch_settle_s": Key(float, min=0.1, max=60.0),
        "watch_poll_s": Key(float, min=0.05, max=10.0),
        "view_tolerance_deg": Key(float, min=1.0, max=44.0),
    },
}


def default_config_path() -> Path:
    return resources.path("config", "default.toml")


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/fluoronav/config.toml`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "fluoronav" / "config.toml"


class Config:
    """Validated configuration, read-only: ``config.carm.kind`` or ``config["carm"]["kind"]``."""

    def __init__(self, values: dict[str, dict[str, Any]], sources: tuple[Path, ...] = ()):
        self._values = {s: MappingProxyType(dict(v)) for s, v in values.items()}
        self.sources = sources

    def __getattr__(self, section: str):
        try:
            return _Section(self.__dict__["_values"][section])
        except KeyError:
            raise AttributeError(f"no configuration section {section!r}") from None

    def __getitem__(self, section: str):
        return self._values[section]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self._values.items()}

    def __repr__(self) -> str:
        return f"Config({self.as_dict()!r})"


class _Section:
    def __init__(self, values):
        self._v = values

    def __getattr__(self, key):
        try:
            return self.__dict__["_v"][key]
        except KeyError:
            raise AttributeError(f"no configuration key {key!r}") from None


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list of strings"}[t]


def _check_value(name: str, key: Key, value: Any) -> tuple[Any, str | None]:
    """(coerced value, problem or None) for one key."""
    ok = isinstance(value, key.type) and not (key.type is not bool and isinstance(value, bool))
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if key.type is list and ok and not all(isinstance(x, str) for x in value):
        ok = False
    if not ok:
        return value, f"{name} must be {_type_name(key.type)}, got {value!r}"
    if key.choices is not None and value not in key.choices:
        return value, f"{name} must be one of {', '.join(map(repr, key.choices))}, got {value!r}"
    if key.type is float and not math.isfinite(value):
        return value, f"{name} must be a finite number, got {value!r}"
    lo = -math.inf if key.min is None else key.min
    hi = math.inf if key.max is None else key.max
    if key.type in (int, float) and not lo <= value <= hi:
        return value, f"{name} = {value!r} is out of range [{lo:g}, {hi:g}]"
    return value, None


def validate(data: dict[str, Any], base: dict[str, dict[str, Any]] | None = None):
    """Merge ``data`` over ``base`` checking each key; (merged, problems)."""
    merged = {s: dict(v) for s, v in (base or {}).items()}
    problems: list[str] = []
    for section, table in data.items():
        if section not in SCHEMA:
            problems.append(f"unknown section [{section}] (known: {', '.join(SCHEMA)})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{section} must be a table [{section}], got {table!r}")
            continue
        for k, value in table.items():
            name = f"{section}.{k}"
            if k not in SCHEMA[section]:
                problems.append(f"unknown key {name} (known: {', '.join(SCHEMA[section])})")
                continue
            value, problem = _check_value(name, SCHEMA[section][k], value)
            if problem:
                problems.append(problem)
            else:
                merged.setdefault(section, {})[k] = value
    return merged, problems


def _check_together(values: dict[str, dict[str, Any]]) -> list[str]:
    """Problems that involve more than one key."""
    problems = []
    carm = values.get("carm", {})
    if carm.get("kind") == "dicom_folder" and not str(carm.get("dicom_folder", "")).strip():
        problems.append('carm.dicom_folder must name a folder when carm.kind = "dicom_folder"')
    igtl = values.get("igtl", {})
    if igtl.get("enabled") and igtl.get("mode") == "client" and not str(igtl.get("host", "")).strip():
        problems.append('igtl.host must name the Slicer computer when igtl.mode = "client"')
    fs = values.get("force_sensor", {})
    if fs.get("kind") == "ati_netft" and not str(fs.get("host", "")).strip():
        problems.append('force_sensor.host must be set when force_sensor.kind = "ati_netft"')
    problems += _check_tracker(values.get("tracker", {}))
    dicom = values.get("dicom", {})
    titles = [t.strip() for t in dicom.get("allowed_calling_ae_titles", []) if t.strip()]
    if dicom.get("receive") and not titles:
        problems.append("dicom.allowed_calling_ae_titles must list the C-arm's AE title when dicom.receive = true")
    for t in titles + [str(dicom.get("ae_title", "")).strip()]:
        if len(t) > 16 or not t.isascii() or "\\" in t:
            problems.append(f"AE title {t!r} in [dicom] is not valid: at most 16 ASCII characters, no backslash")
    if dicom.get("receive") and not str(dicom.get("ae_title", "")).strip():
        problems.append("dicom.ae_title must be set when dicom.receive = true")
    return problems


def _check_tracker(tr: dict[str, Any]) -> list[str]:
    problems = []
    names = list(tr.get("tool_names", []))
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        problems.append(f"tracker.tool_names must be distinct, non-empty names, got {names}")
    unknown = [n for n in tr.get("control_tools", []) if n not in names]
    if unknown:
        problems.append(f"tracker.control_tools {unknown} are not in tracker.tool_names {names}")
    if tr.get("kind") == "ndi":
        if not str(tr.get("host", "")).strip() and not str(tr.get("serial_port", "")).strip():
            problems.append('tracker.host (Vega, TCP) or tracker.serial_port must be set when tracker.kind = "ndi"')
        if len(tr.get("tool_roms", [])) != len(names):
            problems.append(f"tracker.tool_roms must give one ROM file (or \"\") per name in tracker.tool_names: "
                            f"{len(names)} names, {len(tr.get('tool_roms', []))} files")
    return problems


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"configuration file not found: {path}"], path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML ({e}); fix the file or remove it"], path) from None
    except OSError as e:
        raise ConfigError([f"cannot read the configuration file ({e.strerror})"], path) from None


def load_defaults() -> Config:
    """The shipped defaults alone (the fallback when the user file is bad)."""
    path = default_config_path()
    values, problems = validate(_read_toml(path))
    missing = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys if k not in values.get(s, {})]
    problems += [f"default for {name} is missing" for name in missing]
    if problems:
        raise ConfigError(problems, path)
    return Config(values, (path,))


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Defaults overlaid with the user file; ``path`` None: the user file if it exists.

    Raises ConfigError listing every bad key (unknown, wrong type, out of range).
    """
    defaults = load_defaults()
    if path is None:
        path = user_config_path()
        if not path.exists():
            return defaults
    path = Path(path)
    values, problems = validate(_read_toml(path), defaults.as_dict())
    problems += _check_together(values) if not problems else []
    if problems:
        raise ConfigError(problems, path)
    return Config(values, defaults.sources + (path,))
