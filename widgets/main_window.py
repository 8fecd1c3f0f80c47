"""The main window: AP and LAT viewers side by side, the 3D view, log, status and workflow bars.

API for the other parts: ``window.viewers["ap"|"lat"]`` (FluoroViewer),
``window.scene_view`` (SceneView), ``window.add_dock(title, widget, area)``,
``window.log_panel``, ``window.status_bar.set_status(device, DeviceStatus, message)``,
``window.workflow_bar``. The window holds no session state: ``app/main.py`` wires it.
Docks and geometry persist through QSettings (organisation "fluoronav").
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMenu, QProgressBar, QScrollArea, QSizePolicy,
                               QSplitter, QToolBar, QToolButton, QVBoxLayout, QWidget)

from widgets.viewers.fluoro_viewer import FluoroViewer
from widgets.panels.log_panel import LogPanel
from widgets.scene.view import SceneView
from widgets.panels.status_bar import DeviceStatusBar
from widgets.panels.workflow_bar import WorkflowBar

__all__ = ["MainWindow", "BUSY_DELAY_MS"]

BUSY_DELAY_MS = 150  # show the busy indication only for requests longer than this
_AREAS = {"left": Qt.DockWidgetArea.LeftDockWidgetArea, "right": Qt.DockWidgetArea.RightDockWidgetArea,
          "top": Qt.DockWidgetArea.TopDockWidgetArea, "bottom": Qt.DockWidgetArea.BottomDockWidgetArea}
# the panel each workflow step needs in front (the right-hand docks are tabs)
STEP_PANELS = {"calibrate": "C-arm", "plan": "Planning", "align": "Robot", "verify": "C-arm"}

SHORT_SCREEN_PX = 900   # below this window height the right column favours the panels over the 3D view
_STATE_VERSION = 3  # bump when docks are added or rearranged: an older saved layout is then ignored


def _scrollable(dock: QDockWidget) -> None:
    """Put the dock's panel in a scroll area: a tall panel (the robot's) then never forces
    the window beyond the screen nor squeezes the 3D view; it scrolls instead."""
    panel = dock.widget()
    area = QScrollArea(objectName="dock_scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    pinned = [w for w in (getattr(panel, name, None) for name in getattr(panel, "PINNED", ())) if w is not None]
    area.setWidget(panel)
    bar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(min(panel.minimumSizeHint().width() + bar + 4, 420))  # 1366 px screens
    if not pinned:
        dock.setWidget(area)
        return
    # what must never scroll out of sight (a STOP button) stays above the scrolled rest
    holder = QWidget(objectName="dock_pinned")
    column = QVBoxLayout(holder)
    column.setContentsMargins(6, 6, 6, 0)
    for w in pinned:
        column.addWidget(w)
    column.addWidget(area, 1)
    dock.setWidget(holder)


class _FirstPaint(QObject):
    """Emits the window's ``first_painted`` after its first paint, then removes itself (an
    ``event()`` override would route every later event of the window through Python)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        window.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Type.Paint:
            self.window.removeEventFilter(self)
            QTimer.singleShot(0, self.window.first_painted.emit)   # after this paint is on screen
        return False


class MainWindow(QMainWindow):
    """The workstation window. ``acquire_requested(view)`` when F5/F6 or the buttons are used;
    ``first_painted`` once, after the window has first been painted (what waits for it —
    starting the devices — then does not delay the surgeon's first look)."""

    acquire_requested = Signal(str)
    first_painted = Signal()

    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("fluoronav_main_window")
        self._first_paint = _FirstPaint(self)
        self.setWindowTitle("fluoronav — fluoroscopy-guided spine robot")
        self.settings = settings if settings is not None else QSettings("fluoronav", "fluoronav")
        self.viewers = {"ap": FluoroViewer("ap"), "lat": FluoroViewer("lat")}
        split = QSplitter(Qt.Orientation.Horizontal, objectName="viewer_splitter")
        split.setChildrenCollapsible(False)
        for v in self.viewers.values():
            split.addWidget(v)
        central = QWidget(objectName="central")
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        # what no longer holds (the C-arm moved: calibration and plan invalid) and what to do;
        # above both viewers, where the surgeon looks, until a new calibration is accepted
        self.banner = QLabel(objectName="case_banner", wordWrap=True)
        self.banner.setStyleSheet("QLabel#case_banner { background: #7a4a00; color: #fff4e0; font-size: 15pt;"
                                  " font-weight: bold; padding: 8px 12px; }")
        self.banner.setVisible(False)
        column.addWidget(self.banner)
        column.addWidget(split, 1)
        self.setCentralWidget(central)
        self.scene_view = SceneView()
        self.log_panel = LogPanel()
        self.docks: dict[str, QDockWidget] = {}
        self._layout_restored = False
        self._build_toolbar()
        self.add_dock("3D view", self.scene_view, "right")
        self.add_dock("Log", self.log_panel, "bottom")
        self._build_status_bar()
        self._busy_timer = QTimer(self, singleShot=True, interval=BUSY_DELAY_MS)
        self._busy_timer.timeout.connect(self._show_busy)
        self._busy_view: str | None = None
        self.resize(1600, 960)
        self.resizeDocks([self.docks["3D view"]], [560], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Log"]], [170], Qt.Orientation.Vertical)

    def show_banner(self, text: str | None) -> None:
        """One line over both viewers (``None`` or "" hides it)."""
        self.banner.setText(text or "")
        self.banner.setVisible(bool(text))

    # -- building ---------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = QToolBar("Workflow", objectName="workflow_toolbar", movable=False)
        bar.setIconSize(QSize(32, 32))
        self.workflow_bar = WorkflowBar()
        bar.addWidget(self.workflow_bar)
        spacer = QWidget(objectName="toolbar_spacer")
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.panels_menu = QMenu("Panels", self)
        panels = QToolButton(text="Panels", objectName="panels_button", popupMode=QToolButton.ToolButtonPopupMode.InstantPopup)
        panels.setToolTip("Show or hide the docked panels (3D view, log, …)")
        panels.setMenu(self.panels_menu)
        bar.addWidget(panels)
        self.acquire_actions: dict[str, QAction] = {}
        for view, key in (("ap", "F5"), ("lat", "F6")):
            act = QAction(f"Acquire {view.upper()}  ({key})", self, objectName=f"acquire_{view}")
            act.setShortcut(QKeySequence(key))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(lambda _=False, v=view: self.acquire_requested.emit(v))
            bar.addAction(act)
            bar.widgetForAction(act).setObjectName("acquire_button")
            self.acquire_actions[view] = act
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.set_acquire_enabled(False, "no C-arm connected")

    def _build_status_bar(self) -> None:
        self.status_bar = DeviceStatusBar()
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        # everything here is permanent: a message (``showMessage``) takes the space on the left
        # that is left over and never hides the device pills (a normal widget it would hide)
        self.busy_label = QLabel(objectName="busy_label")
        self.busy_bar = QProgressBar(objectName="busy_bar", maximumWidth=160)
        self.busy_bar.setRange(0, 0)  # indeterminate
        self.busy_bar.setMinimumWidth(60)
        self.busy_label.setMinimumWidth(1)   # shown while busy, it must not widen the window past the screen
        sb.addPermanentWidget(self.busy_label)
        sb.addPermanentWidget(self.busy_bar)
        sb.addPermanentWidget(self.status_bar)
        self.busy_label.hide()
        self.busy_bar.hide()

    def add_dock(self, title: str, widget: QWidget, area: str = "right",
                 tab_with: str | None = None) -> QDockWidget:
        """Dock ``widget`` (area "left"/"right"/"top"/"bottom"), sharing the area evenly
        with the docks already there, or as a tab beside dock ``tab_with``. The layout
        persists by title; "Panels" in the toolbar shows a closed dock again."""
        if area not in _AREAS:
            raise ValueError(f"unknown dock area {area!r} (areas: {', '.join(_AREAS)})")
        if title in self.docks:
            raise ValueError(f"a dock titled {title!r} already exists")
        if tab_with is not None and tab_with not in self.docks:
            raise ValueError(f"no dock titled {tab_with!r} to put {title!r} beside")
        dock = QDockWidget(title, self)
        dock.setObjectName("dock_" + "_".join(title.lower().split()))
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(_AREAS[area], dock)
        if tab_with is not None:
            self.tabifyDockWidget(self.docks[tab_with], dock)
            dock.raise_()
        else:  # once the layout has placed the new dock
            QTimer.singleShot(0, self, lambda a=_AREAS[area]: self._share_area(a))
        self.docks[title] = dock
        self.panels_menu.addAction(dock.toggleViewAction())
        return dock

    def _share_area(self, area) -> None:
        """Give the docks stacked in ``area`` equal shares (a new one must not squeeze the 3D view);
        a layout restored from the settings is left as the user made it."""
        if self._layout_restored:
            return
        docks = [d for d in self.findChildren(QDockWidget)
                 if self.dockWidgetArea(d) == area and not d.isFloating() and not self.tabifiedDockWidgets(d)]
        if len(docks) > 1:
            vertical = area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
            total = self.height() if vertical else self.width()
            self.resizeDocks(docks, [max(total // (len(docks) + 1), 120)] * len(docks),
                             Qt.Orientation.Vertical if vertical else Qt.Orientation.Horizontal)

    def arrange_default_layout(self, raise_title: str | None = "C-arm") -> None:
        """The first-run layout: on the right the 3D view above the other right-hand docks as
        tabs (Planning, Robot, C-arm, …), ``raise_title`` in front; the viewers keep the rest.
        A layout restored from the settings replaces it."""
        right = Qt.DockWidgetArea.RightDockWidgetArea
        self.setCorner(Qt.Corner.BottomRightCorner, right)  # the right column runs down to the status bar
        self.setCorner(Qt.Corner.TopRightCorner, right)
        scene = self.docks["3D view"]
        for title, dock in self.docks.items():
            if title != "3D view" and dock.widget() is not None and \
                    dock.widget().objectName() not in ("dock_scroll", "dock_pinned"):
                _scrollable(dock)
        panels = [d for t, d in self.docks.items() if t != "3D view" and self.dockWidgetArea(d) == right
                  and not d.isFloating()]
        if panels:
            self.splitDockWidget(scene, panels[0], Qt.Orientation.Vertical)
            for d in panels[1:]:
                self.tabifyDockWidget(panels[0], d)
            if raise_title in self.docks:
                self.docks[raise_title].raise_()
        QTimer.singleShot(0, self, self._size_default_layout)
        self._size_default_layout()

    def show_step_panel(self, step: str) -> None:
        """Bring the panel of workflow ``step`` to the front of its tabs (the Planning table
        when planning, the Robot panel when aligning, the C-arm otherwise)."""
        title = STEP_PANELS.get(step)
        if title in self.docks and not self.docks[title].isFloating():
            self.docks[title].show()
            self.docks[title].raise_()

    def _size_default_layout(self) -> None:
        if self._layout_restored:
            return
        scene = self.docks["3D view"]
        column = int(min(max(0.34 * self.width(), 470), 680))
        self.resizeDocks([scene], [column], Qt.Orientation.Horizontal)
        below = [d for d in self.docks.values() if d is not scene and not d.isFloating()
                 and self.dockWidgetArea(d) == Qt.DockWidgetArea.RightDockWidgetArea]
        if below:
            h = self.height()
            # the panels get the larger share: their buttons and plots should not need scrolling;
            # on a short screen (768 px) the 3D view shrinks further, it stays one drag away
            share = 0.32 if h >= SHORT_SCREEN_PX else 0.2
            self.resizeDocks([scene, below[0]], [int(share * h), int((1 - share) * h)], Qt.Orientation.Vertical)
        if "Log" in self.docks:   # the Log and Shots row: one row of thumbnails (widgets/thumbnail_strip)
            self.resizeDocks([self.docks["Log"]], [max(165, int(0.16 * self.height()))], Qt.Orientation.Vertical)

    # -- acquisition feedback ---------------------------------------------------------
    def set_acquire_enabled(self, enabled: bool, why_not: str = "") -> None:
        for view, act in self.acquire_actions.items():
            act.setEnabled(enabled)
            act.setToolTip(f"Take a {view.upper()} shot" if enabled else f"Acquire {view.upper()}: {why_not}")

    def set_busy(self, view: str, busy: bool) -> None:
        """Bracket a request; the indication appears only after BUSY_DELAY_MS."""
        if busy:
            self._busy_view = view
            self._busy_timer.start()
        else:
            self._busy_timer.stop()
            self._busy_view = None
            self.busy_label.hide()
            self.busy_bar.hide()
            for v in self.viewers.values():
                v.setCursor(Qt.CursorShape.ArrowCursor)

    def _show_busy(self) -> None:
        if self._busy_view is None:
            return
        self.busy_label.setText(f"Acquiring {self._busy_view.upper()}…")
        self.busy_label.show()
        self.busy_bar.show()
        self.viewers[self._busy_view].setCursor(Qt.CursorShape.BusyCursor)

    def is_busy_shown(self) -> bool:
        return self.busy_bar.isVisible()

    # -- persistence ------------------------------------------------------------------
    def restore_layout(self) -> bool:
        """Restore geometry and dock layout saved by a previous run; False when none."""
        geometry = self.settings.value("main_window/geometry")
        state = self.settings.value("main_window/state")
        ok = bool(geometry) and self.restoreGeometry(geometry)
        ok = bool(state) and self.restoreState(state, _STATE_VERSION) and ok
        self._layout_restored = bool(ok)
        return bool(ok)

    def save_layout(self) -> None:
        self.settings.setValue("main_window/geometry", self.saveGeometry())
        self.settings.setValue("main_window/state", self.saveState(_STATE_VERSION))
        self.settings.sync()

    def closeEvent(self, ev) -> None:
        self.save_layout()
        self.log_panel.detach()
        self.scene_view.shutdown()
        super().closeEvent(ev)
