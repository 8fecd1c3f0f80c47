"""The main window on the workstation: 3D view really rendered (screenshot), status and
workflow bars follow the session, acquisition in a worker thread, persistence, config errors."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt, QThread
from PySide6.QtWidgets import QApplication, QLabel

from app.config import ConfigError, load_defaults
from app.main import Workstation, load_stylesheet
from core.imaging.fluoro_image import FluoroImage
from devices.base import DeviceStatus

pytestmark = pytest.mark.gui


class FakeCArm:
    """Test double behind the C-arm driver interface: a known image after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self._status = DeviceStatus.DISCONNECTED
        self.threads: list[str] = []

    def connect(self):
        self._status = DeviceStatus.SIMULATED

    def status(self):
        return self._status

    def acquire(self, view):
        self.threads.append((QThread.currentThread().objectName(), threading.get_ident()))
        time.sleep(self.delay_s)
        px = np.full((40, 50), 2000, np.uint16)
        px[10, 20] = 100 if view == "ap" else 200
        return FluoroImage(px, pixel_spacing_mm=(0.4, 0.4), sid_mm=1000.0, view=view)


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "fluoronav.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def station(qtbot, settings):
    st = Workstation(load_defaults(), settings=settings, panels=False)
    qtbot.addWidget(st.window)
    st.window.show()
    qtbot.waitExposed(st.window)
    yield st
    st.shutdown()
    st.window.close()


@pytest.fixture
def quiet_station(qtbot, settings):
    """A workstation not shown on screen (no OpenGL context: quicker) for model-to-widget wiring."""
    st = Workstation(load_defaults(), settings=settings, panels=False)
    qtbot.addWidget(st.window)
    yield st
    st.shutdown()
    st.window.close()


def screen_rgb(widget) -> np.ndarray:
    """What the X server shows of ``widget`` (a real screenshot, OpenGL included)."""
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    pix = QApplication.primaryScreen().grabWindow(0, top_left.x(), top_left.y(), widget.width(), widget.height())
    img = pix.toImage().convertToFormat(pix.toImage().Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    rgb = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
    return rgb.copy()  # the QImage owns the bytes and dies with this function


def test_window_shows_viewers_3d_view_status_and_workflow(station, qtbot):
    w = station.window
    assert set(w.viewers) == {"ap", "lat"} and all(v.isVisible() for v in w.viewers.values())
    assert w.scene_view.isVisible() and w.status_bar.isVisible() and w.workflow_bar.isVisible()
    ap, lat = (w.viewers[k].mapTo(w, w.viewers[k].rect().topLeft()) for k in ("ap", "lat"))
    assert ap.x() < lat.x() and ap.y() == lat.y(), "AP and LAT side by side"
    w.raise_()

    def rendered_on_screen():
        w.scene_view.render()
        QApplication.processEvents()
        shot = screen_rgb(w.scene_view)
        return len(np.unique(shot.reshape(-1, 3), axis=0)) > 50 and shot.std() > 3.0

    qtbot.waitUntil(rendered_on_screen, timeout=5000)  # the X server shows what VTK drew
    shot = screen_rgb(w.scene_view)
    assert shot.shape[0] > 200 and shot.shape[1] > 300
    # the dark gradient background, not black: most of the view is near #1b1f24..#2c343e
    assert np.median(shot.reshape(-1, 3), axis=0).min() > 20
    rgb = w.scene_view.grab_rgb()
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50 and rgb.std() > 3.0


def test_status_bar_follows_the_session_with_colour_and_tooltip(quiet_station):
    quiet_station.session.set_device_status("tracker", DeviceStatus.FAULT, "marker occluded")
    pill = quiet_station.window.status_bar.pill("tracker")
    assert pill.text().endswith("Tracker: fault") and "marker occluded" in pill.toolTip()
    assert "#8f1f1a" in pill.styleSheet()
    quiet_station.window.status_bar.set_status("footswitch", DeviceStatus.CONNECTED, "pedal ok")
    assert "Footswitch: connected" in quiet_station.window.status_bar.pill("footswitch").text()
    with pytest.raises(TypeError):
        quiet_station.window.status_bar.set_status("robot", "connected")


def test_workflow_bar_enables_steps_as_the_session_allows_and_highlights_the_current(station, qtbot):
    bar = station.window.workflow_bar
    assert [s for s, b in bar.buttons.items() if b.isEnabled()] == ["calibrate"]
    assert bar.buttons["plan"].toolTip() == "calibrate the cage first"
    qtbot.mouseClick(bar.buttons["calibrate"], Qt.MouseButton.LeftButton)
    assert station.session.step == "calibrate" and bar.buttons["calibrate"].isChecked()
    station.session.set_calibration({"rms_px": 0.3})
    assert bar.buttons["plan"].isEnabled()
    qtbot.mouseClick(bar.buttons["plan"], Qt.MouseButton.LeftButton)
    assert station.session.step == "plan"
    assert bar.buttons["plan"].isChecked() and not bar.buttons["calibrate"].isChecked()
    assert not station.go_to_step("verify")  # refused, with a log line, nothing changes
    assert bar.current == "plan"


def test_acquire_runs_off_the_gui_thread_and_fills_the_viewer(station, qtbot):
    w = station.window
    assert not w.acquire_actions["ap"].isEnabled()  # no C-arm yet
    fake = FakeCArm(delay_s=0.0)
    station.devices.add_device("carm", lambda: fake)
    qtbot.waitUntil(lambda: w.acquire_actions["ap"].isEnabled(), timeout=3000)
    assert "simulated" in w.status_bar.pill("carm").text()
    w.acquire_actions["lat"].trigger()
    qtbot.waitUntil(lambda: w.viewers["lat"].has_image(), timeout=3000)
    assert fake.threads == [("fluoronav-carm", fake.threads[0][1])]
    assert fake.threads[0][1] != threading.get_ident(), "acquired on the GUI thread"
    assert station.session.image("lat").pixels[10, 20] == 200
    assert not w.is_busy_shown()
    saved = sorted(p.name for p in station.session.folder.iterdir())
    assert saved == ["audit.jsonl", "lat-001.dcm", "session.json"]   # the shot is in the audit trail


def test_slow_acquisition_shows_busy_and_disables_acquire(station, qtbot):
    w = station.window
    station.devices.add_device("carm", lambda: FakeCArm(delay_s=0.6))
    qtbot.waitUntil(lambda: w.acquire_actions["ap"].isEnabled(), timeout=3000)
    with qtbot.waitActive(w):
        w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_F5)
    # F5 returns before the 0.6 s exposure ends: an acquisition on the GUI thread would have
    # delivered the image by now (a behaviour, not a time bound that a loaded machine breaks)
    assert not w.viewers["ap"].has_image() and station.session.image("ap") is None, \
        "the GUI thread must not wait for the C-arm"
    assert not w.acquire_actions["lat"].isEnabled()
    qtbot.waitUntil(w.is_busy_shown, timeout=1000)
    assert "Acquiring AP" in w.busy_label.text()
    qtbot.waitUntil(lambda: w.viewers["ap"].has_image(), timeout=3000)
    assert not w.is_busy_shown() and w.acquire_actions["lat"].isEnabled()


def test_dropped_image_goes_through_the_session(quiet_station):
    img = FakeCArm().acquire("ap")
    quiet_station.window.viewers["ap"].image_dropped.emit(img)
    assert quiet_station.session.image("ap") is not None and quiet_station.window.viewers["ap"].has_image()
    quiet_station.window.viewers["ap"].image_dropped.emit(img.with_view("lat"))  # wrong view: refused
    assert quiet_station.session.image("ap").view == "ap"


def test_a_failing_view_of_the_session_is_one_line_not_a_lost_image(quiet_station, caplog):
    """A listener that raises surfaces at the action (status bar and log, one line): the image
    is in the session and on disk, the views connected before it were drawn."""
    st = quiet_station
    st.session.save_images = False

    def broken(view, image):
        raise KeyError("overlay 'ruler' missing")
    st.session.image_changed.connect(broken)
    img = FakeCArm().acquire("ap")
    assert st.load_image("ap", img)
    assert st.session.image("ap") is not None and st.window.viewers["ap"].has_image()
    line = st.window.statusBar().currentMessage()
    assert line.startswith("loading the AP image: done, but a display of it failed (KeyError")
    assert "\n" not in line and line in caplog.text
    st.session.image_changed.disconnect(broken)
    assert st.load_image("ap", img) and st.window.statusBar().currentMessage() == line   # nothing new said


def test_log_panel_shows_records_coloured_by_level(quiet_station):
    logging.getLogger("core.calibration").error("only 5 balls found on plane ap_1")
    QApplication.processEvents()
    html = quiet_station.window.log_panel.document().toHtml()
    assert "only 5 balls found on plane ap_1" in html and "#ff7b72" in html


def test_add_dock_and_its_bad_input(quiet_station):
    w = quiet_station.window
    dock = w.add_dock("Robot", QLabel("jog"), "left")
    assert w.dockWidgetArea(dock) == Qt.DockWidgetArea.LeftDockWidgetArea
    with pytest.raises(ValueError, match="already exists"):
        w.add_dock("Robot", QLabel("again"), "left")
    with pytest.raises(ValueError, match="unknown dock area"):
        w.add_dock("Plan", QLabel("p"), "middle")
    with pytest.raises(ValueError, match="no dock titled 'Sky'"):
        w.add_dock("Plan", QLabel("p"), "right", tab_with="Sky")
    tab = w.add_dock("Verify", QLabel("v"), "bottom", tab_with="Log")
    assert set(w.tabifiedDockWidgets(tab)) == {w.docks["Log"], w.docks["Audit"]}   # the Audit sits beside the Log
    titles = [a.text() for a in w.panels_menu.actions()]
    assert titles == ["3D view", "Log", "Audit", "Robot", "Verify"]


def test_a_new_dock_beside_the_3d_view_does_not_squeeze_it(station, qtbot):
    w = station.window
    w.add_dock("Planning", QLabel("plan"), "right")
    qtbot.waitUntil(lambda: w.docks["Planning"].isVisible())
    qtbot.wait(50)
    h3d, hplan = w.docks["3D view"].height(), w.docks["Planning"].height()
    assert abs(h3d - hplan) < 0.25 * (h3d + hplan), (h3d, hplan)
    w.docks["3D view"].close()
    assert not w.docks["3D view"].isVisible()
    w.panels_menu.actions()[0].trigger()  # "Panels" → "3D view" brings it back
    assert w.docks["3D view"].isVisible()


def test_layout_persists_between_runs(qtbot, settings):
    first = Workstation(load_defaults(), settings=settings, panels=False)
    qtbot.addWidget(first.window)
    first.window.show()
    qtbot.waitExposed(first.window)
    assert not first.window.restore_layout()  # nothing saved yet
    first.window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, first.window.docks["Log"])
    first.window.resize(1234, 876)
    first.window.close()  # saves
    first.shutdown()
    second = Workstation(load_defaults(), settings=settings, panels=False)
    qtbot.addWidget(second.window)
    assert second.window.restore_layout()
    second.window.show()
    qtbot.waitExposed(second.window)
    assert second.window.dockWidgetArea(second.window.docks["Log"]) == Qt.DockWidgetArea.LeftDockWidgetArea
    assert (second.window.width(), second.window.height()) == (1234, 876)
    second.shutdown()
    second.window.close()


def test_config_error_is_shown_and_logged(quiet_station):
    err = ConfigError(["unknown key carm.kindd (known: kind)", "ui.font_pt = 99 is out of range [10, 32]"],
                      "/etc/fluoronav.toml")
    box = quiet_station.report_config_error(err)
    assert box.isVisible() and "unknown key carm.kindd" in box.text() and "simulated defaults" in box.text()
    QApplication.processEvents()
    text = quiet_station.window.log_panel.toPlainText()
    assert "unknown key carm.kindd" in text and "out of range" in text
    box.close()


def test_stylesheet_sizes_are_large_enough():
    qss = load_stylesheet(14)
    assert "@" not in qss.replace("@media", "")
    assert "font-size: 14pt" in qss and "font-size: 18pt" in qss and "min-height: 44px" in qss


class FakeSimCArm(FakeCArm):
    """A C-arm double that, like the simulator, keeps the true geometry of its last shots."""

    def __init__(self):
        super().__init__()
        from core.calibration.cage import load_cage
        from resources import path
        self.scene = type("Scene", (), {"cage": load_cage(path("cages", "default.json"))})()
        self.last_shots = {}

    def acquire(self, view):
        from core.geometry.cone_beam import ConeBeamGeometry
        image = super().acquire(view)
        rows, cols = image.shape
        u, v, sp = np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), 0.5
        centre = np.array([0.0, 375.0, 0.0])  # source 625 mm before the isocentre, detector 375 mm after
        geometry = ConeBeamGeometry(np.array([0.0, -625.0, 0.0]),
                                    centre - (cols - 1) / 2 * sp * u - (rows - 1) / 2 * sp * v,
                                    u, v, (sp, sp), (rows, cols))
        T = np.eye(4)
        T[:3, 3] = (5000.0, 0.0, 0.0)  # far away: the cage must be drawn where T puts it
        self.last_shots[view] = type("Shot", (), {"geometry_world": geometry, "T_world_cage": T, "image": image,
                                                  "distortion": None})()
        return image


def test_simulated_shot_draws_beam_and_cage_where_the_truth_says(station, qtbot):
    from app.scene_shots import install_shot_frustums
    shots = install_shot_frustums(station)  # the full workstation installs it with the panels
    station.devices.add_device("carm", FakeSimCArm)
    qtbot.waitUntil(lambda: station.window.acquire_actions["ap"].isEnabled(), timeout=3000)
    station.acquire("ap")
    qtbot.waitUntil(lambda: "shot_ap" in station.window.scene_view.actor_names(), timeout=3000)
    sv = station.window.scene_view
    assert sorted(sv.actor_names()) == ["cage", "shot_ap"]
    xmin, xmax = sv.actor("cage").GetBounds()[:2]
    assert xmin > 4500 and xmax < 5500  # balls at T_world_cage, within the cage's extent
    shot = shots.actors["ap"]
    assert shot.sphere.GetCenter() == pytest.approx((0.0, -625.0, 0.0), abs=1e-6)  # the true source
    bx = shot.image_actor.GetBounds()  # the image on the detector plane, 375 mm past the isocentre
    assert bx == pytest.approx((-12.5, 12.5, 375.0, 375.0, -10.0, 10.0), abs=1e-3)  # 50 x 40 px of 0.5 mm
    assert shots.status["ap"] == "the simulated C-arm" and shot.shows_image


class BrokenCArm(FakeCArm):
    def acquire(self, view):
        from devices.base import DeviceError
        raise DeviceError("generator not ready: check the C-arm's X-ray enable key")


class UnpluggedCArm(FakeCArm):
    def connect(self):
        raise OSError("no route to host 10.0.0.9")


def test_failed_acquisition_is_logged_and_releases_the_buttons(station, qtbot):
    w = station.window
    failures = []
    station.devices.acquisition_failed.connect(lambda v, m: failures.append((v, m)))
    station.devices.add_device("carm", BrokenCArm)
    qtbot.waitUntil(lambda: w.acquire_actions["lat"].isEnabled(), timeout=3000)
    station.acquire("lat")
    qtbot.waitUntil(lambda: bool(failures), timeout=3000)
    assert failures == [("lat", "generator not ready: check the C-arm's X-ray enable key")]
    assert not w.viewers["lat"].has_image() and not w.is_busy_shown()
    assert w.acquire_actions["lat"].isEnabled()
    QApplication.processEvents()
    assert "acquire LAT failed: generator not ready" in w.log_panel.toPlainText()


def test_connection_failure_is_a_fault_in_the_status_bar(station, qtbot):
    station.devices.add_device("carm", UnpluggedCArm)
    pill = station.window.status_bar.pill("carm")
    qtbot.waitUntil(lambda: "fault" in pill.text(), timeout=3000)
    assert "no route to host 10.0.0.9" in pill.toolTip()
    assert not station.window.acquire_actions["ap"].isEnabled()
    assert station.acquire("ap") is None  # F5 on a faulty C-arm: refused with the reason
    QApplication.processEvents()
    assert "cannot acquire AP: the C-arm is fault" in station.window.log_panel.toPlainText()


def test_acquire_refuses_unknown_view_and_missing_carm(quiet_station):
    with pytest.raises(ValueError, match="unknown view"):
        quiet_station.devices.acquire("axial")
    from devices.base import DeviceError
    with pytest.raises(DeviceError, match="no C-arm is configured"):
        quiet_station.devices.acquire("ap")


def test_driver_factory_builds_the_configured_c_arm(tmp_path):
    from app.config import load_config
    from app.devices_controller import driver_factory
    from devices.carm import DicomFolderSource, SimulatedCArm
    p = tmp_path / "c.toml"
    p.write_text('[carm]\nseed = 7\n[robot]\nkind = "none"\n')
    factory, why = driver_factory("carm", load_config(p))
    carm = factory()
    assert why == "" and isinstance(carm, SimulatedCArm) and carm.seed == 7
    p.write_text(f'[carm]\nkind = "dicom_folder"\ndicom_folder = "{tmp_path}"\nacquire_timeout_s = 12\n')
    carm = driver_factory("carm", load_config(p))[0]()
    assert isinstance(carm, DicomFolderSource) and carm.folder == tmp_path and carm.timeout_s == 12.0


def test_driver_factory_leaves_robot_and_force_sensor_to_the_robot_process(tmp_path):
    from app.config import load_config
    from app.devices_controller import driver_factory
    p = tmp_path / "c.toml"
    p.write_text('[robot]\nkind = "none"\n')
    config = load_config(p)
    assert driver_factory("robot", config) == (None, 'not configured (robot.kind = "none")')
    factory, why = driver_factory("force_sensor", config)
    assert factory is None and why == "simulated force sensor: started with the robot panel"


def test_starting_the_devices_keeps_what_the_robot_process_already_said(quiet_station):
    """The devices start after the first paint; the robot's control process, started with
    the robot panel, may have reported by then: its status stays."""
    from devices.base import DeviceStatus
    s = quiet_station.session
    s.set_device_status("robot", DeviceStatus.SIMULATED, "simulated hybrid robot")
    quiet_station.start()
    assert s.device_status("robot") == (DeviceStatus.SIMULATED, "simulated hybrid robot")
    # not reported yet: the status says who will start it
    assert s.device_status("force_sensor") == (DeviceStatus.DISCONNECTED,
                                               "simulated force sensor: started with the robot panel")


# -- the integrated workstation: planning, robot, C-arm panels and the simulated room ------------

@pytest.fixture
def full_station(qtbot, settings, tmp_path):
    config = load_defaults()
    st = Workstation(config, settings=settings)
    st.session._root = tmp_path / "sessions"
    qtbot.addWidget(st.window)
    yield st
    st.shutdown()
    st.window.close()


def test_panels_sit_in_a_right_hand_column_that_leaves_the_viewers_the_rest(full_station, qtbot):
    w = full_station.window
    assert {"3D view", "Planning", "Robot", "C-arm", "Navigate", "Tracker", "Log", "Shots"} <= set(w.docks)
    assert full_station.planning is not None and full_station.robot is not None
    assert full_station.viewer_tools is not None
    right = Qt.DockWidgetArea.RightDockWidgetArea
    tabs = {d.windowTitle() for d in w.tabifiedDockWidgets(w.docks["C-arm"])}
    assert tabs == {"Planning", "Robot", "Navigate", "Tracker"} and w.dockWidgetArea(w.docks["3D view"]) == right
    # the right column and the bottom docks never ask for more than a 1600x900 screen leaves
    viewers_w = sum(v.minimumSizeHint().width() for v in w.viewers.values())
    assert w.minimumSizeHint().width() - viewers_w <= 620
    assert w.minimumSizeHint().height() <= 900
    w.setGeometry(0, 0, 1920, 1080)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(100)
    sv = w.docks["3D view"]
    assert sv.height() >= 300 and sv.width() >= 450, (sv.width(), sv.height())
    for v in w.viewers.values():
        assert v.width() >= 500 and v.height() >= 550, (v.width(), v.height())
    assert not w.docks["C-arm"].visibleRegion().isEmpty() and w.docks["Robot"].visibleRegion().isEmpty()


def test_each_workflow_step_brings_its_panel_to_the_front(full_station, qtbot):
    st, w = full_station, full_station.window
    w.setGeometry(0, 0, 1920, 1080)
    w.show()
    qtbot.waitExposed(w)
    shown = lambda title: not w.docks[title].visibleRegion().isEmpty()  # noqa: E731
    assert shown("C-arm") and not shown("Planning")
    st.session.step_changed.emit("plan")      # as the session does when the step changes
    qtbot.waitUntil(lambda: shown("Planning"), timeout=2000)
    assert not shown("C-arm") and not shown("Robot")
    st.session.step_changed.emit("align")      # Align's panel: Navigate (preview, hold to move)
    qtbot.waitUntil(lambda: shown("Navigate"), timeout=2000)
    assert not shown("Planning") and not shown("Robot")
    w.show_step_panel("no such step")          # nothing to raise: nothing changes
    assert shown("Navigate")


def test_robot_panel_renders_the_sessions_robot_state(full_station, qtbot):
    """The robot's state reaches the panel through the session (one adapter), not from the
    controller client directly: a state written into the session is what the panel shows."""
    st = full_station
    panel = st.window.robot_panel
    qtbot.waitUntil(lambda: bool(st.session.robot_state), timeout=30000)
    state = dict(st.session.robot_state)
    state["pose"] = [601.25, 432.5, -140.0, 0.0, 0.0]
    st.session.set_robot_state(state)
    assert "x   601.2  y   432.5  z  -140.0 mm" in panel.pose_label.text()


def test_simulated_room_in_the_workstation_robot_holds_cage_bone_in_3d(full_station, qtbot):
    from app.simulated_room import robot_home_q
    st, w = full_station, full_station.window
    w.show()
    qtbot.waitExposed(w)
    from devices.carm import SimulatedCArm
    st.devices.add_device("carm", lambda: SimulatedCArm(seed=0, shape=(256, 256), latency_s=0.0))  # small shots
    qtbot.waitUntil(lambda: st.room.scene is not None, timeout=180000)  # phantom and bone surface: slow on a busy 2-core box
    sv = w.scene_view
    assert {"bone", "cage", "robot"} <= set(sv.actor_names())
    kin = st.robot.kinematics
    T0 = st.room.scene["T_world_cage"]
    # the cage hangs on the true (simulated) mechanism, which differs from the controller's model
    true_cage = st.room.true_robot.cage(robot_home_q(kin))
    # within the true mechanism's backlash, whose side depends on the motion since the scene was built
    assert np.abs(st.room.T_world_base @ true_cage - T0).max() < 0.05
    assert np.abs(kin.cage(robot_home_q(kin)) - true_cage)[:3, 3].max() > 0.1   # not the nominal mount
    M = st.window.robot_actors.assembly.GetUserMatrix()
    assert np.array([[M.GetElement(i, j) for j in range(4)] for i in range(4)]) == pytest.approx(
        st.room.T_world_base, abs=1e-9)
    # the bone surface lies in the phantom, between the cage's AP layers and the table
    bx = sv.actor("bone").GetBounds()
    assert bx[3] < T0[1, 3] and bx[1] - bx[0] > 80
    # angles set in the panel reach the C-arm before the shot
    st.carm_panel.set_angles(15, -5)
    qtbot.waitUntil(lambda: st.devices.can_acquire(), timeout=30000)
    st.acquire("ap")
    qtbot.waitUntil(lambda: st.session.image("ap") is not None, timeout=30000)
    img = st.session.image("ap")
    assert (img.primary_angle_deg, img.secondary_angle_deg) == (15.0, -5.0)
    qtbot.waitUntil(lambda: "AP shot: LAO 15° · CAUD 5°" in st.carm_panel.last_labels["ap"].text(), timeout=3000)
    # a robot jog moves the drawn cage and keeps the calibration (the C-arm did not move)
    qtbot.waitUntil(lambda: bool(st.robot.state), timeout=30000)
    calibration = {"rms_px": 0.2}
    st.session.set_calibration(calibration)
    st.robot.step_task([10.0, 0, 0, 0, 0])
    moved = lambda: np.linalg.norm(st.cage_actors.T_scene_cage[:3, 3] - T0[:3, 3])  # noqa: E731
    # the step's arrival: 10 mm by the model; the true mechanism adds its errors (the backlash of
    # the joints the step reversed: hundredths of a mm)
    qtbot.waitUntil(lambda: st.robot.state.get("mode") == "idle" and abs(moved() - 10.0) < 0.2, timeout=20000)
    qtbot.wait(300)
    QApplication.processEvents()
    true_now = st.room.T_world_base @ st.room.true_robot.cage(st.room.current_q())
    assert np.abs(st.cage_actors.T_scene_cage - true_now).max() < 1e-3        # drawn where the truth holds it
    assert st.cage_actors.T_scene_cage[:3, 3] - T0[:3, 3] == pytest.approx(10.0 * st.room.T_world_base[:3, 0], abs=0.2)
    QApplication.processEvents()
    assert st.session.calibration is calibration
    assert "the calibration no longer matches" not in w.log_panel.toPlainText()
    assert not w.banner.isVisible()
    # a C-arm move does invalidate it: a banner over the viewers says why and what to do
    st.carm_panel.set_angles(30, -5)
    qtbot.waitUntil(lambda: st.devices.can_acquire(), timeout=30000)
    st.acquire("ap")
    qtbot.waitUntil(lambda: st.session.calibration is None, timeout=30000)
    QApplication.processEvents()
    assert w.banner.isVisible()
    text = w.banner.text()
    assert "C-arm moved" in text and "+30.0°/-5.0°" in text and "+15.0°/-5.0°" in text and "calibrate" in text
    st.session.set_calibration({"rms_px": 0.2})          # a new calibration clears it
    assert not w.banner.isVisible()


def test_a_dock_panels_stop_stays_above_its_scrolled_part(qtbot):
    """A tall panel scrolls inside its dock; its STOP (``PINNED``) never scrolls out of sight."""
    from PySide6.QtWidgets import QDockWidget, QScrollArea
    from widgets.main_window import MainWindow, _scrollable
    from widgets.panels.navigation_panel import NavigationPanel
    w = MainWindow(settings=QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "fluoronav-test-pin"))
    qtbot.addWidget(w)
    panel = NavigationPanel(install_keys=False)
    dock = QDockWidget("Navigate", w)
    dock.setWidget(panel)
    _scrollable(dock)
    area = dock.widget().findChild(QScrollArea, "dock_scroll")
    assert dock.widget().objectName() == "dock_pinned" and area.widget() is panel
    assert not area.isAncestorOf(panel.stop_button) and dock.widget().isAncestorOf(panel.stop_button)
    w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    w.show()
    dock.resize(400, 200)                           # far shorter than the panel
    qtbot.waitExposed(w)
    area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    assert panel.stop_button.isVisible() and panel.stop_button.visibleRegion().boundingRect().height() > 20
