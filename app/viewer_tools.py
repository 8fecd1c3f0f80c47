"""Viewer tools in the main window: File → Open image/folder, the shots strip, and the
viewers' calibration-aware extras (mm readout, distortion-corrected display).

The shots themselves are the session's (``session.shots``, a Qt-free history): opening a
file records its images there (``Session.open_shots``), a click on a thumbnail asks
``Session.bring_back``, and the strip only renders the history's signals.

``install_viewer_tools(workstation)`` is called once by the workstation; it returns
the ``ViewerTools`` object (keep it). Every action is also a method, so a script or a
test opens a file the same way the menu does: ``tools.open_path(path, view=None)``.

Where an image goes: the DICOM View Position (AP/PA → AP, LL/RL/LATERAL → LAT) when the
file states it, else ``tools.ask_view(path)`` (a dialog; tests replace it). A file
that cannot be read gives one line in the log and the status bar and a non-modal notice.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from psygnal import EmitLoopError
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.qt_connect import connect_while_alive
from app.session import SessionError, listener_failure
from core.imaging.fluoro_image import ImageReadError
from core.imaging.images import read_shots  # noqa: F401  (here since File → Open came first)
from core.imaging.shot_store import ShotMissingError
from widgets.viewers.thumbnail_strip import ThumbnailStrip

__all__ = ["ViewerTools", "install_viewer_tools", "IMAGE_FILTER"]

log = logging.getLogger(__name__)

IMAGE_FILTER = "X-ray images (*.dcm *.DCM *.dicom *.ima *.png *.tif *.tiff);;All files (*)"
_RASTER = (".png", ".tif", ".tiff")


class ViewerTools(QObject):
    """The open actions, the shots strip and the viewers' calibration extras.

    Signal ``message(text, is_error)`` for each outcome (also logged)."""

    message = Signal(str, bool)

    def __init__(self, window, session, parent=None):
        super().__init__(parent or window)
        self.window, self.session = window, session
        self.ask_view = self._ask_view_dialog
        self.notice: QMessageBox | None = None
        self.strip = ThumbnailStrip(tuple(window.viewers))
        self.strip.shot_activated.connect(self.bring_back)
        shots = session.shots
        window.destroyed.connect(shots.close)                     # its spill folder goes with the window
        self.dock = window.add_dock("Shots", self.strip, "bottom")
        for view in self.strip.lists:                              # what the history had before the strip
            for i in range(shots.count(view)):
                self._shot_added(view, i, shots.image(view, i))
            self.strip.set_current(view, shots.current(view))
        connect_while_alive(shots.added, self, "_shot_added")
        connect_while_alive(shots.current_changed, self, "_current_changed")
        connect_while_alive(shots.missing_changed, self, "_missing_changed")
        connect_while_alive(session.calibration_changed, self, "set_calibration")
        self.actions = self._build_menu()
        if session.calibration is not None:
            self.set_calibration(session.calibration)

    # -- menu -------------------------------------------------------------------------
    def _build_menu(self) -> dict:
        bar = self.window.menuBar()
        menu = next((a.menu() for a in bar.actions() if a.menu() and a.text().replace("&", "") == "File"), None)
        menu = menu or bar.addMenu("&File")
        acts = {}
        for key, text, shortcut, slot in (("open_image", "Open image…", QKeySequence.StandardKey.Open,
                                           self._open_image_dialog),
                                          ("open_folder", "Open folder…", QKeySequence("Ctrl+Shift+O"),
                                           self._open_folder_dialog)):
            act = QAction(text, self.window, objectName=f"action_{key}")
            act.setShortcut(shortcut)
            act.triggered.connect(slot)
            menu.addAction(act)
            acts[key] = act
        return acts

    def _open_image_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open an X-ray image", "", IMAGE_FILTER)
        if path:
            self.open_path(path)

    def _open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open a folder of DICOM images")
        if folder:
            self.open_folder(folder)

    def _ask_view_dialog(self, path) -> str | None:
        box = QMessageBox(QMessageBox.Icon.Question, "Which view?",
                          f"{os.path.basename(os.fspath(path))} does not say whether it is an AP or a "
                          "lateral shot.\nLoad it as:", QMessageBox.StandardButton.Cancel, self.window)
        ap = box.addButton("AP", QMessageBox.ButtonRole.AcceptRole)
        lat = box.addButton("LAT", QMessageBox.ButtonRole.AcceptRole)
        box.exec()
        return {ap: "ap", lat: "lat"}.get(box.clickedButton())

    # -- opening ----------------------------------------------------------------------
    def open_path(self, path, view: str | None = None) -> bool:
        """Open a file (all its frames go to the strip, the first is shown) or a folder."""
        if os.path.isdir(os.fspath(path)):
            return self.open_folder(path, view) > 0
        try:
            shots = read_shots(path)
        except (ImageReadError, ValueError, OSError) as e:
            self.say(f"Cannot open {os.path.basename(os.fspath(path))}: {_reason(e, path)}", error=True)
            return False
        view = view or shots[0].view or self.ask_view(path)
        if view is None:
            self.say(f"Open {os.path.basename(os.fspath(path))}: cancelled", error=False)
            return False
        return self._show_new(view, shots, os.path.basename(os.fspath(path)), path)

    def open_folder(self, folder, view: str | None = None) -> int:
        """Every X-ray image of a folder into the strips (DICOM by header, PNG/TIFF by name);
        the last of each view is shown. Returns the number of images read."""
        from core.imaging.dicom_read import find_dicom_images
        try:
            paths = [e["path"] for e in find_dicom_images(folder)]
        except (ImageReadError, OSError) as e:
            self.say(f"Cannot open folder: {e}", error=True)
            return 0
        paths += sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in _RASTER)
        opened, failed = 0, []
        for path in paths:
            try:
                shots = read_shots(path)
            except (ImageReadError, ValueError, OSError) as e:
                failed.append(f"{os.path.basename(path)}: {_reason(e, path)}")
                continue
            v = view or shots[0].view or self.ask_view(path)
            if v is None:
                continue
            view = view or (v if shots[0].view is None else None)   # ask once per folder
            opened += len(shots) if self._show_new(v, shots, os.path.basename(path), path) else 0
        if failed:
            self.say(f"{len(failed)} file(s) in {folder} could not be read; first: {failed[0]}", error=True)
        if not opened and not failed:
            self.say(f"No X-ray images in {folder}: choose the folder the C-arm exported", error=True)
        elif opened:
            self.say(f"Opened {opened} image(s) from {folder}")
        return opened

    def _show_new(self, view: str, shots: list, name: str, path) -> bool:
        """The shots join the session's history (read back from ``path`` and, for a
        multi-frame file, the frame), the first is shown."""
        n = len(shots)
        try:
            self.session.open_shots(view, shots, name, path)
        except (SessionError, OSError) as e:
            self.say(f"Cannot open {name}: {e}", error=True)
            return False
        except EmitLoopError as e:
            self.say(listener_failure(e, f"opening {name}"))
        self.say(f"{view.upper()}: {name}" + (f" ({n} frames: pick one in Shots)" if n > 1 else ""))
        return True

    def bring_back(self, view: str, index: int) -> bool:
        """Make shot ``index`` the current ``view`` image again. When its file was moved,
        deleted or damaged: one line, the entry marked, the current image stays."""
        shots = self.session.shots
        try:
            self.session.bring_back(view, index)
        except ShotMissingError as e:
            self.say(f"Cannot show {view.upper()} {shots.label(view, index)} again: {e}", error=True)
            return False
        except (SessionError, OSError) as e:
            self.say(f"Cannot show {view.upper()} {shots.label(view, index)} again: {e}", error=True)
            return False
        except EmitLoopError as e:
            self.say(listener_failure(e, f"bringing back {view.upper()} {shots.label(view, index)}"))
        finally:
            self.strip.set_current(view, shots.current(view))   # a failed click leaves the mark where it was
        self.say(f"{view.upper()}: back to {shots.label(view, index)}")
        return True

    # -- rendering the session's shot history ------------------------------------------
    def _shot_added(self, view: str, index: int, image) -> None:
        if view in self.strip.lists:
            shots = self.session.shots
            self.strip.add(view, image, _short(shots.label(view, index)), tooltip=shots.tooltip(view, index))

    def _current_changed(self, view: str, index: int) -> None:
        if view in self.strip.lists:
            self.strip.set_current(view, index)

    def _missing_changed(self, view: str, index: int, reason) -> None:
        if view in self.strip.lists:
            self.strip.set_missing(view, index, reason)

    # -- calibration ------------------------------------------------------------------
    def set_calibration(self, calibration) -> None:
        """Hand each viewer its view's calibration (mm readout, measurements, correction)."""
        for view, viewer in self.window.viewers.items():
            if hasattr(viewer, "set_calibration"):
                viewer.set_calibration(_view_calibration(calibration, view))

    # -- messages ---------------------------------------------------------------------
    def say(self, text: str, error: bool = False) -> None:
        """One line to the log and the status bar; an error also opens a non-modal notice."""
        (log.error if error else log.info)("%s", text)
        self.window.statusBar().showMessage(text, 15000)
        if error:
            if self.notice is not None:
                self.notice.close()
            box = QMessageBox(QMessageBox.Icon.Warning, "Image not opened", text,
                              QMessageBox.StandardButton.Ok, self.window)
            box.setObjectName("viewer_tools_notice")
            box.setModal(False)
            box.show()
            self.notice = box
        self.message.emit(text, error)


def _reason(error, path) -> str:
    """The reader's one line, the file named by its name only (the full path is in the log)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    name = os.path.basename(os.fspath(path))
    for full in {os.fspath(path), str(Path(path)), str(Path(path).resolve())}:
        text = text.replace(full, name)
    return text[len(name) + 2:] if text.startswith(name + ": ") else text


def _short(label: str, n: int = 18) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1):]


def _view_calibration(calibration, view: str):
    """The calibration's part for ``view`` (a ViewCalibration), or None."""
    views = getattr(calibration, "views", None)
    return views.get(view) if isinstance(views, dict) else None


def install_viewer_tools(workstation) -> ViewerTools:
    """Add File → Open image/folder, the Shots dock and the viewers' calibration extras."""
    tools = ViewerTools(workstation.window, workstation.session)
    workstation.viewer_tools = tools
    return tools
