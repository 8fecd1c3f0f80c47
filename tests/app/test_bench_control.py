"""``fluoronav bench control`` runs briefly and reports its figures."""
import argparse

from app.bench import control


def test_short_control_bench_reports_figures():
    parser = argparse.ArgumentParser()
    control.add_arguments(parser)
    args = parser.parse_args(["--seconds", "1", "--load", "none", "--stops", "3"])
    out = control.run(args)
    for key in ("loop_hz", "period_p50_ms", "period_p99_ms", "period_max_ms", "stop_latency_ms"):
        assert key in out
    assert out["loop_hz"] > 500                       # the goal is 1 kHz; loaded CI machines vary
    assert 0.9 < out["period_p50_ms"] < 1.1
    assert out["stops_timed"] == 3 and out["stop_latency_ms"] < 5.0
    assert out["baseline_thread"]["cycles"] > 500
