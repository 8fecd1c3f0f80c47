"""Align and Verify in the 3D view: the alignment preview (a ghost of the guide at its target
pose, the tool tip's way there, the insertion to depth) before any motion, and the verified
wire with its entry and tip deviations.

Thin VTK: two named props in the scene view, ``"alignment_preview"`` and
``"verified_tool"``; points arrive in the frame the caller names (``T_scene_frame``) and are
drawn as given. No geometry here beyond placing what the controller computed.
"""
from __future__ import annotations

import numpy as np
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData, vtkPolyLine
from vtkmodules.vtkFiltersCore import vtkTubeFilter
from vtkmodules.vtkFiltersSources import vtkLineSource, vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkAssembly, vtkBillboardTextActor3D, vtkPolyDataMapper

__all__ = ["AlignmentActors", "PREVIEW_NAME", "VERIFIED_NAME", "GUIDE_LENGTH_MM"]

PREVIEW_NAME, VERIFIED_NAME = "alignment_preview", "verified_tool"
GUIDE_LENGTH_MM = 80.0
_GHOST = (0.55, 0.85, 1.0)
_GRADE_RGB = {"A": (0.49, 0.88, 0.54), "B": (0.78, 0.88, 0.49), "C": (0.94, 0.78, 0.45),
              "D": (1.0, 0.6, 0.36), "E": (1.0, 0.42, 0.36)}


def _apply(T, p):
    p = np.asarray(p, float)
    return p @ T[:3, :3].T + T[:3, 3]


def _tube(p0, p1, radius, rgb, opacity=1.0):
    line = vtkLineSource()
    line.SetPoint1(*map(float, p0))
    line.SetPoint2(*map(float, p1))
    tube = vtkTubeFilter()
    tube.SetInputConnection(line.GetOutputPort())
    tube.SetRadius(radius)
    tube.SetNumberOfSides(16)
    tube.CappingOn()
    return _actor(tube, rgb, opacity)


def _sphere(c, radius, rgb, opacity=1.0):
    s = vtkSphereSource()
    s.SetCenter(*map(float, c))
    s.SetRadius(radius)
    s.SetThetaResolution(16)
    s.SetPhiResolution(10)
    return _actor(s, rgb, opacity)


def _polyline(points, rgb, width=2.0):
    pts = vtkPoints()
    for p in points:
        pts.InsertNextPoint(*map(float, p))
    line = vtkPolyLine()
    line.GetPointIds().SetNumberOfIds(len(points))
    for i in range(len(points)):
        line.GetPointIds().SetId(i, i)
    cells = vtkCellArray()
    cells.InsertNextCell(line)
    poly = vtkPolyData()
    poly.SetPoints(pts)
    poly.SetLines(cells)
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(poly)
    a = vtkActor()
    a.SetMapper(mapper)
    a.GetProperty().SetColor(*rgb)
    a.GetProperty().SetLineWidth(width)
    return a


def _actor(source, rgb, opacity=1.0):
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(source.GetOutputPort())
    a = vtkActor()
    a.SetMapper(mapper)
    p = a.GetProperty()
    p.SetColor(*rgb)
    p.SetOpacity(opacity)
    p.SetAmbient(0.3)
    return a


def _label(text, at, rgb):
    t = vtkBillboardTextActor3D()
    t.SetInput(text)
    t.SetPosition(*map(float, at))
    prop = t.GetTextProperty()
    prop.SetFontSize(18)
    prop.SetBold(True)
    prop.SetColor(*rgb)
    prop.SetBackgroundColor(0.08, 0.1, 0.12)
    prop.SetBackgroundOpacity(0.7)
    return t


class AlignmentActors:
    """Keeps the alignment preview and the verified wire in ``scene_view``."""

    def __init__(self, scene_view):
        self.scene_view = scene_view
        self.preview_parts: dict = {}
        self.verified_parts: dict = {}

    def show_preview(self, T_scene_base, tip_path_mm, T_base_tool, insertion_end_mm,
                     guide_length_mm: float = GUIDE_LENGTH_MM) -> None:
        """The ghost guide (a translucent tube from the tool tip back along -z), the tip's path, and
        the insertion (a thin line from the guide's tip to the planned depth); base frame in."""
        T = np.asarray(T_scene_base, float)
        tool = T @ np.asarray(T_base_tool, float)
        tip, z = tool[:3, 3], tool[:3, 2] / np.linalg.norm(tool[:3, 2])
        parts = {
            "guide": _tube(tip - guide_length_mm * z, tip, 4.0, _GHOST, 0.45),
            "guide_tip": _sphere(tip, 2.2, _GHOST, 0.8),
            "insertion": _tube(tip, _apply(T, insertion_end_mm), 0.8, (1.0, 0.85, 0.35), 0.9),
            "path": _polyline(_apply(T, tip_path_mm), (0.75, 0.75, 0.95), 2.0),
        }
        self._set(PREVIEW_NAME, parts)
        self.preview_parts = parts

    def clear_preview(self) -> None:
        self._clear(PREVIEW_NAME, self.preview_parts)
        self.preview_parts = {}

    def show_verified(self, T_scene_frame, back_mm, tip_mm, plan_entry_mm, plan_target_mm, entry_on_line_mm,
                      entry_text: str, tip_text: str, grade: str | None) -> None:
        """The measured wire (back to tip), its deviation at the entry and at the tip as short
        segments to the plan, labelled; frame of the points: ``T_scene_frame`` into the scene."""
        T = np.asarray(T_scene_frame, float)
        back, tip = _apply(T, back_mm), _apply(T, tip_mm)
        e, t, on = _apply(T, plan_entry_mm), _apply(T, plan_target_mm), _apply(T, entry_on_line_mm)
        rgb = _GRADE_RGB.get(grade or "", (0.95, 0.95, 0.95))
        parts = {
            "wire": _tube(back, tip, 1.0, rgb),
            "tip": _sphere(tip, 1.4, rgb),
            "entry_gap": _tube(e, on, 0.35, (1.0, 1.0, 1.0)),
            "tip_gap": _tube(t, tip, 0.35, (1.0, 1.0, 1.0)),
            "entry_label": _label(entry_text, on + [0, 0, 6.0], (1.0, 1.0, 1.0)),
            "tip_label": _label(tip_text, tip + [0, 0, -8.0], rgb),
        }
        self._set(VERIFIED_NAME, parts)
        self.verified_parts = parts

    def clear_verified(self) -> None:
        self._clear(VERIFIED_NAME, self.verified_parts)
        self.verified_parts = {}

    def _clear(self, name: str, parts: dict) -> None:
        for key, a in parts.items():
            if isinstance(a, vtkBillboardTextActor3D):
                self.scene_view.remove_actor(f"{name}:{key}")
        self.scene_view.remove_actor(name)

    def _set(self, name: str, parts: dict) -> None:
        old = self.preview_parts if name == PREVIEW_NAME else self.verified_parts
        for key, a in old.items():
            if isinstance(a, vtkBillboardTextActor3D) and key not in parts:
                self.scene_view.remove_actor(f"{name}:{key}")
        assembly = vtkAssembly()
        labels = []
        for key, a in parts.items():
            if isinstance(a, vtkBillboardTextActor3D):
                labels.append((key, a))   # text props do not go in an assembly
            else:
                assembly.AddPart(a)
        self.scene_view.set_actor(name, assembly, render=False)
        for key, a in labels:
            self.scene_view.set_actor(f"{name}:{key}", a, render=False)
        self.scene_view.render()
