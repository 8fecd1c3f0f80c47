"""``fluoronav bench control``: the robot control loop's rate, jitter and stop latency.

The loop runs in its own process (as in the app) for ``--seconds`` while this process
carries a GUI-like load: with a display, a Qt window rendering the 3D view (the robot
and cage actors, moved every frame) and 10 s force plots (6 x 10,000 points) at
60 Hz; without one, busy Python and numpy work in 20 ms chunks. Jog commands are sent
every 50 ms, as the panel does. Baseline in the same run: the same loop in a thread
of this (loaded) process. Then ``--stops`` STOP requests at random moments measure the
time from request to zero commanded velocity. ``work_*_ms`` is the cycle's own
computation (sensing, admittance, limits, command): a long period with a short work
time was spent waiting to be scheduled (machine load, hypervisor steal).
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time

import numpy as np

from devices.robot_controller import SHM, ControllerConfig, RobotController, control_main

DESCRIPTION = "robot control loop rate/jitter in its own process vs a GUI thread, stop latency"


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window (s)")
    parser.add_argument("--load", choices=("gui", "cpu", "none"), default=None,
                        help="load in this process (default: gui with a display, else cpu)")
    parser.add_argument("--stops", type=int, default=50, help="STOP requests to time")
    parser.add_argument("--no-realtime", action="store_true",
                        help="do not ask the OS for real-time scheduling of the loop")


def _stats(periods) -> dict:
    p = np.asarray(periods, float)[5:]            # skip the start-up cycles
    return {"loop_hz": float(len(p) / p.sum()), "period_p50_ms": 1e3 * float(np.percentile(p, 50)),
            "period_p99_ms": 1e3 * float(np.percentile(p, 99)), "period_max_ms": 1e3 * float(p.max()),
            "cycles": int(len(p))}


class _Load:
    """The load in this process; ``run(seconds, tick)`` calls ``tick()`` every 50 ms."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "gui":
            self._build_gui()

    def describe(self) -> str:
        return {"gui": "Qt window: VTK 3D view with the robot and cage moving and pyqtgraph "
                       "6 x 10,000-point plots, redrawn at 60 Hz",
                "cpu": "busy Python + numpy work in 20 ms chunks",
                "none": "idle"}[self.kind]

    def _build_gui(self):
        from PySide6.QtWidgets import QApplication, QHBoxLayout, QWidget
        import pyqtgraph as pg

        from core.robot.kinematics.hybrid5 import load_hybrid5
        from widgets.scene.robot import RobotSceneActors, load_cage_balls
        from widgets.scene.view import SceneView
        self.app = QApplication.instance() or QApplication([])
        self.win = QWidget()
        lay = QHBoxLayout(self.win)
        self.scene = SceneView()
        self.plot = pg.PlotWidget()
        lay.addWidget(self.scene, 1)
        lay.addWidget(self.plot, 1)
        self.kin = load_hybrid5()
        self.actors = RobotSceneActors(self.kin, load_cage_balls())
        self.home = self.kin.joints_for_pose([625, 475, -135, 0, 0])
        self.actors.update(self.home)
        self.scene.set_actor("robot", self.actors.assembly)
        self.curves = [self.plot.plot(pen=c) for c in "rgbcmy"]
        self.win.resize(1400, 700)
        self.win.show()
        self.scene.reset_camera()
        self.frames = 0

    def _frame(self):
        k = self.frames
        self.frames += 1
        q = self.home + np.array([10, 10, 20, 0.1, 0.1]) * np.sin(0.05 * k)
        self.actors.update(q)
        self.scene.render()
        t = np.linspace(-10, 0, 10000)
        for i, c in enumerate(self.curves):
            c.setData(t, np.sin(t * (i + 1) + 0.1 * k) + 0.1 * np.random.standard_normal(t.size))

    def run(self, seconds: float, tick) -> None:
        end = time.monotonic() + seconds
        if self.kind == "gui":
            from PySide6.QtCore import QEventLoop, QTimer
            loop = QEventLoop()
            frame, ticker = QTimer(interval=16), QTimer(interval=50)
            frame.timeout.connect(self._frame)
            ticker.timeout.connect(tick)
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            frame.start()
            ticker.start()
            loop.exec()
            frame.stop()
            ticker.stop()
            return
        next_tick = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + 0.05
            if self.kind == "cpu":
                stop = time.monotonic() + 0.02
                while time.monotonic() < stop:
                    sum(i * i for i in range(2000))
                    np.fft.fft(np.random.standard_normal(4096))
            else:
                time.sleep(0.01)


def _jogger(send):
    state = {"k": 0}

    def tick():
        state["k"] += 1
        direction = 1.0 if (state["k"] // 40) % 2 == 0 else -1.0   # back and forth, 2 s each
        send(("jog_task", np.array([0.0, direction, 0.0, 0.0, 0.0]), "base"))
    return tick


def _in_thread(config, seconds, load) -> dict:
    """Baseline: the same loop in a thread of this process."""
    shm = mp.RawArray("d", SHM.SIZE)
    cmd_q, state_q = queue.Queue(), queue.Queue()
    switch = sys.getswitchinterval()          # the loop changes it (process-wide)
    # collect here: the loop's own gc.collect() in its thread would otherwise finalise the
    # garbage of this process (Qt and VTK objects of a GUI) off their thread, which can hang
    gc.collect()
    th = threading.Thread(target=control_main, args=(config, shm, cmd_q, state_q), daemon=True)
    th.start()
    deadline = time.monotonic() + 30.0
    while shm[SHM.CYCLES] < 10:
        if not th.is_alive() or time.monotonic() > deadline:
            shm[SHM.QUIT] = 1.0
            raise RuntimeError("the baseline control loop did not start within 30 s")
        time.sleep(0.01)
    load.run(seconds, _jogger(lambda cmd: cmd_q.put((int(shm[SHM.STOP_SEQ]), cmd))))
    shm[SHM.QUIT] = 1.0
    th.join(5.0)
    gc.enable()
    sys.setswitchinterval(switch)
    while True:
        try:
            msg = state_q.get(timeout=10.0)
        except queue.Empty:
            raise RuntimeError("the baseline control loop ended without its period record") from None
        if "periods" in msg:
            return _stats(msg["periods"])


def _in_process(config, seconds, load, stops) -> tuple[dict, list]:
    ctl = RobotController(config)
    ctl.start()
    load.run(seconds, _jogger(lambda cmd: ctl.send(*cmd)))
    ctl.drain()
    latencies, rng = [], random.Random(0)
    for _ in range(stops):
        ctl.jog_task([0, 0.2, 0, 0, 0])
        time.sleep(rng.uniform(0.005, 0.02))
        ctl.stop()
        time.sleep(0.01)
        lat = ctl.stop_latency_s()
        if lat is not None and np.all(ctl.latest()["qd_cmd"] == 0):
            latencies.append(lat)
        ctl.reset()
        end = time.monotonic() + 2.0
        while ctl.stopped() and time.monotonic() < end:     # until the loop acknowledges
            time.sleep(0.001)
        ctl.drain()
    rest = ctl.close()
    final = next(m for m in rest if "periods" in m)
    n = int(seconds / config.period_s)
    stats = _stats(final["periods"][:n])
    work = np.asarray(final["work"][5:n], float)
    stats["work_p99_ms"] = 1e3 * float(np.percentile(work, 99))   # the cycle's own computation
    stats["work_max_ms"] = 1e3 * float(work.max())
    stats["realtime"] = bool(final.get("realtime"))
    return stats, latencies


def run(args) -> dict:
    kind = args.load or ("gui" if os.environ.get("DISPLAY") else "cpu")
    load = _Load(kind)
    config = ControllerConfig(record_periods=int(args.seconds * 1000 * 1.5) + 20000,
                              realtime_priority=0 if args.no_realtime else 10)
    loadavg = os.getloadavg()[0]
    base = _in_thread(config, args.seconds, load)
    proc, lat = _in_process(config, args.seconds, load, args.stops)
    lat_ms = 1e3 * np.array(lat) if lat else np.array([np.nan])
    out = {**{k: v for k, v in proc.items() if k != "cycles"},
           "stop_latency_ms": float(np.median(lat_ms)),
           "stop_latency_max_ms": float(np.max(lat_ms)), "stops_timed": len(lat),
           "baseline_thread": base, "cycles": proc["cycles"], "seconds": args.seconds,
           "load": load.describe(), "cpu_count": os.cpu_count(),
           "loadavg_1min_at_start": round(loadavg, 2)}
    out["goals_met"] = bool(proc["loop_hz"] >= 990 and proc["period_p99_ms"] <= 1.5
                            and proc["period_max_ms"] <= 5.0 and out["stop_latency_max_ms"] <= 1.0)
    return out
