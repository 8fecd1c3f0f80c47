"""``fluoronav bench register``: one small case end to end, its keys and their units, and bad arguments."""
import json

import pytest

from app.cli import main


@pytest.mark.slow
def test_bench_register_json(capsys, tmp_path):
    fig = tmp_path / "overlay.png"
    assert main(["bench", "register", "--json", "--cases", "1", "--sweep", "none", "--size", "384",
                 "--room-spacing", "1.5", "--figure", str(fig)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["cases"] == 1 and out["refused"] == 0
    assert out["success_fraction"] == 1.0
    assert 0 <= out["median_target_error_mm"] < 2.0
    assert out["baseline_median_target_error_mm"] > 3.0       # the start was off; the registration fixed it
    assert out["seconds_per_case"] > 0 and out["cpu_seconds_per_case"] > 0
    assert fig.stat().st_size > 10_000


@pytest.mark.parametrize("argv,message", [(["--cases", "0"], "at least 1"), (["--sweep", "ten"], "commas"),
                                          (["--sweep", "90"], "0-40 mm"), (["--size", "16"], "--size")])
def test_bench_register_bad_arguments(capsys, argv, message):
    assert main(["bench", "register", *argv]) == 2
    assert message in capsys.readouterr().err
