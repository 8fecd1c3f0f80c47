"""ShotActor: the image really lands on its detector in the rendered 3D view, the right way
round (checked by projecting known pixels of the detector to the screen), faint from behind;
levels of the texture; bad input refused with a clear error, nothing half-changed."""
from __future__ import annotations

import numpy as np
import pytest

from core.calibration.frustum import ShotFrustum, frustum_from_geometry
from core.simulation.scene import carm_geometry
from widgets.scene.shots import BACK_OPACITY, ShotActor, texture_array

pytestmark = pytest.mark.gui

ISO = np.array([1500.0, 0.0, 300.0])   # away from the world axes at the origin
SHAPE = (64, 96)                        # rows, cols
BRIGHT, MEDIUM, DARK = 4000, 2500, 1000


def geometry():
    """AP C-arm about ISO: detector 375 mm past it along +y, columns along +x, rows along -z."""
    return carm_geometry("ap", 0.0, 0.0, ISO, 1000.0, 625.0, (0.9, 0.9), SHAPE)


def quadrant_image() -> np.ndarray:
    """Top-left quadrant bright, top-right medium, bottom half dark (raw rows top first)."""
    img = np.full(SHAPE, DARK, np.float32)
    img[:32, :48] = BRIGHT
    img[:32, 48:] = MEDIUM
    return img


def magenta_ball(centre_mm, radius_mm=30.0):
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper
    src = vtkSphereSource()
    src.SetCenter(*centre_mm)
    src.SetRadius(radius_mm)
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(src.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    p = actor.GetProperty()
    p.SetColor(1.0, 0.0, 1.0)
    p.SetAmbient(1.0)
    p.SetDiffuse(0.0)
    p.SetOpacity(0.6)       # translucent, as the bone
    return actor


@pytest.fixture
def view(module_scene_view):
    return module_scene_view


def look(view, position, focal, up=(0.0, 0.0, 1.0), angle_deg=30.0):
    cam = view.renderer.GetActiveCamera()
    cam.SetPosition(*position)
    cam.SetFocalPoint(*focal)
    cam.SetViewUp(*up)
    cam.SetViewAngle(angle_deg)
    view.renderer.ResetCameraClippingRange()


def screen_px(view, point_mm) -> tuple[int, int]:
    """(row, col) in ``grab_rgb`` of a world point."""
    r = view.renderer
    r.SetWorldPoint(*point_mm, 1.0)
    r.WorldToDisplay()
    x, y, _ = r.GetDisplayPoint()
    rows = view.render_window.GetSize()[1]
    return int(round(rows - 1 - y)), int(round(x))


def probe(view, rgb, g, uv):
    """Mean RGB in a 5x5 patch around where raw pixel ``uv`` of the detector shows on screen."""
    row, col = screen_px(view, g.pixel_to_detector_mm(np.asarray(uv, float)))
    patch = rgb[row - 2:row + 3, col - 2:col + 3].reshape(-1, 3).astype(float)
    return patch.mean(axis=0)


def test_texture_levels_size_and_bad_input():
    ramp = np.tile(np.linspace(100.0, 5000.0, 1024, dtype=np.float32), (600, 1))
    t = texture_array(ramp)
    assert t.dtype == np.uint8 and t.shape == (300, 512)           # longest side 512, aspect kept
    assert t[:, :3].max() == 0 and t[:, -3:].min() == 255          # 1 % .. 99 % -> 0 .. 255
    assert np.all(np.diff(t[0].astype(int)) >= 0)                  # brighter stays brighter
    # an image intensifier's black surround is left out of the levels: the field spans the range
    rows, cols = 200, 200
    vv, uu = np.mgrid[0:rows, 0:cols]
    disc = (uu - 99.5) ** 2 + (vv - 99.5) ** 2 <= 95.0 ** 2
    img = np.where(disc, 1000.0 + 5.0 * uu, 0.0).astype(np.float32)
    t = texture_array(img)
    inside = t[disc]
    assert np.percentile(inside, 1) <= 3 and np.percentile(inside, 99) >= 252
    assert texture_array(np.full((8, 8), 7.0)).max() == 0          # flat: no division by zero
    for bad in (None, np.zeros((4, 4, 3)), np.zeros((0, 5)), np.full((4, 4), np.nan)):
        with pytest.raises(ValueError):
            texture_array(bad)


def test_the_image_lands_on_its_detector_the_right_way_round(view):
    g = geometry()
    actor = ShotActor((0.37, 0.69, 0.94))
    actor.set_frustum(frustum_from_geometry(g))
    actor.set_image(texture_array(quadrant_image()))
    view.set_actor("shot_ap", actor.assembly)
    assert actor.shows_image
    # from the source's side (the isocentre), looking at the detector, rows (v) downwards
    centre = g.pixel_to_detector_mm(np.array([47.5, 31.5]))
    look(view, ISO, centre, up=-g.detector_v)
    rgb = view.grab_rgb()
    tl, tr = probe(view, rgb, g, (20, 14)), probe(view, rgb, g, (76, 14))
    bl, br = probe(view, rgb, g, (20, 50)), probe(view, rgb, g, (76, 50))
    assert tl.min() > 235 and np.ptp(tl) < 8                        # grey, bright: the top-left pixels
    assert 110 < tr.mean() < 200 and np.ptp(tr) < 8                  # medium: top-right
    assert bl.max() < 25 and br.max() < 25                           # dark: the bottom half
    # from behind the detector the image is faint, and a translucent prop beyond it (the bone)
    # still shows through: drawn in the translucent pass, the image does not hide it
    eye = centre - 400 * g.detector_normal
    spot = g.pixel_to_detector_mm(np.array([20.0, 50.0]))        # a dark part of the image
    ball = magenta_ball(spot + 150 * (spot - eye) / np.linalg.norm(spot - eye))
    view.set_actor("ball", ball)
    look(view, eye, centre, up=-g.detector_v)
    rgb = view.grab_rgb()
    back = probe(view, rgb, g, (20, 14))
    assert 255 * BACK_OPACITY - 10 < back.mean() < 255 * BACK_OPACITY + 80
    r, gr, b = probe(view, rgb, g, (20, 50))
    assert r - gr > 30 and b - gr > 30, (r, gr, b)                  # magenta seen through the image
    view.remove_actor("ball")
    view.remove_actor("shot_ap")


def test_updates_in_place_and_refuses_bad_input(view):
    g = geometry()
    actor = ShotActor()
    actor.set_frustum(frustum_from_geometry(g))
    image_data, surface = actor.image_data, actor.surface
    actor.set_image(np.zeros((10, 20), np.uint8))
    actor.set_image(np.full((30, 40), 9, np.uint8))
    assert actor.image_data is image_data and image_data.GetDimensions() == (40, 30, 1)
    moved = frustum_from_geometry(carm_geometry("ap", 0.0, 0.0, ISO + [100.0, 0, 0], 1000.0, 625.0, (0.9, 0.9),
                                                SHAPE))
    actor.set_frustum(moved)
    assert actor.surface is surface
    b = surface.GetBounds()
    c = moved.points_mm.reshape(-1, 3)
    assert b == pytest.approx((c[:, 0].min(), c[:, 0].max(), c[:, 1].min(), c[:, 1].max(),
                               c[:, 2].min(), c[:, 2].max()), abs=1e-6)
    assert actor.sphere.GetCenter() == pytest.approx(tuple(moved.source_mm))
    # a frustum without a finite source, or with no finite vertex: refused, the last one kept
    nan_source = ShotFrustum(np.full(3, np.nan), moved.points_mm, moved.uv_raw, SHAPE, moved.plane_point_mm,
                             moved.plane_normal)
    no_grid = ShotFrustum(moved.source_mm, np.full_like(moved.points_mm, np.nan), moved.uv_raw, SHAPE,
                          moved.plane_point_mm, moved.plane_normal)
    for bad in (nan_source, no_grid):
        with pytest.raises(ValueError):
            actor.set_frustum(bad)
        assert actor.frustum is moved and surface.GetBounds() == pytest.approx(b)
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError):
            actor.set_image(bad)
    assert actor.shows_image
    actor.set_image_visible(False)
    assert not actor.shows_image and actor.ray_actor.GetVisibility()   # the beam stays
    actor.set_image_visible(True)
    actor.set_image(None)
    assert not actor.shows_image
