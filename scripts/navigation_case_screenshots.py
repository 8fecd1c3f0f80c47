"""One whole simulated case through the running workstation's workflow bar, with screenshots:
Calibrate (AP + LAT shots, the calibration workflow), Plan (clicks at the phantom's true L4 left
pedicle axis, 1 px noise), Align (the tool load identified first; the preview; hold MOVE until the
guide is on the line; the simulated hand pulls it back along the line and pushes it in again to
the stand-off under the virtual fixture; Correct
from shots, each correction on a MOVE hold, until 0.3 mm / 0.3 deg; hold INSERT to the planned
depth), Verify (AP + LAT with the K-wire; deviations and grade).

    source scripts/xdisplay.sh && .venv/bin/python -u scripts/navigation_case_screenshots.py OUT_DIR

Writes OUT_DIR/align_preview.png, aligned.png, closed_loop.png and verify_result.png and prints
the closed loop's and the verification's figures. A flat-panel C-arm (no plate shots needed) at 512 x 512.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget


def focus_3d(st, zoom_out: float) -> None:
    """The 3D camera on the planned trajectory from the front-left above, backed off to show the guide."""
    sv = st.window.scene_view
    sv.camera_preset("overview")
    st.planning.scene.focus()
    sv.renderer.GetActiveCamera().Zoom(1.0 / zoom_out)
    sv.renderer.ResetCameraClippingRange()
    sv.render()


def main(out: Path) -> int:
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from app.calibration_workflow import CalibrationWorkflow
    from app.config import load_defaults
    from app.main import Workstation, create_application
    from core.geometry.rigid import apply, invert
    from core.simulation.phantom import make_spine_phantom
    from devices.carm import SimulatedCArm
    from widgets.viewers.synthetic_input import click_pixel

    out.mkdir(parents=True, exist_ok=True)
    app = create_application([sys.argv[0]])
    st = Workstation(load_defaults(), settings=QSettings(str(out / "fluoronav.ini"), QSettings.Format.IniFormat))
    st.session._root = out / "sessions"
    w = st.window
    w.setGeometry(0, 0, 1920, 1080)
    w.show()

    def wait(cond, timeout_s, what):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout_s:
                raise SystemExit(f"timed out waiting for {what}")

    def shot(name):
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        # the 3D view is OpenGL: a widget grab leaves it blank, so its own rendering is painted in
        from PySide6.QtCore import QPoint
        from PySide6.QtGui import QImage, QPainter
        pix = w.grab()
        sv = w.scene_view
        rgb = np.ascontiguousarray(sv.grab_rgb())
        img = QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1], QImage.Format.Format_RGB888)
        ratio = pix.devicePixelRatio()
        painter = QPainter(pix)
        at = sv.mapTo(w, QPoint(0, 0))
        painter.drawImage(at, img.scaled(int(sv.width() * ratio), int(sv.height() * ratio)))
        painter.end()
        path = out / f"{name}.png"
        pix.save(str(path))
        print("screenshot", path)

    def click(button):
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        app.processEvents()

    # a small phantom (three levels on a 2 mm grid): the case's figures, not the CT's detail
    phantom = make_spine_phantom(seed=0, spacing_mm=2.0, levels=("L3", "L4", "L5"))
    st.devices.add_device("carm", lambda: SimulatedCArm(seed=0, detector="flat_panel", latency_s=0.0,
                                                        phantom=phantom))
    wait(lambda: st.room.scene is not None and bool(st.session.robot_state), 600, "the simulated room and robot")
    wait(lambda: st.room.T_world_base is not None, 60, "the robot base")
    # the tool's weight identified first (Robot panel, Tool load): hand guiding needs it
    st.robot.identify_tool()
    wait(lambda: bool(st.robot.state.get("tool_load")) and st.robot.state.get("mode") == "idle", 300,
         "the tool-load identification")
    print("tool load identified")
    # the C-arm tilted 20 deg cranio-caudally, as for pedicles: the pedicle axis then is not near the AP beam
    st.carm_panel.set_angles(0, 20)
    wait(lambda: st.devices.can_acquire(), 60, "the C-arm pose")
    # 1. Calibrate
    click(w.workflow_bar.buttons["calibrate"])
    for view in ("ap", "lat"):
        n = st.session.shots.count(view)
        st.acquire(view)
        wait(lambda: st.session.shots.count(view) > n, 120, f"the {view} shot")
    if st.open_calibration is not None:
        for wiz in [c for c in w.children() if type(c).__name__ == "CalibrationWizard"]:
            wiz.close()
    wf = CalibrationWorkflow(st.session)
    wf.set_use_plate(False)
    for view in ("ap", "lat"):
        wf.set_shot(view, st.session.image(view))
    wf.run_calibration()
    if wf.calibration is None:
        raise SystemExit(f"calibration failed: {wf.calibration_error}")
    wf.accept()
    cal = st.session.calibration
    print("calibrated; robot q0", np.round(st.navigation.frames.q0, 3).tolist())
    # 2. Plan: clicks at the true pedicle axis projected by the calibration, 1 px noise
    click(w.workflow_bar.buttons["plan"])
    ped = phantom.pedicle("L4", "left")
    T_cage_world = invert(st.room.T_world_cage_calibrated)
    rng = np.random.default_rng(5)
    tid = st.planning.new_trajectory("L4", "left")
    for point in (ped.entry_mm, ped.target_mm):
        uv = cal.project(apply(T_cage_world, point))
        for view in ("ap", "lat"):
            a = rng.uniform(0, 2 * np.pi)
            u, v = uv[view] + [np.cos(a), np.sin(a)]
            click_pixel(w.viewers[view], u, v)
            app.processEvents()
    assert st.session.plans.get(tid).complete, "the trajectory is not complete"
    # 3. Align: preview, then hold MOVE until on the line, hold INSERT to depth
    click(w.workflow_bar.buttons["align"])
    wait(lambda: st.session.step == "align", 10, "the Align step")
    nav, panel = st.navigation, st.navigation_panel
    if nav.preview is None:
        print("Align refused:", nav.refusal)
        shot("align_refused")
        return 1
    focus_3d(st, 2.2)
    shot("align_preview")
    QTest.mousePress(panel.move_button, Qt.MouseButton.LeftButton)
    wait(lambda: nav.phase != "approach", 120, "the approach")
    QTest.mouseRelease(panel.move_button, Qt.MouseButton.LeftButton)
    print("after the approach:", nav.phase, st.session.alignment and
          {k: st.session.alignment[k] for k in ("tip_error_mm", "angle_error_deg")})
    shot("aligned")
    # 3a. hand guiding along the line (the virtual fixture), with the simulated hand: back out, then in
    def hold_push(key, seconds):
        b = panel.push_buttons[key]
        QTest.mousePress(b, Qt.MouseButton.LeftButton)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            app.processEvents()
            time.sleep(0.01)
        QTest.mouseRelease(b, Qt.MouseButton.LeftButton)
        app.processEvents()
    T0 = st.robot.kinematics.forward(np.asarray(st.session.robot_state["q"], float))
    hold_push("out", 1.0)
    T1 = st.robot.kinematics.forward(np.asarray(st.session.robot_state["q"], float))
    rp = w.findChild(QWidget, "robot_panel")
    print("robot panel says:", rp.message_label.text() if rp is not None else "-")
    print("guided out by", round(float(np.linalg.norm(T1[:3, 3] - T0[:3, 3])), 2), "mm; phase", nav.phase)
    hold_push("in", 3.0)
    wait(lambda: nav.phase == "aligned", 30, "the guide back at the stand-off")
    print("guided back in: phase", nav.phase)
    # 3b. the closed loop: shots with the wire docked on the entry, each correction on a Move hold
    click(panel.correct_button)
    for _ in range(6):
        wait(lambda: nav.phase != "correcting", 180, "the closed-loop shots")
        if nav.phase != "correction":
            break
        QTest.mousePress(panel.move_button, Qt.MouseButton.LeftButton)
        wait(lambda: nav.phase not in ("correction", "approach"), 120, "the correction motion")
        QTest.mouseRelease(panel.move_button, Qt.MouseButton.LeftButton)
    loop = nav.loop.summary() if nav.loop is not None else None
    print("closed loop:", loop and loop["stop_reason"], "truth per pair:", nav.loop_truth)
    focus_3d(st, 2.2)
    shot("closed_loop")
    QTest.mousePress(panel.insert_button, Qt.MouseButton.LeftButton)
    wait(lambda: nav.phase != "insert" and nav.phase != "aligned", 180, "the insertion")
    QTest.mouseRelease(panel.insert_button, Qt.MouseButton.LeftButton)
    print("after the insertion:", nav.phase)
    # 4. Verify
    click(panel.verify_button)
    wait(lambda: nav.phase not in ("verifying", "aligned", "inserted"), 180, "the verification")
    res = st.session.verification
    if res is None:
        print("verification failed:", panel.message_label.text())
        shot("verify_failed")
        return 1
    print(res.summary())
    print("truth:", res.truth)
    focus_3d(st, 1.6)
    shot("verify_result")
    st.shutdown()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/navigation_case")))
