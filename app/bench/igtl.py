"""``fluoronav bench igtl``: the OpenIGTLink pose stream to a pyigtl client over loopback.

The link (``devices.igtl_link``, server mode on a free port) streams a moving tool pose
at ``--rate`` Hz for ``--seconds``; a ``pyigtl.OpenIGTLinkClient`` (what a Slicer-side
script would use) receives it. Rate: distinct poses received per second. Latency: from
the moment the pose was handed to the link to the moment the client's thread had
decoded it (the pose carries its send time in its translation, so the figure does not
rest on OpenIGTLink's timestamp resolution). The baseline is pyigtl's own
``OpenIGTLinkServer`` sending the same poses to the same client. ``stream_call_ms``: what the
session's side adds per robot state before the link (kinematics, frames, encoding).

``app``: the realistic case, the chain the workstation runs. The simulated robot's control
process (1 kHz) publishes its joints to shared memory; ``SlicerStream``'s feed thread reads
them at ``[igtl] pose_rate_hz`` (60 Hz by default), computes the guide's pose in the plan's
frame and hands it to the link; the pyigtl client decodes it. Latency there is from the
control cycle that measured the joints (its ``perf_counter``, system-wide on Linux) to the
client's decode; the poses are told apart by their float32 matrices (the simulated encoder
noise makes each cycle's pose distinct). Run twice: idle, and with a pure-Python thread
holding the interpreter like a busy GUI thread does (``app_under_load``), with the
interpreter's switch interval the workstation sets (``app.GUI_SWITCH_INTERVAL_S``).
"""
from __future__ import annotations

import socket
import sys
import threading
import time

import numpy as np

from app import GUI_SWITCH_INTERVAL_S

DESCRIPTION = "OpenIGTLink pose stream to a pyigtl client over loopback: rate (Hz), latency p50/p95 (ms)"


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each stream (default 3 s)")
    parser.add_argument("--rate", type=float, default=100.0, help="poses sent per second (default 100)")
    parser.add_argument("--no-baseline", action="store_true", help="skip pyigtl's own server")
    parser.add_argument("--no-app", action="store_true",
                        help="skip the app's chain (control process -> feed thread -> link -> client)")


def _pose(k: int, t_sent: float) -> np.ndarray:
    T = np.eye(4)
    a = 0.01 * k
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    # float32 on the wire: the send time as milliseconds within the run, split to keep precision
    ms = (t_sent % 1000.0) * 1000.0
    T[:3, 3] = [float(k), np.floor(ms), ms - np.floor(ms)]
    return T


def _collect(client, seconds: float, t0: float, stop: threading.Event, out: list) -> None:
    """Drain the client's newest TRANSFORM as fast as it arrives (its own 10 ms poll is too coarse)."""
    seen = -1
    while not stop.is_set():
        with client.lock_incoming_messages:
            msg = client.incoming_messages.pop("FluoronavTool", None)
        now = time.perf_counter()
        if msg is not None:
            k = int(round(float(msg.matrix[0, 3])))
            if k > seen:
                sent_ms = float(msg.matrix[1, 3]) + float(msg.matrix[2, 3])
                lat = ((now - t0) % 1000.0) * 1000.0 - sent_ms
                out.append((k, now, lat))
                seen = k
        else:
            time.sleep(0.0002)


def _stream(send, client, seconds: float, rate: float) -> dict:
    import pyigtl  # noqa: F401  (the client type)
    received: list = []
    stop = threading.Event()
    t0 = time.perf_counter()
    th = threading.Thread(target=_collect, args=(client, seconds, t0, stop, received), daemon=True)
    th.start()
    period = 1.0 / rate
    k, start = 0, time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        send(_pose(k, now - t0))
        k += 1
        time.sleep(max(0.0, start + k * period - time.perf_counter()))
    time.sleep(0.1)
    stop.set()
    th.join()
    if len(received) < 2:
        return {"sent": k, "received": len(received), "rate_hz": 0.0, "latency_ms": None}
    times = np.array([r[1] for r in received])
    lat = np.array([r[2] for r in received])
    return {"sent": k, "received": len(received),
            "rate_hz": float((len(received) - 1) / (times[-1] - times[0])),
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                           "max": float(lat.max())}}


def _wait(cond, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def _stream_call_ms(n: int = 300) -> dict:
    """What the session's side adds per robot state (``app.igtl.SlicerStream``: kinematics, frame change,
    encoding, queueing), on the GUI thread in the app: p50/p95 over ``n`` distinct joint states."""
    import tempfile
    from types import SimpleNamespace
    from app.igtl import SlicerStream
    from app.session import Session
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from devices.igtl_link import IgtlLink
    kin = load_hybrid5()
    q0 = kin.joints_for_pose([625.0, 475.0, -135.0, 0.0, 0.0])
    link = IgtlLink("server", port=0)
    link.start()
    peer = socket.create_connection(("127.0.0.1", link.bound_port))
    try:
        _wait(lambda: link.connected)
        with tempfile.TemporaryDirectory() as d:
            session = Session(d, save_images=False)
            stream = SlicerStream(session, link, kin, frames=lambda: SimpleNamespace(T_cage0_base=np.eye(4)),
                                  pose_rate_hz=1e9)
            ts = []
            for k in range(n):
                q = q0 + 1e-3 * (k + 1)
                t = time.perf_counter()
                session.set_robot_state({"q": q.tolist()})
                ts.append(time.perf_counter() - t)
        if stream.poses_sent != n:
            return {"p50": None, "p95": None, "sent": stream.poses_sent}
        return {"p50": 1000 * float(np.percentile(ts, 50)), "p95": 1000 * float(np.percentile(ts, 95))}
    finally:
        peer.close()
        link.close()


def _busy(stop: threading.Event) -> None:
    """A thread that keeps the interpreter busy, as the GUI thread does while it lays out or
    draws (pure Python holds the GIL; the feed thread gets it at the 5 ms switch interval)."""
    x = 0
    while not stop.is_set():
        for k in range(20000):
            x = (x + k * k) % 1000003


def _slicer_side(port: int, seconds: float, conn) -> None:
    """The receiving end in a process of its own, as 3D Slicer is: every TRANSFORM decoded,
    with its float32 matrix and the ``perf_counter`` of its decode, sent back when the
    workstation side says it is done (or after ``seconds``)."""
    import pyigtl
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
    out = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            with client.lock_incoming_messages:
                msg = client.incoming_messages.pop("FluoronavTool", None)
            if msg is None:
                if conn.poll():           # the workstation side is done
                    break
                time.sleep(0.0002)
                continue
            out.append((np.asarray(msg.matrix[:3, :4], np.float32).tobytes(), time.perf_counter()))
    finally:
        client.stop()
        conn.send(out)
        conn.close()


def _app_chain(seconds: float, rate: float, load: bool) -> dict:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)        # as the workstation's process runs
    try:
        return _app_chain_run(seconds, rate, load)
    finally:
        sys.setswitchinterval(switch)


def _app_chain_run(seconds: float, rate: float, load: bool) -> dict:
    import multiprocessing as mp
    import tempfile
    from types import SimpleNamespace
    from app.igtl import SlicerStream
    from app.session import Session
    from app.slicer_gui import controller_joints
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from devices.igtl_link import IgtlLink
    from devices.robot_controller import RobotController
    controller = RobotController()
    controller.start(timeout_s=60.0)
    link = IgtlLink("server", port=0)
    link.start()
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    slicer = ctx.Process(target=_slicer_side, args=(link.bound_port, seconds + 30.0, theirs), daemon=True)
    sent: dict = {}
    stop = threading.Event()
    busy = threading.Thread(target=_busy, args=(stop,), daemon=True) if load else None
    try:
        slicer.start()
        if not _wait(lambda: link.connected, timeout=30.0):
            return {"rate_hz": 0.0, "latency_ms": None, "note": "the pyigtl client did not connect"}
        with tempfile.TemporaryDirectory() as d:
            session = Session(d, save_images=False)
            stream = SlicerStream(session, link, load_hybrid5(),
                                  frames=lambda: SimpleNamespace(T_cage0_base=np.eye(4)), pose_rate_hz=rate)
            stream.on_pose_sent = lambda T, t: sent.__setitem__(np.asarray(T[:3, :4], np.float32).tobytes(), t)
            if busy is not None:
                busy.start()
            stream.start_feed(lambda: controller_joints(controller))
            time.sleep(seconds)
            stream.stop_feed()
            stop.set()
        time.sleep(0.1)      # the last poses in flight
        mine.send("done")
        got = mine.recv() if mine.poll(10.0) else []
        slicer.join(5.0)
    finally:
        stop.set()
        if slicer.is_alive():
            slicer.kill()
        link.close()
        controller.close()
    received = [(t, 1000.0 * (t - sent[m])) for m, t in got if m in sent]
    if len(received) < 2:
        return {"rate_hz": 0.0, "latency_ms": None, "sent": len(sent), "received": len(received)}
    times = np.array([r[0] for r in received])
    lat = np.array([r[1] for r in received])
    return {"rate_hz": float((len(received) - 1) / (times[-1] - times[0])), "sent": len(sent),
            "received": len(received),
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                           "max": float(lat.max())}}


def run(args) -> dict:
    import pyigtl
    from devices.igtl_link import IgtlLink
    from app.cli import CommandError
    if not (args.seconds > 0 and args.rate > 0):
        raise CommandError("--seconds and --rate must be positive")
    link = IgtlLink("server", port=0)
    link.start()
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=link.bound_port)
    try:
        if not _wait(lambda: link.connected):
            raise CommandError("the pyigtl client did not connect to the link on loopback")
        ours = _stream(lambda T: link.send_pose(T), client, args.seconds, args.rate)
    finally:
        client.stop()
        link.close()
    out = {"pose_rate_hz": ours["rate_hz"], "latency_ms": ours["latency_ms"], "sent": ours["sent"],
           "received": ours["received"], "target_rate_hz": args.rate, "seconds": args.seconds,
           "stream_call_ms": _stream_call_ms()}
    if not args.no_app:
        from app.config import load_defaults
        rate = float(load_defaults().igtl.pose_rate_hz)
        out["app"] = {"pose_rate_hz_configured": rate, "idle": _app_chain(args.seconds, rate, load=False),
                      "under_load": _app_chain(args.seconds, rate, load=True)}
        out["app_pose_rate_hz"] = out["app"]["under_load"]["rate_hz"]
        out["app_latency_ms"] = out["app"]["under_load"]["latency_ms"]
    if not args.no_baseline:
        server = pyigtl.OpenIGTLinkServer(port=0, local_server=True)
        port = server.server_address[1]
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
        try:
            if _wait(lambda: server.is_connected()):
                base = _stream(lambda T: server.send_message(pyigtl.TransformMessage(T, device_name="FluoronavTool"),
                                                             wait=False), client, args.seconds, args.rate)
                out["baseline"] = {"name": "pyigtl OpenIGTLinkServer", "pose_rate_hz": base["rate_hz"],
                                   "latency_ms": base["latency_ms"]}
        finally:
            client.stop()
            server.stop()
    return out
