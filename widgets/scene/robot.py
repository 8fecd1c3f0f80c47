"""The hybrid robot and its cage in the 3D view (thin VTK, updated in place).

``RobotSceneActors(kinematics, cage_balls_mm)`` builds one ``vtkAssembly``
(``.assembly``) with the slider rails, the links of the parallel mechanism, the
x arm, the joint-5 body, the tool and the cage balls; ``update(q)`` moves them
(sources re-parameterised, no new actors); ``set_transform(T_scene_base)``
places the robot base in the scene. Geometry only draws what
``core.robot.kinematics.hybrid5`` computes.
"""
from __future__ import annotations

import json

import numpy as np
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkPolyData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkFiltersCore import vtkGlyph3D, vtkTubeFilter
from vtkmodules.vtkFiltersSources import vtkLineSource, vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkAssembly, vtkPolyDataMapper

__all__ = ["RobotSceneActors", "load_cage_balls"]

COLOURS = {"rail": (0.42, 0.47, 0.53), "link": (0.75, 0.78, 0.82), "arm": (0.55, 0.68, 0.82),
           "tool": (0.95, 0.75, 0.35), "joint": (0.35, 0.62, 0.9), "cage": (0.8, 0.85, 0.9)}


def load_cage_balls(path=None) -> np.ndarray:
    """All ball centres (N, 3) of a cage file, in the cage frame (mm)."""
    from resources import path as resource_path
    with open(path or resource_path("cages", "default.json")) as f:
        doc = json.load(f)
    return np.array([b for plane in doc["planes"] for b in plane["balls_mm"]], float)


class _Segment:
    def __init__(self, radius, colour):
        self.line = vtkLineSource()
        tube = vtkTubeFilter()
        tube.SetInputConnection(self.line.GetOutputPort())
        tube.SetRadius(radius)
        tube.SetNumberOfSides(16)
        tube.CappingOn()
        self.actor = _actor(tube, colour)

    def set(self, a, b):
        self.line.SetPoint1(*a)
        self.line.SetPoint2(*b)


def _actor(source, colour):
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(source.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*colour)
    actor.GetProperty().SetSpecular(0.3)
    return actor


class RobotSceneActors:
    SEGMENTS = {"rail_y": (6, "rail"), "rail_z": (6, "rail"), "BC": (10, "link"),
                "DC": (12, "link"), "CO3": (12, "link"), "x_arm": (14, "arm"),
                "body5": (18, "joint"), "tool": (4, "tool")}

    def __init__(self, kinematics, cage_balls_mm=None, ball_radius_mm=2.0):
        self.kin = kinematics
        self.assembly = vtkAssembly()
        self.segments = {k: _Segment(r, COLOURS[c]) for k, (r, c) in self.SEGMENTS.items()}
        for s in self.segments.values():
            self.assembly.AddPart(s.actor)
        self.joints = {k: vtkSphereSource() for k in ("B", "C", "D", "O3")}
        for sph in self.joints.values():
            sph.SetRadius(16)
            sph.SetThetaResolution(16)
            sph.SetPhiResolution(12)
            self.assembly.AddPart(_actor(sph, COLOURS["joint"]))
        self._cage_local = (np.zeros((0, 3)) if cage_balls_mm is None
                            else np.asarray(cage_balls_mm, float))
        self._cage_points = vtkPoints()
        poly = vtkPolyData()
        poly.SetPoints(self._cage_points)
        ball = vtkSphereSource()
        ball.SetRadius(ball_radius_mm)
        glyph = vtkGlyph3D()
        glyph.SetInputData(poly)
        glyph.SetSourceConnection(ball.GetOutputPort())
        self._cage_poly = poly
        self.cage_actor = _actor(glyph, COLOURS["cage"])
        self.assembly.AddPart(self.cage_actor)
        self._matrix = vtkMatrix4x4()
        self.assembly.SetUserMatrix(self._matrix)
        self.last_points: dict[str, np.ndarray] = {}

    def set_transform(self, T_scene_base) -> None:
        T = np.asarray(T_scene_base, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_scene_base must be a finite 4x4 transform")
        for i in range(4):
            for j in range(4):
                self._matrix.SetElement(i, j, T[i, j])
        self.assembly.Modified()

    def points(self, q) -> dict[str, np.ndarray]:
        """Key points of the mechanism in the base frame (mm): B, C, D on the plane x = 0,
        O3 at the end of the x arm, the flange and the tool tip."""
        k = self.kin
        l11, l14, l3 = q[0], q[1], q[2]
        yo, zo, _, C, _ = k.o3_and_theta3(l11, l14)
        T_flange = k.flange(q)
        lim = k.joint_limits
        return {"B": np.array([0, -l11, 0.0]), "C": np.array([0, C[0], C[1]]),
                "D": np.array([0, 0, -l14]), "P": np.array([0, yo, zo]),
                "O3": np.array([l3, yo, zo]), "tip": (T_flange @ k.T_flange_tool)[:3, 3],
                "rail_y": np.array([[0, -lim.upper[0] - 30, 0], [0, -lim.lower[0] + 30, 0]]),
                "rail_z": np.array([[0, 0, -lim.upper[1] - 30], [0, 0, -lim.lower[1] + 30]]),
                "T_base_flange": T_flange}

    def update(self, q) -> None:
        p = self.points(np.asarray(q, float))
        s = self.segments
        s["rail_y"].set(*p["rail_y"])
        s["rail_z"].set(*p["rail_z"])
        s["BC"].set(p["B"], p["C"])
        s["DC"].set(p["D"], p["C"])
        s["CO3"].set(p["C"], p["P"])
        s["x_arm"].set(p["P"], p["O3"])
        axis5 = p["T_base_flange"][:3, 1]
        s["body5"].set(p["O3"] - 30 * axis5, p["O3"] + 30 * axis5)
        s["tool"].set(p["O3"], p["tip"])
        for name in self.joints:
            self.joints[name].SetCenter(*p[name])
        T_base_cage = p["T_base_flange"] @ self.kin.T_flange_cage
        balls = self._cage_local @ T_base_cage[:3, :3].T + T_base_cage[:3, 3]
        self._cage_points.Reset()
        for b in balls:
            self._cage_points.InsertNextPoint(*b)
        self._cage_points.Modified()
        self._cage_poly.Modified()
        self.last_points = p
