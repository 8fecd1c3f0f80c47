"""A shot in the 3D view: the C-arm source, its beam's edges and the image on the detector.

Thin VTK: ``ShotActor`` draws a ``core.calibration.frustum.ShotFrustum`` (source, detector
grid with the raw pixel of each vertex) as one ``vtkAssembly``: a small sphere at the
source, the four edge rays source -> grid corners and the detector's outline (lines,
the view's colour), and the image as a texture on the grid, grey and unlit. The grid
carries the distortion correction, so an image-intensifier image lands undistorted.

The image faces the source: seen from the source's side (the detector behind the
patient) it is opaque; seen from behind the detector (which then stands between the
camera and the patient) it is half transparent and drawn in the translucent pass, after
the bone, so it never hides the anatomy. ``set_frustum`` and ``set_image`` update the
same pipeline in place; the caller renders. Cost on llvmpipe: two 17-33² grids, two
<= 512² luminance textures and a few lines: ~1-2 ms of a 30 ms frame at 650x340 px.
"""
from __future__ import annotations

import cv2
import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPolyData
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkAssembly, vtkPolyDataMapper, vtkTexture

__all__ = ["ShotActor", "texture_array", "TEXTURE_MAX_PX", "BACK_OPACITY"]

TEXTURE_MAX_PX = 512     # longest side of the texture (software OpenGL: each texel costs)
BACK_OPACITY = 0.5       # the image seen from behind its detector
RAY_OPACITY = 0.6        # the beam's edges cross the whole scene: lighter than the outline
SOURCE_RADIUS_MM = 8.0


def texture_array(image, max_px: int = TEXTURE_MAX_PX) -> np.ndarray:
    """uint8 (h, w), longest side <= ``max_px`` (area-averaged: the texture covers exactly the
    image), brighter = less dense, levelled at the 1st and 99th percentiles (as the thumbnails) of
    the exposed field (an image intensifier's unexposed surround is left out).
    ``image``: a ``FluoroImage`` (its ``display()``) or a 2-D array. ValueError for anything else."""
    a = image.display() if hasattr(image, "display") else image
    a = np.asarray(a, np.float32) if a is not None else None
    if a is None or a.ndim != 2 or a.size == 0 or min(a.shape) < 1:
        raise ValueError(f"an image texture needs a non-empty 2-D image, got "
                         f"{'nothing' if a is None else f'shape {a.shape}'}")
    if not np.all(np.isfinite(a)):
        raise ValueError("an image texture needs finite pixel values")
    rows, cols = a.shape
    scale = min(1.0, max_px / max(rows, cols))
    if scale < 1.0:
        a = cv2.resize(a, (max(1, round(cols * scale)), max(1, round(rows * scale))), interpolation=cv2.INTER_AREA)
    sample = a[::max(1, a.shape[0] // 256), ::max(1, a.shape[1] // 256)].ravel()
    floor = sample.min() + 0.01 * (sample.max() - sample.min())
    corners = np.array([a[0, 0], a[0, -1], a[-1, 0], a[-1, -1]])
    if np.all(corners <= floor) and np.mean(sample <= floor) < 0.5:
        sample = sample[sample > floor]    # an unexposed surround (II's round field): level the field only
    lo, hi = np.percentile(sample, [1.0, 99.0]) if sample.size else (0.0, 0.0)
    gain = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.ascontiguousarray(np.clip((a - lo) * gain, 0, 255).astype(np.uint8))


def _line_actor(rgb, width: float) -> tuple[vtkActor, vtkPolyData]:
    poly = vtkPolyData()
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(poly)
    actor = vtkActor()
    actor.SetMapper(mapper)
    p = actor.GetProperty()
    p.SetColor(*rgb)
    p.SetLineWidth(width)
    p.LightingOff()
    actor.PickableOff()
    return actor, poly


def _set_lines(poly: vtkPolyData, points, segments) -> None:
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.asarray(points, float).reshape(-1, 3), deep=True))
    poly.SetPoints(pts)
    cells = vtkCellArray()
    if len(segments):
        s = np.asarray(segments, np.int64)
        cells.SetData(numpy_to_vtkIdTypeArray(np.arange(0, 2 * len(s) + 1, 2, dtype=np.int64), deep=True),
                      numpy_to_vtkIdTypeArray(s.ravel(), deep=True))
    poly.SetLines(cells)
    poly.Modified()


class ShotActor:
    """Source sphere, beam edges, detector outline and textured image of one shot (``.assembly``)."""

    def __init__(self, rgb=(0.95, 0.76, 0.3)):
        self.assembly = vtkAssembly()
        self.assembly.PickableOff()
        self.frustum = None
        # the image on the detector grid
        self.surface = vtkPolyData()
        self.image_data = vtkImageData()
        self.texture = vtkTexture()
        self.texture.SetInputData(self.image_data)
        self.texture.InterpolateOn()
        self.texture.EdgeClampOn()
        self.texture.RepeatOff()
        self.texture.SetColorModeToDirectScalars()
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(self.surface)
        mapper.ScalarVisibilityOff()
        # two actors share the grid and texture: the face towards the source (opaque, back faces
        # culled) and the face behind the detector (translucent, so drawn after the opaque props and
        # the translucent bone, which it then does not hide; front faces culled)
        self.image_actor = vtkActor()
        self.back_actor = vtkActor()
        for actor, opacity in ((self.image_actor, 1.0), (self.back_actor, BACK_OPACITY)):
            actor.SetMapper(mapper)
            actor.SetTexture(self.texture)
            actor.PickableOff()
            prop = actor.GetProperty()
            prop.LightingOff()
            prop.SetColor(1.0, 1.0, 1.0)
            prop.SetAmbient(1.0)
            prop.SetDiffuse(0.0)
            prop.SetOpacity(opacity)
            actor.VisibilityOff()        # until it has an image and a grid
        self.image_actor.GetProperty().BackfaceCullingOn()
        self.back_actor.GetProperty().FrontfaceCullingOn()
        # source, edge rays (thin: they cross the whole scene) and the detector's outline
        self.ray_actor, self.rays = _line_actor(rgb, 1.0)
        self.ray_actor.GetProperty().SetOpacity(RAY_OPACITY)
        self.line_actor, self.lines = _line_actor(rgb, 2.0)
        self.sphere = vtkSphereSource()
        self.sphere.SetRadius(SOURCE_RADIUS_MM)
        self.sphere.SetThetaResolution(16)
        self.sphere.SetPhiResolution(12)
        sm = vtkPolyDataMapper()
        sm.SetInputConnection(self.sphere.GetOutputPort())
        self.source_actor = vtkActor()
        self.source_actor.SetMapper(sm)
        self.source_actor.PickableOff()
        self.source_actor.GetProperty().SetColor(*rgb)
        for actor in (self.image_actor, self.back_actor, self.ray_actor, self.line_actor, self.source_actor):
            self.assembly.AddPart(actor)

    # -- content ----------------------------------------------------------------------
    def set_frustum(self, frustum) -> None:
        """Place the source, beam edges, outline and image grid (``ShotFrustum``, scene frame).
        ValueError (nothing changed) when it has no finite source or no drawable triangle."""
        src = np.asarray(frustum.source_mm, float)
        pts = np.asarray(frustum.points_mm, float)
        if src.shape != (3,) or not np.all(np.isfinite(src)):
            raise ValueError("the shot's X-ray source is not a finite 3D point")
        tris = frustum.triangles()
        if not len(tris):
            raise ValueError("no part of the shot's detector grid is finite: nothing to draw")
        flat = pts.reshape(-1, 3).copy()
        kept = np.all(np.isfinite(flat), axis=1)
        flat[~kept] = flat[kept][0]     # dropped vertices: in no triangle, and not widening the bounds
        points = vtkPoints()
        points.SetData(numpy_to_vtk(flat, deep=True))
        self.surface.SetPoints(points)
        tc = numpy_to_vtk(frustum.texture_coords().reshape(-1, 2), deep=True)
        tc.SetName("tcoords")
        self.surface.GetPointData().SetTCoords(tc)
        cells = vtkCellArray()
        offsets = numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(tris) + 1, 3, dtype=np.int64), deep=True)
        cells.SetData(offsets, numpy_to_vtkIdTypeArray(tris.astype(np.int64).ravel(), deep=True))
        self.surface.SetPolys(cells)
        self.surface.Modified()
        # lines: source -> the grid's corners (those kept), and the outline
        corners = frustum.corners_mm()
        corners = corners[np.all(np.isfinite(corners), axis=1)]
        _set_lines(self.rays, np.vstack([src[None], corners]), [(0, 1 + k) for k in range(len(corners))])
        outline = frustum.outline_mm()
        _set_lines(self.lines, outline, [(k, k + 1) for k in range(max(0, len(outline) - 1))])
        self.sphere.SetCenter(*src)
        self.frustum = frustum
        self._update_visibility()

    def set_image(self, texture) -> None:
        """The texture, a uint8 (h, w) array (``texture_array``), or None for no image."""
        if texture is None:
            self._has_image = False
            self._update_visibility()
            return
        a = np.asarray(texture)
        if a.dtype != np.uint8 or a.ndim != 2 or a.size == 0:
            raise ValueError(f"a shot texture must be a non-empty 2-D uint8 array, got {a.dtype} {a.shape}")
        rows, cols = a.shape
        scalars = numpy_to_vtk(np.ascontiguousarray(a).ravel(), deep=True)  # row 0 first: t = 0 at the top
        self.image_data.SetDimensions(cols, rows, 1)
        self.image_data.GetPointData().SetScalars(scalars)
        self.image_data.Modified()
        self._has_image = True
        self._update_visibility()

    def set_image_visible(self, on: bool) -> None:
        """Show the image (once it has one and a grid) or only the source and beam lines."""
        self._image_wanted = bool(on)
        self._update_visibility()

    _has_image = False
    _image_wanted = True

    @property
    def shows_image(self) -> bool:
        return bool(self.image_actor.GetVisibility())

    def _update_visibility(self) -> None:
        on = self._image_wanted and self._has_image and self.frustum is not None
        self.image_actor.SetVisibility(on)
        self.back_actor.SetVisibility(on)
