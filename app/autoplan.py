"""Auto-plan into the plan book: the fitted vertebra's two trajectories become PROPOSALS that
the surgeon accepts (then edits like any clicked trajectory) or discards; nothing enters the
plan unreviewed. Qt-free: a GUI button, a script or a test calls the same two functions.
"""
from __future__ import annotations

from core.planning.two_view import Trajectory
from core.registration.ssm.fit import AutoPlanResult

__all__ = ["propose_trajectories", "accept_proposals"]

_COLOURS = {"left": "#e04040", "right": "#3080e0"}


def propose_trajectories(result: AutoPlanResult, diameter_mm: float = 5.0) -> list[Trajectory]:
    """The fit's trajectories as plan records (cage frame), named "<level> <side> (auto-plan)"."""
    out = []
    for side in ("left", "right"):
        t = result.trajectories[side]
        out.append(Trajectory(name=f"{result.level} {side} (auto-plan)", level=result.level, side=side,
                              colour=_COLOURS[side], diameter_mm=float(diameter_mm),
                              entry_mm=tuple(float(x) for x in t.entry_mm),
                              target_mm=tuple(float(x) for x in t.target_mm)))
    return out


def accept_proposals(book, proposals: list[Trajectory]) -> list[str]:
    """Put the surgeon-accepted proposals into the plan (one undo step each; with a calibration their
    clicks become the points' projections, so dragging them edits them as usual); their ids."""
    return book.import_trajectories(proposals)
