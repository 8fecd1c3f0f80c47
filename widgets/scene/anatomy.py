"""The simulated room's anatomy and cage in the 3D view (thin VTK).

``bone_surface(volume)`` extracts the bone iso-surface of a CT (HU) as numpy
arrays, on a downsampled copy (flying edges, windowed-sinc smoothing, decimation);
it builds no actor, so a worker thread can run it. ``bone_actor(mesh)`` draws it
bone-coloured on the GUI thread; ``simplified_mesh`` thins it to a triangle budget and
``show_bone`` puts it in the 3D view with a coarse twin for interactive frames.
``CageActors`` draws the cage balls as spheres of the ball diameter, one colour per
plane, and moves them with ``set_transform``.
"""
from __future__ import annotations

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPolyData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkFiltersCore import (vtkFlyingEdges3D, vtkGlyph3D, vtkPolyDataNormals, vtkQuadricClustering,
                                       vtkWindowedSincPolyDataFilter)
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkAssembly, vtkPolyDataMapper

__all__ = ["BoneMesh", "bone_surface", "bone_actor", "simplified_mesh", "show_bone", "CageActors", "BONE_RGB",
           "PLANE_RGB", "DETAIL_TRIANGLES", "COARSE_TRIANGLES", "bone_levels"]

# A software-rendered (llvmpipe) frame of the translucent bone costs about 0.3 ms per 1000
# triangles at 600x400 px: 50 000 look the same as the 110 000 of the surface (the
# quadric clustering keeps the shape to a bin), 8 000 are blocky but cost little for
# the frames drawn while the surgeon edits
DETAIL_TRIANGLES = 50_000
COARSE_TRIANGLES = 8_000

BONE_RGB = (0.89, 0.85, 0.76)
# one colour per cage plane (the calibration wizard's palette order)
PLANE_RGB = [(0.95, 0.42, 0.38), (0.39, 0.75, 0.45), (0.36, 0.62, 0.95), (0.95, 0.78, 0.3),
             (0.75, 0.5, 0.9), (0.3, 0.85, 0.85)]


class BoneMesh:
    """A triangle mesh in world millimetres: ``vertices`` (N, 3), ``triangles`` (M, 3) int."""

    def __init__(self, vertices, triangles, seconds: float = 0.0):
        self.vertices = np.ascontiguousarray(vertices, float)
        self.triangles = np.ascontiguousarray(triangles, np.int64)
        self.seconds = float(seconds)

    def __len__(self) -> int:
        return len(self.triangles)


def _downsampled(volume, step_mm: float):
    """(HU array (nz, ny, nx) block-averaged to about ``step_mm``, voxel step per axis (x, y, z))."""
    hu = np.asarray(volume.hu, np.float32)
    f = [max(1, int(round(step_mm / s))) for s in volume.spacing_mm]  # x, y, z
    fz, fy, fx = f[2], f[1], f[0]
    nz, ny, nx = (hu.shape[0] // fz) * fz, (hu.shape[1] // fy) * fy, (hu.shape[2] // fx) * fx
    small = hu[:nz, :ny, :nx].reshape(nz // fz, fz, ny // fy, fy, nx // fx, fx).mean(axis=(1, 3, 5))
    return small, (fx, fy, fz)


def bone_surface(volume, hu: float = 225.0, step_mm: float = 2.0, smoothing_iterations: int = 15,
                 target_reduction: float = 0.7) -> BoneMesh:
    """Iso-surface at ``hu`` of ``volume`` (core.imaging.volume.Volume) block-averaged to ``step_mm``,
    smoothed (windowed sinc) and decimated by ``target_reduction``; world coordinates.

    Raises ValueError when the volume has no voxel above ``hu`` (no bone to show).
    """
    import time
    t0 = time.perf_counter()
    if not (step_mm > 0 and 0 <= target_reduction < 1):
        raise ValueError(f"bone surface: step_mm must be > 0 and target_reduction in [0, 1), "
                         f"got {step_mm}, {target_reduction}")
    small, f = _downsampled(volume, step_mm)
    if not (small > hu).any():
        raise ValueError(f"the CT has no bone above {hu:g} HU to draw: check the volume's units")
    img = vtkImageData()
    nz, ny, nx = small.shape
    img.SetDimensions(nx, ny, nz)
    img.GetPointData().SetScalars(numpy_to_vtk(small.ravel(), deep=True))
    fe = vtkFlyingEdges3D()
    fe.SetInputData(img)
    fe.SetValue(0, float(hu))
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    smooth = vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(fe.GetOutputPort())
    smooth.SetNumberOfIterations(int(smoothing_iterations))
    smooth.SetPassBand(0.1)
    smooth.NonManifoldSmoothingOn()
    smooth.NormalizeCoordinatesOn()
    last = smooth
    if target_reduction > 0:
        dec = vtkQuadricClustering()  # a grid of bins: fast, keeps the shape to a bin's size
        dec.SetInputConnection(smooth.GetOutputPort())
        bins = np.ceil(np.array(small.shape[::-1]) * (1 - target_reduction) ** 0.5).astype(int)
        dec.SetNumberOfDivisions(*(int(b) for b in bins))
        dec.AutoAdjustNumberOfDivisionsOff()
        last = dec
    last.Update()
    poly = last.GetOutput()
    ijk_small = vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
    # a block of f voxels averages voxels 0..f-1: its centre is at voxel (f - 1) / 2
    ijk = ijk_small * np.asarray(f, float) + (np.asarray(f, float) - 1) / 2
    T = volume.T_world_voxel
    world = ijk @ T[:3, :3].T + T[:3, 3]
    conn = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return BoneMesh(world, conn, time.perf_counter() - t0)


def _poly(mesh: BoneMesh) -> vtkPolyData:
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(mesh.vertices, deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(mesh.triangles) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(mesh.triangles.ravel(), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(pts)
    poly.SetPolys(cells)
    return poly


def simplified_mesh(mesh: BoneMesh, triangles: int) -> BoneMesh:
    """About ``triangles`` triangles of ``mesh`` (quadric clustering on a grid whose bins
    follow the mesh's extent); the mesh itself when it is already that small."""
    if len(mesh) <= triangles:
        return mesh
    poly = _poly(mesh)
    extent = np.ptp(mesh.vertices, axis=0) + 1e-6
    bin_mm = float(np.cbrt(np.prod(extent) / len(mesh)))   # a first guess, corrected once:
    for _ in range(2):                                     # triangles grow as 1 / bin_mm²
        dec = vtkQuadricClustering()
        dec.SetInputData(poly)
        dec.SetNumberOfDivisions(*(int(b) for b in np.maximum(2, np.ceil(extent / bin_mm))))
        dec.AutoAdjustNumberOfDivisionsOff()
        dec.Update()
        out = dec.GetOutput()
        got = out.GetNumberOfPolys()
        if got == 0:
            return mesh
        bin_mm *= float(np.sqrt(got / triangles))
    return BoneMesh(vtk_to_numpy(out.GetPoints().GetData()).astype(float),
                    vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3), mesh.seconds)


def bone_levels(mesh: BoneMesh) -> tuple[BoneMesh, BoneMesh]:
    """(detail, coarse) meshes of ``show_bone``: seconds of decimation for a whole spine, so
    a caller builds them off the GUI thread (VTK filters without rendering)."""
    return simplified_mesh(mesh, DETAIL_TRIANGLES), simplified_mesh(mesh, COARSE_TRIANGLES)


def show_bone(scene_view, mesh: BoneMesh, name: str = "bone", levels=None, render: bool = True) -> None:
    """The bone in the 3D view (``DETAIL_TRIANGLES``), with its coarse twin for interactive
    frames (``COARSE_TRIANGLES``); ``levels``: those two meshes, made beforehand."""
    detail, coarse = levels if levels is not None else bone_levels(mesh)
    scene_view.set_actor(name, bone_actor(detail), coarse=bone_actor(coarse), render=render)


def bone_actor(mesh: BoneMesh, opacity: float = 0.55) -> vtkActor:
    """The mesh, shaded, bone-coloured and somewhat translucent (GUI thread)."""
    normals = vtkPolyDataNormals()
    normals.SetInputData(_poly(mesh))
    normals.SetFeatureAngle(60)
    normals.ConsistencyOn()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    p = actor.GetProperty()
    p.SetColor(*BONE_RGB)
    p.SetDiffuse(0.85)
    p.SetSpecular(0.15)
    p.SetSpecularPower(20)
    p.SetOpacity(opacity)  # see-through: a planned trajectory runs inside the bone
    actor.PickableOff()
    return actor


class CageActors:
    """The cage's balls as spheres (ball diameter), coloured by plane; ``.assembly`` for the scene."""

    def __init__(self, cage):
        self.assembly = vtkAssembly()
        self.plane_ids = []
        r = 0.5 * float(cage.ball_diameter_mm)
        for i, plane in enumerate(cage.planes):
            pts = vtkPoints()
            for b in np.asarray(plane.balls_mm, float):
                pts.InsertNextPoint(*b)
            poly = vtkPolyData()
            poly.SetPoints(pts)
            ball = vtkSphereSource()
            ball.SetRadius(r)
            ball.SetThetaResolution(10)   # a few pixels on screen; hundreds of balls:
            ball.SetPhiResolution(6)      # 16x12 spheres cost 9 ms a software-rendered frame
            glyph = vtkGlyph3D()
            glyph.SetInputData(poly)
            glyph.SetSourceConnection(ball.GetOutputPort())
            mapper = vtkPolyDataMapper()
            mapper.SetInputConnection(glyph.GetOutputPort())
            actor = vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*PLANE_RGB[i % len(PLANE_RGB)])
            actor.GetProperty().SetSpecular(0.5)
            self.assembly.AddPart(actor)
            self.plane_ids.append(plane.id)
        self._matrix = vtkMatrix4x4()
        self.assembly.SetUserMatrix(self._matrix)
        self.T_scene_cage = np.eye(4)

    def set_transform(self, T_scene_cage) -> None:
        T = np.asarray(T_scene_cage, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_scene_cage must be a finite 4x4 transform")
        for i in range(4):
            for j in range(4):
                self._matrix.SetElement(i, j, T[i, j])
        self.assembly.Modified()
        self.T_scene_cage = T.copy()


def frame_patient(scene_view, points_mm, preset: str = "overview", zoom: float = 1.3) -> None:
    """Camera preset ``preset`` framed on ``points_mm`` (the bone and the cage), not on the
    whole room (the robot and the C-arm beams reach a metre out)."""
    from widgets.scene.view import CAMERA_PRESETS
    pts = np.asarray(points_mm, float).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    direction, up = CAMERA_PRESETS[preset]
    cam = scene_view.renderer.GetActiveCamera()
    centre = (lo + hi) / 2
    cam.SetFocalPoint(*centre)
    cam.SetPosition(*(centre + 1000.0 * np.asarray(direction)))
    cam.SetViewUp(*up)
    scene_view.renderer.ResetCamera(lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    cam.Zoom(zoom)
    scene_view.renderer.ResetCameraClippingRange()
    scene_view.render()
