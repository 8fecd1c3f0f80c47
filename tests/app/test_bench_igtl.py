"""``fluoronav bench igtl``: its figures come from poses the pyigtl client really received."""
import json

from app.cli import main


def test_bench_igtl_json(capsys):
    assert main(["bench", "igtl", "--json", "--seconds", "0.5", "--rate", "80", "--no-baseline"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the newest pose replaces an unsent one, so a busy machine receives fewer, never more
    assert 2 <= out["received"] <= out["sent"] and out["pose_rate_hz"] > 0
    assert out["stream_call_ms"]["p50"] is not None        # every one of its robot states became a pose
    assert 0 < out["latency_ms"]["p50"] <= out["latency_ms"]["p95"] <= out["latency_ms"]["max"]
    # the app's chain: control process -> shared memory -> feed thread -> link -> a client process;
    # every pose counted there was matched to the control cycle it came from
    for case in ("idle", "under_load"):
        app = out["app"][case]
        assert 2 <= app["received"] <= app["sent"], case
        assert 0 < app["latency_ms"]["p50"] <= app["latency_ms"]["p95"] <= app["latency_ms"]["max"], case
    assert out["app_pose_rate_hz"] == out["app"]["under_load"]["rate_hz"]


def test_bench_igtl_bad_arguments(capsys):
    assert main(["bench", "igtl", "--seconds", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
