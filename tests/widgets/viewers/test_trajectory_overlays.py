"""A trajectory's name sits off its band: on the side of the entry away from the target,
as the surgeon sees the image (display flips included), above for left, below for right."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from core.imaging.fluoro_image import FluoroImage
from widgets.viewers.fluoro_viewer import FluoroViewer
from widgets.viewers.trajectory_overlays import TrajectoryOverlay

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer(qtbot):
    v = FluoroViewer("ap")
    qtbot.addWidget(v)
    v.resize(600, 600)
    v.set_image(FluoroImage(np.full((256, 256), 30000, np.uint16), pixel_spacing_mm=(0.5, 0.5)))
    v.show()
    qtbot.waitExposed(v)
    return v


def label_side(viewer, overlay, entry) -> tuple[float, float]:
    """(label centre - entry) on screen, in pixels: x > 0 right, y > 0 down."""
    rect = overlay.label.mapRectToDevice(overlay.label.boundingRect())
    e = overlay.label.parentItem().mapToDevice(QPointF(*entry))
    return rect.center().x() - e.x(), rect.center().y() - e.y()


@pytest.mark.parametrize("entry, target, side, want_x, want_y", [
    ((80.0, 120.0), (120.0, 140.0), "right", -1, +1),    # band to the right: name left, below
    ((170.0, 120.0), (130.0, 140.0), "left", +1, -1),    # band to the left: name right, above
])
def test_name_lies_away_from_the_band(viewer, qtbot, entry, target, side, want_x, want_y):
    ov = TrajectoryOverlay(viewer.overlay("trajectories"), label_group=viewer.overlay("labels"))
    ov.update({"entry": entry, "target": target}, "#40c0ff", "L4 " + side, side=side)
    qtbot.wait(20)
    dx, dy = label_side(viewer, ov, entry)
    assert np.sign(dx) == want_x and np.sign(dy) == want_y, (dx, dy)
    # flipped left-right on screen: the band now runs the other way, so does the name
    viewer.set_display_transform(flip_h=True)
    ov.update({"entry": entry, "target": target}, "#40c0ff", "L4 " + side, side=side)
    qtbot.wait(20)
    dx, dy = label_side(viewer, ov, entry)
    assert np.sign(dx) == -want_x and np.sign(dy) == want_y, (dx, dy)


def test_name_of_a_lone_entry_follows_the_side(viewer, qtbot):
    ov = TrajectoryOverlay(viewer.overlay("trajectories"), label_group=viewer.overlay("labels"))
    ov.update({"entry": (128.0, 128.0), "target": None}, "#ffa040", "L5 left", side="left")
    qtbot.wait(20)
    dx, dy = label_side(viewer, ov, (128.0, 128.0))
    assert dx < 0 and dy < 0 and ov.label.isVisible()
    ov.update({"entry": None, "target": None}, "#ffa040", "L5 left", side="left")
    assert not ov.label.isVisible()
