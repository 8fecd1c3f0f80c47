"""The calibrate / locate / project command-line contract (DESIGN.md): exit codes, JSON
shapes, one-line errors, and accuracy against the synthetic ground truth."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from core.calibration.cage import load_cage
from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_dicom_xa, write_png16
from resources import path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "calibration"))
from synthetic_shots import carm_geometry, default_pair, plate_shot  # noqa: E402

CAGE = str(path("cages", "default.json"))
PLATE = str(path("plates", "default.json"))


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("shots")
    cage = load_cage(CAGE)
    pair = default_pair(cage, seed=4)
    files = {}
    for v, s in pair.items():
        files[v] = write_png16(FluoroImage(s["image"]), d / f"{v}.png")
    # the LAT shot also as a MONOCHROME1 DICOM (stored inverted)
    inv = FluoroImage(65535 - pair["lat"]["image"], photometric="MONOCHROME1", pixel_spacing_mm=(0.5, 0.5),
                      sid_mm=1000.0, view="lat")
    files["lat_dcm"] = write_dicom_xa(inv, d / "lat.dcm")
    plate = load_plate_balls()
    for v, s in pair.items():
        img, _ = plate_shot(plate, s["geometry"], None, rot_deg=5, seed=2)
        files[f"plate_{v}"] = write_png16(FluoroImage(img), d / f"plate_{v}.png")
    calib = d / "calib.json"
    assert main(["calibrate", "--cage", CAGE, "--ap", str(files["ap"]), "--lat", str(files["lat"]),
                 "--out", str(calib)]) == 0
    return pair, files, calib, d


def load_plate_balls():
    return np.asarray(json.loads(Path(PLATE).read_text())["balls_mm"], float)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrate_writes_file_and_summary(shots, capsys, tmp_path):
    _, files, _, _ = shots
    out_file = tmp_path / "sub" / "c.json"
    code, out, err = _run(capsys, "calibrate", "--cage", CAGE, "--ap", str(files["ap"]),
                          "--lat", str(files["lat_dcm"]), "--out", str(out_file))
    assert code == 0, err
    d = json.loads(out_file.read_text())
    assert d["format"] == "fluoronav.calib/1" and d["method"] == "3d2d"
    for pid in ("ap_1", "ap_2", "lat_1", "lat_2"):
        assert f"{pid}: matched" in out
    assert "no distortion correction" in out


def test_calibrate_with_plate_shots(shots, capsys, tmp_path):
    _, files, _, _ = shots
    code, out, err = _run(capsys, "calibrate", "--cage", CAGE, "--ap", str(files["ap"]), "--lat", str(files["lat"]),
                          "--plate", PLATE, "--plate-ap", str(files["plate_ap"]),
                          "--plate-lat", str(files["plate_lat"]), "--method", "2d2d",
                          "--out", str(tmp_path / "c.json"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["method"] == "2d2d"
    assert set(summary["figures"]["distortion"]) == {"ap", "lat"}


def test_locate_single_point_matches_truth(shots, capsys):
    pair, _, calib, _ = shots
    X = np.array([12.0, -20.0, -150.0])
    uv = {v: s["geometry"].project(X) for v, s in pair.items()}
    code, out, _ = _run(capsys, "locate", "--calib", str(calib), "--ap", f"{uv['ap'][0]},{uv['ap'][1]}",
                        "--lat", f"{uv['lat'][0]},{uv['lat'][1]}")
    assert code == 0
    d = json.loads(out)
    assert set(d) == {"point_mm", "ray_gap_mm"} and len(d["point_mm"]) == 3
    assert np.linalg.norm(np.array(d["point_mm"]) - X) < 0.3
    assert 0 <= d["ray_gap_mm"] < 0.3


def test_locate_pairs(shots, capsys, tmp_path):
    pair, _, calib, _ = shots
    X = np.array([[0.0, 0, -120], [30, -10, -180], [-25, 20, -100]])
    uv = {v: s["geometry"].project(X).tolist() for v, s in pair.items()}
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps(uv))
    code, out, _ = _run(capsys, "locate", "--calib", str(calib), "--pairs", str(f))
    d = json.loads(out)
    assert code == 0 and set(d) == {"points_mm", "ray_gap_mm"}
    assert np.array(d["points_mm"]).shape == (3, 3) and len(d["ray_gap_mm"]) == 3
    assert np.max(np.linalg.norm(np.array(d["points_mm"]) - X, axis=1)) < 0.3


def test_project_point_with_negative_numbers(shots, capsys):
    pair, _, calib, _ = shots
    code, out, _ = _run(capsys, "project", "--calib", str(calib), "--point", "-10.5,5,-140")
    d = json.loads(out)
    assert code == 0 and set(d) == {"ap", "lat"} and len(d["ap"]) == 2 and len(d["lat"]) == 2
    for v in ("ap", "lat"):
        truth = pair[v]["geometry"].project(np.array([-10.5, 5, -140]))
        assert np.linalg.norm(np.array(d[v]) - truth) < 0.3


def test_project_points_file(shots, capsys, tmp_path):
    _, _, calib, _ = shots
    f = tmp_path / "pts.json"
    f.write_text("[[0, 0, -140], [10, -5, -120]]")
    code, out, _ = _run(capsys, "project", "--calib", str(calib), "--points", str(f))
    d = json.loads(out)
    assert code == 0 and np.array(d["ap"]).shape == (2, 2) and np.array(d["lat"]).shape == (2, 2)


def _error(capsys, *argv):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fluoronav {argv[0]}: error: ")
    return lines[0]


def test_calibrate_errors(shots, capsys, tmp_path):
    _, files, _, d = shots
    out = str(tmp_path / "c.json")
    assert "cannot read cage" in _error(capsys, "calibrate", "--cage", str(tmp_path / "no.json"),
                                        "--ap", str(files["ap"]), "--lat", str(files["lat"]), "--out", out)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert "LAT image" in _error(capsys, "calibrate", "--cage", CAGE, "--ap", str(files["ap"]),
                                 "--lat", str(bad), "--out", out)
    assert "without --plate" in _error(capsys, "calibrate", "--cage", CAGE, "--ap", str(files["ap"]),
                                       "--lat", str(files["lat"]), "--plate-ap", str(files["plate_ap"]), "--out", out)
    blank = write_png16(FluoroImage(np.full((256, 256), 3000, np.uint16)), tmp_path / "blank.png")
    assert "AP shot" in _error(capsys, "calibrate", "--cage", CAGE, "--ap", str(blank),
                               "--lat", str(files["lat"]), "--out", out)
    assert not Path(out).exists()


def test_locate_and_project_errors(shots, capsys, tmp_path):
    _, _, calib, _ = shots
    c = str(calib)
    assert "either" in _error(capsys, "locate", "--calib", c, "--ap", "1,2")
    assert "2 comma-separated" in _error(capsys, "locate", "--calib", c, "--ap", "1,2,3", "--lat", "1,2")
    f = tmp_path / "p.json"
    f.write_text('{"ap": [[1, 2]], "lat": [[1, 2], [3, 4]]}')
    assert "equal length" in _error(capsys, "locate", "--calib", c, "--pairs", str(f))
    other = tmp_path / "o.json"
    other.write_text('{"format": "fluoronav.plan/1"}')
    assert "not a fluoronav calibration" in _error(capsys, "locate", "--calib", str(other), "--ap", "1,2",
                                                   "--lat", "3,4")
    assert "either" in _error(capsys, "project", "--calib", c)
    assert "3 comma-separated" in _error(capsys, "project", "--calib", c, "--point", "1,2")
    g = tmp_path / "pts.json"
    g.write_text('[[1, 2]]')
    assert "[x, y, z]" in _error(capsys, "project", "--calib", c, "--points", str(g))


def test_project_refuses_a_point_at_the_source(shots, capsys):
    from core.calibration import CageCalibration
    from core.calibration.models import camera_centre
    _, _, calib, _ = shots
    C = camera_centre(CageCalibration.load(calib).views["ap"].P)
    assert "cannot be projected" in _error(capsys, "project", "--calib", str(calib),
                                           "--point", ",".join(f"{x:.6f}" for x in C))


_SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "calibration-samples"


@pytest.mark.skipif(not (_SAMPLES / "flat-cage-a" / "truth.json").exists(), reason="calibration-samples not beside the checkout")
def test_bench_calib_reads_shots_of_another_simulator():
    """bench calib's second image source: a flat-panel sample of the independent simulator, scored
    against its own truth (targets and ball centres): sub-0.1 mm, no wrong match."""
    from app.bench.calib import _run_sample
    acc = {}
    _run_sample(_SAMPLES / "flat-cage-a", acc)
    a = acc["samples_flat"]["3d2d"]
    e = np.concatenate(a["e"])
    assert np.sqrt(np.mean(e ** 2)) < 0.1 and a["w"] == 0 and a["m"] >= 0.9 * a["v"]
