"""The robot control process: the loop at 1 kHz where the GUI cannot stall it.

``RobotController`` (parent side, no Qt) starts the process, sends commands through a
queue, reads state from a state queue (about 100 Hz) and from shared memory (always
the newest), and stops the robot through a shared-memory counter (the STOP epoch) that
the loop checks every cycle and while it waits for the next one: a stop needs no queue,
no pickling and no GIL of the parent. Every queued command carries the epoch it was
sent in, so that the loop discards whatever was queued before a STOP (a Reset and a
jog sent just before it included); Reset is acknowledged in shared memory
(``SHM.RESET_ACK``) once the loop has the devices back. The loop sleeps most of the period and busy-waits the last
``spin_s`` on ``time.perf_counter`` (a system-wide monotonic clock on Linux, so the
parent and the loop share the time base). If the parent process dies, the loop stops
the robot and exits.
"""
from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import queue
import select
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from devices.base import DeviceError, FaultKind
from devices.control_loop import MODE_CODES

__all__ = ["ControllerConfig", "RobotController", "SHM"]

_MODES = {code: mode for mode, code in MODE_CODES.items()}


class SHM:
    """Indices in the shared double array."""
    STOP_SEQ, STOP_T, STOP_DONE_T, HEARTBEAT, CYCLES, FAULT, QUIT = range(7)
    RESET_ACK = 7         # the STOP epoch of the last acknowledged Reset
    Q = 8                 # 5 joint positions
    QD = 13               # 5 commanded joint velocities
    X = 18                # 5 task pose values
    HAND = 23             # 6 compensated hand wrench (base frame)
    MODE = 29             # devices.control_loop.MODE_CODES
    EPOCH = 30            # the STOP epoch the loop has applied
    DISCARDED = 31        # commands discarded as issued before a STOP
    LATE = 32             # cycles later than two periods
    LONGEST = 33          # the longest cycle interval (s)
    SIZE = 40


@dataclass
class ControllerConfig:
    robot_file: str | None = None       # resources/robots/hybrid5.json when None
    period_s: float = 0.001
    spin_s: float = 0.0002              # busy-wait this long before each period
    realtime_priority: int = 10         # SCHED_FIFO priority if the OS grants it (0: don't ask)
    watchdog_s: float = 0.02
    late_cycle_s: float = 0.1           # a later cycle while moving is a fault (limits' horizon)
    box_margin: tuple = (0.02, 0.02, 0.02, 2e-4, 2e-4)   # mm, rad: the pose is held this far
                                        # inside the box (encoder noise and servo overshoot)
    jog_hold_s: float = 0.3
    deadman_s: float = 0.4
    state_every: int = 10               # cycles between state-queue messages
    record_periods: int = 0             # keep this many loop periods for benchmarks
    sensor_noise: bool = True           # simulated sensor noise, drift and gain error
    assume_identified_tool: bool = False  # start with the simulated tool's true load
    sim_latency_s: float = 0.001
    home_pose: list | None = None       # [x, y, z, theta_x, theta_y] (mm, rad)
    netft_host: str | None = None       # a real ATI Net F/T at this address instead of the
    netft_port: int = 49152             # simulated sensor (the robot stays simulated)
    netft_counts_per_force: float = 1e6
    netft_counts_per_torque: float = 1e6
    netft_rated_range: tuple = (290.0, 290.0, 580.0, 10.0, 10.0, 10.0)   # N, N*m (Mini45)
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _build(config: ControllerConfig, clock=None):
    """Robot, sensor and the loop, inside the control process (simulation); ``clock``
    (default ``time.perf_counter``) is the devices' time base."""
    clock = clock or time.perf_counter
    from core.robot.limits import MotionLimiter, cartesian_limits_from_doc
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from core.robot.weight_compensation import ToolLoad
    from devices.control_loop import ControlLoop, LoopTiming
    from devices.force_sensor import SimulatedForceSensor
    from devices.robot import SimulatedRobot
    from resources import path as resource_path

    file = config.robot_file or resource_path("robots", "hybrid5.json")
    with open(file) as f:
        doc = json.load(f)
    kin = load_hybrid5(file)
    cart = cartesian_limits_from_doc(doc)
    home = doc["home_pose"]
    X0 = config.home_pose or [*home["xyz_mm"], *np.radians(home["theta_xy_deg"])]
    # the drive's watchdog brakes before the loop's horizon ends: the limits may assume
    # that no command stays in force longer than late_cycle_s
    robot = SimulatedRobot(kin, kin.joints_for_pose(X0), latency_s=config.sim_latency_s,
                           seed=config.seed, clock=clock,
                           command_timeout_s=config.late_cycle_s - config.sim_latency_s
                           - config.period_s)
    T_fs = np.array(doc["T_flange_sensor"], float)
    tool = doc["simulated_tool"]
    com_s = T_fs[:3, :3].T @ (np.array(tool["com_flange_mm"]) - T_fs[:3, 3])
    noise = {} if config.sensor_noise else dict(force_noise_N=0.0, torque_noise_Nm=0.0,
                                                drift_N_per_sqrt_s=0.0, gain_error=0.0)
    if config.netft_host:
        from devices.ati_netft import AtiNetFt
        sensor = AtiNetFt(config.netft_host, config.netft_port, config.netft_counts_per_force,
                          config.netft_counts_per_torque, timeout_s=config.watchdog_s, clock=clock,
                          rated_range=config.netft_rated_range)
    else:
        sensor = SimulatedForceSensor(tool["weight_N"] / 9.80665, com_s, tool["force_offset_N"],
                                      tool["torque_offset_Nm"], seed=config.seed + 1, clock=clock,
                                      **noise)
    load = (ToolLoad(tool["weight_N"] / 9.80665, com_s, np.array(tool["force_offset_N"]),
                     np.array(tool["torque_offset_Nm"])) if config.assume_identified_tool else None)
    timing = LoopTiming(config.period_s, config.watchdog_s, config.jog_hold_s, config.deadman_s,
                        late_cycle_s=config.late_cycle_s)
    # ten sigma of the simulated encoder noise (2 um, 2e-5 rad) as the box margin
    limiter = MotionLimiter(kin, cart, config.period_s, horizon_s=config.late_cycle_s,
                            margin=config.box_margin)
    loop = ControlLoop(robot, sensor, kin, limiter, T_fs, load, timing, clock=clock)
    robot.connect()
    sensor.connect()
    robot.enable()
    return loop


def _state_message(loop, now, cycles, last_period):
    return {"t": now, "cycle": cycles, "mode": loop.mode, "fault": loop.fault,
            "fault_kind": None if loop.fault_kind is None else loop.fault_kind.value,
            "epoch": loop.epoch, "reset_epoch": loop.reset_epoch, "discarded": loop.discarded,
            "late_cycles": loop.late_cycles, "longest_cycle_ms": 1000 * loop.longest_cycle_s,
            "q": loop.q.copy(), "qd_cmd": loop.qd_cmd.copy(), "pose": loop.X.copy(),
            "wrench": np.asarray(loop.wrench).copy(), "hand": np.asarray(loop.hand).copy(),
            "limits": list(loop.reasons), "speed": loop.speed, "drag_mode": loop.admittance.mode,
            "damping": (loop.admittance.pos.damping, loop.admittance.rot.damping),
            "identify": loop.identify_progress, "period_ms": 1000 * last_period,
            "follow": loop.follow_state(),
            "tool_load": None if loop.tool_load is None else _load_dict(loop.tool_load)}


_LOAD_DICT: list = [None, None]          # (the last ToolLoad, its dict): asdict deep-copies


def _load_dict(load):
    if _LOAD_DICT[0] is not load:
        d = asdict(load)
        _LOAD_DICT[:] = [load, {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}]
    return dict(_LOAD_DICT[1])


def _publish(shm, loop, cycles, now):
    """The newest state into shared memory; ``shm`` the RawArray or (cheaper in the loop, no
    per-element ctypes conversion) a numpy view of it."""
    shm[SHM.HEARTBEAT] = now
    shm[SHM.CYCLES] = cycles
    shm[SHM.FAULT] = 1.0 if loop.fault else 0.0
    if loop.q is not None:
        shm[SHM.Q:SHM.Q + 5] = loop.q
        shm[SHM.X:SHM.X + 5] = loop.X
    shm[SHM.QD:SHM.QD + 5] = loop.qd_cmd
    shm[SHM.HAND:SHM.HAND + 6] = loop.hand
    shm[SHM.MODE] = MODE_CODES[loop.mode]
    shm[SHM.EPOCH] = loop.epoch
    shm[SHM.RESET_ACK] = loop.reset_epoch
    shm[SHM.DISCARDED] = loop.discarded
    shm[SHM.LATE] = loop.late_cycles
    shm[SHM.LONGEST] = loop.longest_cycle_s


def control_main(config: ControllerConfig, shm, cmd_q, state_q, parent_pid: int | None = None) -> None:
    """The control process: build the simulated devices, then loop until told to quit.

    ``parent_pid`` is the GUI process, given by the parent itself: reading it here with
    ``os.getppid()`` after the (slow) build would remember init's pid when the GUI died
    during the build, and the loop would then never notice that it is orphaned."""
    from core.robot.weight_compensation import ToolLoad  # noqa: F401 (unpickling tool loads)
    parent = os.getppid() if parent_pid is None else parent_pid
    loop = _build(config)
    realtime = _ask_realtime(config.realtime_priority)
    periods = np.zeros(config.record_periods) if config.record_periods else None
    works = np.zeros(config.record_periods) if config.record_periods else None
    cpus = np.zeros(config.record_periods) if config.record_periods else None
    wakes = np.zeros(config.record_periods) if config.record_periods else None
    cyc = np.zeros(config.record_periods) if config.record_periods else None
    has_command = _command_poll(cmd_q)
    shm_view = np.frombuffer(shm, dtype=float)     # the same memory, written without ctypes
    stop_seen = 0.0                  # a STOP pressed while the devices were built latches too
    period, spin = config.period_s, config.spin_s
    # the state queue's feeder thread shares the GIL: let the loop take it back within
    # 0.1 ms instead of the default 5 ms switch interval
    sys.setswitchinterval(1e-4)
    gc.collect()
    gc.freeze()
    gc.disable()                     # no collector pauses inside the loop
    now = time.perf_counter()
    next_t, last_start, cycles, n_rec = now, now, 0, 0
    orphaned = False
    while not shm[SHM.QUIT]:
        start = time.perf_counter()
        cpu_start = time.thread_time()
        last_period = start - last_start
        last_start = start
        if periods is not None and cycles > 0:
            periods[n_rec % len(periods)] = last_period
            wakes[n_rec % len(wakes)] = start - next_t     # the scheduler's wake-up lateness
            n_rec += 1
        if shm[SHM.STOP_SEQ] != stop_seen:
            stop_seen = shm[SHM.STOP_SEQ]
            loop.stop(start, int(stop_seen))
            shm[SHM.STOP_DONE_T] = time.perf_counter()
            shm[SHM.MODE] = MODE_CODES[loop.mode]
            shm[SHM.QD:SHM.QD + 5] = loop.qd_cmd
        else:
            late = 0.0
            while has_command():              # no lock, no exception on the usual empty queue
                try:
                    epoch, cmd = cmd_q.get_nowait()
                except queue.Empty:
                    break
                except (TypeError, ValueError):
                    loop.events.append(("refused", "a command without its epoch was ignored"))
                    continue
                try:
                    if cmd[0] == "sim" and cmd[1] == "late":
                        late = float(cmd[2])
                    elif cmd[0] == "sim":
                        loop.simulate(cmd[1], cmd[2] if len(cmd) > 2 else None)
                    else:
                        loop.submit(epoch, cmd, start)
                except Exception as e:         # a bad command must not end the loop
                    loop.events.append(("refused", f"command {cmd[0]!r} failed: {e}"))
            try:
                loop.cycle(start)
            except Exception as e:             # never leave the robot moving on a bug
                loop._fault(f"internal error in the control loop ({type(e).__name__}: {e}): "
                            "the robot is stopped; report it, then reset", FaultKind.INTERNAL)
            if late > 0:                       # simulation: this process was not scheduled
                _stall(late)
        cycle_end = time.perf_counter()
        cycles += 1
        _publish(shm_view, loop, cycles, start)
        if cycles % config.state_every == 0 or loop.events:
            msg = _state_message(loop, start, cycles, last_period) if loop.q is not None else {}
            msg["events"] = loop.events
            msg["realtime"] = realtime
            try:
                state_q.put_nowait(msg)
                loop.events = []
            except queue.Full:
                # nobody read the queue for a while (a stalled GUI): the state is in shared memory,
                # but the events (refusals, results) would be lost; kept, capped, for the next message
                del loop.events[:-100]
        if cycles % 200 == 0 and os.getppid() != parent:
            loop.stop(start)                    # the GUI is gone: stop and leave
            # nobody reads the state queue now, and this process holds its read end too: exiting
            # would wait forever for its feeder to flush a full pipe (a sleeping orphan)
            state_q.cancel_join_thread()
            orphaned = True
            break
        if works is not None:
            works[cycles % len(works)] = time.perf_counter() - start
            cyc[cycles % len(cyc)] = cycle_end - start          # commands + cycle, no publishing
            cpus[cycles % len(cpus)] = time.thread_time() - cpu_start
        next_t += period
        if time.perf_counter() > next_t + period:
            next_t = time.perf_counter()         # overran a whole period: resynchronise
        _wait_until(next_t, spin, shm, stop_seen, loop)
    loop.stop(time.perf_counter())
    if periods is not None and not orphaned:
        k = min(n_rec, len(periods))
        state_q.put({"periods": periods[:k] if n_rec <= len(periods) else periods,
                     "work": works[1:k + 1] if n_rec <= len(periods) else works,
                     "work_cpu": cpus[1:k + 1] if n_rec <= len(periods) else cpus,
                     "wake": wakes[:k] if n_rec <= len(periods) else wakes,
                     "cycle": cyc[1:k + 1] if n_rec <= len(periods) else cyc,
                     "realtime": realtime})
    gc.enable()


def _command_poll(cmd_q):
    """A cheap "is a command waiting?" for the loop: ``poll(0)`` on a multiprocessing
    queue's pipe (0.5 us) instead of ``empty()``, which builds a selector each call (4.5 us);
    ``empty()`` for other queues (the benchmark's thread baseline)."""
    reader = getattr(cmd_q, "_reader", None)
    if reader is None or not hasattr(select, "poll"):
        return lambda: not cmd_q.empty()
    poller = select.poll()
    poller.register(reader.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))


def _ask_realtime(priority: int) -> bool:
    """Real-time scheduling for the loop when allowed (Linux SCHED_FIFO); else stay normal.
    The loop sleeps most of each period, so it leaves the core to others."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (PermissionError, OSError):
        return False


def _wait_until(deadline, spin, shm, stop_seen, loop):
    """Sleep in slices of at most 0.2 ms, then busy-wait the last ``spin`` seconds; a stop
    request ends the wait at once (the next cycle, which stops, begins now)."""
    while True:
        remaining = deadline - time.perf_counter() - spin
        if remaining <= 0 or shm[SHM.STOP_SEQ] != stop_seen:
            break
        time.sleep(min(remaining, 0.0002))
    while time.perf_counter() < deadline:
        if shm[SHM.STOP_SEQ] != stop_seen:
            return                              # the next cycle begins now and stops


def _stall(seconds):
    """Simulation of a late cycle: this process gets no CPU for ``seconds`` (a STOP waits,
    as it would behind a real scheduler stall; the drive's watchdog bounds the motion)."""
    time.sleep(seconds)


class RobotController:
    """Parent-side handle of the control process (plain Python: the Qt adapter is in app/)."""

    def __init__(self, config: ControllerConfig | None = None, start_method: str = "spawn"):
        self.config = config or ControllerConfig()
        self._ctx = mp.get_context(start_method)
        self.shm = self._ctx.RawArray("d", SHM.SIZE)
        self.cmd_q = self._ctx.Queue()
        self.state_q = self._ctx.Queue(maxsize=2000)
        self.process = None

    def start(self, timeout_s: float = 30.0, wait: bool = True) -> None:
        """Start the control process; with ``wait``, return once it runs (``ready()``)."""
        self.process = self._ctx.Process(target=control_main, name="fluoronav-robot-control",
                                         args=(self.config, self.shm, self.cmd_q, self.state_q, os.getpid()),
                                         daemon=True)
        self.process.start()
        if not wait:
            return
        end = time.monotonic() + timeout_s
        while self.shm[SHM.CYCLES] < 10:
            if not self.process.is_alive() or time.monotonic() > end:
                raise DeviceError("the robot control process did not start: see the log, "
                                  "then restart fluoronav")
            time.sleep(0.01)

    # -- commands ---------------------------------------------------------------
    def stop(self) -> float:
        """STOP: seen by the loop within one period. Returns the request time."""
        t = time.perf_counter()
        self.shm[SHM.STOP_T] = t
        self.shm[SHM.STOP_SEQ] += 1
        return t

    def stop_latency_s(self) -> float | None:
        done, req = self.shm[SHM.STOP_DONE_T], self.shm[SHM.STOP_T]
        return done - req if done >= req > 0 else None

    @property
    def epoch(self) -> int:
        """STOPs requested so far: the epoch every command is sent in."""
        return int(self.shm[SHM.STOP_SEQ])

    def send(self, *cmd) -> None:
        """Queue ``cmd`` in the current epoch (a later STOP discards it)."""
        self.cmd_q.put((self.epoch, tuple(cmd)))

    def reset(self):
        """Ask for Reset; ``stopped()`` stays true until the loop acknowledges it."""
        self.send("reset")

    def stopped(self) -> bool:
        """A STOP was requested and no Reset after it has been acknowledged yet."""
        return self.shm[SHM.STOP_SEQ] > self.shm[SHM.RESET_ACK]

    def jog_joint(self, fractions):
        self.send("jog_joint", np.asarray(fractions, float))

    def jog_task(self, fractions, frame="base"):
        self.send("jog_task", np.asarray(fractions, float), frame)

    def step_task(self, delta, frame="base"):
        self.send("step_task", np.asarray(delta, float), frame)

    def step_joint(self, delta):
        self.send("step_joint", np.asarray(delta, float))

    def admittance(self, enabled: bool):
        self.send("admittance", bool(enabled))

    def deadman(self):
        self.send("deadman")

    # -- state ------------------------------------------------------------------
    def latest(self) -> dict:
        s = np.frombuffer(self.shm, dtype=float)
        return {"heartbeat": s[SHM.HEARTBEAT], "cycles": int(s[SHM.CYCLES]),
                "fault": bool(s[SHM.FAULT]), "mode": _MODES[int(s[SHM.MODE])],
                "epoch": int(s[SHM.EPOCH]), "reset_ack": int(s[SHM.RESET_ACK]),
                "discarded": int(s[SHM.DISCARDED]), "late_cycles": int(s[SHM.LATE]),
                "longest_cycle_ms": 1000 * float(s[SHM.LONGEST]), "q": s[SHM.Q:SHM.Q + 5].copy(),
                "qd_cmd": s[SHM.QD:SHM.QD + 5].copy(), "pose": s[SHM.X:SHM.X + 5].copy(),
                "hand": s[SHM.HAND:SHM.HAND + 6].copy()}

    def drain(self, limit: int = 10000) -> list[dict]:
        out = []
        for _ in range(limit):
            try:
                out.append(self.state_q.get_nowait())
            except queue.Empty:
                break
        return out

    def ready(self) -> bool:
        return self.shm[SHM.CYCLES] >= 10

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def close(self, timeout_s: float = 3.0) -> list[dict]:
        """Stop the robot, end the process; returns the last state messages."""
        rest = []
        if self.process is None:
            return rest
        self.stop()
        self.shm[SHM.QUIT] = 1.0
        end = time.monotonic() + timeout_s
        while self.process.is_alive() and time.monotonic() < end:
            rest += self.drain()
            self.process.join(0.02)
        rest += self.drain()
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        self.process = None
        return rest
