"""``fluoronav bench safety``: the robot's limits, STOP and force-sensor recovery, aimed.

Three parts, each counting what went wrong instead of timing anything:

1. ``aimed``: the control loop (``devices.control_loop``) on the simulated robot and
   sensor, driven cycle by cycle with a simulated clock so that every run is the same.
   Random command sequences biased towards the limits start near each joint limit and
   each face of the workspace box (and at home): jogs and steps towards the nearest
   limit, hand-guiding pushes towards it, moves, speed changes, releases, STOP/Reset/jog
   races (a Reset and a jog queued just before a STOP, a jog after it without Reset).
   Late cycles of 10-30 ms are injected, a few beyond the loop's bound (each must be a
   fault), and the command channel drops and reorders messages. Every cycle checks the
   *true* robot (no encoder noise) against the joint ranges, joint speeds, tool speeds
   and the box, and after every STOP that no command moves and no joint speeds up.
2. ``process``: STOP/Reset/jog races through the real control process, as the GUI's
   client sends them (``reset(); jog_joint(...); stop()`` back to back), with injected
   late cycles: no command after the STOP, travel within the braking distance, STOP
   latency (request to zero command in the loop).
3. ``sensor``: the ATI Net F/T driver against the fake Net F/T server on loopback:
   sequence restart, sensor reboot, sensor unreachable at connect, with dropped and
   reordered packets; the time from the stream resuming to the first good reading;
   a corrupt record (+-2147 N) must be refused.
"""
from __future__ import annotations

import math
import socket
import time

import numpy as np

from devices.base import DeviceError, FaultKind
from devices.force_sensor import seconds_until_reading

DESCRIPTION = ("robot limits and STOP under aimed random commands with late cycles and lost or "
               "reordered messages; force-sensor recovery against a fake Net F/T")

# the true pose (no encoder noise) against the real box: the loop holds its measured pose a
# margin inside (ten sigma of the encoder noise); these tolerances are only rounding
BOX_TOL_MM, BOX_TOL_RAD = 1e-3, 1e-5
JOINT_TOL = 1e-6
SPEED_TOL = 1.02                            # tool speed: the limit holds at the reference pose
LATE_S = (0.010, 0.030)


def add_arguments(parser) -> None:
    parser.add_argument("--commands", type=int, default=10000, help="aimed commands (part 1)")
    parser.add_argument("--late-fraction", type=float, default=0.01,
                        help="fraction of cycles that run 10-30 ms late (part 1)")
    parser.add_argument("--races", type=int, default=30, help="STOP/Reset/jog races (part 2)")
    parser.add_argument("--sensor-trials", type=int, default=3,
                        help="rounds of the three sensor failures (part 3)")
    parser.add_argument("--seed", type=int, default=0)


class _Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def _robot_doc():
    import json

    from resources import path
    with open(path("robots", "hybrid5.json")) as f:
        return json.load(f)


def start_poses(kin, cart, margin_mm=1.0, margin_rad=math.radians(0.5)):
    """(name, pose) near each face of the box and each joint limit, and home; a joint limit
    that the box hides is approached as far as the box allows."""
    home = np.r_[_robot_doc()["home_pose"]["xyz_mm"], 0.0, 0.0]
    margin = np.array([margin_mm] * 3 + [margin_rad] * 2)
    out = [("home", home)]
    axes = ("x", "y", "z", "theta_x", "theta_y")
    for i, a in enumerate(axes):
        for side, bound in (("-", cart.box_lower[i] + margin[i]), ("+", cart.box_upper[i] - margin[i])):
            X = home.copy()
            for f in np.linspace(1.0, 0.0, 41):          # as near the face as reachable
                X[i] = home[i] + f * (bound - home[i])
                try:
                    kin.joints_for_pose(X)
                    break
                except Exception:
                    continue
            out.append((f"box {a}{side}", X.copy()))
    jl = kin.joint_limits
    q_home = kin.joints_for_pose(home)
    for i, name in enumerate(kin.joint_names):
        m = margin_rad if kin.revolute[i] else margin_mm
        for side, lim in (("-", jl.lower[i] + m), ("+", jl.upper[i] - m)):
            best = q_home.copy()
            for f in np.linspace(0.0, 1.0, 81):
                q = q_home.copy()
                q[i] = q_home[i] + f * (lim - q_home[i])
                try:
                    X = kin.pose(q)
                    if (np.all(X >= cart.box_lower) and np.all(X <= cart.box_upper)
                            and kin.singularity_margin(q) > 2 * cart.min_singularity_margin):
                        best = q
                except Exception:
                    pass
            out.append((f"joint {name}{side}", kin.pose(best)))
    return out


def _outside(X, lo, hi):
    return np.maximum(lo - X, 0) + np.maximum(X - hi, 0)


class _Aimed:
    """One start pose: a loop, a command channel with loss and reordering, the checks."""

    def __init__(self, X0, rng, counts, late_fraction, seed):
        from devices.robot_controller import ControllerConfig, _build
        self.clock = _Clock()
        self.lp = _build(ControllerConfig(assume_identified_tool=True, home_pose=list(X0),
                                          seed=seed), self.clock)
        self.kin, self.cart = self.lp.kin, self.lp.limiter.cart
        self.rng, self.c, self.late_fraction = rng, counts, late_fraction
        self.channel: list = []                 # (epoch, cmd) not yet delivered
        self.held = None                        # a message that will arrive after the next
        self.epoch = 0                          # the sender's epoch (as the client keeps it)
        self.stop_pending = False
        self.watch_stop = False                 # between a STOP and its Reset: nothing moves
        self.prev_speed = None
        self.hand = np.zeros(6)
        self.lp.cycle(self.clock.t)
        self.lp.events.clear()
        self.X0 = np.asarray(X0, float)

    # -- the channel ---------------------------------------------------------------------
    def send(self, *cmd):
        self.c["commands"] += 1
        r = self.rng.random()
        if r < 0.03:
            self.c["dropped_messages"] += 1
            return
        if r < 0.06 and self.held is None:
            self.c["reordered_messages"] += 1
            self.held = (self.epoch, cmd)        # overtaken by the next message
            return
        self.channel.append((self.epoch, cmd))
        if self.held is not None:
            self.channel.append(self.held)
            self.held = None

    def stop(self):
        """STOP goes through shared memory: the loop sees it before anything queued."""
        self.c["commands"] += 1
        self.c["stops"] += 1
        self.epoch += 1
        self.stop_pending = True

    # -- one cycle ---------------------------------------------------------------------
    def cycle(self, late_ok=True):
        lp, c = self.lp, self.c
        dt = lp.timing.period_s
        if late_ok and self.rng.random() < self.late_fraction:
            dt = float(self.rng.uniform(*LATE_S))
            c["late_cycles_injected"] += 1
        self.clock.t += dt
        now = self.clock.t
        if self.stop_pending:                   # the control process's order: STOP first
            self.stop_pending = False
            lp.stop(now, self.epoch)
            self.watch_stop = True
            self.prev_speed = None
        for epoch, cmd in self.channel:
            lp.submit(epoch, cmd, now)
        self.channel = []
        lp.sensor.hand_wrench_base = self.hand
        lp.cycle(now)
        self.check()
        for kind, payload in lp.events:
            if kind == "fault":
                c["faults"][lp.fault_kind.value] = c["faults"].get(lp.fault_kind.value, 0) + 1
            elif kind == "reset_done" and self.watch_stop:
                self.watch_stop = False
        lp.events.clear()

    def check(self):
        lp, c, kin, cart = self.lp, self.c, self.kin, self.cart
        q = lp.robot.true_q
        qd = lp.robot._qd
        jl = kin.joint_limits
        c["cycles"] += 1
        X = kin.pose(q)
        out = _outside(X, cart.box_lower, cart.box_upper)
        exc_mm, exc_rad = float(out[:3].max()), float(out[3:].max())
        c["max_box_excursion_mm"] = max(c["max_box_excursion_mm"], exc_mm)
        c["max_orientation_excursion_deg"] = max(c["max_orientation_excursion_deg"],
                                                 math.degrees(exc_rad))
        margin = np.minimum(X - cart.box_lower, cart.box_upper - X)
        c["closest_to_box_mm"] = min(c["closest_to_box_mm"], float(margin[:3].min()))
        jm = np.minimum(q - jl.lower, jl.upper - q)
        lin = ~np.asarray(kin.revolute, bool)
        c["closest_to_joint_limit_mm"] = min(c["closest_to_joint_limit_mm"], float(jm[lin].min()))
        c["closest_to_joint_limit_deg"] = min(c["closest_to_joint_limit_deg"],
                                              math.degrees(float(jm[~lin].min())))
        bad = []
        if exc_mm > BOX_TOL_MM or exc_rad > BOX_TOL_RAD:
            bad.append("box")
        if np.any(q < jl.lower - JOINT_TOL) or np.any(q > jl.upper + JOINT_TOL):
            bad.append("joint range")
        if np.any(np.abs(qd) > jl.velocity * (1 + 1e-6)):
            bad.append("joint speed")
        Xd = kin.pose_jacobian(q) @ qd
        if (np.linalg.norm(Xd[:3]) > cart.linear_speed * SPEED_TOL
                or np.linalg.norm(Xd[3:]) > cart.angular_speed * SPEED_TOL):
            bad.append("tool speed")
        for b in bad:
            c["violations"][b] = c["violations"].get(b, 0) + 1
        c["limit_violations"] += bool(bad)
        if self.watch_stop:
            speed = np.abs(qd)
            moved = bool(np.any(lp.qd_cmd != 0))
            if self.prev_speed is not None and np.any(speed > self.prev_speed + 1e-9):
                moved = True                     # a joint sped up after the STOP
            self.prev_speed = speed
            c["motion_after_stop"] += moved
            c["cycles_after_stop"] += 1

    def hold(self, n, renew=None, late_ok=True):
        for k in range(n):
            if renew is not None and k % 50 == 49:
                self.send(*renew)
            self.cycle(late_ok)

    # -- the aimed commands ----------------------------------------------------------------
    def toward(self):
        """The task direction and joint direction of the nearest limit (as fractions)."""
        lp, cart, kin = self.lp, self.cart, self.kin
        X, q, jl = lp.X, lp.q, kin.joint_limits
        span = cart.box_upper - cart.box_lower
        d_lo, d_hi = (X - cart.box_lower) / span, (cart.box_upper - X) / span
        i = int(np.argmin(np.minimum(d_lo, d_hi)))
        task = np.zeros(5)
        task[i] = -1.0 if d_lo[i] < d_hi[i] else 1.0
        jspan = jl.upper - jl.lower
        j_lo, j_hi = (q - jl.lower) / jspan, (jl.upper - q) / jspan
        j = int(np.argmin(np.minimum(j_lo, j_hi)))
        joint = np.zeros(5)
        joint[j] = -1.0 if j_lo[j] < j_hi[j] else 1.0
        return task, joint

    def command(self):
        rng, lp = self.rng, self.lp
        if lp.mode == "fault":
            self.hold(20)
            self.send("reset")
            self.hold(5)
            return
        task, joint = self.toward()
        r = rng.random()
        n = int(rng.integers(5, 40))
        if r < 0.30:
            v = task * rng.uniform(0.3, 1.0) + 0.3 * rng.uniform(-1, 1, 5) * (rng.random() < 0.3)
            cmd = ("jog_task", v, "base" if rng.random() < 0.8 else "tool")
            self.send(*cmd)
            self.hold(n * 4, renew=cmd)
        elif r < 0.42:
            cmd = ("jog_joint", joint * rng.uniform(0.3, 1.0))
            self.send(*cmd)
            self.hold(n * 4, renew=cmd)
        elif r < 0.50:
            d = task * np.r_[[rng.uniform(1, 40)] * 3, [math.radians(rng.uniform(1, 15))] * 2]
            self.send("step_task", d, "base")
            self.hold(n * 4)
        elif r < 0.55:
            X = self.cart.box_lower + rng.uniform(0, 1, 5) * (self.cart.box_upper - self.cart.box_lower)
            self.send("move_pose", X)
            self.hold(n * 4)
        elif r < 0.65:
            F = np.zeros(6)
            i = int(np.flatnonzero(task)[0])
            if i < 3:
                F[i] = task[i] * rng.uniform(5, 30)      # N towards the face
            else:
                F[3 + (i - 3)] = task[i] * rng.uniform(0.5, 2.0)
            self.hand = F
            self.send("drag_mode", "position" if i < 3 else "orientation")
            self.send("admittance", True)
            self.hold(n * 4, renew=("deadman",))
            self.hand = np.zeros(6)
            self.send("admittance", False)
        elif r < 0.70:
            self.send("release")
            self.hold(n)
        elif r < 0.76:
            self.send("speed", float(rng.uniform(0.05, 1.0)))
            self.hold(2)
        else:
            self.race(task, joint, n)

    def race(self, task, joint, n):
        """Reset and a jog queued, then STOP before they arrive; a jog without Reset; then
        a real Reset."""
        self.send("jog_task", task, "base")
        self.hold(n * 3, renew=("jog_task", task, "base"))
        self.send("reset")
        self.send("jog_joint", joint * 0.5)
        self.stop()
        self.hold(n * 2)
        self.send("jog_task", task, "base")       # after the STOP, without Reset: refused
        self.hold(n)
        if self.lp.mode not in ("stopped", "fault"):
            self.c["stop_undone"] += 1
        self.send("reset")
        self.hold(5)
        if self.watch_stop and self.lp.mode in ("resetting", "stopped"):
            self.hold(20)


def run_aimed(commands, seed=0, late_fraction=0.01, beyond_bound=None) -> dict:
    """Part 1: ``commands`` aimed commands over all start poses (see the module docstring)."""
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from core.robot.limits import cartesian_limits_from_doc
    kin, cart = load_hybrid5(), cartesian_limits_from_doc(_robot_doc())
    starts = start_poses(kin, cart)
    rng = np.random.default_rng(seed)
    c = {"commands": 0, "cycles": 0, "limit_violations": 0, "violations": {},
         "motion_after_stop": 0, "cycles_after_stop": 0, "stops": 0, "stop_undone": 0,
         "late_cycles_injected": 0, "late_beyond_bound": 0, "late_faults": 0,
         "dropped_messages": 0, "reordered_messages": 0, "faults": {},
         "max_box_excursion_mm": 0.0, "max_orientation_excursion_deg": 0.0,
         "closest_to_box_mm": float("inf"), "closest_to_joint_limit_mm": float("inf"),
         "closest_to_joint_limit_deg": float("inf"), "starts": len(starts)}
    per_start = max(1, commands // len(starts))
    beyond_bound = len(starts) if beyond_bound is None else beyond_bound
    for k, (name, X0) in enumerate(starts):
        a = _Aimed(X0, rng, c, late_fraction, seed + k)
        while c["commands"] < per_start * (k + 1):
            a.command()
        if k < beyond_bound:
            a.send("jog_task", a.toward()[0] * 0.5, "base")
            a.hold(60, late_ok=False)
            if np.any(a.lp.qd_cmd):                  # moving: a cycle beyond the bound
                c["late_beyond_bound"] += 1
                before = c["faults"].get(FaultKind.LATE_CYCLE.value, 0)
                a.clock.t += 1.5 * a.lp.timing.late_cycle_s
                a.cycle(late_ok=False)
                c["late_faults"] += c["faults"].get(FaultKind.LATE_CYCLE.value, 0) > before
                a.hold(200, late_ok=False)
    false = {k: v for k, v in c["faults"].items()
             if k in (FaultKind.FOLLOWING.value, FaultKind.HARD_STOP.value)}
    late_false = c["faults"].get(FaultKind.LATE_CYCLE.value, 0) - c["late_faults"]
    c["false_faults"] = sum(false.values()) + late_false
    return c


# -- part 2: the real control process -------------------------------------------------------

def run_process_races(races, seed=0) -> dict:
    """``reset(); jog_joint(...); stop()`` back to back, as the client sends them, from a
    moving robot; every other race with a late cycle injected just before the STOP."""
    from devices.robot_controller import SHM, ControllerConfig, RobotController
    rng = np.random.default_rng(seed)
    ctl = RobotController(ControllerConfig(assume_identified_tool=True, seed=seed))
    ctl.start()
    kin = __import__("core.robot.kinematics.hybrid5", fromlist=["load_hybrid5"]).load_hybrid5()
    jl = kin.joint_limits
    out = {"races": 0, "motion_after_stop": 0, "stop_undone": 0, "late_cycles_injected": 0,
           "max_travel_after_stop_mm": 0.0, "max_command_after_stop": 0.0, "discarded": 0,
           "resets_acknowledged": 0}
    lat = []
    try:
        for k in range(races):
            # move first, so that a STOP has something to stop
            direction = 1.0 if k % 2 == 0 else -1.0
            for _ in range(4):
                ctl.jog_task([0, direction * 0.6, 0, 0, 0])
                time.sleep(0.05)
            if k % 2 == 1:
                ctl.send("sim", "late", float(rng.uniform(*LATE_S)))
                out["late_cycles_injected"] += 1
            ctl.reset()
            ctl.jog_joint([0.5, 0, 0, 0, 0])
            t_stop = ctl.stop()
            while ctl.shm[SHM.STOP_DONE_T] < t_stop:
                time.sleep(0.0002)
            lat.append(ctl.stop_latency_s())
            s0 = ctl.latest()
            qd0 = np.abs(s0["qd_cmd"])
            q0 = s0["q"]
            worst_cmd, end = 0.0, time.monotonic() + 0.3
            while time.monotonic() < end:
                s = ctl.latest()
                worst_cmd = max(worst_cmd, float(np.max(np.abs(s["qd_cmd"]))))
                time.sleep(0.001)
            s = ctl.latest()
            # braking from at most the speed at the STOP: v (latency + servo lag) + v^2 / 4a,
            # with the jog's full speed as v (the STOP may land before its command reaches
            # the shared memory) and 0.05 mm of encoder noise and rounding
            v = np.maximum(qd0, 0.6 * jl.velocity)
            bound = v * 0.012 + v * v / (4 * jl.acceleration) + 0.05
            travel = np.abs(s["q"] - q0)
            lin = ~np.asarray(kin.revolute, bool)
            out["max_travel_after_stop_mm"] = max(out["max_travel_after_stop_mm"],
                                                  float(travel[lin].max()))
            out["max_command_after_stop"] = max(out["max_command_after_stop"], worst_cmd)
            moved = worst_cmd > 0 or np.any(travel > bound)
            out["motion_after_stop"] += bool(moved)
            out["stop_undone"] += s["mode"] != "stopped"
            out["races"] += 1
            ctl.reset()
            end = time.monotonic() + 3.0
            while ctl.stopped() and time.monotonic() < end:
                time.sleep(0.002)
            out["resets_acknowledged"] += not ctl.stopped()
        out["discarded"] = ctl.latest()["discarded"]
    finally:
        ctl.close()
    lat_ms = 1e3 * np.array([x for x in lat if x is not None])
    out["stop_latency_ms"] = float(np.median(lat_ms)) if len(lat_ms) else float("nan")
    out["stop_latency_max_ms"] = float(lat_ms.max()) if len(lat_ms) else float("nan")
    return out


# -- part 3: the force sensor against the fake Net F/T -----------------------------------------

def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_sensor(trials=3, seed=0) -> dict:
    """Recovery time after each failure, from the moment the stream can resume."""
    from devices.ati_netft import AtiNetFt, FakeNetFtServer
    rec = {"sequence_restart": [], "reboot": [], "unreachable_at_connect": []}
    out = {"sensor_failures_injected": 0, "sensor_not_recovered": 0, "spikes_refused": 0,
           "spikes": 0, "packets_reordered": 0, "packets_lost": 0}
    for k in range(trials):
        srv = FakeNetFtServer(drop=0.02, reorder=0.02, seed=seed + k).start()
        ft = AtiNetFt("127.0.0.1", srv.port, timeout_s=0.02)
        ft.connect()
        try:
            if seconds_until_reading(ft, 3.0) is None:
                out["sensor_not_recovered"] += 1
            time.sleep(0.1)
            srv.restart_sequence()
            t0 = time.monotonic()
            time.sleep(0.03)                     # past the watchdog: old samples are stale
            r = seconds_until_reading(ft, 3.0)
            rec["sequence_restart"].append(None if r is None else r + 0.03)
            srv.reboot(0.3)
            time.sleep(0.3)                      # the sensor answers again from now on
            rec["reboot"].append(seconds_until_reading(ft, 3.0))
            srv.spike([2147.48, -2147.48, 2147.48, 0, 0, 0])
            time.sleep(0.01)
            out["spikes"] += 1
            try:
                ft.read()
            except DeviceError as e:
                out["spikes_refused"] += e.kind is FaultKind.SENSOR_IMPLAUSIBLE
            out["packets_reordered"] += ft.packets_reordered
            out["packets_lost"] += ft.packets_lost
        finally:
            ft.disconnect()
            srv.close()
        port = _free_port()                      # nothing listens there yet
        ft = AtiNetFt("127.0.0.1", port, timeout_s=0.02)
        ft.connect()
        try:
            time.sleep(0.4)
            srv = FakeNetFtServer(port=port, seed=seed + k).start()
            rec["unreachable_at_connect"].append(seconds_until_reading(ft, 3.0))
            srv.close()
        finally:
            ft.disconnect()
        out["sensor_failures_injected"] += 3
    for name, times in rec.items():
        good = [t for t in times if t is not None]
        out["sensor_not_recovered"] += len(times) - len(good)
        out[f"recovery_{name}_max_s"] = max(good) if good else float("nan")
    out["sensor_recovery_max_s"] = max(
        (out[f"recovery_{n}_max_s"] for n in rec), default=float("nan"))
    return out


def run(args) -> dict:
    t0 = time.monotonic()
    aimed = run_aimed(args.commands, args.seed, args.late_fraction)
    t1 = time.monotonic()
    proc = run_process_races(args.races, args.seed)
    t2 = time.monotonic()
    sensor = run_sensor(args.sensor_trials, args.seed)
    out = {"commands": aimed["commands"] + 3 * proc["races"],
           "limit_violations": aimed["limit_violations"],
           "motion_after_stop": aimed["motion_after_stop"] + proc["motion_after_stop"],
           "late_cycles_injected": aimed["late_cycles_injected"] + proc["late_cycles_injected"],
           "max_box_excursion_mm": aimed["max_box_excursion_mm"],
           "stop_latency_ms": proc["stop_latency_ms"],
           "stop_latency_max_ms": proc["stop_latency_max_ms"],
           "stop_undone": aimed["stop_undone"] + proc["stop_undone"],
           "false_faults": aimed["false_faults"],
           "sensor_recovery_max_s": sensor["sensor_recovery_max_s"],
           "sensor_not_recovered": sensor["sensor_not_recovered"],
           "aimed": aimed, "process": proc, "sensor": sensor,
           "seconds": {"aimed": round(t1 - t0, 1), "process": round(t2 - t1, 1),
                       "sensor": round(time.monotonic() - t2, 1)}}
    out["goals_met"] = bool(out["limit_violations"] == 0 and out["motion_after_stop"] == 0
                            and out["stop_undone"] == 0 and out["false_faults"] == 0
                            and aimed["late_faults"] == aimed["late_beyond_bound"]
                            and aimed["commands"] >= 10000
                            and out["sensor_not_recovered"] == 0
                            and out["sensor_recovery_max_s"] <= 0.5
                            and sensor["spikes_refused"] == sensor["spikes"])
    return out
