"""A strip of thumbnails of earlier shots, one row per view, to bring one back by clicking.

Thin widget: it renders the session's shot history (``app.state.shots.ShotHistory``, which
owns the shots, the current one and their full images) as a thumbnail and a label per
entry, and keeps nothing else. It emits ``shot_activated(view, index)``; what "bring back"
means (making it the session's current image) is decided by ``app/viewer_tools.py``. An
entry whose image cannot be read back any more is greyed and crossed out, its tooltip
says why.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem, QScrollArea,
                               QVBoxLayout, QWidget)

__all__ = ["ThumbnailStrip", "thumbnail_array", "THUMB_PX"]

THUMB_PX = 80
_MISSING_ROLE = Qt.ItemDataRole.UserRole + 1     # why the entry cannot be read back, or None
_TOOLTIP_ROLE = Qt.ItemDataRole.UserRole + 2     # its tooltip before it was marked missing


def thumbnail_array(image, size: int = THUMB_PX) -> np.ndarray:
    """uint8 (h, w) preview, longest side <= ``size``, brighter = less dense, 1-99 % levels."""
    raw = image.pixels if hasattr(image, "display") else np.asarray(image)
    step = max(1, int(np.ceil(max(raw.shape) / size)))
    small = raw[::step, ::step].astype(np.float32)        # subsample first: no full-size float copy
    if getattr(image, "photometric", "") == "MONOCHROME1":
        small = float((1 << image.bits_stored) - 1) - small
    lo, hi = np.percentile(small, [1.0, 99.0])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.ascontiguousarray(np.clip((small - lo) * scale, 0, 255).astype(np.uint8))


def _icon(image) -> QIcon:
    a = thumbnail_array(image)
    q = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(q))


def _missing_icon(icon: QIcon) -> QIcon:
    """The thumbnail dimmed, crossed in red, with "missing" across it."""
    pm = icon.pixmap(QSize(THUMB_PX, THUMB_PX), QIcon.Mode.Disabled)
    out = QPixmap(pm.size())
    out.fill(QColor(0, 0, 0))
    p = QPainter(out)
    p.setOpacity(0.45)
    p.drawPixmap(0, 0, pm)
    p.setOpacity(1.0)
    w, h = out.width(), out.height()
    p.setPen(QPen(QColor(220, 40, 40), 3))
    p.drawLine(4, 4, w - 5, h - 5)
    p.drawLine(w - 5, 4, 4, h - 5)
    band = QRect(0, h // 2 - 10, w, 20)
    p.fillRect(band, QBrush(QColor(0, 0, 0, 200)))
    font = QFont(p.font())
    font.setBold(True)
    font.setPixelSize(13)
    p.setFont(font)
    p.setPen(QColor(255, 90, 90))
    p.drawText(band, Qt.AlignmentFlag.AlignCenter, "MISSING")
    p.end()
    return QIcon(out)


class ThumbnailStrip(QWidget):
    """Rows of thumbnails per view (``views``); ``shot_activated(view, index)`` on a click."""

    shot_activated = Signal(str, int)

    def __init__(self, views=("ap", "lat"), parent=None):
        super().__init__(parent)
        self.setObjectName("thumbnail_strip")
        self.lists: dict[str, QListWidget] = {}
        self._icons: dict[str, list[QIcon]] = {v: [] for v in views}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self, objectName="thumbnail_rows", widgetResizable=True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)   # each row scrolls itself
        outer.addWidget(scroll)
        rows = QWidget(scroll)
        scroll.setWidget(rows)
        # the views side by side, one row each (the AP shots under the AP viewer, the LAT
        # under the LAT): the dock needs one thumbnail's height, not two
        layout = QHBoxLayout(rows)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(10)
        for view in views:
            row = QHBoxLayout()
            row.addWidget(QLabel(view.upper(), objectName="thumbnail_view_label", minimumWidth=40))
            lst = QListWidget(objectName=f"thumbnails_{view}")
            lst.setViewMode(QListView.ViewMode.IconMode)
            lst.setFlow(QListView.Flow.LeftToRight)
            lst.setWrapping(False)
            lst.setMovement(QListView.Movement.Static)
            lst.setIconSize(QSize(THUMB_PX, THUMB_PX))
            lst.setFixedHeight(THUMB_PX + 40)
            lst.setSpacing(4)           # labels of neighbours apart
            lst.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            lst.itemClicked.connect(lambda item, v=view: self._clicked(v, item))
            lst.setToolTip(f"Earlier {view.upper()} shots: click one to show it again")
            row.addWidget(lst, 1)
            layout.addLayout(row)
            self.lists[view] = lst

    def add(self, view: str, image, label: str, tooltip: str = "") -> int:
        """Append an entry drawn from ``image`` (not kept); returns its index in the view's row."""
        lst = self._list(view)
        icon = _icon(image)
        item = QListWidgetItem(icon, label)
        item.setToolTip(tooltip or label)
        item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
        lst.addItem(item)
        self._icons[view].append(icon)
        lst.scrollToItem(item)
        return lst.count() - 1

    def count(self, view: str) -> int:
        return self._list(view).count()

    def set_missing(self, view: str, index: int, reason: str | None) -> None:
        """Grey and cross out entry ``index`` with ``reason`` as its tooltip (None: restore it)."""
        self._check_index(view, index)
        item = self._list(view).item(index)
        was = item.data(_MISSING_ROLE)
        if (reason or None) == (was or None):
            return
        if was is None:
            item.setData(_TOOLTIP_ROLE, item.toolTip())
        if reason:
            item.setIcon(_missing_icon(self._icons[view][index]))
            item.setForeground(QBrush(QColor(150, 150, 150)))
            item.setToolTip(f"Cannot show this shot again: {reason}")
        else:
            item.setIcon(self._icons[view][index])
            item.setData(Qt.ItemDataRole.ForegroundRole, None)
            item.setToolTip(item.data(_TOOLTIP_ROLE) or item.text())
        item.setData(_MISSING_ROLE, reason or None)

    def is_missing(self, view: str, index: int) -> bool:
        self._check_index(view, index)
        return bool(self._list(view).item(index).data(_MISSING_ROLE))

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
        self._check_index(view, index)
        self._clicked(view, self._list(view).item(index))

    def _clicked(self, view: str, item: QListWidgetItem) -> None:
        index = self._list(view).row(item)
        self.set_current(view, index)
        self.shot_activated.emit(view, index)

    def _check(self, view: str) -> str:
        if view not in self.lists:
            raise ValueError(f"unknown view {view!r}: use {' or '.join(map(repr, self.lists))}")
        return view

    def _check_index(self, view: str, index: int) -> None:
        n = self.count(view)
        if not isinstance(index, int) or not 0 <= index < n:
            raise IndexError(f"no {view.upper()} shot #{index + 1 if isinstance(index, int) else index} "
                             f"in the strip ({n} shots)")

    def _list(self, view: str) -> QListWidget:
        return self.lists[self._check(view)]
