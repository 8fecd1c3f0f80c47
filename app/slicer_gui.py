"""3D Slicer in the workstation: the OpenIGTLink stream with its status pill, and File →
Export / Import trajectories to / from Slicer (``.mrk.json``).

``install_slicer(station)`` builds the link from ``[igtl]`` (none when disabled), the
``app.igtl.SlicerStream`` on the session, a GUI-thread timer that polls it (rate-limited
pose, a new peer's catch-up) and sets the "Slicer" pill, and the two menu actions. The
link starts with the devices (``start``) and stops at shutdown. ``export_trajectories`` /
``import_trajectories`` are what the menu actions call; a script calls them the same way.
The tool pose itself does not wait for the GUI thread: it streams from the control
process's shared memory on the stream's feed thread (``SlicerStream.start_feed``).
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QTimer

from app.igtl import LINK_STATUS, SlicerStream, link_from_config
from core.planning.markups import MarkupsError, read_markups, write_markups
from core.planning.two_view import PlanningError

__all__ = ["SlicerLink", "install_slicer", "export_trajectories", "import_trajectories", "POLL_MS"]

log = logging.getLogger(__name__)

POLL_MS = 50        # the pose held back by the rate limit waits at most this long; the pill follows


def export_trajectories(session, path) -> str:
    """Write the plan's complete trajectories to ``path`` as Slicer line markups; the line said."""
    try:
        out, skipped = write_markups(path, session.plans.trajectories())
    except MarkupsError as e:
        raise MarkupsError(f"Export to Slicer refused: {e}") from None
    except OSError as e:
        raise MarkupsError(f"Export to Slicer failed: cannot write {path} ({e.strerror or e})") from None
    n = len(session.plans) - len(skipped)
    text = f"exported {n} trajector{'y' if n == 1 else 'ies'} to {out}"
    if skipped:
        text += f" (left out, no 3D entry and target yet: {', '.join(skipped)})"
    log.info("%s", text)
    return text


def import_trajectories(session, path) -> str:
    """Add the line markups of a Slicer ``.mrk.json`` to the plan (undoable); the line said."""
    try:
        trajectories = read_markups(path)
        session.plans.import_trajectories(trajectories)
    except (MarkupsError, PlanningError) as e:
        raise MarkupsError(f"Import from Slicer refused: {e}") from None
    n = len(trajectories)
    text = f"imported {n} trajector{'y' if n == 1 else 'ies'} from {path}: {', '.join(t.name for t in trajectories)}"
    log.info("%s", text)
    return text


def controller_joints(controller):
    """(time of the control cycle, joints) from the control process's shared memory, or None
    before its first cycles. The loop writes the five joints while this reads them, so one
    read may mix two consecutive 1 ms cycles: an error below one millisecond of motion."""
    s = controller.latest()
    if s["cycles"] < 10:
        return None
    return float(s["heartbeat"]), s["q"]


class SlicerLink:
    """The stream, its timer and its pill for one workstation."""

    def __init__(self, station):
        self.station = station
        self.link = None
        self.stream = None
        self.timer = None
        cfg = station.config.igtl
        try:
            self.link = link_from_config(station.config)
        except ValueError as e:         # IgtlError: settings the link refuses
            self._pill("fault", str(e))
            return
        if self.link is None:
            self._pill("disabled", "OpenIGTLink is off: set [igtl] enabled = true in the configuration")
            return
        kin = getattr(station.robot, "kinematics", None) if station.robot is not None else None
        self.stream = SlicerStream(station.session, self.link, kin, frames=self._frames,
                                   pose_rate_hz=cfg.pose_rate_hz, send_images=cfg.send_images)
        self.timer = QTimer(station.window, interval=POLL_MS)
        self.timer.timeout.connect(self.poll)
        self._pill("disabled", "starts with the devices")

    def _frames(self):
        nav = self.station.navigation
        return getattr(nav, "frames", None) if nav is not None else None

    def start(self) -> None:
        if self.link is None:
            return
        try:
            self.link.start()
        except ValueError as e:
            log.error("Slicer link: %s", e)
        self.timer.start()
        robot = self.station.robot
        if self.stream.kinematics is None and robot is not None:
            self.stream.kinematics = getattr(robot, "kinematics", None)
        controller = getattr(robot, "controller", None) if robot is not None else None
        if controller is not None and self.stream.kinematics is not None:
            self.stream.start_feed(lambda: controller_joints(controller))
        self.poll()

    def poll(self) -> None:
        if self.stream is not None:
            self._pill(*self.stream.poll())

    def _pill(self, state: str, message: str) -> None:
        status, text = LINK_STATUS[state]
        self.station.window.status_bar.set_status("slicer", status, message, text=text)

    def shutdown(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        if self.stream is not None:
            self.stream.stop_feed()
        if self.link is not None:
            self.link.close()


def install_slicer(station) -> SlicerLink:
    """The Slicer link and File menu actions on ``station`` (``app.main.Workstation``)."""
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QFileDialog
    w = station.window
    bar = w.menuBar()
    menu = next((a.menu() for a in bar.actions() if a.menu() and a.text().replace("&", "") == "File"), None)
    menu = menu or bar.addMenu("&File")

    def run(action, path):
        try:
            text = action(station.session, path)
        except MarkupsError as e:
            log.error("%s", e)
            text = str(e)
        w.statusBar().showMessage(text, 15000)

    def export_dialog():
        path, _ = QFileDialog.getSaveFileName(w, "Export trajectories to Slicer", "trajectories.mrk.json",
                                              "Slicer markups (*.mrk.json);;JSON (*.json)")
        if path:
            run(export_trajectories, path)

    def import_dialog():
        path, _ = QFileDialog.getOpenFileName(w, "Import trajectories from Slicer", "",
                                              "Slicer markups (*.mrk.json *.json)")
        if path:
            run(import_trajectories, path)

    # Quit stays the File menu's last entry: the markups actions go before it when it is there
    quit_act = next((a for a in menu.actions() if a.objectName() == "action_quit"), None)
    place = (lambda a: menu.insertAction(quit_act, a)) if quit_act is not None else menu.addAction
    if quit_act is not None:
        menu.insertSeparator(quit_act)
    else:
        menu.addSeparator()
    for name, text, tip, slot in (
            ("action_export_slicer", "Export trajectories to Slicer…",
             "Save the planned trajectories as Slicer line markups (.mrk.json, LPS)", export_dialog),
            ("action_import_slicer", "Import trajectories from Slicer…",
             "Add the line markups of a Slicer .mrk.json file to the plan", import_dialog)):
        act = QAction(text, w, objectName=name)
        act.setToolTip(tip)
        act.triggered.connect(slot)
        place(act)
    return SlicerLink(station)

