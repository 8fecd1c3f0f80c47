"""Real mouse clicks delivered to a viewer's graphics scene, for the tests and
``fluoronav bench ui`` (the same event path as a surgeon's click)."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtWidgets import QApplication, QGraphicsSceneMouseEvent


def click_scene(viewer, scene_pos: QPointF, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    """A left press + release at an exact (sub-pixel) scene position of ``viewer``."""
    scene = viewer.graphics.scene()
    screen = viewer.graphics.viewport().mapToGlobal(viewer.graphics.mapFromScene(scene_pos))
    for kind in (QEvent.Type.GraphicsSceneMousePress, QEvent.Type.GraphicsSceneMouseRelease):
        ev = QGraphicsSceneMouseEvent(kind)
        ev.setScenePos(scene_pos)
        ev.setScreenPos(screen)
        ev.setButton(Qt.MouseButton.LeftButton)
        ev.setButtons(Qt.MouseButton.LeftButton if kind == QEvent.Type.GraphicsSceneMousePress
                      else Qt.MouseButton.NoButton)
        ev.setModifiers(modifiers)
        QApplication.sendEvent(scene, ev)


def click_pixel(viewer, u: float, v: float, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    """A left click at raw pixel (u, v) of ``viewer`` (through its display transform)."""
    click_scene(viewer, viewer.pixel_to_scene(u, v), modifiers)
