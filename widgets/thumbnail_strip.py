"""A strip of thumbnails of earlier shots, one row per view, to bring one back by clicking.

Thin widget: it keeps each entry's ``FluoroImage`` (a 1024² 16-bit shot is 2 MB)
and its label, and emits ``shot_activated(view, index)``; what "bring back"
means (making it the session's current image) is decided by ``app/viewer_tools.py``.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

__all__ = ["ThumbnailStrip", "thumbnail_array", "THUMB_PX"]

THUMB_PX = 96


def thumbnail_array(image, size: int = THUMB_PX) -> np.ndarray:
    """uint8 (h, w) preview, longest side <= ``size``, brighter = less dense, 1-99 % levels."""
    a = image.display() if hasattr(image, "display") else np.asarray(image, np.float32)
    step = max(1, int(np.ceil(max(a.shape) / size)))
    small = a[::step, ::step].astype(np.float32)
    lo, hi = np.percentile(small, [1.0, 99.0])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.ascontiguousarray(np.clip((small - lo) * scale, 0, 255).astype(np.uint8))


def _icon(image) -> QIcon:
    a = thumbnail_array(image)
    q = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(q))


class ThumbnailStrip(QWidget):
    """Rows of thumbnails per view (``views``); ``shot_activated(view, index)`` on a click."""

    shot_activated = Signal(str, int)

    def __init__(self, views=("ap", "lat"), parent=None):
        super().__init__(parent)
        self.setObjectName("thumbnail_strip")
        self.lists: dict[str, QListWidget] = {}
        self._images: dict[str, list] = {v: [] for v in views}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        for view in views:
            row = QHBoxLayout()
            row.addWidget(QLabel(view.upper(), objectName="thumbnail_view_label", minimumWidth=40))
            lst = QListWidget(objectName=f"thumbnails_{view}")
            lst.setViewMode(QListView.ViewMode.IconMode)
            lst.setFlow(QListView.Flow.LeftToRight)
            lst.setWrapping(False)
            lst.setMovement(QListView.Movement.Static)
            lst.setIconSize(QSize(THUMB_PX, THUMB_PX))
            lst.setFixedHeight(THUMB_PX + 44)
            lst.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            lst.itemClicked.connect(lambda item, v=view: self._clicked(v, item))
            lst.setToolTip(f"Earlier {view.upper()} shots: click one to show it again")
            row.addWidget(lst, 1)
            layout.addLayout(row)
            self.lists[view] = lst

    def add(self, view: str, image, label: str, tooltip: str = "") -> int:
        """Append a shot; returns its index in the view's row."""
        lst = self._list(view)
        item = QListWidgetItem(_icon(image), label)
        item.setToolTip(tooltip or label)
        item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
        lst.addItem(item)
        self._images[view].append(image)
        lst.scrollToItem(item)
        return lst.count() - 1

    def count(self, view: str) -> int:
        return self._list(view).count()

    def image(self, view: str, index: int):
        images = self._images[self._check(view)]
        if not 0 <= index < len(images):
            raise IndexError(f"no {view.upper()} shot #{index + 1} in the strip ({len(images)} shots)")
        return images[index]

    def label(self, view: str, index: int) -> str:
        return self._list(view).item(index).text()

    def set_current(self, view: str, index: int) -> None:
        """Mark ``index`` as the shot on screen (no signal)."""
        lst = self._list(view)
        lst.blockSignals(True)
        lst.setCurrentRow(index)
        lst.blockSignals(False)

    def current(self, view: str) -> int:
        return self._list(view).currentRow()

    def activate(self, view: str, index: int) -> None:
        """As a click on thumbnail ``index`` does."""
        self.image(view, index)
        self._clicked(view, self._list(view).item(index))

    def _clicked(self, view: str, item: QListWidgetItem) -> None:
        index = self._list(view).row(item)
        self.set_current(view, index)
        self.shot_activated.emit(view, index)

    def _check(self, view: str) -> str:
        if view not in self.lists:
            raise ValueError(f"unknown view {view!r}: use {' or '.join(map(repr, self.lists))}")
        return view

    def _list(self, view: str) -> QListWidget:
        return self.lists[self._check(view)]
