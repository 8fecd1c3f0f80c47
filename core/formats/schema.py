"""Reading the project's files against their JSON Schema (``resources/schemas/<kind>-<n>.schema.json``).

One reader for every ``fluoronav.<kind>/<n>`` file: the bytes must be UTF-8 JSON of
bounded size and nesting, every number finite, and the document must satisfy its
Draft 2020-12 schema. Anything else is one ``FileFormatError`` line that names the
file, the JSON path of the first problem (``$.views.ap.P[2]``) and what is wrong,
so that a technician can fix or replace the file; never a traceback.

The nesting depth is measured before ``json.loads`` (a file of 100,000 ``[`` would
otherwise exhaust the interpreter's recursion), and the walk that checks numbers is
iterative. Checks the schema language cannot express (a projection matrix of rank 3,
coplanar balls) stay with the code that builds the object, after this validation.
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["FileFormatError", "SCHEMA_DIR", "MAX_BYTES", "MAX_DEPTH", "schema_path", "load_schema",
           "validate", "parse_json", "read_json", "load_json", "NOUNS"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "resources" / "schemas"
MAX_BYTES = 64 * 2 ** 20      # the largest calibration (local distortion, 1,000 plate balls) is ~1 MB
MAX_DEPTH = 32                # the deepest format (calibration) nests 7 levels
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_SHOWN = 60                   # characters of an offending value quoted in a message
# what a file of each kind is called in messages: (noun, "not a ..." when the format differs)
NOUNS = {"cage": ("cage file", "a fluoronav cage file"),
         "plate": ("plate file", "a fluoronav.plate/1 file"),
         "calib": ("calibration file", "a fluoronav calibration"),
         "plan": ("plan file", "a fluoronav plan file"),
         "session": ("session file", "a fluoronav session file"),
         "carm_presets": ("C-arm presets file", "a fluoronav C-arm presets file"),
         "robot": ("robot file", "a fluoronav robot file"),
         "morphometry": ("morphometry file", "a fluoronav morphometry file")}


class FileFormatError(ValueError):
    """A project file that cannot be used: ``file``, ``json_path`` ('$' for the whole
    document, '' when the file could not be parsed) and ``what`` is wrong, in one line."""

    def __init__(self, file: str, json_path: str, what: str, hint: str = ""):
        self.file, self.json_path, self.what, self.hint = str(file), json_path, what, hint
        where = ": ".join(x for x in (self.file, json_path) if x)
        super().__init__(": ".join(x for x in (where, what, hint) if x))


def schema_path(kind: str, version: int = 1) -> Path:
    return SCHEMA_DIR / f"{kind}-{version}.schema.json"


@lru_cache(maxsize=None)
def _validator(kind: str, version: int):
    from jsonschema import Draft202012Validator   # lazy: only files need it
    schema = json.loads(schema_path(kind, version).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def load_schema(kind: str, version: int = 1) -> dict:
    """The schema of ``fluoronav.<kind>/<version>`` files (checked against the 2020-12 meta-schema)."""
    return _validator(kind, version).schema


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _describe(error) -> str:
    """What is wrong, in words, with the offending value shortened (never the whole list)."""
    v, arg, inst = error.validator, error.validator_value, error.instance
    if v == "type":
        want = " or ".join(arg) if isinstance(arg, list) else arg
        return f"must be {want}, got {_type_name(inst)} {_short(inst)}"
    if v == "const":
        return f"must be {_short(arg)}, got {_short(inst)}"
    if v == "enum":
        return f"must be one of {', '.join(_short(a) for a in arg)}, got {_short(inst)}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"must be {op} {arg:g}, got {_short(inst)}"
    if v in ("minItems", "maxItems"):
        return f"must have {'at least' if v == 'minItems' else 'at most'} {arg} items, got {len(inst)}"
    if v in ("minLength", "maxLength"):
        return f"must have {'at least' if v == 'minLength' else 'at most'} {arg} characters, got {len(inst)}"
    if v == "required":
        missing = [k for k in arg if k not in inst]
        return f"is incomplete: lacks {', '.join(repr(k) for k in missing)}"
    if v in ("additionalProperties", "unevaluatedProperties"):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in allowed)
        return f"has unknown key(s) {', '.join(repr(k) for k in extra[:5])}"
    if v == "pattern":
        if "description" in error.schema:
            return f"must be {error.schema['description']}, got {_short(inst)}"
        return f"{_short(inst)} does not match {arg!r}"
    if v == "uniqueItems":
        return "has repeated items"
    if v in ("minProperties", "maxProperties"):
        return f"must have {'at least' if v == 'minProperties' else 'at most'} {arg} keys, got {len(inst)}"
    text = " ".join(str(error.message).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _position(obj, path) -> list:
    """Where ``path`` lies in the document, in reading order (object keys as written)."""
    pos, x = [], obj
    for p in path:
        if isinstance(x, dict):
            keys = list(x)
            pos.append(keys.index(p) if p in x else len(keys))
            x = x.get(p)
        elif isinstance(x, list) and isinstance(p, int) and p < len(x):
            pos.append(p)
            x = x[p]
        else:
            break
    return pos


def _first_error(validator, obj):
    """The schema error that comes first in reading order, a container's own error (a missing
    key) after those of what it holds; inside anyOf/oneOf, jsonschema's best match."""
    from jsonschema.exceptions import best_match
    errors = list(validator.iter_errors(obj))
    if not errors:
        return None
    last = float("inf")
    first = min(errors, key=lambda e: (_position(obj, e.absolute_path) + [last],
                                       e.validator in ("anyOf", "oneOf")))
    return best_match([first])


def _non_finite(obj) -> str | None:
    """The JSON path of the first number that is not finite (NaN, 1e999 read as inf), or None."""
    stack = [("$", obj)]
    while stack:
        path, x = stack.pop()
        if isinstance(x, float):
            if not math.isfinite(x):
                return path
        elif isinstance(x, dict):
            stack.extend((f"{path}.{k}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) else f"{path}[{k!r}]", v)
                         for k, v in reversed(list(x.items())))
        elif isinstance(x, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(x))))
    return None


def validate(obj, kind: str, file: str = "", version: int = 1, hint: str = "", error=FileFormatError):
    """``obj`` if it is a valid ``fluoronav.<kind>/<version>`` document, else ``error`` (one line).

    ``error`` is the caller's typed error: ``FileFormatError`` or a class taking one message
    (it then gets ``file``, ``json_path`` and ``what`` attributes too).
    """
    file = file or kind
    expected = f"fluoronav.{kind}/{version}"
    got = obj.get("format") if isinstance(obj, dict) else None
    if got != expected:
        what = "an object" if isinstance(obj, dict) else _type_name(obj)
        raise _error(error, file, "$.format" if isinstance(obj, dict) else "$",
                     f"not {_noun(kind)[1]} ({what} of format {_short(got)}, expected {expected!r})", hint)
    bad = _non_finite(obj)
    if bad is not None:
        raise _error(error, file, bad, "is not a finite number (NaN or out of range)", hint)
    e = _first_error(_validator(kind, version), obj)
    if e is not None:
        raise _error(error, file, e.json_path, _describe(e), hint)
    return obj


def _noun(kind: str) -> tuple[str, str]:
    return NOUNS.get(kind, (f"{kind} file", f"a fluoronav {kind} file"))


def _error(cls, file, json_path, what, hint):
    if cls is FileFormatError or issubclass(cls, FileFormatError):
        return cls(file, json_path, what, hint)
    base = FileFormatError(file, json_path, what, hint)
    err = cls(str(base))
    err.file, err.json_path, err.what = base.file, json_path, what
    return err


def _depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in JSON text (brackets inside strings ignored)."""
    code = np.frombuffer(_STRING.sub(b'""', raw), np.uint8)
    step = np.zeros(len(code), np.int32)
    step[(code == ord("[")) | (code == ord("{"))] = 1
    step[(code == ord("]")) | (code == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes, file: str, hint: str = "", error=FileFormatError):
    """Parse bytes as UTF-8 JSON of bounded size and depth; ``error`` (one line) otherwise."""
    if len(raw) > MAX_BYTES:
        raise _error(error, file, "", f"is {len(raw) / 2 ** 20:.0f} MB, more than any fluoronav file "
                     f"({MAX_BYTES // 2 ** 20} MB)", hint)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(error, file, "", f"is not UTF-8 text (byte {e.start}): not a JSON file", hint) from None
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise _error(error, file, "", f"nests {depth} levels deep (at most {MAX_DEPTH})",
                     hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _error(error, file, "", f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                     hint) from None
    except RecursionError:
        raise _error(error, file, "", "nests too deep", hint) from None
    except ValueError:      # the one other refusal of json.loads: an integer of over 4,300 digits
        raise _error(error, file, "", "holds an integer of thousands of digits",
                     hint) from None


def read_json(path, kind: str, hint: str = "", error=FileFormatError, name: str | None = None):
    """Read and parse (not validate) a file of ``kind``: ``(document, raw bytes)``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise _error(error, "", "", f"cannot read {_noun(kind)[0]} {p}: {e.strerror or e}", hint) from None
    return parse_json(raw, name or p.name, hint, error), raw


def load_json(path, kind: str, version: int = 1, hint: str = "", error=FileFormatError, name: str | None = None):
    """Read, parse and validate a ``fluoronav.<kind>/<version>`` file: ``(document, raw bytes)``.

    The file is named in messages by ``name`` (default: its file name).
    """
    obj, raw = read_json(path, kind, hint, error, name)
    return validate(obj, kind, name or Path(path).name, version, hint, error), raw
