"""The planning panel: the trajectory table and large buttons (for gloved hands).

Thin: it shows rows the controller formats (``set_rows``) and emits what the
user asked for; it keeps no plan state. Angles arrive in degrees (UI).
Columns: name, level, side, length, medial, cranial, tool diameter, ray gap; the
row below the table edits the selected trajectory (name, level, side, diameter).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from core.planning.two_view import LEVELS, SIDES

__all__ = ["PlanningPanel", "COLUMNS"]

# short headers (each has its tooltip): the name column keeps room in a 1366 px screen's column
COLUMNS = ("Name", "Level", "Side", "mm", "Med°", "Cran°", "Ø", "Gap")
_TIPS = ("Trajectory name (edit below)", "Vertebra", "Pedicle side", "Length: entry to target, mm",
         "Medial: angle towards the midline in the axial plane (+ = tip converges)",
         "Cranial: angle in the sagittal plane (+ = tip towards the head)", "Tool diameter, mm",
         "Largest distance between the AP and LAT rays of the entry or target, mm (red: the clicks disagree)")
BUTTON_HEIGHT = 48
_WARN = QColor("#ff5050")


class PlanningPanel(QWidget):
    """Signals carry trajectory ids (str) and the requested values."""
    new_requested = Signal()
    place_requested = Signal(str)              # "entry" | "target"
    delete_requested = Signal()
    undo_requested = Signal()
    redo_requested = Signal()
    view_along_requested = Signal()
    save_requested = Signal()
    load_requested = Signal()
    selection_requested = Signal(str)          # tid, "" for none
    edit_requested = Signal(str, str, object)  # tid, field, value
    snap_toggled = Signal(bool)

    def __init__(self, levels=LEVELS, sides=SIDES, colours=("#ffb000", "#00c8ff", "#ff5fd2", "#8cff3c"),
                 parent=None):
        super().__init__(parent)
        self.setObjectName("planning_panel")
        self.levels, self.sides, self.colours = tuple(levels), tuple(sides), tuple(colours)
        self._tids: list[str] = []
        self._rows: dict[str, dict] = {}
        self._selected = ""
        self._filling = False
        self._build()

    def _build(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS), objectName="trajectory_table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(40)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        for col, tip in enumerate(_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        for col in (COLUMNS.index("Level"), COLUMNS.index("Side")):
            self.table.setColumnHidden(col, True)   # the name says them; the editor below sets them
        self.table.setMinimumHeight(40 + 36)  # one trajectory at least (a 768 px screen); the dock grows it
        self.setMinimumWidth(420)   # the right-hand column of a 1366 px screen
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Medial: tip towards the midline (+). Cranial: tip towards the head (+). "
                              "Gap: distance between the AP and LAT rays of a point (large = clicks disagree)")

        editor = QHBoxLayout()
        self.name_edit = QLineEdit(objectName="plan_name", placeholderText="name")
        self.name_edit.editingFinished.connect(lambda: self._edit_selected("name", self.name_edit.text()))
        self.name_edit.setMinimumWidth(130)   # "L5 right" whole at the body font
        self.level_box = QComboBox(objectName="plan_level")
        self.level_box.addItems(self.levels)
        self.level_box.activated.connect(lambda i: self._edit_selected("level", self.level_box.itemText(i)))
        self.side_box = QComboBox(objectName="plan_side")
        self.side_box.addItems(self.sides)
        self.side_box.activated.connect(lambda i: self._edit_selected("side", self.side_box.itemText(i)))
        self.diameter_spin = QDoubleSpinBox(objectName="plan_diameter", decimals=1, minimum=0.5, maximum=20.0,
                                            singleStep=0.5, suffix=" mm", toolTip="Tool diameter")
        self.diameter_spin.valueChanged.connect(lambda x: self._edit_selected("diameter_mm", float(x)))
        self.colour_button = QPushButton("", objectName="plan_colour", toolTip="Next colour")
        self.colour_button.setFixedWidth(BUTTON_HEIGHT)
        self.colour_button.clicked.connect(self._next_colour)
        for w in (self.name_edit, self.level_box, self.side_box, self.diameter_spin, self.colour_button):
            w.setMinimumHeight(BUTTON_HEIGHT)
            editor.addWidget(w, 2 if w is self.name_edit else (0 if w is self.colour_button else 1))
        self.editors = (self.name_edit, self.level_box, self.side_box, self.diameter_spin, self.colour_button)

        buttons = QGridLayout()
        self.buttons = {}
        for i, (key, text, tip, signal) in enumerate((
                ("new", "New  (N)", "Create a trajectory, then click its entry in either view", self.new_requested),
                ("entry", "Entry  (E)", "Click the entry point again in both views", None),
                ("target", "Target  (T)", "Click the target point again in both views", None),
                ("delete", "Delete  (Del)", "Delete the selected trajectory (asks first)", self.delete_requested),
                ("undo", "Undo  (Ctrl+Z)", "Undo the last edit", self.undo_requested),
                ("redo", "Redo", "Redo (Ctrl+Shift+Z or Ctrl+Y)", self.redo_requested),
                ("view", "3D: along  (V)", "Look down the selected trajectory in the 3D view",
                 self.view_along_requested),
                ("save", "Save plan…", "Save the plan to a file", self.save_requested),
                ("load", "Load plan…", "Load a plan file (replaces this plan)", self.load_requested))):
            b = QPushButton(text, objectName=f"plan_{key}", toolTip=tip)
            b.setMinimumHeight(BUTTON_HEIGHT)
            if signal is not None:
                b.clicked.connect(signal.emit)
            else:
                b.clicked.connect(lambda _=False, k=key: self.place_requested.emit(k))
            buttons.addWidget(b, i // 3, i % 3)
            self.buttons[key] = b
        self.snap_box = QCheckBox("Snap the second click to the dashed line  (Shift: free)", objectName="plan_snap")
        self.snap_box.setChecked(True)
        self.snap_box.toggled.connect(self.snap_toggled.emit)
        self.status = QLabel(objectName="plan_status", wordWrap=True)
        self.status.setMinimumHeight(40)

        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(editor)
        layout.addWidget(self.status)
        layout.addWidget(self.snap_box)
        layout.addLayout(buttons)

    # -- showing -------------------------------------------------------------------------
    def set_rows(self, rows: list[dict]) -> None:
        """Rows: dicts with tid, name, level, side, colour, length, medial, cranial, diameter,
        gap (numbers or None), warn (bool: the gap is too large), problems (lines to show) and
        image_angles ({view: (degrees, length px)}: the trajectory as drawn in each image). Rows are reused while the ids keep their order."""
        self._filling = True
        try:
            tids = [r["tid"] for r in rows]
            if tids != self._tids:
                self.table.setRowCount(0)
                self.table.setRowCount(len(rows))
                for i, r in enumerate(rows):
                    self._make_row(i, r)
                self._tids = tids
            self._rows = {}
            for i, r in enumerate(rows):
                self._fill_row(i, r)
            self._fill_editor()
        finally:
            self._filling = False

    def _make_row(self, i: int, r: dict) -> None:
        for col in range(len(COLUMNS)):
            item = QTableWidgetItem()
            item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
            if col >= 3:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(i, col, item)

    def _fill_row(self, i: int, r: dict) -> None:
        def num(x, fmt="{:.1f}"):
            return "—" if x is None else fmt.format(x)

        name_item = self.table.item(i, 0)
        problems = r.get("problems") or []
        name_item.setText(("⚠ " if problems else "") + r["name"])
        name_item.setForeground(QBrush(QColor(r["colour"])))
        name_item.setToolTip("\n".join(problems))
        self.table.item(i, 1).setText(r["level"])
        self.table.item(i, 2).setText(r["side"])
        unusual = r.get("unusual") or set()
        for col, key in ((3, "length"), (4, "medial"), (5, "cranial"), (6, "diameter")):
            self.table.item(i, col).setText(num(r.get(key)))
            # a figure unusual for the level in amber (a warning: the plan is not refused)
            self.table.item(i, col).setForeground(QBrush(_WARN if key in unusual else QColor("#d0d0d0")))
        drawn = r.get("image_angles") or {}
        tip = "\n".join(f"{v.upper()} image: drawn at {ang:.1f}° from the image's +u (column) axis towards +v "
                        f"(clockwise on an unflipped screen), {px:.0f} px long" for v, (ang, px) in drawn.items())
        for col in (4, 5):
            self.table.item(i, col).setToolTip(tip)
        gap_item = self.table.item(i, 7)
        gap_item.setText(num(r.get("gap"), "{:.2f}"))
        gap_item.setForeground(QBrush(_WARN if r.get("warn") else QColor("#d0d0d0")))
        gap_item.setToolTip("the AP and LAT clicks do not show the same point: move a handle onto the dashed line"
                            if r.get("warn") else "")
        self._rows[r["tid"]] = r

    def set_selected(self, tid: str) -> None:
        self._filling = True
        try:
            self._selected = tid if tid in self._tids else ""
            if self._selected:
                self.table.selectRow(self._tids.index(tid))
            else:
                self.table.clearSelection()
            self._fill_editor()
        finally:
            self._filling = False

    def _fill_editor(self) -> None:
        """The editor row shows the selected trajectory (disabled when none)."""
        r = self._rows.get(self._selected)
        for w in self.editors:
            w.setEnabled(r is not None)
            w.blockSignals(True)
        try:
            if r is not None:
                if not self.name_edit.hasFocus():
                    self.name_edit.setText(r["name"])
                    self.name_edit.setCursorPosition(0)   # a long name shows its start
                self.level_box.setCurrentText(r["level"])
                self.side_box.setCurrentText(r["side"])
                self.diameter_spin.setValue(r["diameter"])
                self.colour_button.setStyleSheet(f"background-color: {r['colour']};")
            else:
                self.colour_button.setStyleSheet("")
                self.name_edit.clear()
        finally:
            for w in self.editors:
                w.blockSignals(False)

    def set_status(self, text: str, warn: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #ff6060; font-weight: bold;" if warn else "")

    def set_undo_state(self, can_undo: bool, can_redo: bool, undo_text: str = "", redo_text: str = "") -> None:
        self.buttons["undo"].setEnabled(can_undo)
        self.buttons["redo"].setEnabled(can_redo)
        self.buttons["undo"].setToolTip(f"Undo {undo_text}" if undo_text else "Nothing to undo")
        self.buttons["redo"].setToolTip(f"Redo {redo_text}" if redo_text else "Nothing to redo")

    # -- user input ------------------------------------------------------------------------
    def _next_colour(self) -> None:
        r = self._rows.get(self._selected)
        if r is None:
            return
        current = r["colour"].lower()
        options = [c.lower() for c in self.colours]
        nxt = options[(options.index(current) + 1) % len(options)] if current in options else options[0]
        self._edit_selected("colour", nxt)

    def _edit_selected(self, field: str, value) -> None:
        if not self._filling and self._selected:
            self.edit_requested.emit(self._selected, field, value)

    def _selection_changed(self) -> None:
        if self._filling:
            return
        rows = {i.row() for i in self.table.selectedIndexes()}
        self.selection_requested.emit(self._tids[min(rows)] if rows else "")
