"""Fuzzed project files never crash a loader (issue 15): cage, plate, calibration, plan and
session files with wrong types, NaN, infinities, huge numbers and indices, negative sizes,
missing keys, truncations and deep nesting are loaded or refused with the loader's typed
error in one line; a calibration that loads is usable (``locate``/``project`` answer or
refuse with CalibrationError)."""
import collections
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from core.calibration.cage import CageFileError, load_cage
from core.calibration.calibration import CageCalibration, CalibrationError, CalibrationFileError
from core.calibration.plate import PlateError, load_plate
from core.formats.files import write_json_atomic
from core.planning.two_view import PlanningError, read_plan
from resources import path
from test_schema import TARGET, truth_calibration

# what replaces a value: wrong types, non-finite and huge numbers, negative sizes, empty containers
_VALUES = [None, True, "abc", "", 5, -1, 0, -4.0, 1e308, 10 ** 30, 2 ** 63, [], {}, [[]], ["x"], {"a": 1},
           "NaN", "Infinity", "1e999", "-1e999"]
_RAW_TOKENS = {"NaN": "NaN", "Infinity": "Infinity", "1e999": "1e999", "-1e999": "-1e999"}   # written unquoted


def _paths(doc, prefix=()):
    """Every (path) to a value in the document, in a stable order."""
    out = [prefix]
    if isinstance(doc, dict):
        for k in doc:
            out += _paths(doc[k], prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):         # the first few items are enough; lists are long
            out += _paths(v, prefix + (i,))
    return out


def _set(doc, where, value):
    d = copy.deepcopy(doc)
    if not where:
        return value
    x = d
    for k in where[:-1]:
        x = x[k]
    if value is _DELETE:
        if isinstance(x, dict):
            del x[where[-1]]
        else:
            x.pop(where[-1])
    else:
        x[where[-1]] = value
    return d


_DELETE = object()


def _text(doc) -> str:
    text = json.dumps(doc)
    for token, raw in _RAW_TOKENS.items():       # JSON's own non-finite spellings, unquoted
        text = text.replace(f'"{token}"', raw)
    return text


def file_mutants(doc, rng, n):
    """``n`` seeded mutants of a valid document, as JSON text (label, text)."""
    paths = _paths(doc)
    text = json.dumps(doc)
    for k in range(n):
        kind = k % 10
        if kind == 8:
            cut = int(rng.integers(0, len(text)))
            yield f"truncate at {cut}", text[:cut]
            continue
        if kind == 9:
            depth = int(rng.choice([33, 1000, 100_000]))
            where = paths[int(rng.integers(1, len(paths)))]
            yield f"nest {depth} at {where}", _text(_set(doc, where, "@@")).replace('"@@"', "[" * depth + "]" * depth)
            continue
        where = paths[int(rng.integers(1, len(paths)))]
        if kind == 7:
            yield f"delete {where}", _text(_set(doc, where, _DELETE))
            continue
        value = _VALUES[int(rng.integers(0, len(_VALUES)))]
        yield f"set {where} = {value!r}", _text(_set(doc, where, value))


def _docs(tmp_path):
    cal = truth_calibration(load_cage(path("cages", "default.json")))
    calib = json.loads(cal.save(tmp_path / "calib.json").read_text())
    from app.state.plans import PlanBook
    book = PlanBook(cal)
    tid = book.add("L3", "right")
    uv_e, uv_t = cal.project(TARGET), cal.project(TARGET + [0, 0, 40.0])
    for view in ("ap", "lat"):
        book.set_click(tid, "entry", view, uv_e[view])
        book.set_click(tid, "target", view, uv_t[view])
    plan = json.loads(json.dumps(book.to_dict(), default=float))
    return {"cage": json.loads(Path(path("cages", "default.json")).read_text()),
            "plate": json.loads(Path(path("plates", "default.json")).read_text()),
            "calib": calib, "plan": plan}


def _use_calibration(cal):
    """A loaded calibration must answer: project, then locate the projections."""
    try:
        uv = cal.project(TARGET)
        p, gap = cal.locate(uv["ap"], uv["lat"])
        assert np.all(np.isfinite(p)) and np.isfinite(gap)
    except CalibrationError:
        pass


LOADERS = {"cage": (load_cage, CageFileError, None), "plate": (load_plate, PlateError, None),
           "calib": (CageCalibration.load, CalibrationFileError, _use_calibration),
           "plan": (read_plan, PlanningError, None)}


def _plan_book_loader(tmp_path):
    """The app's plan loader (File → Open plan, resume): the plan book of the truth calibration."""
    from app.state.plans import PlanBook, PlanFileError
    cal = truth_calibration(load_cage(path("cages", "default.json")))

    def load(f):
        book = PlanBook(cal)
        book.load(f)
        return book
    return load, PlanFileError, None


def test_fuzzed_project_files_are_loaded_or_refused_in_one_line(tmp_path):
    rng = np.random.default_rng(15)
    docs = _docs(tmp_path)
    docs["plan_book"] = docs["plan"]
    counts, failures = collections.Counter(), []
    for kind, doc in docs.items():
        load, error, use = LOADERS[kind] if kind != "plan_book" else _plan_book_loader(tmp_path)
        f = tmp_path / f"{kind}.json"
        for label, text in file_mutants(doc, rng, 120):
            f.write_text(text)
            try:
                obj = load(f)
                if use is not None:
                    use(obj)
                counts[f"{kind} loaded"] += 1
            except error as e:
                counts[f"{kind} refused"] += 1
                if "\n" in str(e) or f.name not in str(e):
                    failures.append(f"{kind} {label}: not one line naming the file: {str(e)[:200]!r}")
            except Exception as e:
                failures.append(f"{kind} {label}: {type(e).__name__}: {str(e)[:150]}")
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(summary)
    assert not failures, f"{len(failures)} failures ({summary}):\n" + "\n".join(failures[:20])
    assert all(counts[f"{k} refused"] > 50 for k in docs), summary


def test_fuzzed_session_records_refuse_in_one_line(tmp_path):
    from app.session import Session, SessionError, read_session_record
    from core.imaging.fluoro_image import FluoroImage
    s = Session(tmp_path / "sessions")
    s.set_image("ap", FluoroImage(np.zeros((16, 16), np.uint16), view="ap"))
    s.go_to_step("calibrate")
    record = Path(s.save())
    doc = json.loads(record.read_text())
    rng = np.random.default_rng(16)
    counts, failures = collections.Counter(), []
    for k, (label, text) in enumerate(file_mutants(doc, rng, 150)):
        record.write_text(text)
        try:
            read_session_record(record.parent)
            counts["read"] += 1
            resumed = Session(tmp_path / f"fresh{k}").resume(record.parent)   # what gui --resume does
            assert isinstance(resumed.summary, str) and "\n" not in resumed.summary
            counts["resumed"] += 1
        except SessionError as e:
            counts["refused"] += 1
            if "\n" in str(e):
                failures.append(f"{label}: {str(e)!r}")
        except Exception as e:
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:150]}")
    print("session records:", dict(counts))
    assert not failures, "\n".join(failures[:20])
    assert counts["refused"] > 50, dict(counts)
