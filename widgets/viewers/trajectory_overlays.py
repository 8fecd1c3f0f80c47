"""Trajectories drawn over a fluoroscopy viewer: handles, tool band, epipolar line.

Thin pyqtgraph items: they draw polylines the controller computed (raw pixel
coordinates, children of a viewer overlay group, so display flips never change
them) and report handle drags. No geometry here.

Gloves: handles are large (``HANDLE_PX`` screen pixels whatever the zoom).
Entry is a ring, target a cross; the selected trajectory is drawn thicker.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPolygonF
from PySide6.QtWidgets import QGraphicsPolygonItem

__all__ = ["TrajectoryOverlay", "EpipolarOverlay", "VerifiedToolOverlay", "HANDLE_PX"]

HANDLE_PX = 26
_SYMBOL = {"entry": "o", "target": "x"}


class _Handle(pg.TargetItem):
    """A draggable handle that moves in its parent's coordinates (pyqtgraph's TargetItem
    moves in view coordinates, which a display flip of the viewer's content would mirror)."""

    def mouseDragEvent(self, ev):
        if not self.movable or ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        if ev.isStart():
            self.symbolOffset = self.pos() - self.mapToParent(ev.buttonDownPos())
            self.moving = True
        if not self.moving:
            return
        self.setPos(self.symbolOffset + self.mapToParent(ev.pos()))
        if ev.isFinish():
            self.moving = False
            self.sigPositionChangeFinished.emit(self)


def _polygon(points) -> QPolygonF:
    return QPolygonF([QPointF(float(u), float(v)) for u, v in points])


class TrajectoryOverlay:
    """One trajectory in one viewer. ``on_drag(kind, u, v, finished)`` is called while a handle moves.

    ``group`` holds the handles and the axis; the tool band goes in ``tool_group`` and
    the name in ``label_group`` when given (separate overlay layers a user can hide).
    """

    def __init__(self, group: pg.ItemGroup, on_drag=None, tool_group=None, label_group=None):
        self.group = group
        self.on_drag = on_drag
        self._updating = False
        self.band = QGraphicsPolygonItem()
        self.band.setParentItem(tool_group if tool_group is not None else group)
        self.axis = pg.PlotCurveItem()
        self.axis.setParentItem(group)
        self.handles = {}
        for kind in ("entry", "target"):
            h = _Handle(pos=(0, 0), size=HANDLE_PX, symbol=_SYMBOL[kind], movable=True)
            h.setParentItem(group)
            h.setZValue(5)
            h.setVisible(False)
            h.setToolTip(f"{kind}: drag to move (Ctrl+Z undoes)")
            h.sigPositionChanged.connect(lambda item, k=kind: self._moved(k, item, False))
            h.sigPositionChangeFinished.connect(lambda item, k=kind: self._moved(k, item, True))
            self.handles[kind] = h
        self.label = pg.TextItem(anchor=(0, 1.2))
        self.label.setParentItem(label_group if label_group is not None else group)

    def _moved(self, kind, item, finished: bool) -> None:
        if self._updating or self.on_drag is None:
            return
        p = item.pos()
        self.on_drag(kind, p.x(), p.y(), finished)

    def update(self, clicks: dict, colour: str, name: str, band_outline=None, axis=None,
               selected: bool = False, warn: bool = False, side: str = "left") -> None:
        """Redraw: ``clicks`` {"entry": (u, v)|None, "target": ...}; ``band_outline`` (M, 2);
        ``axis`` (N, 2) the projected 3D axis; ``warn`` marks a point whose clicks disagree.
        The label sits above the entry for a left pedicle and below it for a right one, so
        that a lateral view, where both sides overlap, keeps the two names apart, and on
        the side of the entry away from the target, off the band."""
        self._updating = True
        try:
            width = 3 if selected else 2
            pen = pg.mkPen(colour, width=width)
            for kind, h in self.handles.items():
                uv = clicks.get(kind)
                h.setVisible(uv is not None)
                if uv is not None:
                    if (h.pos().x(), h.pos().y()) != (uv[0], uv[1]):
                        h.setPos(QPointF(float(uv[0]), float(uv[1])))
                    h.setPen(pg.mkPen("#ff3030" if warn else colour, width=width + 1))
                    fill = QColor(colour)
                    fill.setAlpha(0 if kind == "entry" else 160)  # a ring shows the bone under the entry
                    h.setBrush(fill)
                    h.setHoverPen(pg.mkPen("#ffffff", width=width + 2))
            if axis is not None and len(axis) >= 2:
                a = np.asarray(axis, float)
                self.axis.setData(a[:, 0], a[:, 1], pen=pen)
                self.axis.setVisible(True)
            else:
                self.axis.setVisible(False)
            if band_outline is not None and len(band_outline) >= 3:
                fill = QColor(colour)
                fill.setAlpha(70 if selected else 40)
                self.band.setPolygon(_polygon(band_outline))
                self.band.setBrush(fill)
                self.band.setPen(pg.mkPen(colour, width=1, style=Qt.PenStyle.SolidLine))
                self.band.setVisible(True)
            else:
                self.band.setVisible(False)
            anchor = clicks.get("entry") or clicks.get("target")
            self.label.setVisible(anchor is not None)
            if anchor is not None:
                self.label.setText(name, color=colour)
                away = self._screen_dx(clicks.get("entry"), clicks.get("target"))
                left = away < 0 if away is not None else side == "left"
                self.label.setAnchor((1.1 if left else -0.1, 1.1 if side == "left" else -0.1))
                self.label.setPos(float(anchor[0]), float(anchor[1]))
        finally:
            self._updating = False

    def _screen_dx(self, entry, target) -> float | None:
        """On screen (flips and rotations of the display included), how far right the entry
        lies of the target: the name then extends away from the band, not along it."""
        if entry is None or target is None:
            return None
        item = self.label.parentItem()
        a, b = item.mapToDevice(QPointF(*map(float, entry))), item.mapToDevice(QPointF(*map(float, target)))
        if a is None or b is None:   # not on screen yet: image columns
            return float(entry[0]) - float(target[0])
        return a.x() - b.x()

    def remove(self) -> None:
        for item in (self.band, self.axis, self.label, *self.handles.values()):
            item.setParentItem(None)
            scene = item.scene()
            if scene is not None:
                scene.removeItem(item)


class EpipolarOverlay:
    """The other view's X-ray of the point being placed: a dashed polyline, or nothing."""

    def __init__(self, group: pg.ItemGroup):
        self.curve = pg.PlotCurveItem()
        self.curve.setParentItem(group)
        self.curve.setZValue(4)
        self.curve.setVisible(False)
        self.polyline = None

    def set_line(self, polyline, colour: str = "#ffffff") -> None:
        self.polyline = None if polyline is None else np.asarray(polyline, float)
        if self.polyline is None or len(self.polyline) < 2:
            self.curve.setVisible(False)
            return
        self.curve.setData(self.polyline[:, 0], self.polyline[:, 1],
                           pen=pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine))
        self.curve.setVisible(True)

    @property
    def visible(self) -> bool:
        return self.curve.isVisible()


class VerifiedToolOverlay:
    """The verified wire in one view: its detected centreline, its tip (a ring), the plan's line
    (dashed), and the deviations as a label by the tip; raw pixels, computed by the controller."""

    def __init__(self, group: pg.ItemGroup):
        self.wire = pg.PlotCurveItem()
        self.plan = pg.PlotCurveItem()
        self.tip = pg.ScatterPlotItem()
        self.label = pg.TextItem(anchor=(0, 0))
        for z, item in enumerate((self.plan, self.wire, self.tip, self.label)):
            item.setParentItem(group)
            item.setZValue(6 + z)
            item.setVisible(False)
        self.text = ""

    def show(self, centreline_uv, tip_uv, plan_uv, text: str, colour: str = "#7ee08a") -> None:
        """``centreline_uv`` (N, 2) the detected wire; ``tip_uv`` (2,); ``plan_uv`` (2, 2) entry and
        target of the plan; ``text`` the deviations (several lines)."""
        c = np.asarray(centreline_uv, float)
        self.wire.setData(c[:, 0], c[:, 1], pen=pg.mkPen(colour, width=3))
        p = np.asarray(plan_uv, float)
        self.plan.setData(p[:, 0], p[:, 1], pen=pg.mkPen("#ffffff", width=2, style=Qt.PenStyle.DashLine))
        self.tip.setData([float(tip_uv[0])], [float(tip_uv[1])], symbol="o", size=HANDLE_PX,
                         pen=pg.mkPen(colour, width=3), brush=pg.mkBrush(0, 0, 0, 0))
        self.text = text
        self.label.setText(text, color=colour)
        self.label.setPos(float(tip_uv[0]) + 12.0, float(tip_uv[1]) + 12.0)
        for item in (self.plan, self.wire, self.tip, self.label):
            item.setVisible(True)

    def clear(self) -> None:
        self.text = ""
        for item in (self.plan, self.wire, self.tip, self.label):
            item.setVisible(False)

    @property
    def visible(self) -> bool:
        return self.wire.isVisible()
