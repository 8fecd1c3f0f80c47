"""``fluoronav bench safety`` with small counts: the aimed commands keep every limit, STOP
is never undone, and the sensor comes back; the full counts are the benchmark's."""
import argparse

import pytest

from app.bench import safety


def test_aimed_commands_with_late_cycles_keep_every_limit():
    c = safety.run_aimed(300, seed=1, late_fraction=0.02)
    assert c["commands"] >= 290 and c["starts"] == 21
    assert c["late_cycles_injected"] > 50 and c["stops"] > 5
    assert c["dropped_messages"] > 0 and c["reordered_messages"] > 0
    assert c["limit_violations"] == 0, c["violations"]
    assert c["motion_after_stop"] == 0 and c["cycles_after_stop"] > 100
    assert c["stop_undone"] == 0 and c["false_faults"] == 0, c["faults"]
    # every cycle beyond the bound while moving was a fault
    assert c["late_beyond_bound"] > 0 and c["late_faults"] == c["late_beyond_bound"]
    # aimed: the tool came within 0.1 mm of a face; it never left by more than encoder noise
    assert c["closest_to_box_mm"] < 0.1
    assert c["max_box_excursion_mm"] <= safety.BOX_TOL_MM


def test_start_poses_sit_at_the_faces_and_limits():
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from core.robot.limits import cartesian_limits_from_doc
    kin, cart = load_hybrid5(), cartesian_limits_from_doc(safety._robot_doc())
    starts = dict(safety.start_poses(kin, cart))
    assert len(starts) == 21
    assert starts["box y+"][1] == pytest.approx(cart.box_upper[1] - 1.0)
    assert starts["box x-"][0] == pytest.approx(cart.box_lower[0] + 1.0)
    q = kin.joints_for_pose(starts["joint theta5+"])
    assert q[4] > kin.joint_limits.upper[4] - 0.6       # as near as the box allows


def test_process_races_never_undo_a_stop():
    out = safety.run_process_races(3)
    assert out["races"] == 3 and out["motion_after_stop"] == 0 and out["stop_undone"] == 0
    assert out["resets_acknowledged"] == 3 and out["discarded"] >= 6
    assert out["late_cycles_injected"] == 1


def test_sensor_recovers_from_the_three_failures():
    out = safety.run_sensor(trials=1)
    assert out["sensor_failures_injected"] == 3 and out["sensor_not_recovered"] == 0
    assert out["spikes_refused"] == out["spikes"] == 1
    # the figure is 0.5 s; 1.5 s leaves room for a loaded test machine
    assert out["sensor_recovery_max_s"] < 1.5


def test_bench_reports_the_design_keys(monkeypatch):
    monkeypatch.setattr(safety, "run_process_races", lambda n, seed=0: {
        "races": 0, "motion_after_stop": 0, "stop_undone": 0, "late_cycles_injected": 0,
        "stop_latency_ms": 0.3, "stop_latency_max_ms": 0.5})
    monkeypatch.setattr(safety, "run_sensor", lambda n, seed=0: {
        "sensor_recovery_max_s": 0.1, "sensor_not_recovered": 0, "spikes": 1, "spikes_refused": 1})
    parser = argparse.ArgumentParser()
    safety.add_arguments(parser)
    out = safety.run(parser.parse_args(["--commands", "42"]))
    for key in ("commands", "limit_violations", "motion_after_stop", "late_cycles_injected",
                "max_box_excursion_mm", "stop_latency_ms"):
        assert key in out
    assert out["goals_met"] is False             # 42 commands are not the 10,000 asked for
