"""The technician's calibration wizard: cage -> distortion -> cage shots -> check and fix
the balls -> figures, accept or reject.

Thin: every button calls one method of ``app.calibration_workflow.CalibrationWorkflow``
(which a script or a test calls the same way) and the pages redraw on its
``changed`` signal. Long steps run on the workflow's worker thread: the page shows
progress and the window keeps answering. Failures show as one line in a red
banner at the top of the page.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QFileDialog, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QMessageBox, QProgressBar, QPushButton, QRadioButton,
                               QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget, QWizard,
                               QWizardPage)

from widgets.viewers.calibration_overlays import (ARROW_CAP_PX, BallOverlay, CageLayoutView, PLANE_COLOURS,
                                          PLATE_RESIDUAL_FULL_PX,
                                          MISSING_COLOUR, PlateOverlay, UNLABELLED_COLOUR)
from widgets.viewers.fluoro_viewer import FluoroViewer

__all__ = ["CalibrationWizard", "PAGES"]

PAGES = ("cage", "distortion", "shots", "balls", "figures")
VIEWS = ("ap", "lat")
RESIDUAL_GAIN = 20.0            # residual arrows are drawn this many times longer (said on screen)
IMAGE_FILTER = "Images (*.dcm *.DCM *.png *.tif *.tiff);;All files (*)"
METHOD_NAMES = {"3d2d": "3D-2D projective camera (DLT + refinement)", "2d2d": "2D-2D plane homographies (paper)"}

_QSS = """
QWizard, QWizardPage { background: #1b1f24; }
QLabel#wizard_title { font-size: 20pt; font-weight: bold; color: #8cc8f5; }
QLabel#wizard_hint { color: #aab4bf; }
QLabel#wizard_error { background: #5a1d1d; color: #ffd9d9; border: 1px solid #a33; border-radius: 6px;
                      padding: 8px 12px; font-weight: bold; }
QLabel#wizard_figures { font-family: "DejaVu Sans Mono"; color: #dde3ea; background: #15181c; padding: 8px; }
QLabel#wizard_legend { color: #dde3ea; padding: 2px 10px; }
QPushButton { min-height: 44px; padding: 0 18px; }
QPushButton#wizard_primary { background: #2b5d8c; border: 1px solid #3d7fbf; font-weight: bold; }
QPushButton:checked { background: #5fb0f0; color: #10161c; }
QPushButton[checkable="true"] { min-width: 120px; }
QRadioButton::indicator { border: 2px solid #8b96a3; border-radius: 11px; background: #15181c; }
QRadioButton::indicator:checked { background: #5fb0f0; border-color: #cfe6fa; }
QRadioButton { min-height: 40px; }
QRadioButton::indicator { width: 18px; height: 18px; }
QTableWidget { background: #15181c; gridline-color: #2f3740; }
QHeaderView::section { background: #20252c; color: #c5ced8; padding: 6px; border: none; font-weight: bold; }
QProgressBar { min-height: 22px; border: 1px solid #39424d; border-radius: 5px; background: #23282f;
               text-align: center; }
QProgressBar::chunk { background: #f2c14e; }
QSpinBox { min-height: 40px; min-width: 90px; }
"""


def _label(text="", name="", wrap=True) -> QLabel:
    lab = QLabel(text, objectName=name) if name else QLabel(text)
    lab.setWordWrap(wrap)
    return lab


def _button(text, slot, name="") -> QPushButton:
    b = QPushButton(text, objectName=name) if name else QPushButton(text)
    b.clicked.connect(lambda _=False: slot())
    return b


class _Page(QWizardPage):
    """A page with a title, a hint, a one-line error banner and a progress row."""

    def __init__(self, wizard, title: str, hint: str):
        super().__init__()
        self.wf = wizard.workflow
        self.wiz = wizard
        self.box = QVBoxLayout(self)
        self.box.setSpacing(10)
        self.box.addWidget(_label(title, "wizard_title"))
        self.box.addWidget(_label(hint, "wizard_hint"))
        self.error = _label("", "wizard_error")
        self.error.hide()
        self.box.addWidget(self.error)
        row = QHBoxLayout()
        self.busy_label = _label("", "wizard_hint", wrap=False)
        self.bar = QProgressBar(objectName="wizard_progress")
        self.bar.setRange(0, 100)
        row.addWidget(self.busy_label)
        row.addWidget(self.bar, 1)
        self.progress_row = QWidget()
        self.progress_row.setLayout(row)
        self.progress_row.hide()

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def show_progress(self, pct: int, what: str) -> None:
        self.progress_row.setVisible(bool(self.wf.busy))
        self.bar.setValue(pct)
        if what:
            self.busy_label.setText(what + "…")

    def refresh(self) -> None:
        self.completeChanged.emit()

    def initializePage(self) -> None:
        self.show_error("")
        self.refresh()


def _show(viewer, image) -> None:
    """Show ``image`` unless the viewer already shows it (keeps zoom and window/level)."""
    if getattr(viewer, "_wizard_image", None) is not image:
        viewer.set_image(image)
        viewer._wizard_image = image


def _viewer(view, name, empty_text, dropped=None):
    """A viewer for the wizard; ``empty_text`` says what to do while it has no image;
    ``dropped(image)`` takes a file dropped on it."""
    v = FluoroViewer(view)
    v.setObjectName(f"{name}_{view}")
    v.setMinimumSize(420, 380)
    v.empty_label.setText(empty_text)
    if dropped is not None:
        v.image_dropped.connect(dropped)
    return v


# -- 1 cage ------------------------------------------------------------------------------
class CagePage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "1   Cage", "Confirm the cage mounted on the robot (default: the fluoronav "
                                            "bi-planar cage). The drawings number each plane's balls for manual "
                                            "fixes (plane axes: a shot may show them turned or mirrored).")
        row = QHBoxLayout()
        self.path = _label("", "wizard_figures")
        row.addWidget(self.path, 1)
        row.addWidget(_button("Choose another cage file…", self._browse))
        self.box.addLayout(row)
        self.name = _label("")
        self.box.addWidget(self.name)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Plane", "View", "Balls"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMaximumWidth(420)
        self.layouts = CageLayoutView()
        row = QHBoxLayout()
        row.addWidget(self.table)
        row.addWidget(self.layouts, 1)
        self.box.addLayout(row, 1)
        self.box.addWidget(self.progress_row)

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Cage file", str(self.wf.default_cage_path().parent),
                                              "Cage files (*.json)")
        if path:
            self.choose_cage(path)

    def choose_cage(self, path) -> bool:
        ok = self.wf.set_cage(path)
        self.refresh()
        return ok

    def initializePage(self):
        if self.wf.cage is None:
            self.wf.set_cage()
        super().initializePage()

    def refresh(self):
        cage = self.wf.cage
        self.path.setText(cage.source if cage else "no cage file loaded")
        self.name.setText(f"{cage.name} — balls {cage.ball_diameter_mm:g} mm" if cage else "")
        rows = self.wf.cage_summary()
        self.layouts.set_layouts(self.wf.cage_layouts())
        self.table.setRowCount(len(rows))
        for r, (pid, view, n) in enumerate(rows):
            for c, text in enumerate((pid, view.upper(), str(n))):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(r, c, item)
        super().refresh()

    def isComplete(self):
        return self.wf.cage is not None and not self.wf.busy


# -- 2 distortion ------------------------------------------------------------------------
class DistortionPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "2   Distortion", "An image intensifier bends the image: shoot the bead plate on "
                                                  "the detector once per view. A flat panel needs no correction.")
        row = QHBoxLayout()
        self.ii = QRadioButton("Image intensifier: correct with the bead plate")
        self.flat = QRadioButton("Flat panel: no correction (skip)")
        self.ii.setChecked(True)
        group = QButtonGroup(self)
        for b in (self.ii, self.flat):
            group.addButton(b)
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(_button("Plate file…", self._browse_plate))
        self.ii.toggled.connect(lambda on: self.wf.set_use_plate(on))
        self.box.addLayout(row)
        grid = QGridLayout()
        self.viewers, self.overlays, self.figs, self.buttons = {}, {}, {}, []
        for col, v in enumerate(VIEWS):
            self.viewers[v] = _viewer(v, "plate_viewer", f"No {v.upper()} plate shot\n\npress Shoot plate "
                                      f"{v.upper()}, or drop a plate shot file here",
                                      lambda image, v=v: self.wf.load_plate_shot(v, image))
            self.overlays[v] = PlateOverlay(self.viewers[v].overlay("plate"))
            buttons = QHBoxLayout()
            for b in (_button(f"Shoot plate {v.upper()}", lambda v=v: self.wf.acquire_plate_shot(v), "wizard_primary"),
                      _button(f"Load plate {v.upper()}…", lambda v=v: self._load(v))):
                buttons.addWidget(b)
                self.buttons.append(b)
            self.figs[v] = _label("", "wizard_figures")
            grid.addLayout(buttons, 0, col)
            grid.addWidget(self.viewers[v], 1, col)
            grid.addWidget(self.figs[v], 2, col)
        grid.setRowStretch(1, 1)
        self.box.addLayout(grid, 1)
        self.legend = _label(f"Dots: plate balls found, coloured by residual after correction (green 0 px → red "
                             f"{PLATE_RESIDUAL_FULL_PX:g} px or more); yellow lines: the correction, raw → ideal "
                             "(true length).", "wizard_hint")
        self.box.addWidget(self.legend)
        self.box.addWidget(self.progress_row)

    def _browse_plate(self):
        path, _ = QFileDialog.getOpenFileName(self, "Plate file", "", "Plate files (*.json)")
        if path:
            self.wf.set_plate_file(path)

    def _load(self, view):
        path, _ = QFileDialog.getOpenFileName(self, f"{view.upper()} plate shot", "", IMAGE_FILTER)
        if path:
            self.wf.load_plate_shot(view, path)

    def refresh(self):
        use = self.wf.use_plate
        if self.ii.isChecked() != use:    # a workflow that took over a rejected attempt's choice
            for b, on in ((self.ii, use), (self.flat, not use)):
                b.blockSignals(True)
                b.setChecked(on)
                b.blockSignals(False)
        for b in self.buttons:
            b.setEnabled(use and not self.wf.busy)
        for v in VIEWS:
            res = self.wf.plates.get(v) if use else None
            if res is None:
                self.overlays[v].clear()
                self.figs[v].setText("no plate shot yet" if use else "flat panel: no correction")
                if getattr(self.viewers[v], "_wizard_image", None) is not None:
                    self.viewers[v].clear_image()
                    self.viewers[v]._wizard_image = None
                self.viewers[v].empty_label.setText("Flat panel: no plate shot needed" if not use else
                                                    f"No {v.upper()} plate shot\n\npress Shoot plate {v.upper()}, "
                                                    "or drop a plate shot file here")
                continue
            _show(self.viewers[v], res.image)
            self.overlays[v].set_grid(res.raw_px, res.ideal_px, res.residual_px)
            self.figs[v].setText(_plate_text(res.figures, res.residual_px))
        super().refresh()

    def isComplete(self):
        return self.wf.distortion_done() and not self.wf.busy


def _plate_text(figs, residual) -> str:
    names = {"polynomial": "global polynomial", "local_linear": "local, linear cells",
             "local_cubic": "local, cubic cells"}
    used = figs.get("model")
    lines = [f"{figs['plate_balls_matched']} plate balls · largest correction {figs['max_correction_px']:.1f} px",
             "held-out RMS per method:"]
    for k, name in names.items():
        v = figs.get(f"heldout_rms_px_{k}")
        if v is not None:
            lines.append(f"  {name:<22s}{v:6.3f} px{'   ◀ used' if used == k else ''}")
    return "\n".join(lines)


# -- 3 cage shots -------------------------------------------------------------------------
class ShotsPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "3   Cage shots", "Take (or load) an AP and a lateral shot with the whole cage in "
                                                  "the beam, then find the balls and calibrate.")
        grid = QGridLayout()
        self.viewers, self.state = {}, {}
        for col, v in enumerate(VIEWS):
            row = QHBoxLayout()
            row.addWidget(_button(f"Acquire {v.upper()}", lambda v=v: self.wf.acquire_shot(v), "wizard_primary"))
            row.addWidget(_button(f"Load {v.upper()}…", lambda v=v: self._load(v)))
            self.viewers[v] = _viewer(v, "shot_viewer", f"No {v.upper()} shot with the cage\n\npress Acquire "
                                      f"{v.upper()}, or drop a DICOM/PNG file here",
                                      lambda image, v=v: self.wf.set_shot(v, image))
            self.state[v] = _label("", "wizard_hint")
            grid.addLayout(row, 0, col)
            grid.addWidget(self.viewers[v], 1, col)
            grid.addWidget(self.state[v], 2, col)
        grid.setRowStretch(1, 1)
        self.box.addLayout(grid, 1)
        self.go = _button("Find the balls and calibrate", self.wf.run_calibration, "wizard_primary")
        self.box.addWidget(self.go)
        self.box.addWidget(self.progress_row)

    def _load(self, view):
        path, _ = QFileDialog.getOpenFileName(self, f"{view.upper()} shot", "", IMAGE_FILTER)
        if path:
            self.wf.set_shot(view, path)

    def initializePage(self):
        self.wf.follow_session_images(True)
        super().initializePage()

    def refresh(self):
        for v in VIEWS:
            img = self.wf.images.get(v)
            if img is not None:
                _show(self.viewers[v], img)
            shot = self.wf.shots.get(v)
            self.state[v].setText("no shot yet" if img is None else
                                  ("shot ready" if shot is None else
                                   (f"{len(shot.labels)} balls found" + (f" — {shot.error}" if shot.error else ""))))
        self.go.setEnabled(all(v in self.wf.images for v in VIEWS) and not self.wf.busy)
        super().refresh()

    def isComplete(self):
        return all(v in self.wf.shots for v in VIEWS) and not self.wf.busy


# -- 4 balls: check and fix ------------------------------------------------------------------
class BallsPage(_Page):
    MODES = ("select", "add", "remove")

    def __init__(self, wizard):
        super().__init__(wizard, "4   Check the balls", "Each ring is a ball identified in the cage, in its plane's "
                                                       "colour. Fix a wrong labelling by clicking on the image.")
        self.legend = QHBoxLayout()
        self.box.addLayout(self.legend)
        tools = QHBoxLayout()
        self.mode_buttons = {}
        group = QButtonGroup(self)
        for mode, text in zip(self.MODES, ("Select", "Add a ball", "Remove a detection")):
            b = QPushButton(text, objectName=f"mode_{mode}", checkable=True)
            group.addButton(b)
            tools.addWidget(b)
            self.mode_buttons[mode] = b
        self.mode_buttons["select"].setChecked(True)
        tools.addSpacing(16)
        tools.addWidget(_button("Label from assigned balls", self._complete))
        tools.addStretch(1)
        self.box.addLayout(tools)
        pick = QHBoxLayout()
        self.selection = _label("Select: click a ring or square", "wizard_figures", wrap=False)
        self.selection.setMinimumWidth(560)
        pick.addWidget(self.selection)
        self.plane_box, self.ball_box = QComboBox(), QSpinBox()
        pick.addWidget(_label("is ball", "wizard_hint", wrap=False))
        pick.addWidget(self.ball_box)
        pick.addWidget(_label("of plane", "wizard_hint", wrap=False))
        pick.addWidget(self.plane_box)
        self.plane_box.currentIndexChanged.connect(self._plane_picked)
        for text, slot in (("Assign", self._assign), ("Not a cage ball", self._unassign)):
            pick.addWidget(_button(text, slot))
        pick.addStretch(1)
        self.box.addLayout(pick)
        grid = QGridLayout()
        self.viewers, self.overlays, self.state = {}, {}, {}
        for col, v in enumerate(VIEWS):
            self.viewers[v] = _viewer(v, "balls_viewer", "Find the balls on page 3 first")
            self.overlays[v] = BallOverlay(self.viewers[v].overlay("balls"))
            self.viewers[v].pixel_clicked.connect(lambda u, vv, mods, v=v: self.click(v, u, vv))
            self.state[v] = _label("", "wizard_hint")
            grid.addWidget(self.viewers[v], 0, col)
            grid.addWidget(self.state[v], 1, col)
        grid.setRowStretch(0, 1)
        self.box.addLayout(grid, 1)
        self.box.addWidget(self.progress_row)
        self.selected: tuple[str, int] | None = None
        self._select_added: str | None = None

    @property
    def mode(self) -> str:
        return next(m for m, b in self.mode_buttons.items() if b.isChecked())

    def set_mode(self, mode: str) -> None:
        self.mode_buttons[mode].setChecked(True)

    def click(self, view: str, u: float, v: float) -> None:
        """What a left click on a view does in the current mode."""
        if self.mode == "add":
            self.selected = None
            self._select_added = view if self.wf.add_ball(view, (u, v)) else None
            return
        i = self.wf.nearest_detection(view, (u, v))
        if self.mode == "remove":
            if i is None:
                self.show_error(f"{view.upper()} shot: no detection under the click: click on a ring or square")
            else:
                self.selected = None
                self.wf.remove_detection(view, i)
            return
        self.selected = None if i is None else (view, i)
        self._show_selection()

    def _show_selection(self) -> None:
        for v in VIEWS:
            shot = self.wf.shots.get(v)
            sel = self.selected if self.selected and self.selected[0] == v else None
            radius = shot.labels.radius_px if shot else 5.0
            if sel is not None and shot is not None and sel[1] < len(shot.labels):
                self.overlays[v].set_selected(shot.labels.centres_px[sel[1]], radius)
            else:
                self.overlays[v].set_selected(None)
        if self.selected is None:
            self.selection.setText("Select: click a ring or square")
            return
        v, i = self.selected
        pid, ball = self.wf.shots[v].labels.label_of(i)
        text = f"{v.upper()} #{i}: " + (f"{pid} ball {ball}" if pid else "not a cage ball")
        hint = None if pid else self.wf.suggest_label(v, i)
        if hint is not None:       # pre-fill the ball the fit predicts here: Assign is one press
            pid, ball = hint[0], hint[1]
            text += f"; fit: {pid} ball {ball} ({hint[2]:.1f} px)"
        self.selection.setText(text)
        self.plane_box.blockSignals(True)
        self.plane_box.clear()
        self.plane_box.addItems([p.id for p in self.wf.cage.planes_for(v)])
        if pid:
            self.plane_box.setCurrentText(pid)
        self.plane_box.blockSignals(False)
        self._plane_picked()
        if pid:
            self.ball_box.setValue(ball)

    def _plane_picked(self) -> None:
        pid = self.plane_box.currentText()
        if pid and self.wf.cage is not None:
            self.ball_box.setRange(0, self.wf.cage.plane(pid).n_balls - 1)

    def _assign(self) -> None:
        if self.selected is None:
            self.show_error("select a detection first (Select, then click on a ring or square)")
            return
        self.wf.assign(self.selected[0], self.selected[1], self.plane_box.currentText(), self.ball_box.value())

    def _unassign(self) -> None:
        if self.selected is None:
            self.show_error("select a detection first (Select, then click on a ring or square)")
            return
        self.wf.unassign(*self.selected)

    def _complete(self) -> None:
        view = self.selected[0] if self.selected else "ap"
        for v in ([view] if self.selected else VIEWS):
            if not self.wf.complete(v):
                break

    def _legend(self) -> None:
        while self.legend.count():
            w = self.legend.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        if self.wf.cage is None:
            return
        for v in VIEWS:
            for k, p in enumerate(self.wf.cage.planes_for(v)):
                self.legend.addWidget(_label(f"<span style='color:{PLANE_COLOURS[k]}; font-size:20pt'>◯</span> "
                                             f"{p.id}", "wizard_legend", wrap=False))
        self.legend.addWidget(_label(f"<span style='color:{UNLABELLED_COLOUR}; font-size:20pt'>□</span> "
                                     "not a cage ball", "wizard_legend", wrap=False))
        self.legend.addWidget(_label(f"<span style='color:{MISSING_COLOUR}; font-size:20pt'>◌</span> "
                                     "predicted, not found", "wizard_legend", wrap=False))
        self.legend.addWidget(_label(f"lines: residual × {RESIDUAL_GAIN:g} (red: over {ARROW_CAP_PX:g} px, "
                                     "shortened)", "wizard_legend", wrap=False))
        self.legend.addStretch(1)

    def initializePage(self):
        self._legend()
        super().initializePage()

    def refresh(self):
        for v in VIEWS:
            shot = self.wf.shots.get(v)
            if shot is None:
                self.overlays[v].clear()
                self.state[v].setText("")
                continue
            _show(self.viewers[v], shot.image)
            ids = [p.id for p in self.wf.cage.planes_for(v)]
            k = [ids.index(p) if p in ids else -1 for p in shot.labels.plane_ids]
            vec = self.wf.residual_vectors_px(v)
            self.overlays[v].set_balls(shot.labels.centres_px, k, vec, RESIDUAL_GAIN, shot.labels.radius_px)
            self.overlays[v].set_missing(self.wf.missing_balls_px(v), shot.labels.radius_px)
            n = {pid: int(np.sum(np.array(shot.labels.plane_ids) == pid)) for pid in ids}
            self.state[v].setText(f"{len(shot.labels)} detections; " + ", ".join(f"{p}: {n[p]}" for p in ids)
                                  + (f"\n⚠ {shot.error}" if shot.error else ""))
        if self._select_added and not self.wf.busy:      # the ball just added, ready to assign
            v = self._select_added
            self.selected, self._select_added = (v, len(self.wf.shots[v].labels) - 1), None
        if self.selected and (self.selected[0] not in self.wf.shots
                              or self.selected[1] >= len(self.wf.shots[self.selected[0]].labels)):
            self.selected = None
        self._show_selection()
        if not self.wf.busy:
            self.show_error(self.wf.calibration_error)
        super().refresh()

    def isComplete(self):
        return self.wf.calibration is not None and not self.wf.busy


# -- 5 figures --------------------------------------------------------------------------------
class FiguresPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "5   Figures: accept or reject", "Accept saves the calibration with the session "
                                                                  "and moves on to planning. Reject drops this calibration; "
                                                                  "the plate shots and their distortion are kept.")
        self.summary = _label("", "wizard_figures")
        self.box.addWidget(self.summary)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["View", "Plane", "Matched / in view", "RMS px", "RMS mm",
                                              "Leave-one-out px"])
        self.table.setMinimumHeight(330)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.box.addWidget(self.table, 1)
        self.box.addWidget(self.progress_row)

    def refresh(self):
        f = self.wf.figures()
        self.summary.setText("\n".join(_summary_lines(f, self.wf)))
        rows = []
        for v, d in f["views"].items():
            for pid, p in d["planes"].items():
                rows.append((v.upper(), pid, f"{p['matched']} / {p['expected']}", f"{p['rms_px']:.3f}",
                             f"{p['rms_mm']:.3f}", ""))
            if "loo_rms_px" in d:
                rows.append((v.upper(), "both planes", f"{d['balls_detected']} detected", "", "",
                             f"{d['loo_rms_px']:.3f}"))
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(r, c, item)
        self.show_error(f["error"])
        super().refresh()

    def isComplete(self):
        return self.wf.calibration is not None and not self.wf.busy


def _summary_lines(f, wf) -> list[str]:
    """Model, angle, distortion per view and a verdict, for the figures page."""
    lines = [f"Model used:       {METHOD_NAMES.get(f['method'], f['method'])}"]
    angle = f["view_angle_deg"]
    lines.append(f"Angle between the views: {angle:.1f}°" if angle is not None else "No calibration yet")
    for v in VIEWS:
        res = wf.plates.get(v) if wf.use_plate else None
        if res is not None:
            m = res.figures["model"]
            lines.append(f"{v.upper()} distortion: {m.replace('_', ' ')}, held-out "
                         f"{res.figures[f'heldout_rms_px_{m}']:.3f} px")
        else:
            lines.append(f"{v.upper()} distortion: none (flat panel)")
    worst = max((p["rms_px"] for d in f["views"].values() for p in d["planes"].values()), default=None)
    if angle is not None and worst is not None:
        lines.append("Verdict: every plane fits within 0.3 px — good to accept" if worst <= 0.3 else
                     f"Verdict: a plane fits to {worst:.2f} px — check the balls (page 4) or the plate shots")
    return lines


class CalibrationWizard(QWizard):
    """The wizard over a ``CalibrationWorkflow``; Finish = accept, Cancel = reject.
    Esc or closing the window asks first (``confirm(text) -> bool``, a question box by
    default) when there is work to lose; the Reject button is the deliberate way out."""

    def __init__(self, workflow, parent=None, confirm=None):
        super().__init__(parent)
        self.workflow = workflow
        self._confirm = confirm or self._ask
        self.setObjectName("calibration_wizard")
        self.setWindowTitle("fluoronav — cage calibration")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Accept calibration")
        self.setButtonText(QWizard.WizardButton.CancelButton, "Reject")
        self.setStyleSheet(_QSS)
        self.pages = {}
        for name, cls in zip(PAGES, (CagePage, DistortionPage, ShotsPage, BallsPage, FiguresPage)):
            page = cls(self)
            page.setObjectName(f"page_{name}")
            self.pages[name] = page
            self.addPage(page)
        self.resize(1500, 980)
        workflow.changed.connect(lambda _: self._current_refresh())
        workflow.finished.connect(lambda _: self._current_refresh())
        workflow.failed.connect(lambda step, msg: self._page().show_error(msg))
        workflow.progress.connect(lambda pct, what: self._page().show_progress(pct, what))
        workflow.busy_changed.connect(self._busy)
        self.currentIdChanged.connect(lambda _: self._current_refresh())

    def _page(self) -> _Page:
        return self.currentPage() or self.pages["cage"]

    def page_named(self, name: str) -> _Page:
        return self.pages[name]

    def _current_refresh(self) -> None:
        page = self._page()
        page.refresh()
        page.show_progress(page.bar.value(), "")

    def _busy(self, busy: bool, what: str) -> None:
        for b in (QWizard.WizardButton.BackButton, QWizard.WizardButton.CancelButton):
            self.button(b).setEnabled(not busy)
        page = self._page()
        if busy:
            page.show_error("")
        page.progress_row.setVisible(busy)
        page.refresh()

    def accept(self) -> None:
        if self.workflow.accept() is not None:
            super().accept()

    def reject(self) -> None:
        if self.workflow.busy:
            return
        self.workflow.reject()
        super().reject()

    def _work_to_lose(self) -> str:
        wf = self.workflow
        if wf.calibration is not None:
            return "the calibration computed from these shots"
        if wf.shots or wf.images:
            return "the cage shots loaded here"
        return ""

    def _ask(self, text: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, "Leave the calibration?", text,
                          QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)   # a second Esc keeps the work
        return box.exec() == QMessageBox.StandardButton.Discard

    def _reject_if_confirmed(self) -> bool:
        """Esc / the window's close: ask before dropping work; True when the wizard closed."""
        if self.workflow.busy:
            return False
        lose = self._work_to_lose()
        if lose and not self._confirm(f"Discard {lose}? The plate shots and their distortion are kept."):
            return False
        self.reject()
        return True

    def keyPressEvent(self, ev) -> None:
        if ev.key() == Qt.Key.Key_Escape:   # QDialog would reject at once
            ev.accept()
            self._reject_if_confirmed()
            return
        super().keyPressEvent(ev)

    def closeEvent(self, ev) -> None:
        if self.isVisible() and not self._reject_if_confirmed():
            ev.ignore()
            return
        super().closeEvent(ev)
