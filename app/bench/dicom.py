"""``fluoronav bench dicom``: C-STORE of a 1024² 16-bit shot from the simulated C-arm (pynetdicom
SCU, one association per shot as C-arms do) over loopback to the shot being in the session and,
when Qt can start (offscreen), drawn in its viewer. Baseline in the same run: File → Open of the
same file (read and added to the session). The issue's target: ≤ 1 s to the viewer.
"""
from __future__ import annotations

import os
import queue
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DESCRIPTION = "C-STORE of a 1024² 16-bit shot over loopback to the session and viewer (p50/p95)"


def add_arguments(parser) -> None:
    parser.add_argument("--stores", type=int, default=20, help="shots stored (default 20)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    parser.add_argument("--no-viewer", action="store_true", help="session only, no offscreen viewer")


def _pct(values_s) -> dict:
    ms = sorted(1000.0 * v for v in values_s)
    return {"p50": round(statistics.median(ms), 2), "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
            "max": round(ms[-1], 2)}


def _viewer():
    """A LAT FluoroViewer on an offscreen Qt platform, or None when Qt cannot start."""
    try:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtWidgets import QApplication
        app = QApplication.instance() or QApplication([])
        from widgets.viewers.fluoro_viewer import FluoroViewer
        v = FluoroViewer("lat")
        v.resize(800, 800)
        return app, v
    except Exception:  # no Qt here: the figure is to the session only
        return None


def run(args) -> dict:
    from app.dicom_inbox import ShotInbox
    from app.session import Session
    from core.imaging.images import read_shots
    from devices.dicom_receiver import DicomReceiver, ReceiverConfig
    from devices.dicom_sender import shot_dataset, store

    rng = np.random.default_rng(0)
    n, size = max(2, int(args.stores)), int(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = Session(tmp / "sessions", save_images=False)
        inbox = ShotInbox(session)
        arrived: queue.Queue = queue.Queue()
        receiver = DicomReceiver(ReceiverConfig(port=0, allowed_calling_ae_titles=["CARM1"], incoming=tmp / "in"),
                                 on_shot=arrived.put)
        receiver.connect()
        gui = None if args.no_viewer else _viewer()
        drawn = []
        if gui is not None:
            session.image_changed.connect(lambda view, image: (gui[1].set_image(image), gui[0].processEvents(),
                                                               drawn.append(time.perf_counter())))
        shots = [shot_dataset(rng.integers(0, 4096, (size, size)).astype(np.uint16), primary_deg=90.0)
                 for _ in range(n + 1)]
        store_s, session_s, viewer_s = [], [], []
        try:
            for i, ds in enumerate(shots):
                t0 = time.perf_counter()
                status = store(receiver.port, [ds])
                t_stored = time.perf_counter()
                if status != [0]:
                    raise RuntimeError(f"C-STORE failed with status {status}")
                view = inbox.take(arrived.get(timeout=10))
                t_session = time.perf_counter()
                if view != "lat":
                    raise RuntimeError("the shot did not reach the LAT view")
                if i == 0:
                    continue                         # warm-up: imports, first association
                store_s.append(t_stored - t0)
                session_s.append(t_session - t0)
                if gui is not None:
                    viewer_s.append(drawn[-1] - t0)
            files = sorted((tmp / "in").iterdir())
            opened = []
            for path in files[1:]:
                t0 = time.perf_counter()
                session.open_shots("lat", read_shots(path), path.name, path)
                opened.append(time.perf_counter() - t0)
        finally:
            receiver.disconnect()
    figures = {"stores": n, "image": f"{size}x{size} uint16",
               "store_ms": _pct(store_s), "store_to_session_ms": _pct(session_s)}
    if viewer_s:
        figures["store_to_viewer_ms"] = _pct(viewer_s)
    figures["baseline_name"] = "File → Open of the same file (read + into the session" + (" + viewer)" if viewer_s else ")")
    figures["baseline_ms"] = _pct(opened)
    figures["target_ms"] = 1000.0
    figures["within_target"] = (figures.get("store_to_viewer_ms") or figures["store_to_session_ms"])["p95"] <= 1000.0
    return figures
