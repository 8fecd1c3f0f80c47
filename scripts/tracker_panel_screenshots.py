"""Screenshots of the Tracker panel in the running workstation, fed by the NDI driver talking
to the fake NDI system on loopback (tracker.kind = "ndi"): all tools seen; the patient marker
out of the camera's volume (the banner); the tracker silent (the 50 ms watchdog's fault).

    source scripts/xdisplay.sh && .venv/bin/python -u scripts/tracker_panel_screenshots.py OUT_DIR

Writes OUT_DIR/tracker_{seen,out_of_volume,silent}.png (the panel) and
OUT_DIR/tracker_window_out_of_volume.png (the whole window at 1920 x 1080).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings


def main(out: Path) -> int:
    from app.config import load_config
    from app.main import Workstation, create_application
    from devices.ndi.fake import FakeNdiServer, fake_rom

    out.mkdir(parents=True, exist_ok=True)
    server = FakeNdiServer(wired=("probe",)).start()
    names = ("robot_ref", "patient_ref", "probe")
    roms = []
    for name in names[:2]:
        p = out / f"{name}.rom"
        p.write_bytes(fake_rom(name))
        roms.append(str(p))
    T = np.eye(4)
    T[:3, 3] = [42.0, -15.5, -1450.0]
    server.set_pose("robot_ref", T, error_mm=0.19)
    T[:3, 3] = [-80.0, 30.25, -1620.0]
    server.set_pose("patient_ref", T, error_mm=0.24)
    server.set_pose("probe", T, error_mm=0.31)
    cfg = out / "tracker.toml"
    cfg.write_text(f'[tracker]\nkind = "ndi"\nhost = "127.0.0.1"\nport = {server.port}\n'
                   f'tool_names = {list(names)!r}\ntool_roms = {roms + [""]!r}\n'
                   'control_tools = ["robot_ref", "patient_ref"]\n'.replace("'", '"'))
    app = create_application([sys.argv[0]])
    st = Workstation(load_config(cfg), settings=QSettings(str(out / "fluoronav.ini"), QSettings.Format.IniFormat))
    st.session._root = out / "sessions"
    w = st.window
    w.setGeometry(0, 0, 1920, 1080)
    w.show()
    st.start()      # the devices: the simulated C-arm and robot, and the NDI driver

    def wait(cond, timeout_s, what):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout_s:
                view = st.tracker_monitor.view
                raise SystemExit(f"timed out waiting for {what}; tracker panel: "
                                 f"{view.status.value if view else '-'} {view.message if view else ''}")

    def settle(s=0.5):
        t0 = time.monotonic()
        while time.monotonic() - t0 < s:
            app.processEvents()
            time.sleep(0.02)

    monitor = st.tracker_monitor
    wait(lambda: monitor.view is not None and monitor.view.rows and monitor.view.rows[0][1] == "ok", 30,
         "the first tracked frame")
    w.docks["Tracker"].raise_()
    settle(1.2)
    monitor.panel.grab().save(str(out / "tracker_seen.png"))
    server.set_state("patient_ref", "out_of_volume")
    wait(lambda: monitor.view.banner is not None, 10, "the out-of-volume banner")
    settle(0.5)
    monitor.panel.grab().save(str(out / "tracker_out_of_volume.png"))
    w.grab().save(str(out / "tracker_window_out_of_volume.png"))
    server.misbehave("silent")
    wait(lambda: "no frame for" in monitor.view.message, 10, "the watchdog's fault")
    wait(lambda: "unanswered" in monitor.panel.health_label.text(), 10, "the first unanswered BX")
    settle(0.5)
    monitor.panel.grab().save(str(out / "tracker_silent.png"))
    print("rows:", monitor.view.rows)
    print("status:", monitor.view.status.value, monitor.view.message)
    st.shutdown()
    w.close()
    server.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: tracker_panel_screenshots.py OUT_DIR")
    raise SystemExit(main(Path(sys.argv[1])))
