"""PlanBook: every edit undoable, drags merge, 3D follows the clicks, plans reload exactly."""
import json

import numpy as np
import pytest

from app.planning import PLAN_FORMAT, PlanFileError, PlanBook, load_plan_file
from core.geometry.cone_beam import ConeBeamGeometry
from core.planning.two_view import ConeBeamPair, PlanningError

ISO = np.array([0.0, 0.0, -140.0])


def carm(beam, up, sad=600.0, sid=1000.0, shape=(400, 400), spacing=0.4):
    beam = np.asarray(beam, float) / np.linalg.norm(beam)
    u = np.cross(beam, up)
    u /= np.linalg.norm(u)
    v = np.cross(beam, u)
    source = ISO - sad * beam
    origin = source + sid * beam - u * spacing * (shape[1] - 1) / 2 - v * spacing * (shape[0] - 1) / 2
    return ConeBeamGeometry(source, origin, u, v, (spacing, spacing), shape)


@pytest.fixture
def calib():
    return ConeBeamPair(carm([0, 0, 1], [0, 1, 0]), carm([1, 0, 0], [0, 0, 1]))


@pytest.fixture
def model(qapp, calib):
    return PlanBook(calib)


ENTRY, TARGET = ISO + [15.0, 20.0, 10.0], ISO + [5.0, 22.0, -30.0]


def plan_one(model, calib, entry=ENTRY, target=TARGET, **kw):
    tid = model.add(**kw)
    for kind, p in (("entry", entry), ("target", target)):
        uv = calib.project(p)
        model.set_click(tid, kind, "ap", uv["ap"][0])
        model.set_click(tid, kind, "lat", uv["lat"][0])
    return tid


def test_clicks_make_3d_points(model, calib):
    tid = plan_one(model, calib)
    t = model.get(tid)
    assert np.linalg.norm(np.subtract(t.entry_mm, ENTRY)) < 1e-6
    assert np.linalg.norm(np.subtract(t.target_mm, TARGET)) < 1e-6
    assert t.length_mm == pytest.approx(np.linalg.norm(TARGET - ENTRY), abs=1e-6)
    assert model.history.count() == 5 and model.gap_too_large(tid) == []


def test_undo_redo_every_step(model, calib):
    tid = plan_one(model, calib)
    states = []
    while model.history.can_undo():
        states.append(model.trajectories())
        model.history.undo()
    assert len(model) == 0 and model.selected == ""
    for expected in reversed(states):
        model.history.redo()
        assert model.trajectories() == expected
    assert model.get(tid).complete


def test_undo_partial_click_removes_3d(model, calib):
    tid = plan_one(model, calib)
    model.history.undo()  # target LAT click
    t = model.get(tid)
    assert t.target_mm is None and t.click("target", "ap") is not None and t.entry_mm is not None


def test_drag_merges_into_one_step(model, calib):
    tid = plan_one(model, calib)
    n = model.history.count()
    start = model.get(tid).click("entry", "ap")
    for i in range(1, 11):
        model.set_click(tid, "entry", "ap", (start[0] + i, start[1]), drag_token="drag-1")
    assert model.history.count() == n + 1
    assert model.get(tid).click("entry", "ap") == (start[0] + 10, start[1])
    model.history.undo()
    assert model.get(tid).click("entry", "ap") == start
    assert np.linalg.norm(np.subtract(model.get(tid).entry_mm, ENTRY)) < 1e-6


def test_two_drags_are_two_steps(model, calib):
    tid = plan_one(model, calib)
    n = model.history.count()
    model.set_click(tid, "entry", "ap", (100, 100), drag_token="a")
    model.set_click(tid, "entry", "ap", (101, 100), drag_token="a")
    model.set_click(tid, "entry", "ap", (150, 100), drag_token="b")
    assert model.history.count() == n + 2


def test_moving_one_click_off_the_epipolar_line_flags_gap(model, calib):
    tid = plan_one(model, calib)
    uv = calib.project(ENTRY)["lat"][0]
    model.set_click(tid, "entry", "lat", uv + [30, 0])  # 30 px along u: across the AP ray's line (along v is on it)
    assert model.gap_too_large(tid) == ["entry"]
    assert model.get(tid).entry_gap_mm > 2.0


@pytest.mark.parametrize("field,value", [("name", "L5 left screw"), ("level", "S1"), ("side", "right"),
                                         ("colour", "#123456"), ("diameter_mm", 7.5)])
def test_field_edits_undo(model, calib, field, value):
    tid = plan_one(model, calib)
    before = model.get(tid)
    model.set_fields(tid, **{field: value})
    assert getattr(model.get(tid), field) == value
    model.history.undo()
    assert model.get(tid) == before
    model.history.redo()
    assert getattr(model.get(tid), field) == value


def test_bad_field_value_rejected_and_not_pushed(model, calib):
    tid = plan_one(model, calib)
    n = model.history.count()
    with pytest.raises(PlanningError, match="level"):
        model.set_fields(tid, level="L7")
    assert model.history.count() == n


def test_unknown_field_rejected(model, calib):
    tid = plan_one(model, calib)
    with pytest.raises(PlanningError, match="editable fields"):
        model.set_fields(tid, entry_mm=(0, 0, 0))


def test_delete_and_undo_restores_position(model, calib):
    a = plan_one(model, calib, level="L3")
    b = plan_one(model, calib, level="L4")
    c = plan_one(model, calib, level="L5")
    removed = []
    model.trajectory_removed.connect(removed.append)
    model.remove(b)
    assert model.ids() == [a, c] and removed == [b]
    model.history.undo()
    assert model.ids() == [a, b, c] and model.get(b).level == "L4"


def test_default_names_and_colours(model):
    a, b = model.add("L4", "left"), model.add("L4", "left")
    assert model.get(a).name == "L4 left" and model.get(b).name == "L4 left 2"
    assert model.get(a).colour != model.get(b).colour


def test_a_given_name_follows_the_level_and_side_and_undo_puts_it_back(model, calib):
    tid = plan_one(model, calib, level="L4", side="left")
    changed = []
    model.trajectory_changed.connect(changed.append)
    model.set_fields(tid, level="L3")
    assert model.get(tid).name == "L3 left" and changed == [tid]   # one change: table and both labels redraw
    model.set_fields(tid, side="right")
    assert model.get(tid).name == "L3 right"
    model.history.undo()
    assert (model.get(tid).name, model.get(tid).side) == ("L3 left", "left")
    model.history.undo()
    assert (model.get(tid).name, model.get(tid).level) == ("L4 left", "L4")


def test_a_numbered_name_renumbers_at_its_new_level_and_never_collides(model):
    a, b = model.add("L4", "left"), model.add("L4", "left")      # "L4 left", "L4 left 2"
    c = model.add("L3", "left")                                   # "L3 left"
    model.set_fields(b, level="L3")
    assert model.get(b).name == "L3 left 2" and model.get(c).name == "L3 left"
    model.set_fields(a, level="L3")
    assert model.get(a).name == "L3 left 3"
    model.set_fields(c, level="L5")                               # its own name is no collision
    assert model.get(c).name == "L5 left"


@pytest.mark.parametrize("name", ["L4 left screw", "revision", "L4 left 0", "L4 lefty", "L4 left 2b"])
def test_a_hand_given_name_is_kept_when_the_level_changes(model, name):
    tid = model.add("L4", "left")
    model.set_fields(tid, name=name)
    model.set_fields(tid, level="L3", side="right")
    t = model.get(tid)
    assert (t.name, t.level, t.side) == (name, "L3", "right")


def test_renaming_and_changing_the_level_at_once_keeps_the_given_name(model):
    tid = model.add("L4", "left")
    model.set_fields(tid, name="L2 left", level="L5")   # what the surgeon typed wins
    assert model.get(tid).name == "L2 left" and model.get(tid).level == "L5"


def test_signals(model, calib, qtbot):
    with qtbot.waitSignal(model.selection_changed) as sel:
        tid = model.add()
    assert sel.args == [tid]
    with qtbot.waitSignal(model.trajectory_changed) as ch:
        model.set_click(tid, "entry", "ap", (10, 10))
    assert ch.args == [tid]


def _shifted(calib, dx_mm):
    T = np.eye(4)
    T[0, 3] = dx_mm
    return ConeBeamPair(*(g.transformed(T) for g in calib.geometry.values()))


def test_recalibrating_the_same_shots_recomputes_3d_from_clicks(model, calib):
    tid = plan_one(model, calib)
    model.set_calibration(_shifted(calib, 5.0), keep="clicks")
    assert np.allclose(np.subtract(model.get(tid).entry_mm, ENTRY), [5, 0, 0], atol=1e-6)
    assert model.history.count() == 0


def test_new_shots_keep_the_3d_plan_and_reproject_the_clicks(model, calib):
    tid = plan_one(model, calib)
    partial = model.add()
    model.set_click(partial, "entry", "ap", (200.0, 210.0))
    new = _shifted(calib, 5.0)  # the C-arm moved by 5 mm
    model.set_calibration(new)  # keep="3d"
    t = model.get(tid)
    assert np.linalg.norm(np.subtract(t.entry_mm, ENTRY)) < 1e-6
    assert np.linalg.norm(np.subtract(t.target_mm, TARGET)) < 1e-6
    np.testing.assert_allclose(t.click("entry", "lat"), new.project(ENTRY)["lat"][0], atol=1e-9)
    assert model.get(partial).click("entry", "ap") == (200.0, 210.0)  # no 3D yet: the click stays
    assert model.history.count() == 0


def test_bad_keep_rejected(model, calib):
    with pytest.raises(PlanningError, match="keep"):
        model.set_calibration(calib, keep="both")


def test_save_and_reload_exactly(model, calib, tmp_path, qapp):
    a = plan_one(model, calib, level="L4", side="left")
    plan_one(model, calib, entry=ENTRY + [-30, 0, 0], target=TARGET + [-20, 0, 0], level="L4", side="right")
    model.set_fields(a, diameter_mm=5.5, colour="#00ff00")
    model.select(a)
    path = model.save(tmp_path / "plans" / "plan.json")
    saved = json.loads(path.read_text())
    assert saved["format"] == PLAN_FORMAT and saved["frame"] == "cage"
    assert saved["calibration"]["type"] == "ConeBeamPair"
    other = PlanBook(calib)
    other.load(path)
    assert other.ids() == model.ids() and other.trajectories() == model.trajectories()
    assert other.selected == a and other.history.count() == 0
    no_calib = PlanBook(None)
    no_calib.load(path)  # without a calibration the saved 3D points are kept
    assert no_calib.trajectories() == model.trajectories()


def test_save_is_atomic_on_failure(model, calib, tmp_path, monkeypatch):
    plan_one(model, calib)
    path = model.save(tmp_path / "plan.json")
    before = path.read_text()
    import core.formats.files  # the disk fills up while the temporary file is being written
    monkeypatch.setattr(core.formats.files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["plan.json"]


@pytest.mark.parametrize("content,match", [
    ("{not json", "plan.json: is not valid JSON"),
    ('{"format": "fluoronav.plan/9", "trajectories": []}', r"plan.json: \$.format: not a fluoronav plan file"),
    ('{"format": "fluoronav.plan/1"}', r"\$: is incomplete: lacks 'trajectories'"),
    ('{"format": "fluoronav.plan/1", "trajectories": [{"name": "a"}]}', r"\$.trajectories\[0\]: is incomplete: lacks 'id'"),
    ('{"format": "fluoronav.plan/1", "trajectories": [{"id": "t1", "name": "a"}, {"id": "t1", "name": "b"}]}',
     r"\$.trajectories\[1\].id: 't1' appears twice"),
    ('{"format": "fluoronav.plan/1", "trajectories": [{"id": "t1", "name": "a", "level": "C2"}]}',
     r"\$.trajectories\[0\].level: must be one of"),
    ('{"format": "fluoronav.plan/1", "trajectories": [], "max_gap_mm": -1}', r"\$.max_gap_mm: must be > 0, got -1"),
])
def test_bad_plan_files(tmp_path, content, match):
    p = tmp_path / "plan.json"
    p.write_text(content)
    with pytest.raises(PlanFileError, match=match):
        load_plan_file(p)


def test_missing_plan_file(tmp_path):
    with pytest.raises(PlanFileError, match="cannot read plan file .*nope.json"):
        load_plan_file(tmp_path / "nope.json")


def test_failed_load_keeps_current_plan(model, calib, tmp_path):
    plan_one(model, calib)
    before = model.trajectories()
    p = tmp_path / "bad.json"
    p.write_text('{"format": "fluoronav.plan/1", "trajectories": [{"id": "x"}]}')
    with pytest.raises(PlanFileError):
        model.load(p)
    assert model.trajectories() == before


def test_import_with_a_calibration_gets_clicks_and_the_same_3d(model, calib, tmp_path):
    """Trajectories from a Slicer markups file: their clicks are the points' projections, the 3D stays."""
    from core.planning.markups import read_markups, write_markups
    from core.planning.two_view import Trajectory
    src = [Trajectory("L4 left", entry_mm=tuple(ENTRY), target_mm=tuple(TARGET)),
           Trajectory("L5 right", "L5", "right", entry_mm=tuple(ENTRY + 8.0), target_mm=tuple(TARGET + 8.0))]
    path, _ = write_markups(tmp_path / "p.mrk.json", src)
    plan_one(model, calib, entry=ENTRY - 20.0, name="L4 left")        # the same name: replaced
    ids = model.import_trajectories(read_markups(path))
    assert len(model) == 2 and [model.get(i).name for i in ids] == ["L4 left", "L5 right"]
    for tid, t in zip(ids, src):
        got = model.get(tid)
        assert np.linalg.norm(np.subtract(got.entry_mm, t.entry_mm)) < 1e-6
        assert np.linalg.norm(np.subtract(got.target_mm, t.target_mm)) < 1e-6
        assert np.allclose(got.click("entry", "ap"), calib.project(np.asarray(t.entry_mm))["ap"][0], atol=1e-9)
    model.history.undo()
    model.history.undo()
    assert np.linalg.norm(np.subtract(model.get(ids[0]).entry_mm, ENTRY - 20.0)) < 1e-6   # the old one is back
    with pytest.raises(PlanningError, match="must be a Trajectory"):
        model.import_trajectories([{"name": "x"}])
