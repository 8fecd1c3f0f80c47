"""core.formats.schema: every shipped file and every file the code writes satisfies its
schema; bad files are refused with one line naming the file, the JSON path and the fault,
through the loaders and through ``fluoronav locate``."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.calibration.cage import MIN_BALLS_PER_PLANE, CageFileError, load_cage
from core.calibration.calibration import (METHODS, CageCalibration, CalibrationFileError, PlaneFit,
                                          ViewCalibration)
from core.calibration.distortion import NoDistortion
from core.calibration.plate import PlateError, load_plate
from core.formats.files import write_json_atomic
from core.formats.schema import (MAX_DEPTH, SCHEMA_DIR, FileFormatError, load_json, load_schema, parse_json,
                                 validate)
from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import load_hybrid5
from core.planning.two_view import LEVELS, SIDES, PlanningError, plan_from_dict, read_plan
from resources import path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
from synthetic_shots import carm_geometry  # noqa: E402

KINDS = ("cage", "plate", "calib", "plan", "session", "carm_presets", "robot", "morphometry")
TARGET = np.array([12.0, -7.5, -130.0])          # mm in the cage frame, between the views' planes


def test_one_schema_per_kind_each_valid_2020_12():
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(f"{k}-1.schema.json" for k in KINDS)
    for kind in KINDS:
        s = load_schema(kind)          # checked against the 2020-12 meta-schema
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert s["properties"]["format"] == {"const": f"fluoronav.{kind}/1"}


@pytest.mark.parametrize("kind, folder", [("cage", "cages"), ("plate", "plates"), ("carm_presets", "carm"),
                                         ("robot", "robots"), ("morphometry", "phantom")])
def test_every_shipped_resource_file_is_valid(kind, folder):
    files = sorted(path(folder).glob("*.json"))
    assert files
    for f in files:
        d, _ = load_json(f, kind)
        assert d["format"] == f"fluoronav.{kind}/1"


def test_schema_constants_are_the_code_constants():
    """The limits written twice (schema, code) agree, so neither can drift alone."""
    cage = load_schema("cage")
    assert cage["properties"]["planes"]["items"]["properties"]["balls_mm"]["minItems"] == MIN_BALLS_PER_PLANE
    plan = load_schema("plan")["$defs"]["trajectory"]["properties"]
    assert tuple(plan["level"]["enum"]) == LEVELS and tuple(plan["side"]["enum"]) == SIDES
    assert tuple(load_schema("calib")["properties"]["method"]["enum"]) == METHODS
    from devices.carm import _PRESET_KEYS
    preset = load_schema("carm_presets")["properties"]["presets"]["additionalProperties"]
    assert set(preset["required"]) == _PRESET_KEYS
    from core.simulation.phantom.anatomy import CANONICAL_LEVELS
    assert tuple(load_schema("morphometry")["properties"]["levels"]["required"]) == tuple(CANONICAL_LEVELS)
    from app.session import WORKFLOW_STEPS
    from devices.base import DeviceStatus
    session = load_schema("session")["properties"]
    assert tuple(session["step"]["enum"][:-1]) == WORKFLOW_STEPS and session["step"]["enum"][-1] is None
    assert (set(session["devices"]["additionalProperties"]["properties"]["status"]["enum"])
            == {s.value for s in DeviceStatus})


# --- files the code writes ------------------------------------------------------------------
def truth_calibration(cage):
    """A CageCalibration built from known C-arm geometry (no shots): P of each view and the
    homography of each ball plane follow from the pinhole, so located points are exact."""
    views = {}
    for view in ("ap", "lat"):
        g = carm_geometry(view, angles_deg=(3, -2, 1))
        P = g.projection_matrix
        planes = []
        for p in cage.planes_for(view):
            H = np.column_stack([P[:, :3] @ p.axes.T, P[:, :3] @ p.origin_mm + P[:, 3]])
            uv = g.project(p.balls_mm)
            n = len(uv)
            planes.append(PlaneFit(p.id, p.origin_mm, p.axes, H, np.arange(n), uv, np.zeros(n), np.zeros(n), n))
        views[view] = ViewCalibration(view, g.shape, NoDistortion(), P, planes, {"balls_detected": 96})
    return CageCalibration("3d2d", views, {"name": cage.name, "file": cage.source, "sha256": cage.sha256},
                           "2026-12-02T12:00:00+00:00", {"view_angle_deg": 90.0, "not_measured": float("nan")})


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    cal = truth_calibration(load_cage(path("cages", "default.json")))
    return cal, cal.save(tmp_path_factory.mktemp("calib") / "calib.json")


def test_a_written_calibration_is_valid_and_locates_exactly(calib_file):
    cal, f = calib_file
    d, _ = load_json(f, "calib")
    assert d["figures"]["not_measured"] is None          # NaN is written as null: standard JSON
    back = CageCalibration.load(f)
    for method in METHODS:
        uv = cal.with_method(method).project(TARGET)
        p, gap = back.with_method(method).locate(uv["ap"], uv["lat"])
        assert np.linalg.norm(p - TARGET) < 1e-6 and gap < 1e-6


def test_written_plan_and_session_files_are_valid(tmp_path, calib_file):
    from app.session import Session
    from app.state.plans import PlanBook
    from core.imaging.fluoro_image import FluoroImage
    cal, _ = calib_file
    book = PlanBook(cal)
    tid = book.add("L3", "right")
    uv_e, uv_t = cal.project(TARGET), cal.project(TARGET + [0, 0, 40.0])
    for view in ("ap", "lat"):
        book.set_click(tid, "entry", view, uv_e[view])
        book.set_click(tid, "target", view, uv_t[view])
    f = write_json_atomic(tmp_path / "plan.json", book.to_dict())
    items, order, _, _ = plan_from_dict(read_plan(f))
    assert order == [tid] and np.allclose(items[tid].entry_mm, TARGET, atol=1e-6)

    s = Session(tmp_path / "sessions")
    s.set_image("ap", FluoroImage(np.zeros((16, 16), np.uint16), view="ap"))
    s.go_to_step("calibrate")
    record = s.save()
    d, _ = load_json(record, "session")
    assert d["images"]["ap"] == ["ap-001.dcm"]


# --- bad input: one line, the file, the JSON path, what is wrong --------------------------------
def _calib_mutations(d):
    big = copy.deepcopy(d)
    big["views"]["ap"]["planes"][0]["ball_idx"][3] = 10 ** 30
    return {
        "cage_is_a_number": ({**d, "cage": 5}, "$.cage: must be object, got an integer 5"),
        "figures_a_string": ({**d, "figures": "abc"}, "$.figures: must be object, got a string 'abc'"),
        "huge_index": (big, "$.views.ap.planes[0].ball_idx[3]: must be <= 100000"),
        "size_1e999": (json.dumps(d).replace('"image_shape": [512', '"image_shape": [1e999', 1),
                       "$.views.ap.image_shape[0]: is not a finite number"),
        "projection_all_zero": (_set(d, ["views", "lat", "P"], [[0.0] * 4] * 3),
                                "$.views.lat.P: is singular (a camera needs rank 3)"),
        "homography_all_zero": (_set(d, ["views", "ap", "planes", 1, "H_img_plane"], [[0.0] * 3] * 3),
                                "$.views.ap.planes[1].H_img_plane: is singular"),
        "unknown_distortion": (_set(d, ["views", "ap", "distortion"], {"kind": "spline"}),
                               "$.views.ap.distortion.kind: must be one of 'none', 'polynomial', 'local'"),
        "deep": ("[" * 100_000, f"nests 100000 levels deep (at most {MAX_DEPTH})"),
        "not_utf8": (b"\xff\xfe{\x00", "is not UTF-8 text"),
        "not_json": ("{views: 1}", "is not valid JSON"),
        "long_integer": ("1" * 5000, "holds an integer of thousands of digits"),
        "other_format": ({"format": "fluoronav.plan/1"}, "$.format: not a fluoronav calibration"),
        "a_list": ([1, 2], "$: not a fluoronav calibration (a list of format null"),
    }


def _set(d, keys, value):
    d = copy.deepcopy(d)
    x = d
    for k in keys[:-1]:
        x = x[k]
    x[keys[-1]] = value
    return d


def _write(p, content):
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


BAD_CALIBS = ("a_list", "cage_is_a_number", "deep", "figures_a_string", "homography_all_zero", "huge_index",
              "long_integer", "not_json", "not_utf8", "other_format", "projection_all_zero", "size_1e999",
              "unknown_distortion")


@pytest.fixture(scope="module")
def bad_calibs(calib_file, tmp_path_factory):
    _, f = calib_file
    cases = _calib_mutations(json.loads(f.read_text()))
    assert sorted(cases) == list(BAD_CALIBS)
    folder = tmp_path_factory.mktemp("bad")
    return {name: (_write(folder / f"{name}.json", c), msg) for name, (c, msg) in cases.items()}


@pytest.mark.parametrize("name", BAD_CALIBS)
def test_bad_calibration_is_one_line_naming_file_and_path(bad_calibs, name):
    f, msg = bad_calibs[name]
    with pytest.raises(CalibrationFileError) as e:
        CageCalibration.load(f)
    text = str(e.value)
    assert text.startswith(f"{f.name}: ") and msg in text and "\n" not in text and len(text) < 300
    assert text.endswith("re-run fluoronav calibrate")


def test_locate_refuses_bad_calibrations_in_one_line(bad_calibs):
    """Through the command line, as a technician sees it: exit 2, one line, no traceback."""
    from app.cli import main
    import contextlib
    import io
    for name, (f, msg) in sorted(bad_calibs.items()):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["locate", "--calib", str(f), "--ap", "100,200", "--lat", "300,250"])
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and msg in lines[0], (name, err.getvalue())


def test_locate_subprocess_has_no_traceback(bad_calibs):
    f, msg = bad_calibs["deep"]
    out = subprocess.run([sys.executable, "-m", "app.cli", "locate", "--calib", str(f), "--ap", "1,2",
                          "--lat", "3,4"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and msg in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("loader, error, content, msg", [
    (load_cage, CageFileError, {"format": "fluoronav.cage/1", "ball_diameter_mm": 4, "planes": "abc"},
     "$.planes: must be array, got a string 'abc'"),
    (load_cage, CageFileError, "[" * 100_000, "nests 100000 levels deep"),
    (load_cage, CageFileError, '{"format": "fluoronav.cage/1", "ball_diameter_mm": 1e999, "planes": []}',
     "$.ball_diameter_mm: is not a finite number"),
    (load_plate, PlateError, {"format": "fluoronav.plate/1", "ball_diameter_mm": 2, "balls_mm": [[0, "x"]] * 20},
     "$.balls_mm[0][1]: must be number, got a string 'x'"),
    (load_plate, PlateError, b"\x00\x9f", "is not UTF-8 text"),
    (load_hybrid5, KinematicsError, json.dumps({**json.loads(path("robots", "hybrid5.json").read_text()),
                                                "structure": {"l12_mm": "500"}}),
     "$.structure.l12_mm: must be number, got a string '500'"),
    (load_hybrid5, KinematicsError, json.loads(path("robots", "iiwa7_r800.json").read_text()),
     "$.kind: is 'serial_dh', expected 'hybrid5'"),
    (read_plan, PlanningError, {"format": "fluoronav.plan/1", "trajectories": [{"id": "a", "name": "L4 left",
                                "clicks": {"entry": {"ap": [1, 2, 3]}}}]},
     "$.trajectories[0].clicks.entry.ap: "),
    (read_plan, PlanningError, '{"format": "fluoronav.plan/1", "trajectories": [], "max_gap_mm": NaN}',
     "$.max_gap_mm: is not a finite number"),
])
def test_other_loaders_refuse_bad_files_in_one_line(tmp_path, loader, error, content, msg):
    f = _write(tmp_path / "file.json", content)
    with pytest.raises(error) as e:
        loader(f)
    text = str(e.value)
    assert text.startswith("file.json: ") and msg in text and "\n" not in text


def test_session_record_refuses_bad_files_in_one_line(tmp_path):
    from app.session import SessionError, read_session_record
    for content, msg in [
            ({"format": "fluoronav.session/1", "images": {"ap": ["ap-001.dcm", "ap-001.dcm"]}},
             "[$.images.ap: has repeated items]"),
            ({"format": "fluoronav.session/1", "images": {"lat": ["lat-1.dcm"]}},
             "[$.images.lat[0]: must be a shot file name like lat-001.dcm, got 'lat-1.dcm']"),
            ({"format": "fluoronav.session/1", "images": {}, "current": 3}, "[$.current: must be object"),
            ("[" * 100_000, "[nests 100000 levels deep")]:
        _write(tmp_path / "session.json", content)
        with pytest.raises(SessionError) as e:
            read_session_record(tmp_path)
        assert msg in str(e.value) and "\n" not in str(e.value)


def test_the_first_error_in_reading_order_is_named():
    """Deterministic: the first wrong key as written, children before their container's
    missing keys."""
    d = {"format": "fluoronav.plate/1", "ball_diameter_mm": -1, "balls_mm": []}
    with pytest.raises(FileFormatError, match=r"^p.json: \$.ball_diameter_mm: must be >= 0.2, got -1$"):
        validate(d, "plate", "p.json")
    d = {"balls_mm": [], "format": "fluoronav.plate/1", "ball_diameter_mm": -1}
    with pytest.raises(FileFormatError, match=r"^p.json: \$.balls_mm: must have at least 16 items, got 0$"):
        validate(d, "plate", "p.json")
    with pytest.raises(FileFormatError, match=r"^p.json: \$: is incomplete: lacks 'balls_mm'$"):
        validate({"format": "fluoronav.plate/1", "ball_diameter_mm": 2}, "plate", "p.json")


def test_a_long_value_is_shortened_in_the_message():
    d = {"format": "fluoronav.plate/1", "ball_diameter_mm": 2, "name": ["x" * 1000], "balls_mm": [[0, 0]] * 16}
    with pytest.raises(FileFormatError) as e:
        validate(d, "plate", "p.json")
    assert "$.name: must be string, got a list" in str(e.value) and len(str(e.value)) < 150


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert parse_json(json.dumps({"name": "[" * 1000}).encode(), "x.json") == {"name": "[" * 1000}


@pytest.mark.parametrize("command, option", [("locate", "--pairs"), ("project", "--points")])
def test_cli_input_files_are_read_with_the_same_bounds(calib_file, tmp_path, command, option):
    from app.cli import main
    import contextlib
    import io
    _, calib = calib_file
    f = _write(tmp_path / "in.json", "[" * 100_000)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([command, "--calib", str(calib), option, str(f)])
    assert code == 2 and err.getvalue().count("\n") == 1 and "nests 100000 levels deep" in err.getvalue()
