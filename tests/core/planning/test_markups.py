"""Slicer markups export/import: against Slicer's own schema (vendored), round trip, RAS, bad files."""
import json
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft7Validator

from core.planning.markups import (LPS_TO_RAS, MarkupsError, T_lps_cage, markups_from_trajectories, read_markups,
                                   trajectories_from_markups, write_markups)
from core.planning.two_view import PatientAxes, Trajectory

SCHEMA = Path(__file__).resolve().parents[2] / "data" / "slicer" / "markups-schema-v1.0.3.json"


def _plan(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, (level, side) in enumerate([("L4", "left"), ("L4", "right"), ("L5", "left")]):
        e = rng.uniform(-60, 60, 3)
        clicks = {"entry": {"ap": [100.5 + i, 200.25], "lat": [300.0, 310.125]}, "target": {"ap": None, "lat": None}}
        out.append(Trajectory(f"{level} {side}", level, side, ["#ffb000", "#00c8ff", "#ff5fd2"][i], 5.5 + i,
                              clicks=clicks, entry_mm=tuple(e), target_mm=tuple(e + rng.uniform(-40, 40, 3)),
                              entry_gap_mm=0.25 * i, target_gap_mm=None))
    return out


@pytest.fixture(scope="module")
def validator():
    return Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))


def test_export_validates_against_slicer_schema(validator, tmp_path):
    plan = _plan() + [Trajectory("S1 left", "S1", "left")]      # no 3D yet: left out, said so
    path, skipped = write_markups(tmp_path / "plan.mrk.json", plan)
    doc = json.loads(path.read_text())
    errors = sorted(validator.iter_errors(doc), key=str)
    assert errors == []
    assert skipped == ["S1 left"]
    assert [m["name"] for m in doc["markups"]] == ["L4 left", "L4 right", "L5 left"]
    for m, t in zip(doc["markups"], plan):
        assert m["type"] == "Line" and m["coordinateSystem"] == "LPS"
        assert [cp["label"] for cp in m["controlPoints"]] == ["entry", "target"]
        assert {cp["positionStatus"] for cp in m["controlPoints"]} == {"defined"}
        # default mounting: cage +x = left, +z = posterior, -y = superior
        x, y, z = t.entry_mm
        assert m["controlPoints"][0]["position"] == pytest.approx([x, z, -y], abs=1e-12)


def test_the_schema_is_slicers_and_catches_a_bad_file(validator):
    doc, _ = markups_from_trajectories(_plan())
    doc["markups"][0]["coordinateSystem"] = "XYZ"
    doc["markups"][1]["controlPoints"][0]["positionStatus"] = "placed"
    assert len(list(validator.iter_errors(doc))) >= 2


def test_round_trip_identical(tmp_path):
    plan = _plan(3)
    path, _ = write_markups(tmp_path / "p.mrk.json", plan)
    back = read_markups(path)
    assert len(back) == len(plan)
    for a, b in zip(plan, back):
        assert np.allclose(a.entry_mm, b.entry_mm, atol=1e-9, rtol=0)
        assert np.allclose(a.target_mm, b.target_mm, atol=1e-9, rtol=0)
        assert (a.name, a.level, a.side, a.colour, a.diameter_mm, a.clicks, a.entry_gap_mm, a.target_gap_mm) == \
               (b.name, b.level, b.side, b.colour, b.diameter_mm, b.clicks, b.entry_gap_mm, b.target_gap_mm)


def test_round_trip_with_a_tilted_mounting(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    axes = PatientAxes(left=(c, s, 0.0), posterior=(0.0, 0.0, 1.0), superior=(s, -c, 0.0))
    plan = _plan(5)
    back = read_markups(write_markups(tmp_path / "p.mrk.json", plan, axes)[0], axes)
    for a, b in zip(plan, back):
        assert np.allclose(a.target_mm, b.target_mm, atol=1e-9, rtol=0)
    # the file holds LPS: the same point read with the default mounting lands elsewhere
    other = read_markups(tmp_path / "p.mrk.json")
    assert np.linalg.norm(np.subtract(other[0].target_mm, plan[0].target_mm)) > 1.0


def test_ras_file_is_converted_as_slicer_saves_it():
    """A line drawn in Slicer and saved in RAS, without fluoronav's extras."""
    lps_entry, lps_target = np.array([12.0, -30.0, 45.0]), np.array([20.0, 5.0, 40.0])
    ras = [list(LPS_TO_RAS[:3, :3] @ p) for p in (lps_entry, lps_target)]
    doc = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                      "Schema/markups-schema-v1.0.0.json#",
           "markups": [{"type": "Fiducial", "controlPoints": [{"position": [0, 0, 0]}]},
                       {"type": "Line", "name": "L3 right", "coordinateSystem": "RAS",
                        "controlPoints": [{"id": "1", "label": "L-1", "position": ras[0], "positionStatus": "defined"},
                                          {"id": "2", "label": "L-2", "position": ras[1], "positionStatus": "defined"}],
                        "display": {"color": [0.0, 1.0, 0.0]}}]}
    (t,) = trajectories_from_markups(doc)
    T_cage_lps = np.linalg.inv(T_lps_cage())
    assert np.allclose(t.entry_mm, T_cage_lps[:3, :3] @ lps_entry, atol=1e-12)
    assert np.allclose(t.target_mm, T_cage_lps[:3, :3] @ lps_target, atol=1e-12)
    assert (t.level, t.side, t.colour) == ("L3", "right", "#00ff00")


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe not text", "UTF-8"),
    (b"{\"markups\": [", "not valid JSON"),
    (b"[1, 2]", "no 'markups' list"),
    (b'{"@schema": "x", "markups": []}', "not a Slicer markups v1"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": []}', "no line markup"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", '
     b'"controlPoints": [{"position": [0, 0, 0]}]}]}', "exactly 2 control points"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", "coordinateSystem": '
     b'"IJK", "controlPoints": []}]}', "coordinateSystem"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", "controlPoints": '
     b'[{"position": [0, 0, NaN]}, {"position": [1, 2, 3]}]}]}', "3 finite numbers"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", "controlPoints": '
     b'[{"position": [0, 0, 0], "positionStatus": "preview"}, {"position": [1, 2, 3]}]}]}', "not placed"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", "controlPoints": '
     b'[{"position": [0, 0, 0]}, {"position": [0.1, 0, 0]}]}, {"type": "Line", "name": "a", "controlPoints": '
     b'[{"position": [0, 0, 0]}, {"position": [0.1, 0, 0]}]}]}', "two lines have this name"),
    (b'{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Line", "name": "a", "fluoronav": '
     b'{"diameter_mm": 99}, "controlPoints": [{"position": [0, 0, 0]}, {"position": [1, 2, 3]}]}]}', "diameter"),
])
def test_bad_files_give_one_line(tmp_path, content, says):
    p = tmp_path / "bad.mrk.json"
    p.write_bytes(content)
    with pytest.raises(MarkupsError) as e:
        read_markups(p)
    assert says in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_missing_file_and_nothing_to_export(tmp_path):
    with pytest.raises(MarkupsError, match="file not found"):
        read_markups(tmp_path / "none.mrk.json")
    with pytest.raises(MarkupsError, match="no trajectory has both"):
        write_markups(tmp_path / "x.mrk.json", [Trajectory("L4 left")])
    assert not (tmp_path / "x.mrk.json").exists()
