"""Gertzbein-Robbins grading: screws built to breach by known amounts, sides, voxels, bad input."""
import numpy as np
import pytest

from core.planning.grading import GradingError, gr_grade, grade_plan, grade_trajectory
from core.simulation.phantom import make_spine_phantom

DIAMETER = 6.5


@pytest.fixture(scope="module")
def phantom():
    return make_spine_phantom(spacing_mm=2.0, levels=("L3", "L4"))


def _shifted(p, direction, breach):
    """Screw parallel to the ideal axis, moved so its surface passes ``breach`` mm beyond the
    outer cortex at the isthmus (the narrowest cross-section), along ``direction``."""
    semi = 0.5 * (p.width_mm if abs(direction @ p.lateral) > 0.5 else p.height_mm)
    offset = (semi - 0.5 * DIAMETER + breach) * direction
    return p.entry_mm + offset, p.target_mm + offset


@pytest.mark.parametrize("breach,grade", [(-0.5, "A"), (1.0, "B"), (3.0, "C"), (5.0, "D"), (7.0, "E")])
def test_known_breaches_give_the_grade_and_distance(phantom, breach, grade):
    for p in phantom.pedicles:
        for name, direction in (("lateral", p.lateral), ("medial", -p.lateral),
                                ("superior", p.superior), ("inferior", -p.superior)):
            entry, target = _shifted(p, direction, breach)
            g = grade_trajectory(entry, target, DIAMETER, p)
            assert g.grade == grade, (p.level, p.side, name)
            assert g.breach_mm == pytest.approx(max(breach, 0.0), abs=0.2)
            assert g.breach_side == (name if breach > 0 else None)
            assert g.acceptable == (grade in ("A", "B"))


def test_tilted_screw_breaches_medially_by_the_geometric_amount(phantom):
    """Screw pivoting about the entry toward the canal by angle a: in the cross-section at axial
    position s its axis is (s + L) tan a medial of the pedicle axis and its section is an ellipse
    of half width r / cos a, so the breach is max_s [(s + L) tan a + r / cos a - half_width(s)]."""
    p = phantom.pedicle("L4", "left")
    L = np.linalg.norm(p.isthmus_mm - p.entry_mm)
    r = 0.5 * DIAMETER
    for deg in (9.0, 12.0, 16.0):
        a = np.radians(deg)
        g = grade_trajectory(p.entry_mm, p.entry_mm + 50.0 * (np.cos(a) * p.axis - np.sin(a) * p.lateral),
                             DIAMETER, p)
        s = np.linspace(-p.half_length_mm, p.half_length_mm, 2001)
        expected = np.max((s + L) * np.tan(a) + r / np.cos(a) - p.half_axes(s)[0])
        assert g.breach_side == "medial"
        assert g.breach_mm == pytest.approx(expected, abs=0.01), deg


def test_breach_point_lies_outside_the_drawn_bone():
    ph = make_spine_phantom(spacing_mm=0.5, levels=("L3",), shape=(80, 120, 120), center_mm=(0.0, 15.0, 5.0))
    p = ph.pedicle("L3", "right")
    entry, target = _shifted(p, p.lateral, 3.0)
    g = grade_trajectory(entry, target, DIAMETER, p)
    assert g.grade == "C"
    inward = -p.lateral
    assert ph.volume.sample(g.breach_point_mm) < 100.0                     # in soft tissue
    assert ph.volume.sample(g.breach_point_mm + (3.0 + 0.4) * inward) > 400.0   # 3 mm in: cortex


def test_grade_plan_uses_the_named_pedicle(phantom):
    p = phantom.pedicle("L3", "right")
    g = grade_plan(phantom, "L3", "right", p.entry_mm, p.target_mm, DIAMETER)
    assert g.grade == "A" and g.level == "L3" and g.side == "right"
    assert g.length_in_pedicle_mm == pytest.approx(2 * p.half_length_mm, abs=0.2)
    # the right screw graded against the left pedicle misses it by far
    assert grade_plan(phantom, "L3", "left", p.entry_mm, p.target_mm, DIAMETER).grade == "E"


def test_plan_reports_a_screw_through_the_anterior_cortex(phantom):
    p, vt = phantom.pedicle("L4", "right"), phantom.levels["L4"]
    assert grade_plan(phantom, "L4", "right", p.entry_mm, p.target_mm, DIAMETER).body_breach_mm == 0.0
    s = np.arange(0.0, 40.0, 0.01)                  # anterior wall: where the axis leaves the bone
    wall = s[np.argmax(vt.bone_signed_distance(p.target_mm + s[:, None] * p.axis) > 0)]
    for beyond in (3.0, 8.0):
        g = grade_plan(phantom, "L4", "right", p.entry_mm, p.target_mm + (wall + beyond) * p.axis, DIAMETER)
        assert g.grade == "A"                                        # the pedicle itself is fine
        # the tip passes the wall by `beyond` on its axis, its rim by up to one radius more (curved wall)
        assert beyond - 0.05 <= g.body_breach_mm <= beyond + 0.5 * DIAMETER


def test_grade_boundaries():
    assert [gr_grade(b) for b in (0.0, 1.99, 2.0, 3.99, 4.0, 5.99, 6.0, 20.0)] == \
        ["A", "B", "C", "C", "D", "D", "E", "E"]


def test_rejects_non_finite_entry(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="entry"):
        grade_trajectory([np.nan, 0, 0], p.target_mm, DIAMETER, p)


def test_rejects_target_of_wrong_shape(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="target"):
        grade_trajectory(p.entry_mm, [1.0, 2.0], DIAMETER, p)


def test_rejects_coincident_entry_and_target(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="less than 1 mm"):
        grade_trajectory(p.entry_mm, p.entry_mm + 0.5 * p.axis, DIAMETER, p)


def test_rejects_bad_diameter(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="diameter"):
        grade_trajectory(p.entry_mm, p.target_mm, 0.0, p)


def test_rejects_something_else_than_a_pedicle(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="PedicleTruth"):
        grade_trajectory(p.entry_mm, p.target_mm, DIAMETER, {"width": 10})


def test_rejects_a_trajectory_that_misses_the_pedicle_region(phantom):
    p = phantom.pedicle("L3", "left")
    far = p.target_mm + 40.0 * p.axis              # entirely anterior of the body
    with pytest.raises(GradingError, match="does not pass through"):
        grade_trajectory(far, far + 20.0 * p.axis, DIAMETER, p)


def test_rejects_unknown_level_in_plan(phantom):
    p = phantom.pedicle("L3", "left")
    with pytest.raises(GradingError, match="not in this phantom"):
        grade_plan(phantom, "L1", "left", p.entry_mm, p.target_mm, DIAMETER)


def test_rejects_non_finite_breach():
    with pytest.raises(GradingError, match="finite"):
        gr_grade(float("nan"))
