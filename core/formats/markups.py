"""Trajectories as 3D Slicer markups files (``.mrk.json``, Slicer's markups schema v1.0.3).

One markup of type ``Line`` per complete trajectory, named after it, with two control
points: ``entry`` then ``target`` (``positionStatus`` "defined"). Positions are in the
patient's LPS (``coordinateSystem`` "LPS", mm), the frame DICOM and Slicer's files use:
the plan's cage frame turned by ``PatientAxes`` (the cage mounted over a prone patient:
cage +x = left, +z = posterior, -y = superior) with the cage origin as the LPS origin.
The OpenIGTLink stream (``devices.igtl_link``) sends the same LPS points turned to RAS
(Slicer's scene), so a markup loaded in Slicer and the streamed tool line up.

What a line markup cannot say (level, side, colour, diameter, the clicks) rides along
under the markup's own ``"fluoronav"`` key, which Slicer ignores; a file saved by Slicer
without it still imports: the level and side are read from the name ("L4 left") when
they can be, the colour from the markup's display colour.

Import takes LPS and RAS files (RAS converted), and rejects anything it cannot use with
one ``MarkupsError`` line naming the file and the markup.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from core.planning.two_view import LEVELS, SIDES, PatientAxes, PlanningError, Trajectory

__all__ = ["MarkupsError", "MARKUPS_SCHEMA", "MAX_MARKUPS_BYTES", "T_lps_cage", "LPS_TO_RAS",
           "markups_from_trajectories", "trajectories_from_markups", "write_markups", "read_markups"]

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/"
                  "Resources/Schema/markups-schema-v1.0.3.json#")
MAX_MARKUPS_BYTES = 16 * 2 ** 20     # a plan of tens of lines is a few kB
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])   # its own inverse
_POINT_LABELS = ("entry", "target")


class MarkupsError(ValueError):
    """A markups file or request that cannot be used; the message says what and where, in one line."""


def T_lps_cage(axes: PatientAxes = PatientAxes()) -> np.ndarray:
    """4x4 mapping cage-frame mm to patient LPS mm (rows: the cage's left, posterior, superior)."""
    T = np.eye(4)
    T[:3, :3] = np.vstack([np.asarray(getattr(axes, a), float) for a in ("left", "posterior", "superior")])
    return T


def _apply(T: np.ndarray, p) -> list[float]:
    return [float(x) for x in T[:3, :3] @ np.asarray(p, float) + T[:3, 3]]


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


def markups_from_trajectories(trajectories, axes: PatientAxes = PatientAxes()) -> tuple[dict, list[str]]:
    """(markups document, names of the trajectories left out because they lack a 3D entry or target)."""
    T = T_lps_cage(axes)
    markups, skipped = [], []
    for t in trajectories:
        if not isinstance(t, Trajectory):
            raise MarkupsError(f"a trajectory to export must be a Trajectory, got {type(t).__name__}")
        if not t.complete:
            skipped.append(t.name)
            continue
        points = [{"id": str(i + 1), "label": label, "description": "", "associatedNodeID": "",
                   "position": _apply(T, getattr(t, f"{label}_mm")), "orientation": [-1.0, 0.0, 0.0, 0.0,
                   -1.0, 0.0, 0.0, 0.0, 1.0], "selected": True, "locked": False, "visibility": True,
                   "positionStatus": "defined"} for i, label in enumerate(_POINT_LABELS)]
        extra = {"level": t.level, "side": t.side, "colour": t.colour, "diameter_mm": t.diameter_mm,
                 "clicks": t.to_dict()["clicks"], "entry_gap_mm": t.entry_gap_mm,
                 "target_gap_mm": t.target_gap_mm}
        markups.append({"type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": t.name,
                        "locked": False, "controlPoints": points,
                        "display": {"visibility": True, "color": _rgb(t.colour), "selectedColor": _rgb(t.colour),
                                    "lineThickness": 0.2},
                        "fluoronav": extra})
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}, skipped


def write_markups(path, trajectories, axes: PatientAxes = PatientAxes()) -> tuple[Path, list[str]]:
    """Export the complete trajectories to ``path`` (atomically); (path, names left out).
    MarkupsError when none of them has both its 3D points."""
    from core.formats.files import write_json_atomic
    doc, skipped = markups_from_trajectories(trajectories, axes)
    if not doc["markups"]:
        raise MarkupsError("no trajectory has both a 3D entry and target to export: click them in AP and LAT first")
    return write_json_atomic(path, doc), skipped


def read_markups(path, axes: PatientAxes = PatientAxes()) -> list[Trajectory]:
    """The line markups of a Slicer ``.mrk.json`` file as trajectories (cage frame); MarkupsError, one line."""
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
        doc = json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise MarkupsError(f"{path}: not valid JSON ({getattr(e, 'msg', 'nested too deep')}"
                           f"{f' at line {e.lineno}' if hasattr(e, 'lineno') else ''})") from None
    return trajectories_from_markups(doc, axes, where=str(path))


def _guess(name: str, choices, default: str) -> str:
    for token in re.split(r"[\s_\-]+", name):
        for c in choices:
            if token.lower() == c.lower():
                return c
    return default


def trajectories_from_markups(doc, axes: PatientAxes = PatientAxes(), where: str = "markups") -> list[Trajectory]:
    """Trajectories from a markups document (its ``Line`` markups; other types are not trajectories)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise MarkupsError(f"{where}: not a Slicer markups file (no 'markups' list)")
    schema = doc.get("@schema", "")
    if not isinstance(schema, str) or "markups-schema-v1" not in schema:
        raise MarkupsError(f"{where}: not a Slicer markups v1 file (@schema is {str(schema)[:80]!r})")
    T_cage_lps = np.linalg.inv(T_lps_cage(axes))
    out, names = [], set()
    for i, m in enumerate(doc["markups"]):
        here = f"{where}: markup {i + 1}"
        if not isinstance(m, dict):
            raise MarkupsError(f"{here}: not an object")
        if m.get("type") != "Line":
            continue
        name = m.get("name") or f"Line {i + 1}"
        if not isinstance(name, str):
            raise MarkupsError(f"{here}: name must be text")
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
        ordered = [by_label[k] for k in _POINT_LABELS] if set(_POINT_LABELS) <= set(by_label) else cps
        points = []
        for label, cp in zip(_POINT_LABELS, ordered):
            if not isinstance(cp, dict):
                raise MarkupsError(f"{here}: the {label} control point is not an object")
            if cp.get("positionStatus", "defined") != "defined":
                raise MarkupsError(f"{here}: the {label} point is not placed (positionStatus "
                                   f"{cp.get('positionStatus')!r}); place it in Slicer and save again")
            p = cp.get("position")
            try:
                p = np.asarray(p, float)
            except (TypeError, ValueError):
                p = np.zeros(0)
            if p.shape != (3,) or not np.all(np.isfinite(p)):
                raise MarkupsError(f"{here}: the {label} position must be 3 finite numbers (mm)")
            lps = LPS_TO_RAS[:3, :3] @ p if system == "RAS" else p
            points.append(tuple(_apply(T_cage_lps, lps)))
        extra = m.get("fluoronav") if isinstance(m.get("fluoronav"), dict) else {}
        display = m.get("display") if isinstance(m.get("display"), dict) else {}
        colour = extra.get("colour") or _hex(display.get("color")) or "#ffb000"
        try:
            t = Trajectory(name, extra.get("level") if extra.get("level") in LEVELS else _guess(name, LEVELS, "L4"),
                           extra.get("side") if extra.get("side") in SIDES else _guess(name, SIDES, "left"),
                           colour, extra.get("diameter_mm", 6.5), clicks=extra.get("clicks") or {},
                           entry_mm=points[0], target_mm=points[1],
                           entry_gap_mm=_gap(extra.get("entry_gap_mm")), target_gap_mm=_gap(extra.get("target_gap_mm")))
        except (PlanningError, TypeError, ValueError) as e:
            raise MarkupsError(f"{here}: {e}") from None
        if name in names:
            raise MarkupsError(f"{here}: two lines have this name; rename one in Slicer")
        names.add(name)
        out.append(t)
    if not out:
        raise MarkupsError(f"{where}: holds no line markup (a trajectory is a Line with an entry and a target)")
    return out


def _gap(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None
