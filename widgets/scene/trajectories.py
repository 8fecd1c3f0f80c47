"""Planned trajectories in the 3D view: a tube of the tool's diameter, entry and target spheres.

Thin VTK: one ``vtkAssembly`` per trajectory, added to the scene view as
``"trajectory:<id>"`` and updated in place (sources re-parameterised, one
render), so that a handle drag redraws at once. Points arrive in the cage
frame; ``T_scene_cage`` places them in the scene's frame.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkFiltersCore import vtkTubeFilter
from vtkmodules.vtkFiltersSources import vtkLineSource, vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkAssembly, vtkPolyDataMapper, vtkPropPicker

__all__ = ["SceneTrajectories", "actor_name"]


RENDER_AFTER_MS = 0   # the 3D frame of an edit: once the event loop has painted the viewers


def actor_name(tid: str) -> str:
    return f"trajectory:{tid}"


class _TrajectoryActor:
    """Tube + two spheres of one trajectory, as a vtkAssembly."""

    def __init__(self):
        self.line = vtkLineSource()
        self.tube = vtkTubeFilter()
        self.tube.SetInputConnection(self.line.GetOutputPort())
        self.tube.SetNumberOfSides(16)      # a few mm wide on screen; every frame draws each tube
        self.tube.CappingOn()
        self.spheres = {k: vtkSphereSource() for k in ("entry", "target")}
        self.assembly = vtkAssembly()
        self.actors = {}
        for key, source in (("tube", self.tube), *self.spheres.items()):
            if key != "tube":
                source.SetThetaResolution(16)
                source.SetPhiResolution(10)
            mapper = vtkPolyDataMapper()
            mapper.SetInputConnection(source.GetOutputPort())
            actor = vtkActor()
            actor.SetMapper(mapper)
            self.actors[key] = actor
            self.assembly.AddPart(actor)

    def update(self, entry_mm, target_mm, colour: str, diameter_mm: float, selected: bool) -> None:
        c = QColor(colour)
        rgb = (c.redF(), c.greenF(), c.blueF())
        r = 0.5 * diameter_mm
        self.line.SetPoint1(*entry_mm)
        self.line.SetPoint2(*target_mm)
        self.tube.SetRadius(r)
        self.spheres["entry"].SetCenter(*entry_mm)
        self.spheres["target"].SetCenter(*target_mm)
        for key, sphere in self.spheres.items():
            sphere.SetRadius(1.6 * r if key == "entry" else 1.3 * r)
        for key, actor in self.actors.items():
            prop = actor.GetProperty()
            base = rgb if key != "target" else tuple(0.6 * x + 0.4 for x in rgb)
            # opaque (a translucent tube costs a blending pass each frame, about 1 ms a
            # trajectory in software OpenGL): the selected one is lit brighter, the others dimmer
            prop.SetColor(*(base if selected else tuple(0.7 * x for x in base)))
            prop.SetAmbient(0.25 if selected else 0.0)
            prop.SetSpecular(0.3)


class SceneTrajectories:
    """Keeps ``scene_view`` (widgets.scene.view.SceneView) showing the complete trajectories."""

    def __init__(self, scene_view, T_scene_cage=None):
        self.scene_view = scene_view
        self._actors: dict[str, _TrajectoryActor] = {}
        self._render_pending = False
        # a timer, not a queued call: Qt delivers a zero-time singleShot as a posted event ahead
        # of the viewers' (low-priority) repaint requests, so the 3D frame went out first
        self._render_timer = QTimer(scene_view, singleShot=True, interval=RENDER_AFTER_MS)
        self._render_timer.timeout.connect(self._render_now)
        self._matrix = vtkMatrix4x4()
        self.set_transform(np.eye(4) if T_scene_cage is None else T_scene_cage)

    def set_transform(self, T_scene_cage, render: bool = True) -> None:
        T = np.asarray(T_scene_cage, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_scene_cage must be a finite 4x4 transform, got shape {T.shape}")
        for i in range(4):
            for j in range(4):
                self._matrix.SetElement(i, j, T[i, j])
        for a in self._actors.values():
            a.assembly.SetUserMatrix(self._matrix)
        if render:
            self.scene_view.render()

    def update(self, tid: str, entry_mm, target_mm, colour: str, diameter_mm: float,
               selected: bool = False, render: bool = True) -> None:
        """Show (or, with a missing point, hide) trajectory ``tid``."""
        if entry_mm is None or target_mm is None:
            self.remove(tid)
            return
        actor = self._actors.get(tid)
        if actor is None:
            actor = self._actors[tid] = _TrajectoryActor()
            actor.assembly.SetUserMatrix(self._matrix)
            actor.update(entry_mm, target_mm, colour, diameter_mm, selected)
            self.scene_view.set_actor(actor_name(tid), actor.assembly, render=False)
        else:
            actor.update(entry_mm, target_mm, colour, diameter_mm, selected)
        if render:
            self.render_soon()

    def render_soon(self) -> None:
        """One render when control returns to the event loop, however many updates came before
        (a drag or a selection change updates several trajectories at once)."""
        if not self._render_pending:
            self._render_pending = True
            self._render_timer.start()

    def _render_now(self) -> None:
        self._render_pending = False
        self.scene_view.render(interactive=True)   # coarse bone now, full detail once still

    def remove(self, tid: str) -> None:
        if self._actors.pop(tid, None) is not None:
            self.scene_view.remove_actor(actor_name(tid))

    def focus(self, tid: str | None = None) -> None:
        """Frame the trajectory ``tid`` (or all of them) with some margin, keeping the view direction."""
        actors = [self._actors[tid]] if tid in self._actors else list(self._actors.values())
        if not actors:
            return
        bounds = np.array([a.assembly.GetBounds() for a in actors])
        lo, hi = bounds[:, 0::2].min(axis=0), bounds[:, 1::2].max(axis=0)
        centre, size = (lo + hi) / 2, max(float(np.max(hi - lo)), 20.0)
        margin = 0.25 * size + 5.0
        self.scene_view.renderer.ResetCamera(*np.ravel(np.column_stack([centre - margin, centre + margin])))
        self.render_soon()

    def view_along(self, tid: str, back_mm: float = 150.0) -> None:
        """Camera on the trajectory's axis behind the entry, looking at the target (the
        surgeon's view down the tool), the patient's head up when it can be."""
        a = self._actors[tid]
        T = np.array([[self._matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
        e = (T @ [*a.line.GetPoint1(), 1.0])[:3]
        t = (T @ [*a.line.GetPoint2(), 1.0])[:3]
        d = (t - e) / max(np.linalg.norm(t - e), 1e-9)
        up = np.array([0.0, 0.0, 1.0])  # scene z = head (widgets.scene.view presets)
        if abs(d @ up) > 0.95:
            up = np.array([0.0, -1.0, 0.0])
        cam = self.scene_view.renderer.GetActiveCamera()
        cam.SetFocalPoint(*t)
        cam.SetPosition(*(e - back_mm * d))
        cam.SetViewUp(*up)
        cam.OrthogonalizeViewUp()
        self.scene_view.renderer.ResetCameraClippingRange()
        self.scene_view.render()

    # -- picking ------------------------------------------------------------------------------
    def pick_at(self, x: float, y: float) -> str | None:
        """The trajectory drawn at display pixel (x, y) of the 3D view (VTK: origin bottom-left)."""
        picker = vtkPropPicker()
        if not picker.Pick(x, y, 0, self.scene_view.renderer):
            return None
        for prop in (picker.GetViewProp(), picker.GetActor(), picker.GetAssembly()):
            tid = self.tid_of_prop(prop) if prop is not None else None
            if tid is not None:
                return tid
        return None

    def display_position(self, tid: str) -> tuple[float, float]:
        """Display pixel (VTK, origin bottom-left) of the middle of ``tid``'s tube (for tests, tooltips)."""
        a = self._actors[tid]
        mid = 0.5 * (np.array(a.line.GetPoint1()) + np.array(a.line.GetPoint2()))
        p = np.array([*mid, 1.0])
        T = np.array([[self._matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
        r = self.scene_view.renderer
        r.SetWorldPoint(*(T @ p))
        r.WorldToDisplay()
        x, y, _ = r.GetDisplayPoint()
        return x, y

    def enable_picking(self, on_pick) -> None:
        """Call ``on_pick(tid)`` when a trajectory is clicked (press and release without moving)."""
        interactor = self.scene_view.interactor
        state = {}

        def press(obj, _event):
            state["pos"] = obj.GetEventPosition()

        def release(obj, _event):
            start, end = state.pop("pos", None), obj.GetEventPosition()
            if start is not None and abs(start[0] - end[0]) + abs(start[1] - end[1]) <= 3:
                tid = self.pick_at(*end)
                if tid is not None:
                    on_pick(tid)

        interactor.AddObserver("LeftButtonPressEvent", press, 1.0)
        interactor.AddObserver("LeftButtonReleaseEvent", release, 1.0)

    def ids(self) -> list[str]:
        return list(self._actors)

    def tid_of_prop(self, prop) -> str | None:
        """The trajectory a picked prop belongs to (for 3D picking), or None."""
        for tid, a in self._actors.items():
            if prop is a.assembly or prop in a.actors.values():
                return tid
        return None
