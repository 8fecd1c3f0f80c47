"""Screenshots of the main window at 1920 x 1080 and 1366 x 768 on the simulated room, with
AP and LAT shots taken, a calibration accepted and an L4 left trajectory planned: what a surgeon
sees at the Plan step (Planning dock in front) and with the Robot panel in front.

    source scripts/xdisplay.sh && .venv/bin/python -u scripts/window_screenshots.py OUT_DIR [--links]

Writes OUT_DIR/{plan,robot,calibrate}_{1920x1080,1366x768}.png and prints each window's
minimum size. With ``--links`` (after OUT_DIR) the OpenIGTLink stream and the DICOM receiver are
on as well: a pyigtl client in another process (Slicer's stand-in) counts the tool poses while
the window renders 3D frames back to back, a simulated C-arm stores a LAT shot by C-STORE, and
OUT_DIR/links_1920x1080.png shows it in the LAT viewer with the Slicer and DICOM pills. A flat-panel C-arm (no plate shots) at 512 x 512 and a three-level phantom.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

SIZES = ((1920, 1080), (1366, 768))


def check_links(st, w, app, wait, shot) -> None:
    """The room's interfaces in the running workstation (``--links``): figures printed, one screenshot."""
    import multiprocessing as mp
    from app.bench.igtl import _slicer_side
    from devices.dicom_sender import shot_dataset, store
    st.slicer.start()
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_slicer_side, args=(st.slicer.link.bound_port, 60.0, theirs), daemon=True)
    proc.start()
    wait(lambda: st.slicer.link.connected, 30, "the Slicer stand-in to connect")
    n0, t0, frames = st.slicer.stream.poses_sent, time.monotonic(), 0
    while time.monotonic() - t0 < 5.0:
        app.processEvents()
        w.scene_view.render(interactive=True)     # the GUI thread busy: one 3D frame after another
        frames += 1
    dt = time.monotonic() - t0
    sent = st.slicer.stream.poses_sent - n0
    mine.send("done")
    got = mine.recv() if mine.poll(10) else []
    proc.join(5)
    ts = sorted(t for _, t in got)
    rate = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 else 0.0
    print(f"tool pose while the window rendered {frames / dt:.1f} 3D frames/s: sent {sent / dt:.1f} Hz, "
          f"the client process decoded {len(got)} ({rate:.1f} Hz)")
    receiver = st.dicom_inbox.sources[0]
    n = st.session.shots.count("lat")
    px = np.clip(np.asarray(st.session.image("lat").pixels, float), 0, 65535).astype(np.uint16)
    t = time.monotonic()
    status = store(receiver.port, [shot_dataset(px, primary_deg=90.0)])
    wait(lambda: st.session.shots.count("lat") > n, 30, "the stored LAT shot")
    print(f"C-STORE status {status}, LAT shot in the session {1000 * (time.monotonic() - t):.0f} ms after the store began")
    shot("links")


def main(out: Path, links: bool = False) -> int:
    from app.calibration_workflow import CalibrationWorkflow
    from app.config import load_defaults
    from app.main import Workstation, create_application
    from core.geometry.rigid import apply, invert
    from core.simulation.phantom import make_spine_phantom
    from devices.carm import SimulatedCArm
    from widgets.viewers.synthetic_input import click_pixel

    out.mkdir(parents=True, exist_ok=True)
    app = create_application([sys.argv[0]])
    config = load_defaults()
    if links:
        from app.config import Config
        values = config.as_dict()
        values["igtl"].update(enabled=True, port=0)
        values["dicom"].update(receive=True, port=0, allowed_calling_ae_titles=["CARM1"],
                               incoming_folder=str(out / "incoming"))
        config = Config(values)
    st = Workstation(config, settings=QSettings(str(out / "fluoronav.ini"), QSettings.Format.IniFormat))
    st.session._root = out / "sessions"
    w = st.window
    w.setGeometry(0, 0, *SIZES[0])
    w.show()

    def wait(cond, timeout_s, what):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout_s:
                raise SystemExit(f"timed out waiting for {what}")

    def settle():
        for _ in range(25):
            app.processEvents()
            time.sleep(0.02)

    def shot(name):
        settle()
        # the 3D view is OpenGL: a widget grab leaves it blank, so its own rendering is painted in
        from PySide6.QtCore import QPoint
        from PySide6.QtGui import QImage, QPainter
        pix = w.grab()
        sv = w.scene_view
        if sv.isVisible() and sv.width() > 0 and sv.height() > 0:
            rgb = np.ascontiguousarray(sv.grab_rgb())
            img = QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1], QImage.Format.Format_RGB888)
            ratio = pix.devicePixelRatio()
            painter = QPainter(pix)
            painter.drawImage(sv.mapTo(w, QPoint(0, 0)), img.scaled(int(sv.width() * ratio),
                                                                    int(sv.height() * ratio)))
            painter.end()
        path = out / f"{name}_{w.width()}x{w.height()}.png"
        pix.save(str(path))
        print("screenshot", path, "minimum size", w.minimumSizeHint().width(), "x", w.minimumSizeHint().height())

    def resize(size):
        w.setGeometry(0, 0, *size)
        settle()
        w._size_default_layout()   # the first-run proportions at this size, as on a fresh screen
        settle()

    phantom = make_spine_phantom(seed=0, spacing_mm=2.0, levels=("L3", "L4", "L5"))
    st.devices.add_device("carm", lambda: SimulatedCArm(seed=0, detector="flat_panel", latency_s=0.0,
                                                        phantom=phantom))
    wait(lambda: st.room.scene is not None and bool(st.session.robot_state), 600, "the simulated room and robot")
    st.carm_panel.set_angles(0, 20)
    wait(lambda: st.devices.can_acquire(), 60, "the C-arm pose")
    for size in SIZES:
        resize(size)
        shot("calibrate")
    resize(SIZES[0])
    QTest.mouseClick(w.workflow_bar.buttons["calibrate"], Qt.MouseButton.LeftButton)
    for view in ("ap", "lat"):
        n = st.session.shots.count(view)
        st.acquire(view)
        wait(lambda: st.session.shots.count(view) > n, 120, f"the {view} shot")
    for wiz in [c for c in w.children() if type(c).__name__ == "CalibrationWizard"]:
        wiz.reject()
    wf = CalibrationWorkflow(st.session)
    wf.set_use_plate(False)
    for view in ("ap", "lat"):
        wf.set_shot(view, st.session.image(view))
    wf.run_calibration()
    if wf.calibration is None:
        raise SystemExit(f"calibration failed: {wf.calibration_error}")
    wf.accept()
    cal = st.session.calibration
    QTest.mouseClick(w.workflow_bar.buttons["plan"], Qt.MouseButton.LeftButton)
    ped = phantom.pedicle("L4", "left")
    T_cage_world = invert(st.room.T_world_cage_calibrated)
    tid = st.planning.new_trajectory("L4", "left")
    for point in (ped.entry_mm, ped.target_mm):
        uv = cal.project(apply(T_cage_world, point))
        for view in ("ap", "lat"):
            click_pixel(w.viewers[view], *uv[view])
            app.processEvents()
    t = st.session.plans.get(tid)
    print("planned", t.name, f"{t.length_mm:.1f} mm" if t.complete else "(incomplete)")
    st.window.statusBar().showMessage(f"{t.name} planned: a status message beside the device pills", 60000)
    for size in SIZES:
        resize(size)
        w.show_step_panel("plan")
        shot("plan")
        w.docks["Robot"].raise_()
        tabs = w.robot_panel.tabs
        tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == "Hand guiding"))
        shot("robot")
    if links:
        resize(SIZES[0])
        w.show_step_panel("plan")
        check_links(st, w, app, wait, shot)
    st.shutdown()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edges_shots"), links="--links" in sys.argv[2:]))
