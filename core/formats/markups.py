"""3D Slicer markups files (``.mrk.json``, Slicer's markups schema v1.0.3): line markups in and out.

The file format only: a ``MarkupLine`` is a named line (first point, second point, in
patient LPS mm) with its display colour and the extra keys that ride along under the
markup's ``"fluoronav"`` key (Slicer ignores and drops them). One markup of type
``Line`` per line, ``coordinateSystem`` "LPS", two control points labelled ``entry`` and
``target`` with ``positionStatus`` "defined". Reading takes LPS and RAS files (RAS turned
to LPS), skips markups that are not lines, and rejects anything it cannot use with one
``MarkupsError`` line naming the file and the markup. What the points mean (the plan's
trajectories, their frame) is ``core.planning.markups``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MarkupsError", "MarkupLine", "MARKUPS_SCHEMA", "MAX_MARKUPS_BYTES", "LPS_TO_RAS", "POINT_LABELS",
           "markups_document", "lines_from_document", "read_markup_lines", "write_markup_lines"]

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/"
                  "Resources/Schema/markups-schema-v1.0.3.json#")
MAX_MARKUPS_BYTES = 16 * 2 ** 20     # a plan of tens of lines is a few kB
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])   # its own inverse
POINT_LABELS = ("entry", "target")


class MarkupsError(ValueError):
    """A markups file or request that cannot be used; the message says what and where, in one line."""


@dataclass(frozen=True)
class MarkupLine:
    """One line markup: ``name``, ``entry``/``target`` (LPS mm), display ``colour`` '#rrggbb' or None, ``extra``."""
    name: str
    entry: tuple
    target: tuple
    colour: str | None = None
    extra: dict = field(default_factory=dict)


def _rgb(colour: str) -> list[float]:
    return [int(colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5)]


def _hex(rgb) -> str | None:
    try:
        vals = [float(x) for x in rgb]
    except (TypeError, ValueError):
        return None
    if len(vals) != 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        return None
    return "#" + "".join(f"{round(v * 255):02x}" for v in vals)


def markups_document(lines) -> dict:
    """The ``.mrk.json`` document of ``lines`` (MarkupLine)."""
    markups = []
    for line in lines:
        points = [{"id": str(i + 1), "label": label, "description": "", "associatedNodeID": "",
                   "position": [float(x) for x in p], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                   "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}
                  for i, (label, p) in enumerate(zip(POINT_LABELS, (line.entry, line.target)))]
        m = {"type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": line.name, "locked": False,
             "controlPoints": points}
        if line.colour:
            m["display"] = {"visibility": True, "color": _rgb(line.colour), "selectedColor": _rgb(line.colour),
                            "lineThickness": 0.2}
        if line.extra:
            m["fluoronav"] = dict(line.extra)
        markups.append(m)
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def write_markup_lines(path, lines) -> Path:
    from core.formats.files import write_json_atomic
    return write_json_atomic(path, markups_document(lines))


def read_markup_lines(path) -> list[MarkupLine]:
    """The line markups of a ``.mrk.json`` file (LPS); MarkupsError, one line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MARKUPS_BYTES:
            raise MarkupsError(f"{path}: {size} bytes is too large for a markups file")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MarkupsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MarkupsError(f"{path}: is a folder, not a markups file") from None
    except UnicodeDecodeError:
        raise MarkupsError(f"{path}: not a text (UTF-8) file; export the markups from Slicer as .mrk.json") from None
    except OSError as e:
        raise MarkupsError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise MarkupsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise MarkupsError(f"{path}: not valid JSON (nested too deep)") from None
    return lines_from_document(doc, where=str(path))


def lines_from_document(doc, where: str = "markups") -> list[MarkupLine]:
    """The ``Line`` markups of a markups document, in LPS (other types are not lines: skipped)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise MarkupsError(f"{where}: not a Slicer markups file (no 'markups' list)")
    schema = doc.get("@schema", "")
    if not isinstance(schema, str) or "markups-schema-v1" not in schema:
        raise MarkupsError(f"{where}: not a Slicer markups v1 file (@schema is {str(schema)[:80]!r})")
    out, names = [], set()
    for i, m in enumerate(doc["markups"]):
        if not isinstance(m, dict):
            raise MarkupsError(f"{where}: markup {i + 1}: not an object")
        if m.get("type") != "Line":
            continue
        name = m.get("name") or f"Line {i + 1}"
        if not isinstance(name, str):
            raise MarkupsError(f"{where}: markup {i + 1}: name must be text")
        here = f"{where}: line {name!r}"
        system = m.get("coordinateSystem", "LPS")
        if system not in ("LPS", "RAS"):
            raise MarkupsError(f"{here}: coordinateSystem must be 'LPS' or 'RAS', got {system!r}")
        if m.get("coordinateUnits", "mm") != "mm":
            raise MarkupsError(f"{here}: coordinates must be in mm, got {m.get('coordinateUnits')!r}")
        cps = m.get("controlPoints")
        if not isinstance(cps, list) or len(cps) != 2:
            n = len(cps) if isinstance(cps, list) else 0
            raise MarkupsError(f"{here}: a line needs exactly 2 control points (entry, target), it has {n}")
        by_label = {cp.get("label"): cp for cp in cps if isinstance(cp, dict)}
        ordered = [by_label[k] for k in POINT_LABELS] if set(POINT_LABELS) <= set(by_label) else cps
        points = []
        for label, cp in zip(POINT_LABELS, ordered):
            if not isinstance(cp, dict):
                raise MarkupsError(f"{here}: the {label} control point is not an object")
            if cp.get("positionStatus", "defined") != "defined":
                raise MarkupsError(f"{here}: the {label} point is not placed (positionStatus "
                                   f"{cp.get('positionStatus')!r}); place it in Slicer and save again")
            try:
                p = np.asarray(cp.get("position"), float)
            except (TypeError, ValueError):
                p = np.zeros(0)
            if p.shape != (3,) or not np.all(np.isfinite(p)):
                raise MarkupsError(f"{here}: the {label} position must be 3 finite numbers (mm)")
            points.append(tuple(float(x) for x in (LPS_TO_RAS[:3, :3] @ p if system == "RAS" else p)))
        if name in names:
            raise MarkupsError(f"{here}: two lines have this name; rename one in Slicer")
        names.add(name)
        display = m.get("display") if isinstance(m.get("display"), dict) else {}
        extra = m.get("fluoronav") if isinstance(m.get("fluoronav"), dict) else {}
        out.append(MarkupLine(name, points[0], points[1], _hex(display.get("color")), extra))
    if not out:
        raise MarkupsError(f"{where}: holds no line markup (a trajectory is a Line with an entry and a target)")
    return out
