"""The plan's trajectories as 3D Slicer line markups (``core.formats.markups``), and back.

One ``Line`` markup per complete trajectory, named after it: ``entry`` then ``target``.
Positions are in the patient's LPS, the frame DICOM and Slicer's files use: the plan's cage
frame turned by ``PatientAxes`` (the cage mounted over a prone patient: cage +x = left,
+z = posterior, -y = superior) with the cage origin as the LPS origin. The OpenIGTLink
stream (``app.igtl``) sends the same LPS points turned to RAS (Slicer's scene), so a
markup loaded in Slicer and the streamed tool line up.

What a line markup cannot say (level, side, colour, diameter, the clicks, the ray gaps)
rides along under the markup's ``"fluoronav"`` key; a file saved by Slicer without it still
imports: level and side are read from the name ("L4 left") when they can be (else L4,
left), the colour from the markup's display colour.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from core.formats.markups import (LPS_TO_RAS, MARKUPS_SCHEMA, MarkupLine, MarkupsError, lines_from_document,
                                  markups_document, read_markup_lines, write_markup_lines)
from core.planning.two_view import LEVELS, SIDES, PatientAxes, PlanningError, Trajectory

__all__ = ["MarkupsError", "MARKUPS_SCHEMA", "LPS_TO_RAS", "T_lps_cage", "markups_from_trajectories",
           "trajectories_from_markups", "write_markups", "read_markups"]


def T_lps_cage(axes: PatientAxes = PatientAxes()) -> np.ndarray:
    """4x4 mapping cage-frame mm to patient LPS mm (rows: the cage's left, posterior, superior)."""
    T = np.eye(4)
    T[:3, :3] = np.vstack([np.asarray(getattr(axes, a), float) for a in ("left", "posterior", "superior")])
    return T


def _apply(T: np.ndarray, p) -> tuple:
    return tuple(float(x) for x in T[:3, :3] @ np.asarray(p, float) + T[:3, 3])


def _lines(trajectories, axes: PatientAxes) -> tuple[list[MarkupLine], list[str]]:
    T = T_lps_cage(axes)
    lines, skipped = [], []
    for t in trajectories:
        if not isinstance(t, Trajectory):
            raise MarkupsError(f"a trajectory to export must be a Trajectory, got {type(t).__name__}")
        if not t.complete:
            skipped.append(t.name)
            continue
        extra = {"level": t.level, "side": t.side, "colour": t.colour, "diameter_mm": t.diameter_mm,
                 "clicks": t.to_dict()["clicks"], "entry_gap_mm": t.entry_gap_mm, "target_gap_mm": t.target_gap_mm}
        lines.append(MarkupLine(t.name, _apply(T, t.entry_mm), _apply(T, t.target_mm), t.colour, extra))
    return lines, skipped


def markups_from_trajectories(trajectories, axes: PatientAxes = PatientAxes()) -> tuple[dict, list[str]]:
    """(markups document, names of the trajectories left out because they lack a 3D entry or target)."""
    lines, skipped = _lines(trajectories, axes)
    return markups_document(lines), skipped


def write_markups(path, trajectories, axes: PatientAxes = PatientAxes()) -> tuple[Path, list[str]]:
    """Export the complete trajectories to ``path`` (atomically); (path, names left out).
    MarkupsError when none of them has both its 3D points."""
    lines, skipped = _lines(trajectories, axes)
    if not lines:
        raise MarkupsError("no trajectory has both a 3D entry and target to export: click them in AP and LAT first")
    return write_markup_lines(path, lines), skipped


def read_markups(path, axes: PatientAxes = PatientAxes()) -> list[Trajectory]:
    """The line markups of a Slicer ``.mrk.json`` file as trajectories (cage frame); MarkupsError, one line."""
    return _trajectories(read_markup_lines(path), axes, str(path))


def trajectories_from_markups(doc, axes: PatientAxes = PatientAxes(), where: str = "markups") -> list[Trajectory]:
    """Trajectories from a markups document (its ``Line`` markups)."""
    return _trajectories(lines_from_document(doc, where), axes, where)


def _guess(name: str, choices, default: str) -> str:
    for token in re.split(r"[\s_\-]+", name):
        for c in choices:
            if token.lower() == c.lower():
                return c
    return default


def _gap(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _trajectories(lines, axes: PatientAxes, where: str) -> list[Trajectory]:
    T_cage_lps = np.linalg.inv(T_lps_cage(axes))
    out = []
    for line in lines:
        x = line.extra
        try:
            out.append(Trajectory(
                line.name, x.get("level") if x.get("level") in LEVELS else _guess(line.name, LEVELS, "L4"),
                x.get("side") if x.get("side") in SIDES else _guess(line.name, SIDES, "left"),
                x.get("colour") or line.colour or "#ffb000", x.get("diameter_mm", 6.5), clicks=x.get("clicks") or {},
                entry_mm=_apply(T_cage_lps, line.entry), target_mm=_apply(T_cage_lps, line.target),
                entry_gap_mm=_gap(x.get("entry_gap_mm")), target_gap_mm=_gap(x.get("target_gap_mm"))))
        except (PlanningError, TypeError, ValueError) as e:
            raise MarkupsError(f"{where}: line {line.name!r}: {e}") from None
    return out
