"""The application shell: QApplication, theme, and the workstation that wires window,
session and devices together. ``run_gui(config_path)`` is what ``fluoronav gui`` calls.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import numpy as np


from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QMessageBox

import resources
from app.config import Config, ConfigError, load_config, load_defaults
from app.devices_controller import DevicesController
from app.qt_connect import connect_while_alive
from psygnal import EmitLoopError

from app.session import DEVICES, Session, SessionError, listener_failure
from devices.base import DeviceError
from widgets.main_window import MainWindow
from widgets.panels.carm_panel import angle_text

__all__ = ["Workstation", "create_application", "load_stylesheet", "run_gui"]

log = logging.getLogger(__name__)

START_DEVICES_BY_MS = 3000   # the devices start at the first paint, or by then at the latest


def load_stylesheet(font_pt: int = 14) -> str:
    """The dark theme with its font sizes (body, large, title) filled in."""
    qss = resources.path("style", "dark.qss").read_text()
    sizes = {"@BODY@": font_pt, "@LARGE@": round(font_pt * 1.3), "@TITLE@": round(font_pt * 1.6),
             "@SMALL@": max(font_pt - 2, 10)}
    for key, pt in sizes.items():
        qss = qss.replace(key, f"{pt}pt")
    return qss


def create_application(argv=None, font_pt: int = 14) -> QApplication:
    """The QApplication (reused when one exists) with the dark theme applied."""
    from app import GUI_SWITCH_INTERVAL_S
    sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv[:1]))
    app.setOrganizationName("fluoronav")
    app.setApplicationName("fluoronav")
    apply_theme(app, font_pt)
    return app


def apply_theme(app: QApplication, font_pt: int) -> None:
    app.setStyle("Fusion")
    font = QFont("DejaVu Sans")
    font.setPointSize(font_pt)
    app.setFont(font)
    app.setStyleSheet(load_stylesheet(font_pt))


class Workstation:
    """Window + session + devices. Every widget action calls one method here."""

    def __init__(self, config: Config | None = None, settings: QSettings | None = None,
                 panels: bool = True):
        """``panels=False``: window, session and devices only (no planning, robot, C-arm
        panels nor robot control process): what wiring tests of the shell need."""
        self.config = config or load_defaults()
        self.session = Session(self.config.session.data_dir or None,
                               save_images=self.config.session.save_images)
        self.window = MainWindow(settings)
        self.devices = DevicesController(self.config, self.session, parent=self.window)
        self.config_error_box: QMessageBox | None = None
        self.planning = self.robot = self.carm_panel = self.room = self.navigation = None
        self.dicom_inbox = None
        self._started = False
        self._wire()
        from app.calibration_workflow import install_calibration_wizard  # the Calibrate step opens the wizard
        self.open_calibration = install_calibration_wizard(self.window, self.session, self.devices, self.acquire)
        if panels:
            self._install_panels()
        self._add_resume_action()
        from app.slicer_gui import install_slicer  # OpenIGTLink stream, its pill, markups export/import
        self.slicer = install_slicer(self)
        self._install_audit()
        # the Slicer and DICOM pills only where the configuration turns those links on: at
        # 1366 px the status bar has no room for pills of what is off (messages would vanish)
        bar, cfg = self.window.status_bar, self.config
        bar.pill("slicer").setVisible(bool(cfg.igtl.enabled))
        bar.pill("dicom").setVisible(bool(cfg.dicom.receive or str(cfg.dicom.watch_folder).strip()))

    def _install_panels(self) -> None:
        """Planning, robot and C-arm docks; the simulated room when the C-arm is simulated."""
        from app.planning import install_planning
        from app.viewer_tools import install_viewer_tools
        w = self.window
        self.planning = install_planning(w, self.session)
        if self.config.robot.kind != "none":
            from app.robot_controller_client import install_robot_panel
            self.robot = install_robot_panel(w, config=robot_controller_config(self.config), area="right",
                                             session=self.session)
        self.carm_panel = install_carm_panel(self)
        install_viewer_tools(self)
        from app.dicom_inbox import install_dicom_inbox   # shots pushed or exported by the C-arm
        install_dicom_inbox(self)
        if self.config.carm.kind == "simulated":
            self._install_simulated_room()
        from app.scene_shots import install_shot_frustums  # each shot's source, beam and image in 3D
        self.shots_3d = install_shot_frustums(self)
        from app.navigation_gui import install_navigation  # Align and Verify: the Navigate dock
        self.navigation = install_navigation(self)
        from app.tracker import install_tracker_panel   # tools seen, flags, RMS, frame age
        self.tracker_monitor = install_tracker_panel(self)
        w.arrange_default_layout()

    def _wire(self) -> None:
        w, s = self.window, self.session
        w.log_panel.attach()
        w.acquire_requested.connect(self.acquire)
        w.workflow_bar.step_requested.connect(self.go_to_step)
        self.devices.busy_changed.connect(w.set_busy)
        self.devices.busy_changed.connect(lambda *_: self._update_actions())
        self.devices.state.other_status_changed.connect(self._other_device_status)
        self.devices.simulated_shot.connect(self.show_simulated_room)
        for view, viewer in w.viewers.items():
            viewer.image_dropped.connect(lambda image, v=view: self.load_image(v, image))
            viewer.image_refused.connect(lambda line: self.window.statusBar().showMessage(line, 15000))
        s.image_changed.connect(lambda view, image: w.viewers[view].set_image(image))
        s.device_status_changed.connect(w.status_bar.set_status)
        s.step_changed.connect(w.workflow_bar.set_current)
        s.step_changed.connect(w.show_step_panel)
        s.changed.connect(self._update_actions)
        for device in DEVICES:
            w.status_bar.set_status(device, *s.device_status(device))
        self._update_actions()

    def show_simulated_room(self, view: str, truth: dict) -> None:
        """Draw the true cage balls of the last simulated shot (the shot's source, beam and image
        are ``shot_<view>``, app.scene_shots, installed with the panels)."""
        shot, cage = truth["shot"], truth.get("cage")
        sv = self.window.scene_view
        first = not sv.actor_names()
        if cage is not None and self.room is None:  # with the room, the cage follows the robot live
            from widgets.scene.anatomy import CageActors
            actors = CageActors(cage)
            actors.set_transform(shot.T_world_cage)
            sv.set_actor("cage", actors.assembly)
        if first:
            sv.camera_preset("overview")

    def _install_simulated_room(self) -> None:
        from app.simulated_room import SimulatedRoom, robot_home_q
        from widgets.scene.anatomy import CageActors, frame_patient, show_bone
        kin = self.robot.kinematics if self.robot is not None else None
        home = None if kin is None else robot_home_q(kin, self.robot.controller.config)
        room = SimulatedRoom(self.devices, self.session, kin, home, parent=self.window)
        sv = self.window.scene_view
        self.cage_actors = None

        def scene_ready(scene):
            # one frame for all of it (frame_patient's): each is a whole-scene render, tens of ms
            # in software OpenGL, and the GUI thread did nothing else meanwhile
            if scene.get("mesh") is not None:
                show_bone(sv, scene["mesh"], levels=scene.get("mesh_levels"), render=False)
            self.cage_actors = CageActors(scene["cage"])
            self.cage_actors.set_transform(scene["T_world_cage"])
            sv.set_actor("cage", self.cage_actors.assembly, render=False)
            if self.planning is not None and getattr(self.planning, "scene", None) is not None:
                self.planning.scene.set_transform(scene["T_world_cage"], render=False)
            if room.T_world_base is not None and self.robot is not None:
                self.window.robot_actors.set_transform(room.T_world_base)
                self.window.robot_actors.cage_actor.VisibilityOff()  # drawn by plane by CageActors
            cage = scene["cage"]
            T = scene["T_world_cage"]
            balls = np.concatenate([p.balls_mm for p in cage.planes]) @ T[:3, :3].T + T[:3, 3]
            mesh = scene.get("mesh")
            frame_patient(sv, balls if mesh is None else np.vstack([balls, mesh.vertices]))

        def cage_moved(T):
            if self.cage_actors is not None:
                self.cage_actors.set_transform(T)

        def calibrated(cal):
            if cal is not None:
                self.window.show_banner(None)      # a new calibration: the banner's cause is gone
            if cal is not None and room.T_world_cage_calibrated is not None and self.planning is not None \
                    and getattr(self.planning, "scene", None) is not None:
                self.planning.scene.set_transform(room.T_world_cage_calibrated)

        def invalidated(why: str):
            self.window.show_banner(f"Calibration no longer valid — {why[0].upper()}{why[1:]}")
            self.window.statusBar().showMessage("the C-arm moved: calibrate again", 15000)

        room.scene_ready.connect(scene_ready)
        room.cage_moved.connect(cage_moved)
        room.calibration_invalidated.connect(invalidated)
        self.session.calibration_changed.connect(calibrated)
        connect_while_alive(self.session.robot_state_changed, room, "robot_state")
        self.devices.device_status_changed.connect(
            lambda device, status, _m: device == "carm" and room.scene is None and not room.scene_requested
            and self.session.device_ready("carm") and room.request_scene())
        self.room = room

    def _other_device_status(self, device, status, message) -> None:
        if device not in DEVICES:
            self.window.status_bar.set_status(device, status, message)

    def _update_actions(self) -> None:
        s, w = self.session, self.window
        w.workflow_bar.set_enabled_steps(s.allowed_steps(),
                                         {step: s.step_blocker(step) or "" for step in w.workflow_bar.buttons})
        from app.navigation_gui import workflow_hint
        w.workflow_bar.set_hint(*workflow_hint(s, self.navigation))
        carm, msg = s.device_status("carm")
        why = "wait for the image in progress" if self.devices.busy else f"C-arm {carm.value}: {msg}"
        w.set_acquire_enabled(self.devices.can_acquire(), why)
        if self.carm_panel is not None:
            self.carm_panel.set_acquire_enabled(self.devices.can_acquire(), why)

    # -- actions (a script or a test calls these the same way) --------------------------
    def start(self) -> None:
        """Start the devices (once; a second call does nothing)."""
        if self._started:
            return
        self._started = True
        self.devices.start()
        self.slicer.start()

    def acquire(self, view: str) -> int | None:
        if self.carm_panel is not None:
            self.carm_panel.flush()  # angles being typed go to the C-arm before the shot
        try:
            return self.devices.acquire(view)
        except (DeviceError, ValueError) as e:
            log.error("cannot acquire %s: %s", view.upper(), e)
            return None

    def load_image(self, view: str, image) -> bool:
        try:
            self.session.set_image(view, image)
        except (SessionError, OSError) as e:
            log.error("%s image not loaded: %s", view.upper(), e)
            return False
        except EmitLoopError as e:
            self._listener_failed(e, f"loading the {view.upper()} image")
        return True

    def _listener_failed(self, error: EmitLoopError, action: str) -> None:
        """A view that follows the session raised: one line in the log and the status bar."""
        self.window.statusBar().showMessage(listener_failure(error, action), 15000)

    def resume_session(self, folder):
        """Reopen the session saved in ``folder`` (File → Resume session…, ``fluoronav gui
        --resume``): shots, calibration, plan and step as they were. One line in the log and
        the status bar; returns the ``ResumedSession`` or None when refused."""
        if self.devices.busy:
            return self._resume_said("Resume refused: an image is being acquired; resume once it is in",
                                     logging.WARNING)
        try:
            resumed = self.session.resume(folder)
        except SessionError as e:
            return self._resume_said(f"Resume refused: {e}", logging.ERROR)
        except EmitLoopError as e:
            self._listener_failed(e, "resuming the session")
            return None
        self._resume_said(resumed.summary[0].upper() + resumed.summary[1:],
                          logging.WARNING if resumed.problems else logging.INFO, logged=True)
        room, scene = self.room, getattr(self.planning, "scene", None)
        if room is not None and room.scene is None and self.session.calibration is not None:
            # The simulated room is still being built: the cage has no place in 3D yet, so the
            # trajectories wait hidden (not drawn at the room's origin, among the robot). Once
            # the room has placed the cage, the resumed calibration holds at the cage's pose
            # (a later robot move invalidates it as usual) and the 3D view frames the plan, as
            # the planning screen showed it (the room frames the whole patient).
            from widgets.scene.trajectories import actor_name
            sv = self.window.scene_view
            hidden = [actor_name(t) for t in (scene.ids() if scene else []) if sv.actor(actor_name(t)) is not None]
            for name in hidden:
                sv.set_visible(name, False, render=False)
            if hidden:
                sv.camera_preset("overview")

            def room_ready(_scene):
                room.scene_ready.disconnect(room_ready)
                if self.session.calibration is not None and room.T_world_cage_calibrated is None \
                        and room.T_world_cage is not None:
                    room.T_world_cage_calibrated = np.array(room.T_world_cage, float)
                for name in hidden:
                    if sv.actor(name) is not None:   # not deleted meanwhile
                        sv.set_visible(name, True, render=False)
                if scene is not None and scene.ids():
                    scene.focus()
            room.scene_ready.connect(room_ready)
        return resumed

    def _resume_said(self, text: str, level: int, logged: bool = False) -> None:
        if not logged:
            log.log(level, "%s", text)
        self.window.statusBar().showMessage(text, 15000)
        return None

    def _add_resume_action(self) -> None:
        from PySide6.QtGui import QAction
        bar = self.window.menuBar()
        menu = next((a.menu() for a in bar.actions() if a.menu() and a.text().replace("&", "") == "File"), None)
        menu = menu or bar.addMenu("&File")
        act = QAction("Resume session…", self.window, objectName="action_resume_session")
        act.setToolTip("Reopen an interrupted case: its shots, calibration and plan as they were")
        act.triggered.connect(self._resume_dialog)
        menu.addSeparator()
        menu.addAction(act)
        self.resume_action = act
        self._add_file_and_help_actions(menu)

    def _add_file_and_help_actions(self, menu) -> None:
        """File → Save (Ctrl+S), Quit (Ctrl+Q); Help → About."""
        from PySide6.QtGui import QAction, QKeySequence
        from PySide6.QtCore import Qt
        self.file_actions = {}
        for key, text, shortcut, tip, slot in (
                ("save", "Save session", "Ctrl+S", "Write the case (shots, calibration, plan, step) to its folder now",
                 self.save_case),
                ("quit", "Quit", "Ctrl+Q", "Stop the robot, save the case, then close fluoronav", self.quit_case)):
            act = QAction(text, self.window, objectName=f"action_{key}")
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
            act.setToolTip(tip)
            act.triggered.connect(lambda _=False, f=slot: f())
            menu.addSeparator()
            menu.addAction(act)
            self.file_actions[key] = act
        bar = self.window.menuBar()
        help_menu = bar.addMenu("&Help")
        about = QAction("About fluoronav", self.window, objectName="action_about")
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)
        self.file_actions["about"] = about
        self.about_box: QMessageBox | None = None

    def save_case(self) -> bool:
        """Save the session record and the plan into the session folder; one line in the log
        and the status bar. False (and the reason said) when the disk refuses."""
        try:
            path = self.session.save()
            if len(self.session.plans):
                self.session.save_plan()
        except OSError as e:
            text = f"Session NOT saved: {e.strerror or e} ({getattr(e, 'filename', '') or self.session.root}): " \
                   "free disk space or check the data folder, then save again"
            log.error("%s", text)
            self.window.statusBar().showMessage(text, 15000)
            return False
        text = f"Session saved in {path.parent}"
        log.info("%s", text)
        self.window.statusBar().showMessage(text, 15000)
        return True

    def quit_case(self) -> bool:
        """Quit safely: STOP the robot first, save the case, then close. A case that cannot be
        saved keeps the window open (nothing is lost); returns whether it closed."""
        if self.robot is not None:
            self.robot.stop()
            log.info("quit: the robot was stopped")
        if not self.save_case():
            return False
        self.window.close()
        app = QApplication.instance()
        if app is not None:
            app.quit()
        return True

    def show_about(self) -> QMessageBox:
        """Version, licence, and that this is not a medical device cleared for clinical use."""
        from app import __version__
        if self.about_box is not None:
            self.about_box.close()
        box = QMessageBox(QMessageBox.Icon.Information, "About fluoronav",
                          f"fluoronav {__version__}\n"
                          "Workstation for robot-assisted spine surgery guided by fluoroscopy.\n\n"
                          "Licence: Apache-2.0 (open source).\n\n"
                          "NOT A MEDICAL DEVICE: fluoronav is research software. It is not cleared or approved "
                          "(FDA, CE/MDR or any other authority) for clinical use and must not be used to treat "
                          "patients.", QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName("about_box")
        box.open()
        self.about_box = box
        return box

    # -- the audit trail and the case report ---------------------------------------------------
    def _install_audit(self) -> None:
        """The Audit dock beside the Log, and File → Export audit trail… / Case report."""
        from PySide6.QtGui import QAction

        from widgets.panels.audit_panel import AuditPanel
        w, s = self.window, self.session
        self.audit_panel = panel = AuditPanel()
        w.add_dock("Audit", panel, "bottom", tab_with="Log" if "Log" in w.docks else None)
        s.audited.connect(panel.add_event)
        s.resumed.connect(lambda _r: self._show_audit_file())
        panel.export_requested.connect(self._export_audit_dialog)
        panel.report_requested.connect(lambda: self.start_report())
        menu = next(a.menu() for a in w.menuBar().actions() if a.menu() and a.text().replace("&", "") == "File")
        for text, slot, name in (("Export audit trail…", self._export_audit_dialog, "action_export_audit"),
                                 ("Case report", lambda: self.start_report(), "action_case_report")):
            act = QAction(text, w, objectName=name)
            act.triggered.connect(slot)
            quit_act = self.file_actions.get("quit")   # Quit stays the File menu's last entry
            if quit_act is not None:
                menu.insertAction(quit_act, act)
            else:
                menu.addAction(act)

    def _show_audit_file(self) -> None:
        from core.audit import AUDIT_FILE, read_audit
        r = read_audit(self.session.folder / AUDIT_FILE)
        self.audit_panel.set_events(r.events, "; ".join(r.problems))
        for problem in r.problems:
            log.warning("%s", problem)

    def export_audit(self, folder) -> tuple:
        """Write ``audit-<session>.jsonl`` (a copy of the trail) and ``.csv`` into ``folder``."""
        import shutil

        from core.audit import AUDIT_FILE, read_audit, write_audit_csv
        s = self.session
        src = s.folder / AUDIT_FILE
        base = f"audit-{s.folder.name}"
        jsonl = Path(folder) / f"{base}.jsonl"
        if src.is_file():
            shutil.copyfile(src, jsonl)
            events = read_audit(src).events
        else:
            jsonl.write_text("".join(json.dumps(e) + "\n" for e in s.audit.events), encoding="utf-8")
            events = s.audit.events
        csv_path = write_audit_csv(events, Path(folder) / f"{base}.csv")
        s.record("audit exported", "technician", jsonl=str(jsonl), csv=str(csv_path))
        return jsonl, csv_path

    def _export_audit_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog
        folder = QFileDialog.getExistingDirectory(self.window, "Export the audit trail into…", str(Path.home()))
        if not folder:
            return
        try:
            jsonl, csv_path = self.export_audit(folder)
        except OSError as e:
            self._resume_said(f"audit trail not exported: {e.strerror or e}: choose another folder", logging.ERROR)
            return
        self._resume_said(f"audit trail exported: {jsonl.name}, {csv_path.name} in {folder}", logging.INFO)

    def write_report(self):
        """The case report (PDF) into the session folder, built here and now (a script's call;
        the GUI's File → Case report builds it in a worker: ``start_report``); one line in the
        status bar; returns its path (None: not written, the line says why)."""
        from app.report import REPORT_FILE, ReportError, write_case_report
        if not self._save_for_report():
            return None
        try:
            result = write_case_report(self.session.folder, self.session.folder / REPORT_FILE)
        except (ReportError, OSError) as e:
            result = e
        return self._report_done(result)

    def start_report(self, done=None) -> bool:
        """Build the case report in a worker thread (the GUI stays responsive), its progress in
        the status bar; ``done(path or None)`` once it is written or refused. False when one is
        already being built (said in the status bar)."""
        from app.qt_worker import QtThreadRunner
        from app.report import REPORT_FILE, ReportError, write_case_report
        if self.report_busy:
            self.window.statusBar().showMessage("the case report is already being built: wait for it", 5000)
            return False
        if not self._save_for_report():
            if done is not None:
                done(None)
            return False
        folder = self.session.folder
        self.report_busy = True
        self._report_runner = getattr(self, "_report_runner", None) or QtThreadRunner(self.window)

        def job(progress):
            try:
                return write_case_report(folder, folder / REPORT_FILE, progress)
            except (ReportError, OSError) as e:
                return e

        def finished(result):
            self.report_busy = False
            path = self._report_done(result if isinstance(result, (tuple, Exception)) else
                                     RuntimeError(f"unexpected result {result!r}"))
            if done is not None:
                done(path)
        self._report_runner.run("case-report", job, finished,
                                lambda pct, text: self.window.statusBar().showMessage(
                                    f"case report: {text}… {pct} %", 15000))
        return True

    report_busy = False

    def _save_for_report(self) -> bool:
        try:
            self.session.save()
            if len(self.session.plans):
                self.session.save_plan()
        except OSError as e:
            self._resume_said(f"case report not written: {e.strerror or e}: free disk space or check the data "
                              "folder, then try again", logging.ERROR)
            return False
        return True

    def _report_done(self, result):
        """The end of a report: (path, pages) recorded in the audit trail, or the error said."""
        from app.report import record_report
        if isinstance(result, BaseException):
            self._resume_said(f"case report not written: {result}", logging.ERROR)
            return None
        path, pages = result
        record_report(self.session.folder, path, pages, audit=_SessionAudit(self.session))
        self._resume_said(f"case report written: {path} ({pages} pages)", logging.INFO)
        return path

    def _resume_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog
        root = self.session.root
        folder = QFileDialog.getExistingDirectory(self.window, "Resume a session: choose its folder",
                                                  str(root if root.is_dir() else root.parent))
        if folder:
            self.resume_session(folder)

    def go_to_step(self, step: str) -> bool:
        try:
            self.session.go_to_step(step)
        except SessionError as e:
            log.warning("%s", e)
            return False
        except EmitLoopError as e:
            self._listener_failed(e, f"going to the {step} step")
        log.info("workflow: %s", step)
        return True

    def report_config_error(self, error: ConfigError) -> QMessageBox:
        """Log each bad key and show a (non-blocking) dialog: we run on the simulated defaults."""
        for problem in error.problems:
            log.error("configuration %s: %s", error.path, problem)
        log.warning("started on the simulated defaults because the configuration is invalid")
        box = QMessageBox(QMessageBox.Icon.Warning, "Configuration error",
                          f"The configuration file {error.path} has problems:\n\n"
                          + "\n".join(f"• {p}" for p in error.problems)
                          + "\n\nfluoronav started on the simulated defaults. Fix the file and restart.",
                          QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName("config_error_box")
        box.open()
        self.config_error_box = box
        return box

    def shutdown(self) -> None:
        self.slicer.shutdown()
        if self.dicom_inbox is not None:
            self.dicom_inbox.stop()
        if self.robot is not None:
            self.robot.shutdown()
        self.devices.shutdown()


def robot_controller_config(config: Config):
    """The robot control process's settings from the configuration (the force sensor's)."""
    from devices.robot_controller import ControllerConfig
    fs = config.force_sensor
    if fs.kind == "ati_netft":
        return ControllerConfig(netft_host=fs.host, netft_port=int(fs.port))
    return ControllerConfig()


def install_carm_panel(station: "Workstation"):
    """Dock the C-arm panel: angles to the driver (its thread), acquire, last shot's angles."""
    from widgets.panels.carm_panel import CArmPanel
    panel = CArmPanel()
    station.window.add_dock("C-arm", panel, "right")
    devices, session = station.devices, station.session

    def request_pose(primary, secondary):
        if "carm" not in devices.workers:
            panel.set_pose_confirmed(primary, secondary, "no C-arm is running")
            return
        log.info("C-arm to %s", angle_text(primary, secondary))
        devices.set_carm_pose(primary, secondary,
                              lambda _r, err: panel.set_pose_confirmed(primary, secondary, err))

    def shown(view, image):
        if image.primary_angle_deg is not None:
            panel.set_last_shot(view, image.primary_angle_deg, image.secondary_angle_deg or 0.0, image.sid_mm)

    panel.pose_requested.connect(request_pose)
    panel.acquire_requested.connect(station.acquire)
    session.image_changed.connect(shown)
    session.device_status_changed.connect(
        lambda device, status, message: device == "carm" and panel.set_device_text(
            f"C-arm {status.value}" + (f": {message}" if message else "")))
    return panel


def collect_garbage_on_the_gui_thread(interval_s: float = 1.0):
    """Python's cyclic collector runs in whichever thread happens to allocate; a Qt widget
    or VTK window caught in a reference cycle would then be destroyed in a device thread,
    which crashes or hangs Qt. Automatic collection goes off and the GUI thread collects on
    a timer instead (pyqtgraph's ``GarbageCollector``, same thresholds). Keep the returned
    object; ``gc.enable()`` undoes it."""
    from pyqtgraph.util.garbage_collector import GarbageCollector
    return GarbageCollector(interval=interval_s)


def _quit_on_signals(app: QApplication) -> None:
    """Ctrl+C / SIGTERM close the window cleanly (layout saved, devices stopped)."""
    def close(*_):
        for w in app.topLevelWidgets():
            if isinstance(w, MainWindow):
                w.close()
        app.quit()
    signal.signal(signal.SIGINT, close)
    signal.signal(signal.SIGTERM, close)
    timer = QTimer(app)  # lets Python run its signal handlers while Qt waits
    timer.timeout.connect(lambda: None)
    timer.start(250)


def run_gui(config_path=None, resume=None) -> int:
    """Start the workstation (``resume``: a session folder to reopen once the window is up,
    checked by ``fluoronav gui --resume``); returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    error = None
    try:
        config = load_config(config_path)
    except ConfigError as e:
        error, config = e, load_defaults()
    app = create_application(font_pt=config.ui.font_pt)
    collector = collect_garbage_on_the_gui_thread()   # noqa: F841 (kept alive while the app runs)
    station = Workstation(config)
    if not station.window.restore_layout():  # first run: nearly the whole screen
        area = app.primaryScreen().availableGeometry()
        station.window.setGeometry(area.adjusted(0, 0, -area.width() // 20, -area.height() // 20))
    # the devices start once the window is on screen: the simulated C-arm builds its
    # phantom in a thread that would otherwise hold the GIL through the first paint
    station.window.first_painted.connect(station.start)
    QTimer.singleShot(START_DEVICES_BY_MS, station.start)   # a window that never paints (minimised)
    station.window.show()
    if error is not None:
        QTimer.singleShot(0, lambda: station.report_config_error(error))
    if resume is not None:
        QTimer.singleShot(0, lambda: station.resume_session(resume))
    _quit_on_signals(app)
    code = app.exec()
    station.shutdown()
    return code


class _SessionAudit:
    """The session's ``record`` as an audit log's ``append`` (so the panel sees the event)."""

    def __init__(self, session):
        self.session, self.write_error = session, None

    def append(self, event, role, **details):
        return self.session.record(event, role, **details)
