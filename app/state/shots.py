"""The shot history: which shots exist per view, which one is on screen, where each one's
full image comes from. Qt-free, evented (psygnal), owned by the session (``Session.shots``).

The full images live in a ``core.imaging.shot_store.ShotStore`` (the file each came from,
the session's DICOM copy or a spilled copy, and an LRU of the last few), so a case of
hundreds of 2 MB shots stays small; the Shots strip renders thumbnails from the signals.
"""
from __future__ import annotations

from dataclasses import dataclass

from psygnal import Signal

from core.imaging.fluoro_image import FluoroImage
from core.imaging.shot_store import ShotMissingError, ShotStore

__all__ = ["ShotHistory", "ShotMissingError"]


@dataclass
class _Shot:
    label: str
    tooltip: str
    missing: str | None = None


class ShotHistory:
    """Per view, the shots in the order they came, and the index of the one on screen (-1:
    none). Signals: ``added(view, index, image)`` (the image, for a thumbnail: do not keep
    it), ``current_changed(view, index)``, ``missing_changed(view, index, reason)`` (reason
    None: it can be read back again)."""

    added = Signal(str, int, object)
    current_changed = Signal(str, int)
    missing_changed = Signal(str, int, object)

    def __init__(self, views=("ap", "lat"), store: ShotStore | None = None):
        self.views = tuple(views)
        self.store = store if store is not None else ShotStore(self.views)
        self._shots: dict[str, list[_Shot]] = {v: [] for v in self.views}
        self._current = {v: -1 for v in self.views}

    def add(self, view: str, image: FluoroImage, label: str, tooltip: str = "", path=None,
            frame: int | None = None, saved: bool = False) -> int:
        """Record a shot; ``path`` (+ ``frame``) is the file its pixels can be read back from
        (``saved``: the session's copy); without one the store spills it (``ShotStore.add``).
        Returns its index; it does not become current (``set_current``)."""
        index = self.store.add(self._check(view), image, path=path, frame=frame, saved=saved)
        self._shots[view].append(_Shot(str(label), str(tooltip or label)))
        self.added.emit(view, index, image)
        return index

    def count(self, view: str) -> int:
        return len(self._shots[self._check(view)])

    def label(self, view: str, index: int) -> str:
        return self._shot(view, index).label

    def tooltip(self, view: str, index: int) -> str:
        return self._shot(view, index).tooltip

    def missing(self, view: str, index: int) -> str | None:
        """Why shot ``index`` could not be read back the last time it was asked for, else None."""
        return self._shot(view, index).missing

    def image(self, view: str, index: int) -> FluoroImage:
        """The full image of shot ``index`` (read back when not in memory). IndexError for no
        such shot; ``ShotMissingError`` (one line) when its file is gone or damaged, and the
        shot is marked missing until it can be read again."""
        shot = self._shot(view, index)
        try:
            image = self.store.get(view, index)
        except ShotMissingError as e:
            self._set_missing(view, index, shot, str(e))
            raise
        self._set_missing(view, index, shot, None)
        return image

    def current(self, view: str) -> int:
        return self._current[self._check(view)]

    def set_current(self, view: str, index: int) -> None:
        if index != -1:
            self._shot(view, index)
        if self._current[view] != index:
            self._current[view] = index
            self.current_changed.emit(view, index)

    def close(self) -> None:
        """Forget the images and remove the store's private spill folder."""
        self.store.close()

    def _set_missing(self, view: str, index: int, shot: _Shot, reason: str | None) -> None:
        if (reason or None) != shot.missing:
            shot.missing = reason or None
            self.missing_changed.emit(view, index, shot.missing)

    def _check(self, view: str) -> str:
        if view not in self._shots:
            raise ValueError(f"unknown view {view!r}: use {' or '.join(map(repr, self.views))}")
        return view

    def _shot(self, view: str, index: int) -> _Shot:
        shots = self._shots[self._check(view)]
        if not isinstance(index, int) or not 0 <= index < len(shots):
            raise IndexError(f"no {view.upper()} shot #{index + 1 if isinstance(index, int) else index} "
                             f"({len(shots)} shots)")
        return shots[index]
