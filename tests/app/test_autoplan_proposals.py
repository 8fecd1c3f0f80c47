"""Auto-plan proposals enter the plan only when accepted, as editable, undoable trajectories."""
import numpy as np
import pytest

from app.autoplan import accept_proposals, propose_trajectories
from app.state.plans import PlanBook, planning_calibration
from core.registration.ssm.cases import make_case
from core.registration.ssm.fit import autoplan
from core.registration.ssm.model import shape_model


@pytest.fixture(scope="module")
def fitted():
    case = make_case("L4", "asymmetry", seed=5, image_px=384, spacing_mm=1.5)
    return case, autoplan(shape_model("L4", 16, 0, 2.0), case.calibration, case.clicks)


def test_proposals_are_not_in_the_plan_until_accepted(fitted):
    case, result = fitted
    book = PlanBook(planning_calibration(case.calibration))
    proposals = propose_trajectories(result)
    assert len(book) == 0 and [p.side for p in proposals] == ["left", "right"]
    ids = accept_proposals(book, proposals)
    assert len(book) == 2
    for tid, side in zip(ids, ("left", "right")):
        t = book.get(tid)
        assert t.name == f"L4 {side} (auto-plan)" and t.level == "L4"
        # relocated from its reprojected clicks: the same 3D points, to the calibration's precision
        assert np.linalg.norm(np.subtract(t.entry_mm, result.trajectories[side].entry_mm)) < 0.2
        assert np.linalg.norm(np.subtract(t.target_mm, result.trajectories[side].target_mm)) < 0.2
        # its clicks are the points' projections: draggable in both shots like any clicked trajectory
        uv = case.calibration.project(np.array(result.trajectories[side].entry_mm))
        for view in ("ap", "lat"):
            assert np.allclose(t.clicks["entry"][view], uv[view], atol=0.01)
    book.history.undo()
    assert len(book) == 1
