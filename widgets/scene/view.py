"""The 3D view: a VTK render window in Qt showing the operating-room scene.

Named props (``set_actor(name, prop)``) are what the other parts add: the cage,
the C-arm, the robot, the plans. The view always shows labelled world axes, a
floor grid and an orientation marker, on a dark gradient (never black: a view
that did not render is then easy to tell). World frame: millimetres; the
camera presets assume patient axes x = left, y = posterior, z = head.

Speed (a click must reach the 3D view within 30 ms, and an operating-room
PC may render in software): a heavy prop can be given a coarse twin
(``set_actor(name, prop, coarse=twin)``). ``render(interactive=True)`` — what edits
and camera drags use — draws the twins, and the full-detail frame follows once the
view has been still for ``STILL_AFTER_MS`` (VTK's still/interactive update rates,
made explicit). On a software OpenGL (Mesa llvmpipe) the window renders without
multisampling, which there costs as much as the whole scene.
"""
from __future__ import annotations

import numpy as np
import vtkmodules.vtkInteractionStyle  # noqa: F401  (registers the interactor styles)
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text of the axis labels)
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (the OpenGL render window)
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkFiltersSources import vtkPlaneSource
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
from vtkmodules.vtkInteractionWidgets import vtkOrientationMarkerWidget
from vtkmodules.vtkRenderingAnnotation import vtkAxesActor
from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper, vtkProp, vtkRenderer,
                                         vtkWindowToImageFilter)

__all__ = ["SceneView", "CAMERA_PRESETS", "STILL_AFTER_MS", "is_software_renderer"]

STILL_AFTER_MS = 250   # the full-detail frame once edits and camera drags pause this long
_SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software rasterizer")

# name -> (direction from focal point to camera, view-up), patient axes x=L, y=P, z=H
CAMERA_PRESETS = {
    "ap": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),       # from the front, head up
    "lateral": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),   # from the patient's left, head up
    "axial": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),    # from above the head, anterior up
    "overview": ((0.55, -0.75, 0.45), (0.0, 0.0, 1.0)),  # front-left, from above: the default
}

BACKGROUND_BOTTOM = (0x1b / 255, 0x1f / 255, 0x24 / 255)
BACKGROUND_TOP = (0x2c / 255, 0x34 / 255, 0x3e / 255)


def _axes(length_mm: float) -> vtkAxesActor:
    axes = vtkAxesActor()
    axes.SetTotalLength(length_mm, length_mm, length_mm)
    axes.SetShaftTypeToCylinder()
    axes.SetCylinderRadius(0.004)  # thin: the axes run through the anatomy at the isocentre
    axes.SetConeRadius(0.06)
    for label, caption in zip("XYZ", (axes.GetXAxisCaptionActor2D(), axes.GetYAxisCaptionActor2D(),
                                      axes.GetZAxisCaptionActor2D())):
        caption.GetTextActor().SetTextScaleModeToNone()  # fixed size in pixels, not scaled with the view
        prop = caption.GetCaptionTextProperty()
        prop.SetFontSize(18)
        prop.SetBold(True)
        prop.ShadowOff()
        prop.SetColor(0.85, 0.87, 0.9)
    return axes


def is_software_renderer(render_window) -> bool:
    """Whether the window's OpenGL is a CPU rasteriser (Mesa llvmpipe/softpipe)."""
    caps = (render_window.ReportCapabilities() or "").lower()
    line = next((ln for ln in caps.splitlines() if "renderer string" in ln), caps)
    return any(name in line for name in _SOFTWARE_GL)


def _floor_grid(size_mm: float, step_mm: float, z_mm: float) -> vtkActor:
    plane = vtkPlaneSource()
    n = int(round(size_mm / step_mm))
    half = size_mm / 2.0
    plane.SetOrigin(-half, -half, z_mm)
    plane.SetPoint1(half, -half, z_mm)
    plane.SetPoint2(-half, half, z_mm)
    plane.SetResolution(n, n)
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(plane.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    p = actor.GetProperty()
    p.SetRepresentationToWireframe()
    p.SetColor(0.26, 0.30, 0.35)   # opaque (a translucent grid costs a blending pass each frame)
    p.LightingOff()
    actor.PickableOff()
    return actor


class SceneView(QWidget):
    """VTK 3D view. ``set_actor(name, prop)`` adds or replaces a named prop."""

    def __init__(self, parent=None, axes_mm: float = 150.0, grid_mm: float = 600.0,
                 grid_step_mm: float = 50.0, floor_z_mm: float = -150.0):
        super().__init__(parent)
        self.setObjectName("scene_view")
        self.vtk_widget = QVTKRenderWindowInteractor(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.vtk_widget)
        self.renderer = vtkRenderer()
        self.renderer.GradientBackgroundOn()
        self.renderer.SetBackground(*BACKGROUND_BOTTOM)
        self.renderer.SetBackground2(*BACKGROUND_TOP)
        self.render_window = self.vtk_widget.GetRenderWindow()
        self.render_window.AddRenderer(self.renderer)
        self.interactor = self.render_window.GetInteractor()
        self.interactor.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self._actors: dict[str, vtkProp] = {}
        self._coarse: dict[str, vtkProp] = {}
        self._coarse_shown = False
        self._visible_wanted: dict[str, bool] = {}
        self.software_gl = False
        self._still_timer = QTimer(self, singleShot=True, interval=STILL_AFTER_MS)
        self._still_timer.timeout.connect(self.render)
        # camera drags (the interactor renders by itself) use the coarse twins too
        self.interactor.AddObserver("StartInteractionEvent", lambda *_: self._show_coarse(True))
        self.interactor.AddObserver("EndInteractionEvent", lambda *_: self._still_timer.start())
        self._axes = _axes(axes_mm)
        self._grid = _floor_grid(grid_mm, grid_step_mm, floor_z_mm)
        self.renderer.AddActor(self._axes)
        self.renderer.AddActor(self._grid)
        self._marker = vtkOrientationMarkerWidget()
        self._marker.SetOrientationMarker(vtkAxesActor())
        self._marker.SetInteractor(self.interactor)
        self._marker.SetViewport(0.0, 0.0, 0.22, 0.26)
        self._initialized = False
        self.camera_preset("overview")

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        if not self._initialized:
            self.vtk_widget.Initialize()
            self.software_gl = is_software_renderer(self.render_window)
            if self.software_gl:
                self.render_window.SetMultiSamples(0)
            self._marker.SetEnabled(1)
            self._marker.InteractiveOff()
            self._initialized = True
            self.camera_preset("overview")

    def closeEvent(self, ev) -> None:
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self) -> None:
        """Release the OpenGL context (call before the application quits)."""
        if self._initialized:
            self._marker.SetEnabled(0)
            self.vtk_widget.Finalize()
            self._initialized = False

    # -- props ------------------------------------------------------------------------
    def set_actor(self, name: str, prop: vtkProp, render: bool = True, coarse: vtkProp | None = None) -> None:
        """Add ``prop`` under ``name``, replacing the prop that had that name; with
        ``render=False`` the caller renders later (one frame for several changes).
        ``coarse``: a cheaper twin drawn instead in interactive frames."""
        for p in (prop, coarse):
            if p is not None and not isinstance(p, vtkProp):
                raise TypeError(f"set_actor({name!r}) needs a vtkProp, got {type(p).__name__}")
        self._drop(name)
        self._actors[name] = prop
        self.renderer.AddViewProp(prop)
        if coarse is not None:
            self._coarse[name] = coarse
            coarse.SetVisibility(self._coarse_shown and prop.GetVisibility())
            if self._coarse_shown:
                prop.VisibilityOff()
            self.renderer.AddViewProp(coarse)
        if render:
            self.render()

    def remove_actor(self, name: str) -> None:
        if self._drop(name):
            self.render()

    def _drop(self, name: str) -> bool:
        prop, coarse = self._actors.pop(name, None), self._coarse.pop(name, None)
        self._visible_wanted.pop(name, None)
        for p in (prop, coarse):
            if p is not None:
                self.renderer.RemoveViewProp(p)
        return prop is not None

    def set_visible(self, name: str, visible: bool, render: bool = True) -> None:
        """Show or hide the prop ``name`` (and its coarse twin with it)."""
        prop = self._actors.get(name)
        if prop is None:
            raise KeyError(f"no prop {name!r} in the 3D view (props: {', '.join(self._actors) or 'none'})")
        self._visible_wanted[name] = bool(visible)
        coarse = self._coarse.get(name)
        prop.SetVisibility(bool(visible) and not (coarse is not None and self._coarse_shown))
        if coarse is not None:
            coarse.SetVisibility(bool(visible) and self._coarse_shown)
        if render:
            self.render()

    def _show_coarse(self, coarse: bool) -> None:
        """Swap every prop that has a coarse twin for it (``True``) or back."""
        if coarse == self._coarse_shown:
            return
        self._coarse_shown = coarse
        # interactive frames blend translucent props in one pass (order-dependent, fine for
        # a quarter second); the full-detail frame sorts them exactly (order-independent
        # transparency, which costs a third of a software-rendered frame)
        self.renderer.SetUseOIT(not coarse)
        for name, twin in self._coarse.items():
            fine = self._actors[name]
            wanted = self._visible_wanted.get(name, True)
            fine.SetVisibility(wanted and not coarse)
            twin.SetVisibility(wanted and coarse)

    def actor(self, name: str) -> vtkProp | None:
        return self._actors.get(name)

    def actor_names(self) -> list[str]:
        return list(self._actors)

    # -- camera -----------------------------------------------------------------------
    def reset_camera(self) -> None:
        """Frame everything visible."""
        self.renderer.ResetCamera()
        self.render()

    def camera_preset(self, name: str) -> None:
        """Look from the front ("ap"), the patient's left ("lateral"), above ("axial") or "overview"."""
        if name not in CAMERA_PRESETS:
            raise ValueError(f"unknown camera preset {name!r} (presets: {', '.join(CAMERA_PRESETS)})")
        direction, up = CAMERA_PRESETS[name]
        cam = self.renderer.GetActiveCamera()
        focal = np.array(cam.GetFocalPoint())
        distance = cam.GetDistance()
        cam.SetFocalPoint(*focal)
        cam.SetPosition(*(focal + distance * np.array(direction)))
        cam.SetViewUp(*up)
        self.renderer.ResetCamera()
        cam.Zoom(1.15)  # ResetCamera frames the bounding sphere: generous; come closer
        self.render()

    def render(self, interactive: bool = False) -> None:
        """Draw a frame now. ``interactive=True`` (an edit, a robot move): the coarse twins,
        and the full-detail frame ``STILL_AFTER_MS`` after the last interactive one."""
        if interactive and self._coarse:
            self._show_coarse(True)
            self._still_timer.start()
        elif not interactive:
            self._still_timer.stop()
            self._show_coarse(False)
        if self._initialized:
            self.render_window.Render()

    @property
    def showing_coarse(self) -> bool:
        """Whether the last frame drew the coarse twins (a full-detail frame is due)."""
        return self._coarse_shown

    def grab_rgb(self) -> np.ndarray:
        """The rendered image, (rows, cols, 3) uint8, top row first (renders first)."""
        if not self._initialized:
            raise RuntimeError("the 3D view is not shown yet: show the window before grabbing it")
        self.render()   # full detail
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.render_window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        cols, rows, _ = image.GetDimensions()
        rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols, 3)
        return np.ascontiguousarray(rgb[::-1])
