"""Path following in the control loop (Align): only while the dead-man is held, stopped by
its release within one period's command, resumed where it stopped, aborted by STOP, the
insertion only after the approach arrived, bad paths refused with their typed reason."""
import math
import time

import numpy as np
import pytest

from core.navigation.align import plan_alignment
from devices.control_loop import FOLLOW, IDLE, STOPPED, PathError, PathRefusal, check_path
from devices.robot_controller import ControllerConfig, RobotController
from test_robot_controller import make_loop, run

PATH_DT = 0.01


def tip(kin, q):
    return kin.forward(q)[:3, 3]


def plan_for(lp, offset=(12.0, -8.0, 6.0), tilt=(0.08, -0.05)):
    """An alignment 14-16 mm and 5.4° from the tool's pose now, inside the workspace."""
    kin = lp.kin
    T = kin.forward(lp.q)
    d = T[:3, 2] + np.array([tilt[0], tilt[1], 0.0])
    d /= np.linalg.norm(d)
    entry = T[:3, 3] + np.asarray(offset) + 20.0 * d
    return plan_alignment(entry, entry + 40.0 * d, kin, q_current=lp.q.copy())


def heartbeat(lp):
    if int(round(lp.clock.t * 1000)) % 50 == 0:
        lp.handle(("deadman",), lp.clock.t)


def follow_events(lp, kind):
    return [p for k, p in lp.events if k == kind]


def hold_until_arrived(lp, seconds):
    lp.handle(("follow_hold", True), lp.clock.t)
    end = lp.clock.t + seconds
    while lp.clock.t < end and not lp.follow_state()["arrived"]:
        run(lp, 0.05, heartbeat)


def test_approach_arrives_within_0_01_mm_of_the_planned_pose():
    lp = make_loop(period=0.005)
    plan = plan_for(lp)
    _, Q, _ = plan.motion.samples(PATH_DT)
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)
    st = lp.follow_state()
    assert lp.mode == FOLLOW and st == {"kind": "approach", "progress": 0.0, "arrived": False, "paused": True,
                                        "reason": "hold the dead-man to approach", "id": None}
    run(lp, 0.3)                                   # loaded, not held: nothing moves
    assert np.linalg.norm(tip(lp.kin, lp.robot.true_q) - tip(lp.kin, Q[0])) < 0.01
    progress = []
    lp.handle(("follow_hold", True), lp.clock.t)
    for _ in range(40):
        run(lp, 0.05, heartbeat)
        progress.append(lp.follow_state()["progress"])
        if lp.follow_state()["arrived"]:
            break
    st = lp.follow_state()
    assert st["arrived"] and st["progress"] == 1.0 and st["paused"] and st["reason"] == "arrived"
    assert lp.mode == IDLE and follow_events(lp, "follow_arrived") == ["approach"]
    assert all(b >= a for a, b in zip(progress, progress[1:]))
    # the true (noise-free) robot, nominal model: the tool tip and axis where the plan puts them
    T_true, T_plan = lp.kin.forward(lp.robot.true_q), plan.T_base_tool
    assert np.linalg.norm(T_true[:3, 3] - T_plan[:3, 3]) < 0.01
    assert math.degrees(math.acos(min(1.0, T_true[:3, 2] @ T_plan[:3, 2]))) < 0.01
    # the motion took about the planned time (not more than the settling on top)
    assert len(progress) * 0.05 <= plan.motion.duration_s + 0.6


def test_release_stops_within_one_period_and_rehold_resumes_where_it_stopped():
    lp = make_loop()                               # 1 ms: the period is what is counted
    plan = plan_for(lp)
    _, Q, _ = plan.motion.samples(PATH_DT)
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)
    lp.handle(("follow_hold", True), lp.clock.t)
    run(lp, 0.25, heartbeat)                       # cruising
    jl = lp.kin.joint_limits
    v0 = lp.qd_cmd.copy()
    assert np.max(np.abs(v0) / jl.velocity) > 0.2
    p_release = lp.follow_state()["progress"]
    lp.handle(("follow_hold", False), lp.clock.t)
    speeds = []
    lp.clock.t += lp.timing.period_s
    lp.cycle(lp.clock.t)                           # one period after the release:
    assert np.all(lp.want == 0)                    # the loop asks for zero ...
    st = lp.follow_state()
    assert st["paused"] and st["reason"].startswith("released")
    speeds.append(np.max(np.abs(lp.qd_cmd) / jl.acceleration))
    n_brake = int(math.ceil(np.max(np.abs(v0) / (jl.acceleration * lp.timing.period_s)))) + 1
    for _ in range(n_brake + 5):                   # ... and the limiter brakes at its deceleration
        lp.clock.t += lp.timing.period_s
        lp.cycle(lp.clock.t)
        speeds.append(np.max(np.abs(lp.qd_cmd) / jl.acceleration))
    assert np.all(np.diff(speeds) <= 1e-12) and speeds[0] < np.max(np.abs(v0) / jl.acceleration)
    stopped_at = next(i for i, s in enumerate(speeds) if s == 0) + 1
    assert stopped_at <= n_brake
    run(lp, 0.3)                                   # released: stays where it stopped
    q_rest = lp.robot.true_q
    run(lp, 0.2)
    assert np.linalg.norm(tip(lp.kin, lp.robot.true_q) - tip(lp.kin, q_rest)) < 0.005
    p_paused = lp.follow_state()["progress"]
    assert p_release <= p_paused < 1.0             # moved on by the braking distance only
    lp.handle(("follow_hold", True), lp.clock.t)   # re-held: from there to the end
    first = []
    run(lp, 0.02, lambda l: first.append(np.linalg.norm(l.want[:3])))
    assert lp.follow_state()["progress"] >= p_paused and not lp.follow_state()["paused"]
    assert first[0] < 5.0                          # no jump back to where it was released
    hold_until_arrived(lp, 3.0)
    assert lp.follow_state()["arrived"]
    assert np.linalg.norm(tip(lp.kin, lp.robot.true_q) - plan.T_base_tool[:3, 3]) < 0.01


def test_lost_heartbeat_pauses_the_path():
    lp = make_loop(period=0.005)
    _, Q, _ = plan_for(lp).motion.samples(PATH_DT)
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)
    lp.handle(("follow_hold", True), lp.clock.t)   # held, but no heartbeat follows
    run(lp, 0.3)
    assert not lp.follow_state()["paused"]
    run(lp, 0.3)                                   # 0.4 s after the hold: let go
    st = lp.follow_state()
    assert st["paused"] and "heartbeat" in st["reason"] and np.all(lp.want == 0)
    run(lp, 0.3)
    assert np.all(lp.qd_cmd == 0) and lp.mode == FOLLOW and st["progress"] < 1.0


def test_stop_mid_path_aborts_it_and_a_new_path_is_needed_after_reset():
    lp = make_loop(period=0.005)
    plan = plan_for(lp)
    _, Q, _ = plan.motion.samples(PATH_DT)
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)
    lp.handle(("follow_hold", True), lp.clock.t)
    run(lp, 0.25, heartbeat)
    lp.stop(lp.clock.t)
    assert lp.mode == STOPPED and np.all(lp.qd_cmd == 0)
    st = lp.follow_state()
    assert st["paused"] and not st["arrived"] and st["reason"].startswith("aborted by STOP")
    run(lp, 0.3, heartbeat)                        # the heartbeat goes on: nothing moves
    assert lp.mode == STOPPED and np.all(lp.qd_cmd == 0)
    lp.handle(("reset",), lp.clock.t)
    run(lp, 0.02)
    assert lp.mode == IDLE
    lp.events.clear()
    lp.handle(("follow_hold", True), lp.clock.t)   # the old path does not come back
    run(lp, 0.2, heartbeat)
    assert lp.mode == IDLE and any("no path" in m for k, m in lp.events if k == "refused")
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)   # planned before: starts elsewhere
    assert follow_events(lp, "follow_refused")[-1]["kind"] == PathRefusal.START_AWAY.value
    plan2 = plan_alignment(plan.entry_mm, plan.target_mm, lp.kin, q_current=lp.q.copy())
    _, Q2, _ = plan2.motion.samples(PATH_DT)
    lp.handle(("follow", "approach", Q2, PATH_DT), lp.clock.t)
    hold_until_arrived(lp, 3.0)
    assert lp.follow_state()["arrived"]
    assert np.linalg.norm(tip(lp.kin, lp.robot.true_q) - plan.T_base_tool[:3, 3]) < 0.01


def test_insert_only_after_the_approach_arrived_and_on_its_own_hold():
    from app.robot_controller_client import insertion_samples
    lp = make_loop(period=0.005)
    plan = plan_for(lp)
    _, Q, _ = plan.motion.samples(PATH_DT)
    QI = insertion_samples(lp.kin, plan.insertion, PATH_DT, speed_mm_s=20.0, accel_mm_s2=100.0, depth_mm=12.0)
    lp.handle(("follow", "insert", QI, PATH_DT), lp.clock.t)      # before any approach
    refused = follow_events(lp, "follow_refused")
    assert refused and refused[-1]["kind"] == PathRefusal.START_AWAY.value
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)

    def press(number):                            # the client repeats a press every 50 ms
        return lambda l: int(round(l.clock.t * 1000)) % 50 == 0 and l.handle(("follow_hold", True, number),
                                                                               l.clock.t)

    lp.handle(("follow_hold", True, 1), lp.clock.t)
    run(lp, 0.2, press(1))                                          # half way
    lp.handle(("follow", "insert", QI, PATH_DT), lp.clock.t)
    assert follow_events(lp, "follow_refused")[-1]["kind"] == PathRefusal.START_AWAY.value
    for _ in range(60):
        run(lp, 0.05, press(1))
        if lp.follow_state()["arrived"]:
            break
    assert lp.follow_state()["arrived"] and lp.follow_state()["kind"] == "approach"
    lp.handle(("follow", "insert", QI, PATH_DT), lp.clock.t)
    assert len(follow_events(lp, "follow_refused")) == 2
    st = lp.follow_state()
    assert st["kind"] == "insert" and st["paused"] and st["progress"] == 0.0
    lp.events.clear()
    run(lp, 0.5, press(1))                        # the approach's press goes on: no insertion
    assert np.linalg.norm(tip(lp.kin, lp.robot.true_q) - plan.insertion.start_mm) < 0.01
    assert lp.follow_state()["paused"]
    refused = [m for k, m in lp.events if k == "refused"]
    assert len(refused) == 1 and "release it and press again" in refused[0]
    lp.handle(("follow_hold", True, 2), lp.clock.t)    # its own press
    for _ in range(60):
        run(lp, 0.05, press(2))
        if lp.follow_state()["arrived"]:
            break
    assert lp.follow_state()["arrived"]
    T = lp.kin.forward(lp.robot.true_q)
    assert np.linalg.norm(T[:3, 3] - plan.insertion.tip_at(12.0)) < 0.01
    assert np.linalg.norm(np.cross(T[:3, 2], plan.direction)) < 1e-4      # on the planned line
    # a jog after arrival: the approach no longer holds, an insertion is refused as not arrived
    lp2 = make_loop(period=0.005)
    plan2 = plan_for(lp2)
    _, Q2, _ = plan2.motion.samples(PATH_DT)
    lp2.handle(("follow", "approach", Q2, PATH_DT), lp2.clock.t)
    hold_until_arrived(lp2, 3.0)
    lp2.handle(("step_task", np.array([0.2, 0, 0, 0, 0]), "base"), lp2.clock.t)
    run(lp2, 0.5)
    QI2 = insertion_samples(lp2.kin, plan2.insertion, PATH_DT, 20.0, 100.0, depth_mm=5.0)
    lp2.handle(("follow", "insert", QI2, PATH_DT), lp2.clock.t)
    assert follow_events(lp2, "follow_refused")[-1]["kind"] == PathRefusal.NOT_ARRIVED.value


def _bad_paths(lp):
    kin, q = lp.kin, lp.q.copy()
    line = q + np.outer(np.linspace(0, 1, 50), [2.0, 0, 0, 0, 0])     # 2 mm in 0.5 s
    nan = line.copy()
    nan[7, 2] = np.nan
    far = line.copy()
    far[-1, 0] = kin.joint_limits.upper[0] + 1.0
    jump = line.copy()
    jump[20:] += [1.5, 0, 0, 0, 0]                  # 1.5 mm in 10 ms: 150 mm/s
    kink = np.vstack([np.repeat(q[None], 10, 0), q + np.outer(np.arange(1, 30), [0.55, 0, 0, 0, 0])])
    return [("approach", line[:, :4], PATH_DT, PathRefusal.SHAPE),
            ("approach", line[:1], PATH_DT, PathRefusal.SHAPE),
            ("approach", nan, PATH_DT, PathRefusal.NOT_FINITE),
            ("approach", line, 0.0, PathRefusal.PERIOD),
            ("approach", line, float("nan"), PathRefusal.PERIOD),
            ("approach", far, PATH_DT, PathRefusal.JOINT_RANGE),
            ("approach", jump, PATH_DT, PathRefusal.DISCONTINUOUS),
            ("approach", kink, PATH_DT, PathRefusal.DISCONTINUOUS),     # 0 -> 55 mm/s in one step
            ("approach", line + [3.0, 0, 0, 0, 0], PATH_DT, PathRefusal.START_AWAY),
            ("retract", line, PATH_DT, PathRefusal.KIND),
            ("insert", line, PATH_DT, PathRefusal.NOT_ARRIVED)]


def test_bad_paths_are_refused_with_their_typed_reason_and_nothing_moves():
    lp = make_loop(period=0.005)
    q0 = lp.robot.true_q
    for kind, Q, dt, why in _bad_paths(lp):
        lp.events.clear()
        lp.handle(("follow", kind, Q, dt), lp.clock.t)
        refused = follow_events(lp, "follow_refused")
        assert [r["kind"] for r in refused] == [why.value], (why, refused)
        line = refused[0]["message"]
        assert "\n" not in line and len(line) < 200 and lp.mode == IDLE and lp.follow_state() is None
        if why is not PathRefusal.NOT_ARRIVED and why is not PathRefusal.START_AWAY:
            with pytest.raises(PathError) as e:            # the same check on the client's side
                check_path(lp.kin, kind, Q, dt)
            assert e.value.kind is why
    lp.handle(("follow_hold", True), lp.clock.t)
    run(lp, 0.2, heartbeat)
    assert np.linalg.norm(lp.robot.true_q - q0) < 1e-9
    # messages name the joint and the figure
    lp.events.clear()
    lp.handle(("follow", "approach", _bad_paths(lp)[5][1], PATH_DT), lp.clock.t)
    assert "joint l11 at 701.00 mm, outside [220.00 mm, 700.00 mm]" in follow_events(lp, "follow_refused")[0]["message"]


def test_the_limiter_still_clips_a_path_faster_than_the_tool_may_go():
    """A straight joint path at 0.95 of the slides' speed moves the tool faster than its 50 mm/s:
    the limiter holds the tool to it (the P term catches up) and the path still arrives."""
    lp = make_loop(period=0.005)
    kin, q = lp.kin, lp.q.copy()
    v = 0.95 * kin.joint_limits.velocity[:3]
    n = 40
    ramp = np.minimum(np.arange(n + 1) * PATH_DT * 3.0, 1.0)          # 0.33 s to full speed
    steps = np.cumsum(np.r_[0, ramp[1:]])[:, None] * PATH_DT * np.r_[v, 0, 0]
    Q = q + steps
    lp.handle(("follow", "approach", Q, PATH_DT), lp.clock.t)
    assert lp.mode == FOLLOW, lp.events
    fastest = [0.0]
    seen = set()

    def each(l):
        heartbeat(l)
        fastest[0] = max(fastest[0], np.linalg.norm(kin.pose_jacobian(l.q)[:3] @ l.qd_cmd))
        seen.update(l.reasons)

    lp.handle(("follow_hold", True), lp.clock.t)
    end = lp.clock.t + 4.0
    while lp.clock.t < end and not lp.follow_state()["arrived"]:
        run(lp, 0.05, each)
    assert "tool speed" in seen and fastest[0] <= 50.0 * 1.001
    assert lp.follow_state()["arrived"]
    assert np.linalg.norm(tip(kin, lp.robot.true_q) - tip(kin, Q[-1])) < 0.01


# -- through the control process ------------------------------------------------------------

def test_process_follows_a_path_only_while_held():
    c = RobotController(ControllerConfig(sensor_noise=False))
    c.start()
    try:
        time.sleep(0.05)
        q = c.latest()["q"]
        line = q + np.outer(np.linspace(0, 1, 51), [3.0, 0, 0, 0, 0])     # 3 mm in 0.5 s
        c.send("follow", "approach", line, PATH_DT)
        time.sleep(0.3)
        assert np.abs(c.latest()["q"][0] - q[0]) < 0.05                   # not held: still
        msgs = [m for m in c.drain() if m.get("follow")]
        assert msgs and msgs[-1]["follow"]["paused"] and msgs[-1]["follow"]["kind"] == "approach"
        end = time.monotonic() + 20.0              # generous: a loaded machine stalls the loop
        arrived = False
        while time.monotonic() < end and not arrived:
            c.send("follow_hold", True, 1)         # the client's repeated press
            time.sleep(0.05)
            arrived = any(m.get("follow") and m["follow"]["arrived"] for m in c.drain())
        assert arrived
        assert c.latest()["q"][0] == pytest.approx(q[0] + 3.0, abs=0.01)
    finally:
        c.close()
