"""SceneView: VTK really renders (axes, grid, gradient), named actors, camera presets."""
from __future__ import annotations

import numpy as np
import pytest
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

from widgets.scene.view import BACKGROUND_BOTTOM, CAMERA_PRESETS, SceneView

pytestmark = pytest.mark.gui


@pytest.fixture
def view(module_scene_view):
    yield module_scene_view
    for name in module_scene_view.actor_names():
        module_scene_view.remove_actor(name)
    module_scene_view.camera_preset("overview")


def magenta_sphere(centre_mm, radius_mm=40.0) -> vtkActor:
    src = vtkSphereSource()
    src.SetCenter(*centre_mm)
    src.SetRadius(radius_mm)
    src.SetThetaResolution(24)
    src.SetPhiResolution(24)
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(src.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(1.0, 0.0, 1.0)  # no axis is magenta
    actor.GetProperty().SetAmbient(1.0)
    actor.GetProperty().SetDiffuse(0.0)
    return actor


def magenta_pixels(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 200) & (g < 60) & (b > 200)


def test_empty_scene_is_rendered_not_blank(view):
    rgb = view.grab_rgb()
    assert rgb.shape[2] == 3 and rgb.shape[0] >= 300 and rgb.shape[1] >= 400
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "a rendered gradient + axes + grid has many colours"
    assert rgb.std() > 3.0
    # dark gradient background, never black: the bottom-left corner is near #1b1f24
    corner = rgb[-5, 5].astype(float)
    assert np.abs(corner - 255 * np.array(BACKGROUND_BOTTOM)).max() < 20


def test_actor_appears_where_the_camera_looks_and_goes_away(view):
    view.set_actor("ball", magenta_sphere((0.0, 0.0, 0.0)))
    view.camera_preset("ap")
    mask = magenta_pixels(view.grab_rgb())
    assert mask.sum() > 200
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    # the scene is framed about its centre; the sphere at the origin is inside the middle half
    assert w * 0.2 < cols.mean() < w * 0.8 and h * 0.2 < rows.mean() < h * 0.8
    assert view.actor_names() == ["ball"]
    view.remove_actor("ball")
    assert magenta_pixels(view.grab_rgb()).sum() == 0 and view.actor("ball") is None


def test_set_actor_replaces_the_one_with_the_same_name(view):
    view.camera_preset("ap")
    view.set_actor("ball", magenta_sphere((-120.0, 0.0, 0.0), 20.0))
    left = np.nonzero(magenta_pixels(view.grab_rgb()))[1].mean()
    view.set_actor("ball", magenta_sphere((120.0, 0.0, 0.0), 20.0))
    view.camera_preset("ap")
    right = np.nonzero(magenta_pixels(view.grab_rgb()))[1].mean()
    # seen from the front (camera at -y, head up), patient left (+x) is on screen right
    assert right - left > 50 and view.actor_names() == ["ball"]


@pytest.mark.parametrize("name", list(CAMERA_PRESETS))
def test_camera_presets_look_along_their_axis(view, name):
    view.camera_preset(name)
    cam = view.renderer.GetActiveCamera()
    d = np.subtract(cam.GetPosition(), cam.GetFocalPoint())
    want = np.asarray(CAMERA_PRESETS[name][0], float)
    assert np.dot(d / np.linalg.norm(d), want / np.linalg.norm(want)) == pytest.approx(1.0, abs=1e-6)
    assert np.dot(cam.GetViewUp(), CAMERA_PRESETS[name][1]) == pytest.approx(1.0, abs=1e-6)


def test_unknown_camera_preset(view):
    with pytest.raises(ValueError, match="unknown camera preset"):
        view.camera_preset("oblique")


def test_set_actor_refuses_a_non_prop(view):
    with pytest.raises(TypeError, match="needs a vtkProp"):
        view.set_actor("x", object())


def test_grab_before_show_says_so(qtbot):
    v = SceneView()
    qtbot.addWidget(v)
    with pytest.raises(RuntimeError, match="not shown yet"):
        v.grab_rgb()
