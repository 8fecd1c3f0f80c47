"""Ruler and angle tools on a fluoroscopy viewer.

Points are kept in RAW pixels (they never change a stored coordinate) and drawn in
the viewer's overlay layer "measure", so display flips and the corrected display
apply to them like to any overlay. Figures (``ruler_figures``, ``angle_figures``):

- ``px``: length in raw image pixels;
- ``detector_mm``: length on the detector, after distortion correction when the view
  is calibrated, scaled by the image's pixel spacing (column, row);
- ``plane_mm``: length on the view's cage plane nearest the X-ray source (its points
  are the rays' intersections with that plane, through the plane's homography). An
  X-ray magnifies: anatomy lies between source and detector, so detector mm overstate
  it by SID / source-object distance; the cage plane is the nearest known depth.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal

__all__ = ["MeasureTools", "Measurement", "ruler_figures", "angle_figures", "near_plane", "plane_point",
           "POINTS_NEEDED", "MEASURE_COLOUR"]

POINTS_NEEDED = {"ruler": 2, "angle": 3}
MEASURE_COLOUR = "#7CFC9A"


# --- figures -----------------------------------------------------------------------
def near_plane(view_calibration):
    """The view's ball plane nearest the X-ray source (PlaneFit), or None uncalibrated."""
    if view_calibration is None or not getattr(view_calibration, "planes", None):
        return None
    from core.calibration.models import camera_centre
    c = camera_centre(np.asarray(view_calibration.P, float))
    return min(view_calibration.planes, key=lambda p: float(np.linalg.norm(np.asarray(p.origin_mm) - c)))


def _ideal(view_calibration, uv_raw) -> np.ndarray:
    q = np.atleast_2d(np.asarray(uv_raw, float))
    d = getattr(view_calibration, "distortion", None)
    return q if d is None else d.raw_to_ideal(q)


def _plane_xy(view_calibration, plane, uv_raw) -> np.ndarray:
    """In-plane mm (N, 2) where the rays of raw pixels cross ``plane``."""
    from core.calibration.models import apply_h
    return apply_h(np.linalg.inv(np.asarray(plane.H_img_plane, float)), _ideal(view_calibration, uv_raw))


def plane_point(view_calibration, plane, uv_raw) -> np.ndarray:
    """Cage-frame mm (3,) where the ray of raw pixel ``uv_raw`` crosses ``plane``."""
    return plane.to_3d(_plane_xy(view_calibration, plane, uv_raw))[0]


def _check(points, n: int) -> np.ndarray:
    p = np.asarray(points, float)
    if p.shape != (n, 2) or not np.all(np.isfinite(p)):
        raise ValueError(f"a measurement needs {n} finite (u, v) points, got shape {p.shape}")
    return p


def _scaled(view_calibration, p, spacing):
    q = _ideal(view_calibration, p) if view_calibration is not None else p
    return None if spacing is None else q * np.asarray(spacing, float)


def ruler_figures(points_raw, spacing_mm=None, view_calibration=None) -> dict:
    """Length of a segment: ``px`` (raw), ``detector_mm`` (None without a pixel spacing),
    ``plane_mm`` and ``plane_id`` (None uncalibrated). See the module docstring."""
    p = _check(points_raw, 2)
    out = {"px": float(np.linalg.norm(p[1] - p[0])), "detector_mm": None, "plane_mm": None, "plane_id": None}
    q = _scaled(view_calibration, p, spacing_mm)
    if q is not None:
        out["detector_mm"] = float(np.linalg.norm(q[1] - q[0]))
    plane = near_plane(view_calibration)
    if plane is not None:
        xy = _plane_xy(view_calibration, plane, p)
        out["plane_mm"], out["plane_id"] = float(np.linalg.norm(xy[1] - xy[0])), plane.plane_id
    return out


def _angle(a, vertex, b) -> float:
    u, w = a - vertex, b - vertex
    nu, nw = np.linalg.norm(u), np.linalg.norm(w)
    if nu < 1e-9 or nw < 1e-9:
        return float("nan")
    return math.degrees(math.atan2(abs(u[0] * w[1] - u[1] * w[0]), float(u @ w)))


def angle_figures(points_raw, spacing_mm=None, view_calibration=None) -> dict:
    """Angle at the middle point, degrees: ``deg`` in the image (pixel spacing and distortion
    correction applied when known), ``plane_deg`` on the cage plane nearest the source."""
    p = _check(points_raw, 3)
    q = _scaled(view_calibration, p, spacing_mm)
    if q is None:
        q = _ideal(view_calibration, p) if view_calibration is not None else p
    out = {"deg": _angle(q[0], q[1], q[2]), "plane_deg": None, "plane_id": None}
    plane = near_plane(view_calibration)
    if plane is not None:
        xy = _plane_xy(view_calibration, plane, p)
        out["plane_deg"], out["plane_id"] = _angle(xy[0], xy[1], xy[2]), plane.plane_id
    return out


# --- drawing -----------------------------------------------------------------------
class _Handle(pg.TargetItem):
    """A point of a measurement, dragged in RAW pixels through the viewer's mapping."""

    def __init__(self, viewer, on_move, **kw):
        super().__init__(movable=True, **kw)
        self._viewer, self._on_move = viewer, on_move

    def mouseDragEvent(self, ev):
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        u, v = self._viewer.scene_to_pixel(ev.scenePos())
        self._on_move(self, u, v)


class Measurement:
    """One ruler or angle: raw points, its items in the "measure" layer, its figures."""

    def __init__(self, tools: "MeasureTools", kind: str):
        if kind not in POINTS_NEEDED:
            raise ValueError(f"unknown measuring tool {kind!r} (tools: {', '.join(POINTS_NEEDED)})")
        self.tools, self.kind, self.points = tools, kind, []
        group = tools.viewer.overlay("measure")
        pen = pg.mkPen(MEASURE_COLOUR, width=2)
        self.line = pg.PlotCurveItem(pen=pen, antialias=True)
        self.line.setParentItem(group)
        self.label = pg.TextItem(color=MEASURE_COLOUR, anchor=(0, 1.1), fill=pg.mkBrush(0, 0, 0, 150))
        self.label.setParentItem(group)
        self.handles: list[_Handle] = []

    @property
    def complete(self) -> bool:
        return len(self.points) == POINTS_NEEDED[self.kind]

    def add_point(self, u: float, v: float) -> None:
        if self.complete:
            raise ValueError(f"this {self.kind} already has its {POINTS_NEEDED[self.kind]} points")
        h = _Handle(self.tools.viewer, self._moved, pos=(0.0, 0.0), size=14, symbol="o",
                    pen=pg.mkPen(MEASURE_COLOUR, width=2), brush=None)
        h.setParentItem(self.tools.viewer.overlay("measure"))
        h.setZValue(2)
        h.setPos(float(u), float(v))
        self.handles.append(h)
        self.points.append((float(u), float(v)))
        self.redraw()

    def _moved(self, handle, u: float, v: float) -> None:
        i = self.handles.index(handle)
        self.points[i] = (float(u), float(v))
        handle.setPos(float(u), float(v))
        self.redraw()
        self.tools.changed.emit()

    def figures(self) -> dict | None:
        if not self.complete:
            return None
        viewer = self.tools.viewer
        f = ruler_figures if self.kind == "ruler" else angle_figures
        return f(self.points, viewer.pixel_spacing_mm, viewer.view_calibration)

    def text(self) -> str:
        """Calibrated: mm at the cage plane first (the nearest known depth), then detector mm
        and px; the angle on that plane, with the image's when they differ by 0.5° or more."""
        f = self.figures()
        if f is None:
            return ""
        if self.kind == "ruler":
            parts = [f"{f['px']:.1f} px"]
            if f["detector_mm"] is not None:
                parts.insert(0, f"{f['detector_mm']:.1f} mm det")
            if f["plane_mm"] is not None:
                parts.insert(0, f"{f['plane_mm']:.1f} mm @cage {f['plane_id']}")
            return " · ".join(parts)
        if f["plane_deg"] is None:
            return f"{f['deg']:.1f}°"
        text = f"{f['plane_deg']:.1f}° @cage {f['plane_id']}"
        return text + (f" · image {f['deg']:.1f}°" if abs(f["plane_deg"] - f["deg"]) >= 0.5 else "")

    def redraw(self) -> None:
        p = np.asarray(self.points, float).reshape(-1, 2)
        self.line.setData(p[:, 0], p[:, 1])
        self.label.setText(self.text())
        self.label.setVisible(self.complete)
        if self.complete:  # a ruler's figures centred above its middle, an angle's at its vertex
            anchor = p[1] if self.kind == "angle" else p.mean(axis=0)
            self.label.setAnchor((0.0, 1.1) if self.kind == "angle" else (0.5, 1.3))
            self.label.setPos(float(anchor[0]), float(anchor[1]))

    def remove(self) -> None:
        for item in (self.line, self.label, *self.handles):
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)


class MeasureTools(QObject):
    """The viewer's measurements. ``start(kind)`` makes clicks place points (each
    ``POINTS_NEEDED`` clicks make one measurement) until ``finish()`` (Esc, right click)."""

    changed = Signal()

    def __init__(self, viewer):
        super().__init__(viewer)
        self.viewer = viewer
        self.active: str | None = None
        self.measurements: list[Measurement] = []
        self._current: Measurement | None = None

    def start(self, kind: str) -> None:
        if kind not in POINTS_NEEDED:
            raise ValueError(f"unknown measuring tool {kind!r} (tools: {', '.join(POINTS_NEEDED)})")
        self.finish()
        self.active = kind
        self.viewer.tool_active = True
        self._sync_buttons()

    def click(self, u: float, v: float) -> Measurement:
        """Place the next point of the active tool (a new measurement when none is open)."""
        if self.active is None:
            raise ValueError("no measuring tool is active: press Ruler or Angle first")
        if self._current is None:
            self._current = Measurement(self, self.active)
            self.measurements.append(self._current)
        m = self._current
        m.add_point(u, v)
        if m.complete:
            self._current = None
        self.changed.emit()
        return m

    def finish(self) -> None:
        """End the tool; a measurement missing points is dropped."""
        if self._current is not None:
            self._current.remove()
            self.measurements.remove(self._current)
            self._current = None
        self.active = None
        self.viewer.tool_active = False
        self._sync_buttons()
        self.changed.emit()

    def clear(self) -> None:
        self.finish()
        for m in self.measurements:
            m.remove()
        self.measurements = []
        self.changed.emit()

    def refresh(self) -> None:
        """Recompute the figures (new calibration or image)."""
        for m in self.measurements:
            m.redraw()

    def _sync_buttons(self) -> None:
        for kind, b in getattr(self.viewer, "tool_buttons", {}).items():
            b.setChecked(kind == self.active)
