"""A fluoroscopy viewer: one raw 16-bit shot with window/level, zoom, pan and overlays.

Coordinates: every signal and every overlay child uses RAW stored pixel
coordinates (u, v) = (column, row), the centre of the top-left pixel at (0, 0)
(DESIGN.md). The image and the overlays hang under one ``content`` item whose
transform is the display flip/rotation, so a display setting never changes a
stored coordinate. pyqtgraph puts pixel (0, 0)'s *corner* at (0, 0): the image
item is shifted by (-0.5, -0.5) inside ``content``.

Mouse: wheel zooms, left drag pans (unless a tool is active), right or middle
drag sets window (horizontal) and level (vertical), left click emits
``pixel_clicked``. Dropping a DICOM/PNG/TIFF file emits ``image_dropped``.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QTransform
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QSizePolicy,
                               QToolButton, QVBoxLayout, QWidget)

from core.image_io import FluoroImage

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


def preset_levels(display: np.ndarray, name: str) -> tuple[float, float]:
    """(low, high) display levels of preset ``name`` for the displayed values."""
    if name not in PRESETS:
        raise ValueError(f"unknown window/level preset {name!r} (presets: {', '.join(PRESETS)})")
    _, lo_p, hi_p = PRESETS[name]
    values = np.asarray(display)
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


class FluoroViewer(QWidget):
    """One fluoroscopy view ("ap" or "lat"). See the module docstring for coordinates."""

    pixel_clicked = Signal(float, float, object)   # u, v (raw px), Qt.KeyboardModifiers
    pixel_hovered = Signal(float, float)           # u, v (raw px)
    image_dropped = Signal(object)                 # FluoroImage read from a dropped file
    window_level_changed = Signal(float, float)    # window, level

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
        self.setObjectName(f"fluoro_viewer_{view_name}")
        self.setAcceptDrops(True)
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
        title = QLabel(self.view_name.upper(), objectName="viewer_title")
        self.preset_box = QComboBox(objectName="viewer_preset")
        self.preset_box.setToolTip("Window/level preset (right-drag on the image to adjust)")
        for name, (label, _, _) in PRESETS.items():
            self.preset_box.addItem(label, name)
        self.preset_box.activated.connect(lambda i: self.set_preset(self.preset_box.itemData(i)))
        row.addWidget(title)
        row.addStretch(1)
        row.addWidget(self.preset_box)
        for text, tip, slot in (("⇆", "Flip left-right (display only)", self._toggle_flip_h),
                                ("⇅", "Flip up-down (display only)", self._toggle_flip_v),
                                ("⟳", "Rotate 90° (display only)", self._rotate_90),
                                ("Fit", "Fit the image to the view", self.reset_view)):
            b = QToolButton(text=text, toolTip=tip, objectName="viewer_tool")
            b.clicked.connect(slot)
            row.addWidget(b)
        header.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        return header

    # -- image ------------------------------------------------------------------------
    def set_image(self, image) -> None:
        """Show a FluoroImage (or 2-D array) with the chosen preset (at first "auto")."""
        raw, display = _display_array(image)
        self._raw, self._display = raw, display
        self.image_item.setImage(display, autoLevels=False)
        self.empty_label.hide()
        self._apply_display_transform()
        self.set_preset(self.preset_box.currentData() or "auto")

    def clear_image(self) -> None:
        """Back to the "no image" state, which says what to do."""
        self._raw = self._display = None
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

    @property
    def display_transform(self) -> tuple[bool, bool, float]:
        return self._flip_h, self._flip_v, self._rotate_deg

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

    # -- overlays ---------------------------------------------------------------------
    def overlay(self, name: str) -> pg.ItemGroup:
        """The overlay group ``name`` (created on first use); children use raw (u, v)."""
        if name not in self._overlays:
            group = pg.ItemGroup()
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
        """Raw (u, v) of a scene position."""
        p = self.content.mapFromScene(QPointF(scene_pos))
        return p.x(), p.y()

    def pixel_to_scene(self, u: float, v: float) -> QPointF:
        return self.content.mapToScene(QPointF(u, v))

    def _inside(self, u: float, v: float) -> bool:
        rows, cols = self.image_shape
        return -0.5 <= u <= cols - 0.5 and -0.5 <= v <= rows - 0.5

    def _clicked(self, scene_pos, modifiers) -> None:
        if self._raw is None:
            return
        u, v = self.scene_to_pixel(scene_pos)
        if self._inside(u, v):
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
            self._hover_text = f"u {u:7.1f}   v {v:7.1f}   value {value:g}     "
            self.pixel_hovered.emit(u, v)
        self._update_readout_levels()

    def _update_readout_levels(self) -> None:
        """Readout: the pixel under the cursor (raw u, v and stored value), then W/L."""
        if self._raw is not None:
            w, l = self.window_level
            self.readout.setText(f"{self._hover_text}W {w:.0f}  L {l:.0f}")

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
        """Read an image file (core.image_io.read_image) and emit ``image_dropped``."""
        from core.image_io import read_image
        try:
            image = read_image(path)
        except ValueError as e:
            log.error("%s viewer: %s", self.view_name.upper(), e)
            return None
        log.info("%s viewer: loaded %s", self.view_name.upper(), path)
        self.image_dropped.emit(image)
        return image
