"""The bone surface of a CT and its simplified twins, and the 3D view's coarse frames.

A ball of bone of known radius: the surface must lie on it; the thinned meshes must
keep to their triangle budget and the ball's extent; the interactive frame draws the
coarse twin and the full-detail one follows once the view is still.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.imaging.volume import Volume
from widgets.scene.anatomy import (COARSE_TRIANGLES, DETAIL_TRIANGLES, BoneMesh, bone_surface,
                                   show_bone, simplified_mesh)
from widgets.scene.view import STILL_AFTER_MS, SceneView, is_software_renderer

RADIUS_MM = 30.0
CENTRE_MM = np.array([10.0, -5.0, 20.0])


def bone_ball(spacing=(1.0, 1.0, 1.0), shape=(90, 90, 90)) -> Volume:
    """Water (0 HU) with a ball of 1000 HU; voxel (0,0,0) at the world origin,
    so the ball's centre in world mm is ``CENTRE_MM`` + the grid's middle."""
    nz, ny, nx = shape
    z, y, x = np.mgrid[:nz, :ny, :nx].astype(np.float32)
    mid = np.array([(nx - 1) / 2 * spacing[0], (ny - 1) / 2 * spacing[1], (nz - 1) / 2 * spacing[2]])
    c = mid + CENTRE_MM
    r = np.sqrt((x * spacing[0] - c[0]) ** 2 + (y * spacing[1] - c[1]) ** 2 + (z * spacing[2] - c[2]) ** 2)
    hu = np.where(r <= RADIUS_MM, 1000.0, 0.0).astype(np.float32)
    return Volume(hu, spacing), c


def test_bone_surface_lies_on_the_ball_in_world_mm():
    vol, centre = bone_ball()
    mesh = bone_surface(vol, hu=500.0, step_mm=2.0, target_reduction=0.5)
    r = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert len(mesh) > 500
    # the iso-surface of a block-averaged, smoothed, clustered ball: within a bin of the truth
    assert abs(np.median(r) - RADIUS_MM) < 1.0 and np.abs(r - RADIUS_MM).max() < 3.0
    assert mesh.triangles.max() < len(mesh.vertices) and mesh.triangles.min() >= 0


def test_no_bone_is_a_clear_error():
    vol = Volume(np.zeros((20, 20, 20), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no bone above"):
        bone_surface(vol)
    with pytest.raises(ValueError, match="step_mm"):
        bone_surface(bone_ball()[0], step_mm=0.0)


@pytest.mark.parametrize("budget", [300, 1500])
def test_simplified_mesh_keeps_to_the_budget_and_the_shape(budget):
    vol, centre = bone_ball()
    mesh = bone_surface(vol, hu=500.0, step_mm=1.0, target_reduction=0.0)
    assert len(mesh) > 4 * budget
    small = simplified_mesh(mesh, budget)
    assert 0.8 * budget <= len(small) <= 1.2 * budget
    r = np.linalg.norm(small.vertices - centre, axis=1)
    bin_mm = 2 * np.pi * RADIUS_MM / np.sqrt(budget / 2)   # about one bin on the ball
    assert abs(np.median(r) - RADIUS_MM) < 0.25 * bin_mm
    assert np.allclose(small.vertices.min(0), mesh.vertices.min(0), atol=bin_mm)
    assert np.allclose(small.vertices.max(0), mesh.vertices.max(0), atol=bin_mm)


def test_simplified_mesh_of_a_small_mesh_is_itself():
    tri = BoneMesh(np.eye(3), np.array([[0, 1, 2]]))
    assert simplified_mesh(tri, 10) is tri


def test_software_renderer_is_recognised_from_the_opengl_report():
    class Window:
        def __init__(self, text):
            self.text = text

        def ReportCapabilities(self):
            return self.text
    assert is_software_renderer(Window("OpenGL vendor string:  Mesa\nOpenGL renderer string:  llvmpipe (LLVM 15.0.6, 256 bits)\n"))
    assert not is_software_renderer(Window("OpenGL vendor string:  NVIDIA Corporation\n"
                                           "OpenGL renderer string:  NVIDIA H100/PCIe/SSE2\nllvmpipe is not it"))
    assert not is_software_renderer(Window(""))


@pytest.mark.gui
def test_interactive_frames_draw_the_coarse_bone_then_full_detail(qtbot):
    vol, _ = bone_ball()
    mesh = bone_surface(vol, hu=500.0, step_mm=1.0, target_reduction=0.0)
    assert len(mesh) > COARSE_TRIANGLES   # else the twin would be the mesh itself
    view = SceneView()
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    qtbot.waitExposed(view)
    show_bone(view, mesh)
    fine, coarse = view.actor("bone"), view._coarse["bone"]
    n_fine = fine.GetMapper().GetInputAlgorithm().GetInput().GetNumberOfPolys()
    n_coarse = coarse.GetMapper().GetInputAlgorithm().GetInput().GetNumberOfPolys()
    assert n_fine <= len(mesh) and n_fine <= 1.2 * DETAIL_TRIANGLES
    assert 0.8 * COARSE_TRIANGLES <= n_coarse <= 1.2 * COARSE_TRIANGLES
    assert fine.GetVisibility() and not coarse.GetVisibility()

    assert view.renderer.GetUseOIT()            # full detail: exact translucency
    view.render(interactive=True)
    assert view.showing_coarse and coarse.GetVisibility() and not fine.GetVisibility()
    assert not view.renderer.GetUseOIT()        # interactive: one blending pass
    qtbot.waitUntil(lambda: not view.showing_coarse, timeout=STILL_AFTER_MS + 2000)
    assert fine.GetVisibility() and not coarse.GetVisibility() and view.renderer.GetUseOIT()

    # hidden stays hidden through interactive frames; a replaced prop takes its twin along
    view.set_visible("bone", False)
    view.render(interactive=True)
    assert not fine.GetVisibility() and not coarse.GetVisibility()
    view.render()
    assert not fine.GetVisibility() and not coarse.GetVisibility()
    view.set_visible("bone", True)
    assert fine.GetVisibility()
    view.remove_actor("bone")
    assert "bone" not in view._coarse and view.actor_names() == []
    with pytest.raises(KeyError, match="no prop 'bone'"):
        view.set_visible("bone", True)
    view.shutdown()
