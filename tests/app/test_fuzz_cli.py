"""Fuzzed input through the command line (issue 15): ``fluoronav calibrate`` with damaged
shots and cage files, ``fluoronav locate`` with damaged calibrations, each a subprocess as a
technician runs it: a non-zero exit, one line on stderr, never a traceback or a hang."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from resources import path

_TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TESTS / "core" / "imaging"))
sys.path.insert(0, str(_TESTS / "core" / "formats"))
from dicom_mutants import mutants  # noqa: E402
from test_fuzz_files import file_mutants  # noqa: E402
from test_schema import truth_calibration  # noqa: E402

from core.calibration.cage import load_cage  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIME_GUARD_S = 60          # a process start and a failed calibration take ~2 s; a hang takes forever


def _run(args):
    try:
        out = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                             timeout=TIME_GUARD_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text.strip().splitlines()[-1])
        return True
    except (ValueError, IndexError):
        return False


def _check(cases):
    """Run (label, args) in parallel; the failures as lines."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda c: (c[0], _run(c[1])), cases))
    failures = []
    for label, out in results:
        if out is None:
            failures.append(f"{label}: over {TIME_GUARD_S} s")
        elif out.returncode == 0 and label.startswith("calib ") and not out.stderr and _is_json(out.stdout):
            continue                    # a mutant that is still a usable calibration: it locates
        elif out.returncode == 0 or "Traceback" in out.stderr or len(out.stderr.strip().splitlines()) != 1:
            failures.append(f"{label}: exit {out.returncode}, stderr {out.stderr[-300:]!r}")
    return failures


def test_calibrate_refuses_damaged_shots_in_one_line(tmp_path):
    every = [(label, data) for label, data in mutants(str(tmp_path), seed=15) if data is not None]
    pick = [every[i] for i in np.random.default_rng(15).choice(len(every), 30, replace=False)]
    cage = path("cages", "default.json")
    cases = []
    for i, (label, data) in enumerate(pick):
        f = tmp_path / f"m{i:02d}.dcm"
        f.write_bytes(data)
        cases.append((label, ["calibrate", "--cage", str(cage), "--ap", str(f), "--lat", str(f),
                              "--out", str(tmp_path / f"calib{i:02d}.json")]))
    failures = _check(cases)
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures)
    assert not list(tmp_path.glob("calib*.json"))          # nothing written for a refused shot


def test_locate_and_calibrate_refuse_damaged_files_in_one_line(tmp_path):
    rng = np.random.default_rng(17)
    cal = truth_calibration(load_cage(path("cages", "default.json")))
    calib = json.loads(cal.save(tmp_path / "calib.json").read_text())
    cage = json.loads(Path(path("cages", "default.json")).read_text())
    shot = next(data for label, data in mutants(str(tmp_path), seed=15))   # any readable-or-not shot
    (tmp_path / "shot.dcm").write_bytes(shot)
    cases = []
    for i, (label, text) in enumerate(file_mutants(calib, rng, 6)):
        f = tmp_path / f"calib{i:02d}.json"
        f.write_text(text)
        cases.append((f"calib {label}", ["locate", "--calib", str(f), "--ap", "100,200", "--lat", "300,250"]))
    for i, (label, text) in enumerate(file_mutants(cage, rng, 6)):
        f = tmp_path / f"cage{i:02d}.json"
        f.write_text(text)
        cases.append((f"cage {label}", ["calibrate", "--cage", str(f), "--ap", str(tmp_path / "shot.dcm"),
                                        "--lat", str(tmp_path / "shot.dcm"), "--out", str(tmp_path / "out.json")]))
    failures = _check(cases)
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures)
