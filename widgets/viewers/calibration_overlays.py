"""Calibration drawings over a fluoroscopy viewer: cage balls coloured by plane with their
magnified residual arrows, and the distortion plate's grid coloured by residual.

Thin pyqtgraph items under a viewer overlay group (``FluoroViewer.overlay(name)``),
so they use raw pixel coordinates (u, v) and follow any display flip. They draw
what ``app.calibration_workflow`` computed; no geometry here.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont

__all__ = ["BallOverlay", "PlateOverlay", "CageLayoutView", "PLANE_COLOURS", "UNLABELLED_COLOUR", "SELECTED_COLOUR",
           "MISSING_COLOUR",
           "residual_colour"]

# colour-blind-safe pairs, bright on a dark X-ray: first plane of a view blue, second orange
PLANE_COLOURS = ("#4fb3ff", "#ff9f1c", "#7bd389", "#e86fb0")
UNLABELLED_COLOUR = "#ff4d4d"
SELECTED_COLOUR = "#ffe14d"
MISSING_COLOUR = "#c9d1da"
ARROW_CAP_PX = 60.0               # longer residual arrows (a wrong label) are drawn this long
PLATE_RESIDUAL_FULL_PX = 0.3       # plate dots are red at this corrected residual and above


class _Scatter(pg.ScatterPlotItem):
    """Points that leave every click to the viewer (pyqtgraph's would take clicks on points)."""

    def mouseClickEvent(self, ev):
        ev.ignore()


def _pen(colour, width=2.0, style=Qt.PenStyle.SolidLine):
    p = pg.mkPen(QColor(colour), width=width, style=style)
    p.setCosmetic(True)
    return p


class BallOverlay:
    """Detected balls of one view: a ring per labelled ball in its plane's colour, a
    red square for a detection that is not (or no longer) a cage ball, residual
    arrows (detection -> model position) multiplied by ``gain``, one selected ring."""

    def __init__(self, group: pg.ItemGroup):
        self.group = group
        self.arrows = pg.PlotCurveItem(connect="pairs", antialias=True)
        self.long_arrows = pg.PlotCurveItem(connect="pairs", antialias=True)
        self.rings = _Scatter(pxMode=False, antialias=True)
        self.unlabelled = _Scatter(pxMode=False, antialias=True, symbol="s")
        self.selected = _Scatter(pxMode=False, antialias=True)
        self.missing = _Scatter(pxMode=False, antialias=True)
        for z, item in enumerate((self.missing, self.rings, self.unlabelled, self.arrows, self.long_arrows,
                                  self.selected)):
            item.setParentItem(group)
            item.setZValue(z)
            item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)   # clicks go to the viewer
        self.count = 0

    def set_balls(self, centres_px, plane_index, residual_px=None, gain: float = 20.0,
                  radius_px: float = 5.0) -> None:
        """``centres_px`` (N, 2) raw; ``plane_index`` (N,) index of the ball's plane in its
        view (-1: not a cage ball); ``residual_px`` (N, 2) model - detection (NaN: none)."""
        c = np.asarray(centres_px, float).reshape(-1, 2)
        k = np.asarray(plane_index, int).reshape(-1)
        size = 2 * radius_px + 5
        lab = k >= 0
        self.rings.setData(pos=c[lab], size=size, brush=None, symbol="o",
                           pen=[_pen(PLANE_COLOURS[i % len(PLANE_COLOURS)], 2.5) for i in k[lab]])
        self.unlabelled.setData(pos=c[~lab], size=size, brush=None, pen=_pen(UNLABELLED_COLOUR, 2.5))
        self._set_arrows(c, k, residual_px, gain)
        self.count = len(c)

    def _set_arrows(self, c, k, residual_px, gain):
        if residual_px is None:
            self.arrows.setData([], [])
            self.long_arrows.setData([], [])
            return
        r = np.asarray(residual_px, float).reshape(-1, 2)
        ok = np.all(np.isfinite(r), axis=1)
        d = gain * r[ok]
        n = np.linalg.norm(d, axis=1, keepdims=True)
        long = n[:, 0] > ARROW_CAP_PX
        d = np.where(long[:, None], d * ARROW_CAP_PX / np.maximum(n, 1e-9), d)   # a wrong label: capped, red
        for item, sel, colour, width in ((self.arrows, ~long, "#f4f7fa", 2.0),
                                         (self.long_arrows, long, UNLABELLED_COLOUR, 4.0)):
            seg = np.empty((2 * sel.sum(), 2))
            seg[0::2], seg[1::2] = c[ok][sel], c[ok][sel] + d[sel]
            item.setData(seg[:, 0], seg[:, 1], connect="pairs", pen=_pen(colour, width))

    def set_missing(self, uv_px, radius_px: float = 5.0) -> None:
        """Dotted grey rings where the fit predicts a cage ball that no detection is labelled as."""
        self.missing.setData(pos=np.asarray(uv_px, float).reshape(-1, 2), size=2 * radius_px + 5, brush=None,
                             symbol="o", pen=_pen(MISSING_COLOUR, 2.0, Qt.PenStyle.DotLine))

    def set_selected(self, uv, radius_px: float = 5.0) -> None:
        if uv is None:
            self.selected.setData([], [])
            return
        self.selected.setData(pos=[tuple(uv)], size=2 * radius_px + 12, brush=None, symbol="o",
                              pen=_pen(SELECTED_COLOUR, 3.5))

    def clear(self) -> None:
        for item in (self.rings, self.unlabelled, self.selected, self.missing):
            item.setData([], [])
        self.arrows.setData([], [])
        self.long_arrows.setData([], [])
        self.count = 0


def residual_colour(residual_px: float) -> QColor:
    """Green (0 px) to yellow to red (``PLATE_RESIDUAL_FULL_PX`` and above)."""
    t = float(np.clip(residual_px / PLATE_RESIDUAL_FULL_PX, 0, 1)) if np.isfinite(residual_px) else 1.0
    return QColor.fromHsvF((1 - t) * 0.33, 0.85, 1.0)


class PlateOverlay:
    """The plate's balls found in a plate shot: a dot per ball coloured by its residual after
    correction (the residual map), and the correction (raw -> ideal) as a thin line."""

    def __init__(self, group: pg.ItemGroup):
        self.group = group
        self.lines = pg.PlotCurveItem(connect="pairs", antialias=True)
        self.dots = _Scatter(pxMode=True, antialias=True)
        for item in (self.lines, self.dots):
            item.setParentItem(group)
            item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.dots.setZValue(1)
        self.count = 0

    def set_grid(self, raw_px, ideal_px, residual_px) -> None:
        raw = np.asarray(raw_px, float).reshape(-1, 2)
        ideal = np.asarray(ideal_px, float).reshape(-1, 2)
        res = np.asarray(residual_px, float).reshape(-1)
        self.dots.setData(pos=raw, size=7, pen=pg.mkPen("#101418", width=1),
                          brush=[pg.mkBrush(residual_colour(r)) for r in res])
        seg = np.empty((2 * len(raw), 2))
        seg[0::2], seg[1::2] = raw, ideal
        self.lines.setData(seg[:, 0], seg[:, 1], connect="pairs", pen=_pen("#f2c14e", 2.0))
        self.count = len(raw)

    def clear(self) -> None:
        self.dots.setData([], [])
        self.lines.setData([], [])
        self.count = 0


class CageLayoutView(pg.GraphicsLayoutWidget):
    """The cage's planes drawn flat, one plot per plane, each ball with its number (what
    "Assign ... ball N of plane P" refers to), in the plane's colour within its view."""

    def __init__(self, parent=None):
        super().__init__(parent=parent)
        self.setBackground("#15181c")
        self.plots = {}

    def set_layouts(self, layouts) -> None:
        """``layouts``: [(plane id, view, xy (N, 2) mm)]."""
        self.clear()
        self.plots = {}
        index_in_view: dict = {}
        for k, (pid, view, xy) in enumerate(layouts):
            colour = PLANE_COLOURS[index_in_view.setdefault(view, {}).setdefault(pid, len(index_in_view[view]))]
            plot = self.addPlot(row=k // 2, col=k % 2, title=f"<span style='font-size:14pt'>{pid} "
                                                               f"({view.upper()})</span>")
            plot.setAspectLocked(True)
            plot.invertY(True)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
            xy = np.asarray(xy, float)
            plot.addItem(_Scatter(pos=xy, size=12, pen=_pen(colour, 2.0), brush=None, pxMode=True))
            font = QFont("DejaVu Sans", 10)
            for i, (x, y) in enumerate(xy):
                t = pg.TextItem(str(i), color="#dde3ea", anchor=(0.5, 1.0))
                t.setFont(font)
                t.setPos(x, y)
                plot.addItem(t)
            self.plots[pid] = plot
