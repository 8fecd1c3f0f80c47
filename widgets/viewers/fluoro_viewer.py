"""A fluoroscopy viewer: one raw 16-bit shot with window/level, zoom, pan and overlays.

Coordinates: every signal and every overlay child uses RAW stored pixel
coordinates (u, v) = (column, row), the centre of the top-left pixel at (0, 0)
(DESIGN.md). The image and the overlays hang under one ``content`` item whose
transform is the display flip/rotation, so a display setting never changes a
stored coordinate. pyqtgraph puts pixel (0, 0)'s *corner* at (0, 0): the image
item is shifted by (-0.5, -0.5) inside ``content``.

Distortion-corrected display (``set_corrected(True)`` once ``set_calibration`` gave
the view's distortion): the image shown is resampled on the ideal pixel grid and
``content`` coordinates become *display* (ideal) pixels. Overlay children still
receive RAW pixels: each child of an overlay group is adopted by ``_DisplayMap``,
which passes what it is given (``setData``, ``setPolygon``, ``setPos``) through
raw -> display, and ``scene_to_pixel`` maps display -> raw, so clicks, hover and
handle drags come back in raw pixels whatever the display.

Mouse: wheel zooms, left drag pans (unless a tool is active), right or middle
drag sets window (horizontal) and level (vertical), left click emits
``pixel_clicked`` (or places a point of the active measuring tool; right click
or Esc finishes it). Dropping a DICOM/PNG/TIFF file emits ``image_dropped``.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QPolygonF, QTransform
from PySide6.QtWidgets import (QComboBox, QGraphicsItem, QGraphicsPolygonItem, QGridLayout, QHBoxLayout,
                               QLabel, QMenu, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from core.geometry.pixels import in_image
from core.imaging.fluoro_image import FluoroImage

__all__ = ["FluoroViewer", "PRESETS", "preset_levels"]

log = logging.getLogger(__name__)

# name -> (label, low percentile, high percentile) of the displayed values
# (larger = brighter), taken without the pixels at the image's extreme values
# (collimator shadow, saturation) except for "full". Bone and steel attenuate: they are the dark end of a
# fluoroscopy shot, so "bone" stretches the lower part of the histogram.
PRESETS = {
    "auto": ("Auto", 1.0, 99.0),
    "bone": ("Bone", 0.5, 60.0),
    "soft_tissue": ("Soft tissue", 35.0, 99.5),
    "full": ("Full range", 0.0, 100.0),
}


_PRESET_SAMPLES = 256 * 256  # percentiles of a larger image are taken on a regular subsample


def preset_levels(display: np.ndarray, name: str) -> tuple[float, float]:
    """(low, high) display levels of preset ``name`` for the displayed values (a regular
    subsample of at most 256² values for a large image: ranks within 0.5 %)."""
    if name not in PRESETS:
        raise ValueError(f"unknown window/level preset {name!r} (presets: {', '.join(PRESETS)})")
    _, lo_p, hi_p = PRESETS[name]
    values = np.asarray(display)
    if values.ndim == 2 and values.size > _PRESET_SAMPLES:  # a 1024² shot: every 4th row and column
        step = int(math.ceil(math.sqrt(values.size / _PRESET_SAMPLES)))
        values = values[::step, ::step]
    if name != "full":
        # collimator shadow and saturation sit at the extremes: leave them out
        inner = values[(values > values.min()) & (values < values.max())]
        values = inner if inner.size >= 0.05 * values.size else values
    lo, hi = np.percentile(values, [lo_p, hi_p])
    if hi <= lo:  # flat image: keep a window of one grey level
        hi = lo + 1.0
    return float(lo), float(hi)


def _display_array(image) -> tuple[np.ndarray, np.ndarray]:
    """(raw stored pixels, displayed values where larger = brighter)."""
    if isinstance(image, FluoroImage):
        return image.pixels, (image.pixels if image.photometric == "MONOCHROME2" else image.display())
    a = np.asarray(image)
    if a.ndim != 2 or a.size == 0 or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"an image must be a non-empty 2-D numeric array, got {a.dtype} {a.shape}")
    return a, a


# --- display mapping: raw pixels -> what is drawn ------------------------------------
PAINT_MARGIN_PX = 24   # around the overlays' bounds: pens, handles and names drawn at a fixed screen size
_DENSIFY_PX = 8.0  # a raw straight segment is a curve once undistorted: sample it this finely


def _densify(x, y, step=_DENSIFY_PX):
    """Polyline vertices with extra points every ``step`` px (NaN breaks are kept)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return x, y
    seg = np.hypot(np.diff(x), np.diff(y))
    n = np.where(np.isfinite(seg), np.maximum(1, np.ceil(seg / step)), 1).astype(int)
    t = np.concatenate([np.arange(k) / k for k in n] + [[0.0]])
    i = np.concatenate([np.full(k, j) for j, k in enumerate(n)] + [[len(x) - 1]])
    j = np.minimum(i + 1, len(x) - 1)
    return x[i] + t * (x[j] - x[i]), y[i] + t * (y[j] - y[i])


class _DisplayMap:
    """raw <-> display pixel mapping (identity, or a distortion's raw -> ideal), and the
    adoption of overlay items so that they keep taking raw pixels."""

    def __init__(self):
        self.distortion = None
        self.items: list = []

    @property
    def active(self) -> bool:
        return self.distortion is not None

    def to_display(self, uv) -> np.ndarray:
        q = np.asarray(uv, float)
        return q.copy() if self.distortion is None else self.distortion.raw_to_ideal(q)

    def to_raw(self, uv) -> np.ndarray:
        q = np.asarray(uv, float)
        return q.copy() if self.distortion is None else self.distortion.ideal_to_raw(q)

    def _xy(self, x, y):
        x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
        if self.distortion is None or len(x) == 0:
            return x, y
        d = self.to_display(np.column_stack([x, y]))
        return d[:, 0], d[:, 1]

    # -- adopted items ----------------------------------------------------------------
    def adopt(self, item) -> None:
        """Route ``item``'s geometry setters through raw -> display (once per item)."""
        if getattr(item, "_fn_raw", None) is not None:
            return
        if isinstance(item, pg.ScatterPlotItem):
            kind, x, y = "scatter", *item.getData()
            call = ((), {"x": np.asarray(x), "y": np.asarray(y)})
        elif isinstance(item, (pg.PlotCurveItem, pg.PlotDataItem)):
            kind, x, y = "curve", *item.getData()
            call = ((), {"x": np.asarray([] if x is None else x), "y": np.asarray([] if y is None else y)})
        elif isinstance(item, QGraphicsPolygonItem):
            kind, call = "polygon", ((item.polygon(),), {})
        else:
            kind, call = "pos", ((item.pos(),), {})
        item._fn_raw = [kind, call]
        name = {"scatter": "setData", "curve": "setData", "polygon": "setPolygon", "pos": "setPos"}[kind]
        original = getattr(type(item), name)

        def setter(*args, _item=item, _orig=original, **kwargs):
            if kind == "pos" and self.active and getattr(_item, "moving", False):
                args, kwargs = (self._dragged_to(_item, args, kwargs),), {}
            _item._fn_raw[1] = (args, kwargs)
            a, k = self._mapped(_item._fn_raw[0], args, kwargs)
            return _orig(_item, *a, **k)
        setattr(item, name, setter)
        if kind == "pos":  # pos() reads back raw, as it was given
            item.pos = lambda _item=item: pg.Point(*_raw_point(_item._fn_raw[1]))
        self.items.append(item)
        if self.active:
            self.remap(item)

    def remap(self, item) -> None:
        """Redraw ``item`` from its raw geometry; no signal (a handle must not report a drag)."""
        kind, (args, kwargs) = item._fn_raw
        name = {"scatter": "setData", "curve": "setData", "polygon": "setPolygon", "pos": "setPos"}[kind]
        a, k = self._mapped(kind, args, kwargs)
        blocked = item.blockSignals(True) if hasattr(item, "blockSignals") else None
        try:
            getattr(type(item), name)(item, *a, **k)
        finally:
            if blocked is not None:
                item.blockSignals(blocked)

    def _dragged_to(self, item, args, kwargs):
        """Raw position of a handle that pyqtgraph drags (``moving``): it passes
        ``raw0 - d_down + cursor`` (its pos() at the start reads raw, the cursor maps to
        display), so the display position meant is that + (display(raw0) - raw0)."""
        offset = getattr(item, "symbolOffset", None)
        if getattr(item, "_fn_drag", (None,))[0] is not offset:   # a new drag: remember where it began
            item._fn_drag = (offset, np.asarray(_raw_point(item._fn_raw[1]), float))
        raw0 = item._fn_drag[1]
        meant = np.asarray(_raw_point((args, kwargs)), float) + self.to_display(raw0) - raw0
        u, v = self.to_raw(meant)
        return pg.Point(float(u), float(v))

    def remap_all(self) -> None:
        self.items = [i for i in self.items if shiboken6.isValid(i)]
        for item in self.items:
            self.remap(item)

    def _mapped(self, kind, args, kwargs):
        """(args, kwargs) with the raw geometry replaced by display geometry."""
        if not self.active:
            return args, kwargs
        if kind == "pos":
            p = self.to_display(_raw_point((args, kwargs)))
            return (QPointF(float(p[0]), float(p[1])),), {}
        if kind == "polygon":
            pts = np.array([(p.x(), p.y()) for p in args[0]], float).reshape(-1, 2)
            d = self.to_display(pts) if len(pts) else pts
            return (QPolygonF([QPointF(float(a), float(b)) for a, b in d]),), kwargs
        kwargs = dict(kwargs)
        if "pos" in kwargs:
            pos = np.asarray(kwargs["pos"], float).reshape(-1, 2)
            kwargs["pos"] = self.to_display(pos) if len(pos) else pos
            return args, kwargs
        if len(args) >= 2:
            x, y, rest = args[0], args[1], args[2:]
        elif len(args) == 1 and np.ndim(args[0]) == 2:
            a = np.asarray(args[0], float)
            x, y, rest = a[:, 0], a[:, 1], ()
        elif "x" in kwargs and "y" in kwargs:
            x, y, rest = kwargs.pop("x"), kwargs.pop("y"), args
        else:
            return args, kwargs
        if kind == "curve" and isinstance(kwargs.get("connect", "all"), str) and kwargs.get("connect", "all") == "all":
            x, y = _densify(x, y)
        return (*self._xy(x, y), *rest), kwargs


def _raw_point(call) -> tuple[float, float]:
    args, _ = call
    p = args[0] if len(args) == 1 else args
    if isinstance(p, (QPointF,)) or hasattr(p, "x") and callable(p.x):
        return float(p.x()), float(p.y())
    return float(p[0]), float(p[1])


class _OverlayGroup(pg.ItemGroup):
    """An overlay layer whose direct children are adopted by the viewer's display map."""

    def __init__(self, display_map: _DisplayMap):
        super().__init__()
        self._map = display_map

    def itemChange(self, change, value):
        ret = super().itemChange(change, value)
        if change == QGraphicsItem.GraphicsItemChange.ItemChildAddedChange and value is not None:
            self._map.adopt(value)
        return ret


class _ViewBox(pg.ViewBox):
    """ViewBox whose right/middle drag is window/level and whose left click picks a pixel."""

    def __init__(self, viewer: "FluoroViewer"):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._viewer = viewer

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            ev.accept()
            self._viewer._drag_window_level(ev)
        elif ev.button() == Qt.MouseButton.LeftButton and self._viewer.tool_active:
            ev.ignore()
        else:
            super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._viewer._clicked(ev.scenePos(), ev.modifiers())
        elif ev.button() == Qt.MouseButton.RightButton and self._viewer.measure.active:
            ev.accept()
            self._viewer.measure.finish()


class FluoroViewer(QWidget):
    """One fluoroscopy view ("ap" or "lat"). See the module docstring for coordinates."""

    pixel_clicked = Signal(float, float, object)   # u, v (raw px), Qt.KeyboardModifiers
    pixel_hovered = Signal(float, float)           # u, v (raw px)
    image_dropped = Signal(object)                 # FluoroImage read from a dropped file
    image_refused = Signal(str)                    # one line: why a dropped file is no shot
    window_level_changed = Signal(float, float)    # window, level
    display_changed = Signal()                     # corrected display or calibration changed

    def __init__(self, view_name: str, parent=None):
        super().__init__(parent)
        self.view_name = view_name
        self.tool_active = False
        self._raw: np.ndarray | None = None
        self._display: np.ndarray | None = None
        self._levels = (0.0, 1.0)
        self._drag_start = None
        self._hover_text = ""
        self._flip_h, self._flip_v, self._rotate_deg = False, False, 0.0
        self._overlays: dict[str, pg.ItemGroup] = {}
        self._map = _DisplayMap()
        self._image = None            # the FluoroImage shown (pixel spacing), when one was given
        self._calib = None            # the view's ViewCalibration (distortion, planes), or None
        self._corrected = False
        self.setObjectName(f"fluoro_viewer_{view_name}")
        self.setAcceptDrops(True)
        from widgets.viewers.measure_tools import MeasureTools
        self.measure = MeasureTools(self)
        self._build()
        self.clear_image()

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        self.graphics = pg.GraphicsView(background="#0b0d10")
        self.graphics.setAcceptDrops(False)  # drops go to this widget
        self.view_box = _ViewBox(self)
        self.graphics.setCentralItem(self.view_box)
        self.content = pg.ItemGroup()
        self.view_box.addItem(self.content)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setParentItem(self.content)
        self.image_item.setPos(-0.5, -0.5)  # pixel centres at integer (u, v) in content
        self.graphics.scene().sigMouseMoved.connect(self._hovered)

        self.empty_label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self.empty_label.setObjectName("viewer_empty")
        self.empty_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        stack = QGridLayout()
        stack.setContentsMargins(0, 0, 0, 0)
        stack.addWidget(self.graphics, 0, 0)
        stack.addWidget(self.empty_label, 0, 0)

        self.readout = QLabel(objectName="viewer_readout")
        self.readout.setStyleSheet("QLabel { font-size: 11pt; }")   # one line even in a narrow viewer
        self.readout.setMinimumWidth(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self._build_header())
        layout.addLayout(stack, 1)
        layout.addWidget(self.readout)

    def _build_header(self) -> QWidget:
        header = QWidget(objectName="viewer_header")
        row = QHBoxLayout(header)
        row.setContentsMargins(8, 4, 8, 4)
        row.setSpacing(4)
        title = QLabel(self.view_name.upper(), objectName="viewer_title")
        self.preset_box = QComboBox(objectName="viewer_preset")
        self.preset_box.setToolTip("Window/level preset (right-drag on the image to adjust)")
        self.preset_box.setStyleSheet("QComboBox { min-width: 72px; }")
        # the preset names must not set the viewer's width: two viewers and the panels fit 1366 px
        self.preset_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_box.setMinimumContentsLength(5)
        for name, (label, _, _) in PRESETS.items():
            self.preset_box.addItem(label, name)
        self.preset_box.activated.connect(lambda i: self.set_preset(self.preset_box.itemData(i)))
        row.addWidget(title)
        row.addStretch(1)
        row.addWidget(self.preset_box)
        self.layers_menu = QMenu(self)
        self.layers_menu.aboutToShow.connect(self._fill_layers_menu)
        self.layers_button = self._menu_button("☰", "Show or hide the overlay layers (balls, trajectories, "
                                               "epipolar line, tool, labels, measurements)", self.layers_menu)
        row.addWidget(self.layers_button)
        self.tool_buttons = {}
        for kind, text, tip in (("ruler", "↔", "Ruler: click two points (right click or Esc ends); "
                                 "shows px, mm at the detector and mm at the cage plane"),
                                ("angle", "∠", "Angle: click arm, vertex, arm (right click or Esc ends)")):
            b = QToolButton(text=text, toolTip=tip, objectName="viewer_tool", checkable=True)
            b.clicked.connect(lambda on, k=kind: self.measure.start(k) if on else self.measure.finish())
            row.addWidget(b)
            self.tool_buttons[kind] = b
        orient = QMenu(self)
        self.undistort_button = orient.addAction("Distortion-corrected (dewarped)")
        self.undistort_button.setCheckable(True)
        self.undistort_button.setToolTip("Show the distortion-corrected image (needs a calibration); "
                                         "clicks, plans and measurements stay in raw pixels")
        self.undistort_button.setEnabled(False)
        self.undistort_button.triggered.connect(lambda on: self.set_corrected(on))
        orient.addSeparator()
        for text, slot in (("Flip left-right  ⇆", self._toggle_flip_h), ("Flip up-down  ⇅", self._toggle_flip_v),
                           ("Rotate 90°  ⟳", self._rotate_90),
                           ("Original orientation", lambda: self.set_display_transform())):
            orient.addAction(text).triggered.connect(slot)
        self.orient_button = self._menu_button("⟳", "Display: distortion correction, flip, rotate "
                                               "(stored coordinates never change)", orient)
        row.addWidget(self.orient_button)
        fit = QToolButton(text="Fit", toolTip="Fit the image to the view", objectName="viewer_tool")
        fit.clicked.connect(self.reset_view)
        row.addWidget(fit)
        header.setStyleSheet("QToolButton#viewer_tool:checked { background: #2f6fa8; border-color: #8cc8f5; }")
        header.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        return header

    @staticmethod
    def _menu_button(text: str, tip: str, menu: QMenu) -> QToolButton:
        b = QToolButton(text=text, toolTip=tip, objectName="viewer_tool",
                        popupMode=QToolButton.ToolButtonPopupMode.InstantPopup)
        b.setMenu(menu)
        b.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        return b

    # -- image ------------------------------------------------------------------------
    def set_image(self, image) -> None:
        """Show a FluoroImage (or 2-D array) with the chosen preset (at first "auto")."""
        raw, display = _display_array(image)
        same_shape = self._raw is not None and self._raw.shape == raw.shape
        self._raw, self._display = raw, display
        self._image = image if isinstance(image, FluoroImage) else None
        self._show_pixels()
        self.empty_label.hide()
        if not same_shape:  # a shot of the same size keeps the user's zoom and pan
            self._apply_display_transform()
        self.set_preset(self.preset_box.currentData() or "auto")
        self.measure.refresh()

    def clear_image(self) -> None:
        """Back to the "no image" state, which says what to do."""
        self._raw = self._display = self._image = None
        self.image_item.clear()
        name = self.view_name.upper()
        key = {"ap": "F5", "lat": "F6"}.get(self.view_name, "")
        self.empty_label.setText(f"No {name} image\n\npress Acquire {name} ({key}) "
                                 "or drop a DICOM/PNG file here")
        self.empty_label.show()
        self.readout.setText("")

    def has_image(self) -> bool:
        return self._raw is not None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        return None if self._raw is None else tuple(self._raw.shape)

    # -- window / level ---------------------------------------------------------------
    @property
    def window_level(self) -> tuple[float, float]:
        """(window, level) in displayed values: window = high - low, level = their mean."""
        lo, hi = self._levels
        return hi - lo, (hi + lo) / 2.0

    @window_level.setter
    def window_level(self, wl) -> None:
        window, level = (float(x) for x in wl)
        if not (math.isfinite(window) and math.isfinite(level)) or window <= 0:
            raise ValueError(f"window must be a positive number and level finite, got {wl!r}")
        self._levels = (level - window / 2.0, level + window / 2.0)
        if self._display is not None:
            self.image_item.setLevels(self._levels)
        self._update_readout_levels()
        self.window_level_changed.emit(window, level)

    def set_preset(self, name: str) -> None:
        """Apply a window/level preset: "auto", "bone", "soft_tissue" or "full"."""
        if name not in PRESETS:
            raise ValueError(f"unknown window/level preset {name!r} (presets: {', '.join(PRESETS)})")
        self.preset_box.setCurrentIndex(self.preset_box.findData(name))
        if self._display is None:
            return
        lo, hi = preset_levels(self._display, name)
        self.window_level = (hi - lo, (hi + lo) / 2.0)

    def _drag_window_level(self, ev) -> None:
        """Right/middle drag: rightwards widens the window, upwards raises the level;
        a full drag of 400 screen pixels spans the image's whole value range."""
        if self._display is None:
            return
        if ev.isStart() or self._drag_start is None:
            self._drag_start = self.window_level
        span = float(np.ptp(self._display)) or 1.0
        d = ev.screenPos() - ev.buttonDownScreenPos()
        w0, l0 = self._drag_start
        per_px = span / 400.0
        self.window_level = (max(w0 + d.x() * per_px, 1e-6 * span), l0 - d.y() * per_px)
        if ev.isFinish():
            self._drag_start = None

    # -- display transform ------------------------------------------------------------
    def set_display_transform(self, flip_h: bool = False, flip_v: bool = False,
                              rotate_deg: float = 0.0) -> None:
        """Flip/rotate what is shown about the image centre; stored coordinates never change."""
        if not math.isfinite(float(rotate_deg)):
            raise ValueError(f"rotate_deg must be finite, got {rotate_deg!r}")
        self._flip_h, self._flip_v, self._rotate_deg = bool(flip_h), bool(flip_v), float(rotate_deg) % 360.0
        self._apply_display_transform()

    def _apply_display_transform(self) -> None:
        rows, cols = self.image_shape or (1, 1)
        cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
        t = QTransform()  # p -> c + R S (p - c): Qt applies the last call first
        t.translate(cx, cy)
        t.rotate(self._rotate_deg)
        t.scale(-1.0 if self._flip_h else 1.0, -1.0 if self._flip_v else 1.0)
        t.translate(-cx, -cy)
        self.content.setTransform(t)
        self.reset_view()

    def _toggle_flip_h(self):
        self.set_display_transform(not self._flip_h, self._flip_v, self._rotate_deg)

    def _toggle_flip_v(self):
        self.set_display_transform(self._flip_h, not self._flip_v, self._rotate_deg)

    def _rotate_90(self):
        self.set_display_transform(self._flip_h, self._flip_v, self._rotate_deg + 90.0)

    def reset_view(self) -> None:
        """Fit the whole image in the view."""
        if self._raw is None:
            return
        rect = self.content.mapRectToParent(self.image_item.mapRectToParent(self.image_item.boundingRect()))
        self.view_box.setRange(rect=rect, padding=0.02)
        self.view_box.updateMatrix()  # scene mapping valid now, not only after the next paint

    # -- calibration and the distortion-corrected display -----------------------------
    def _show_pixels(self) -> None:
        """Put the displayed values on screen: raw, or resampled on the ideal grid."""
        shown = self._display
        if self._map.active:
            from core.calibration.distortion import remap_to_ideal
            shown = remap_to_ideal(self._display, self._map.distortion)
        self.image_item.setImage(shown, autoLevels=False, levels=self._levels)

    def set_calibration(self, view_calibration) -> None:
        """The view's ``ViewCalibration`` (or None): mm readout and measurements at the cage
        plane; the Undistort button works when it has a distortion correction."""
        self._calib = view_calibration
        has = self.distortion is not None
        self.undistort_button.setEnabled(has)
        if not has and self._corrected:
            self.set_corrected(False)
        elif self._corrected:
            self.set_corrected(True)
        self.measure.refresh()
        self.display_changed.emit()

    @property
    def view_calibration(self):
        return self._calib

    @property
    def distortion(self):
        """The view's raw -> ideal correction, or None (none, or a flat panel's identity)."""
        d = getattr(self._calib, "distortion", None)
        return None if d is None or getattr(d, "kind", "") == "none" else d

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """(column, row) spacing at the detector of the image shown, when the file gave it."""
        return None if self._image is None else self._image.pixel_spacing_mm

    @property
    def corrected(self) -> bool:
        return self._corrected

    def set_corrected(self, on: bool) -> None:
        """Show the distortion-corrected image (display only: stored and emitted
        coordinates stay raw; overlays are drawn through the same correction)."""
        if on and self.distortion is None:
            raise ValueError(f"no distortion correction for the {self.view_name.upper()} view: calibrate first")
        self._corrected = bool(on)
        self._map.distortion = self.distortion if on else None
        self.undistort_button.setChecked(self._corrected)
        if self._display is not None:
            self._show_pixels()
        self._update_readout_levels()
        self._map.remap_all()
        self.display_changed.emit()

    def _mm_text(self, u: float, v: float) -> str:
        """Where the pixel is in mm: on the cage plane nearest the source (cage frame),
        else on the detector from the image centre, else nothing."""
        from widgets.viewers.measure_tools import near_plane, plane_point
        plane = near_plane(self._calib)
        if plane is not None:
            X = plane_point(self._calib, plane, (u, v))
            return f"cage ({X[0]:.1f}, {X[1]:.1f}, {X[2]:.1f}) mm"
        sp = self.pixel_spacing_mm
        if sp is not None and self._raw is not None:
            rows, cols = self._raw.shape
            return f"detector ({(u - (cols - 1) / 2) * sp[0]:.1f}, {(v - (rows - 1) / 2) * sp[1]:.1f}) mm"
        return ""

    def _fill_layers_menu(self) -> None:
        self.layers_menu.clear()
        names = self.overlay_names()
        if not names:
            self.layers_menu.addAction("(no overlays yet)").setEnabled(False)
        for name in names:
            act = self.layers_menu.addAction(name.replace("_", " ").capitalize())
            act.setCheckable(True)
            act.setChecked(self.overlay(name).isVisible())
            act.toggled.connect(lambda on, n=name: self.set_overlay_visible(n, on))
        self.layers_menu.addSeparator()
        clear = self.layers_menu.addAction("Clear measurements")
        clear.setEnabled(bool(self.measure.measurements))
        clear.triggered.connect(self.measure.clear)

    # -- overlays ---------------------------------------------------------------------
    def paint_now(self) -> None:
        """Paint the overlays now, not when the event loop gets to it (a click's feedback goes
        out before the 3D view's frame, which can take tens of ms in software). Only the part
        of the viewport the overlays cover, now and at the last call, is painted: the rest did
        not change, and what an overlay outside it changed Qt's own update paints next."""
        if not self.isVisible():
            return
        vp = self.graphics.viewport()
        now = self._overlay_viewport_rect()
        before, self._painted_overlays = getattr(self, "_painted_overlays", None), now
        region = now if before is None else now.united(before)
        region = region.adjusted(-PAINT_MARGIN_PX, -PAINT_MARGIN_PX, PAINT_MARGIN_PX, PAINT_MARGIN_PX) & vp.rect()
        if not region.isEmpty():
            vp.repaint(region)

    def _overlay_viewport_rect(self) -> QRect:
        """The viewport pixels the visible overlay layers' items cover."""
        rect = QRectF()
        for group in self._overlays.values():
            if group.isVisible() and group.childItems():
                rect = rect.united(group.mapRectToScene(group.childrenBoundingRect()))
        if rect.isNull():
            return QRect()
        return self.graphics.mapFromScene(rect).boundingRect()

    def overlay(self, name: str) -> pg.ItemGroup:
        """The overlay group ``name`` (created on first use); children use raw (u, v)."""
        if name not in self._overlays:
            group = _OverlayGroup(self._map)
            group.setParentItem(self.content)
            group.setZValue(10 + len(self._overlays))
            self._overlays[name] = group
        return self._overlays[name]

    def set_overlay_visible(self, name: str, visible: bool) -> None:
        self.overlay(name).setVisible(bool(visible))

    def overlay_names(self) -> list[str]:
        return list(self._overlays)

    # -- mouse ------------------------------------------------------------------------
    def scene_to_pixel(self, scene_pos) -> tuple[float, float]:
        """Raw (u, v) of a scene position (through the display flip and correction)."""
        p = self.content.mapFromScene(QPointF(scene_pos))
        if not self._map.active:
            return p.x(), p.y()
        u, v = self._map.to_raw([p.x(), p.y()])
        return float(u), float(v)

    def pixel_to_scene(self, u: float, v: float) -> QPointF:
        """Scene position of raw pixel (u, v)."""
        d = self._map.to_display([u, v]) if self._map.active else (u, v)
        return self.content.mapToScene(QPointF(float(d[0]), float(d[1])))

    def _inside(self, u: float, v: float) -> bool:
        return bool(in_image((u, v), self.image_shape)[0])

    def _clicked(self, scene_pos, modifiers) -> None:
        if self._raw is None:
            return
        u, v = self.scene_to_pixel(scene_pos)
        if not self._inside(u, v):
            return
        if self.measure.active:
            self.measure.click(u, v)
        else:
            self.pixel_clicked.emit(u, v, modifiers)

    def _hovered(self, scene_pos) -> None:
        if self._raw is None:
            return
        u, v = self.scene_to_pixel(scene_pos)
        if not self._inside(u, v):
            self._hover_text = ""
        else:
            rows, cols = self._raw.shape
            value = self._raw[min(int(round(v)), rows - 1), min(int(round(u)), cols - 1)]
            mm = self._mm_text(u, v)
            self._hover_text = f"u {u:.1f} v {v:.1f}  value {value:g}  {mm + '  ' if mm else ''}"
            self.pixel_hovered.emit(u, v)
        self._update_readout_levels()

    def _update_readout_levels(self) -> None:
        """Readout: the pixel under the cursor (raw u, v and stored value), then W/L."""
        if self._raw is not None:
            w, l = self.window_level
            flag = "DEWARPED  " if self._corrected else ""
            self.readout.setText(f"{flag}{self._hover_text}W {w:.0f} L {l:.0f}")
            self.readout.setToolTip(self.readout.text())

    def keyPressEvent(self, ev) -> None:
        """Esc ends the active measuring tool (not a shortcut: placing a point also ends on Esc);
        otherwise the key goes on to the window."""
        if ev.key() == Qt.Key.Key_Escape and self.measure.active:
            self.measure.finish()
            ev.accept()
        else:
            super().keyPressEvent(ev)

    # -- drag and drop ----------------------------------------------------------------
    def dragEnterEvent(self, ev) -> None:
        urls = ev.mimeData().urls() if ev.mimeData().hasUrls() else []
        if len(urls) == 1 and urls[0].isLocalFile():
            ev.acceptProposedAction()
            self._drop_text = self.empty_label.text()
            self.empty_label.setText(f"Drop to load as the {self.view_name.upper()} image")
            self.empty_label.show()

    def dragLeaveEvent(self, ev) -> None:
        self._end_drop_feedback()

    def _end_drop_feedback(self) -> None:
        if getattr(self, "_drop_text", None) is not None:
            self.empty_label.setText(self._drop_text)
            self.empty_label.setVisible(not self.has_image())
            self._drop_text = None

    def dropEvent(self, ev) -> None:
        path = ev.mimeData().urls()[0].toLocalFile()
        ev.acceptProposedAction()
        self._end_drop_feedback()
        self.load_file(path)

    def load_file(self, path: str):
        """Read an image file (core.imaging.images.read_image) and emit ``image_dropped``."""
        from core.imaging.images import read_image
        try:
            image = read_image(path)
        except ValueError as e:
            log.error("%s viewer: %s", self.view_name.upper(), e)
            self.image_refused.emit(f"{self.view_name.upper()}: {e}")
            return None
        log.info("%s viewer: loaded %s", self.view_name.upper(), path)
        self.image_dropped.emit(image)
        return image
