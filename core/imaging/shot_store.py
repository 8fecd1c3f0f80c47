"""Where each earlier shot's full image comes from, so that a long case does not keep
hundreds of 2 MB shots in memory (the Shots strip keeps thumbnails only).

``ShotStore`` holds, per view, a list of entries: the image's metadata (every
``FluoroImage`` field but the pixels: a few hundred bytes), the pixels' shape, dtype
and CRC-32, and where the pixels can be read again:

- ``"file"``: the file it was opened from (and the frame of a multi-frame DICOM, read
  alone with ``core.imaging.dicom_read.read_dicom(path, frame)``: the other frames are not decoded);
- ``"saved"``: the DICOM file the session wrote an acquired shot to;
- ``"spill"``: an image with no file (not saved, or dropped from memory) is written
  with ``np.save`` into a private folder (``tempfile.mkdtemp``, mode 0700), atomically,
  removed by ``close()`` or at exit.

Only the pixels are read back: the metadata kept in memory is exact, so the rounding of
the DICOM writer (``%.6g`` angles and spacing, no ``source``/``extra``) does not matter.
The CRC-32 of the pixels catches a file that was replaced or damaged since.

A small LRU keeps the last ``keep`` full images of each view. Default 3: the shot on
screen (shared with the session, so it costs nothing more) and the two before it, what a
surgeon flips between to compare before/after; anything older is read back in ~2 ms (a
spilled 1024² shot), ~7 ms (a 1024² DICOM) to ~45 ms (one frame of an 80 MB 40-frame run:
the file is read, only that frame is decoded; all 40 take ~105 ms), which a click does
not notice. Spilling a 1024² shot (CRC, np.save, fsync) takes ~7 ms. 2 views × 3 × 2 MiB = 12.6 MB for
1024² 16-bit shots; with 200 thumbnails (~35 kB each as screen pixmaps) under 20 MB.
No Qt: the thumbnail widget and the viewer tools use it, a script or a test the same way.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import shutil
import tempfile
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.formats.files import write_atomic
from core.imaging.fluoro_image import FluoroImage, ImageReadError

__all__ = ["ShotStore", "ShotMissingError", "DEFAULT_KEEP"]

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3


class ShotMissingError(ImageReadError):
    """An earlier shot's pixels cannot be read back; one line ending with the file's path,
    e.g. "the file was moved or deleted: /data/case/ap-003.dcm"."""


@dataclass
class _Entry:
    meta: dict                   # FluoroImage fields except pixels
    shape: tuple
    dtype: str
    crc: int
    kind: str                    # "file" | "saved" | "spill" | "memory"
    path: str | None = None
    frame: int | None = None
    pinned: FluoroImage | None = None   # only when it could not be spilled
    missing: str | None = None          # why it cannot be read back, once seen


def _crc(pixels: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(pixels).data)


def _meta(image: FluoroImage) -> dict:
    return {f.name: getattr(image, f.name) for f in dataclasses.fields(image) if f.name != "pixels"}


class ShotStore:
    """Per-view entries with their image source and an LRU of the last ``keep`` images per view."""

    def __init__(self, views=("ap", "lat"), keep: int = DEFAULT_KEEP, spill_dir=None):
        if int(keep) < 1:
            raise ValueError(f"keep must be at least 1 image per view, got {keep}")
        self.keep = int(keep)
        self._entries: dict[str, list[_Entry]] = {v: [] for v in views}
        self._lru: dict[str, OrderedDict] = {v: OrderedDict() for v in views}
        self._spill_root = Path(spill_dir) if spill_dir is not None else None
        self._spill_dir: Path | None = None
        self._finalizer = None

    # -- adding ---------------------------------------------------------------------
    def add(self, view: str, image: FluoroImage, path=None, frame: int | None = None,
            saved: bool = False) -> int:
        """Append ``image``; ``path`` (+ ``frame``) is where its pixels can be read again
        (``saved=True``: the session's own DICOM copy). Without a path it is spilled to
        the private folder. Returns its index in the view's list."""
        entries = self._entries[self._check(view)]
        if not isinstance(image, FluoroImage):
            raise TypeError(f"a shot must be a FluoroImage, got {type(image).__name__}")
        e = _Entry(meta=_meta(image), shape=tuple(image.pixels.shape), dtype=image.pixels.dtype.str,
                   crc=_crc(image.pixels), kind="file" if path else "spill",
                   path=os.fspath(path) if path else None, frame=None if frame is None else int(frame))
        if saved:
            e.kind = "saved"
        index = len(entries)
        if e.kind == "spill":
            try:
                e.path = str(self._spill(view, index, image.pixels))
            except OSError as err:
                log.warning("%s shot %d stays in memory: cannot write it to %s (%s)",
                            view.upper(), index + 1, self._spill_root or tempfile.gettempdir(),
                            err.strerror or err)
                e.kind, e.pinned = "memory", image
        entries.append(e)
        self._remember(view, index, image)
        return index

    # -- reading back -----------------------------------------------------------------
    def count(self, view: str) -> int:
        return len(self._entries[self._check(view)])

    def get(self, view: str, index: int) -> FluoroImage:
        """The full image of entry ``index``: from the LRU, else read back and checked.
        IndexError for no such entry; ShotMissingError (one line) when it cannot be read."""
        e = self.entry(view, index)
        lru = self._lru[view]
        if index in lru:
            lru.move_to_end(index)
            return lru[index]
        if e.pinned is not None:
            image = e.pinned
        else:
            try:
                pixels = self._read(e)
            except ShotMissingError as err:
                e.missing = str(err)
                raise
            image = FluoroImage(pixels=pixels, **e.meta)
            e.missing = None
        self._remember(view, index, image)
        return image

    def entry(self, view: str, index: int) -> _Entry:
        entries = self._entries[self._check(view)]
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(entries):
            raise IndexError(f"no {view.upper()} shot #{index + 1 if isinstance(index, (int, np.integer)) else index}"
                             f" in the strip ({len(entries)} shots)")
        return entries[index]

    def source(self, view: str, index: int) -> tuple[str, str | None, int | None]:
        """(kind, path, frame) of entry ``index``: where its pixels come from."""
        e = self.entry(view, index)
        return e.kind, e.path, e.frame

    def missing(self, view: str, index: int) -> str | None:
        """Why entry ``index`` could not be read back the last time, else None."""
        return self.entry(view, index).missing

    def held(self) -> list[FluoroImage]:
        """Every full image this store references (LRU and the rare pinned ones)."""
        out = {id(im): im for lru in self._lru.values() for im in lru.values()}
        for entries in self._entries.values():
            out.update({id(e.pinned): e.pinned for e in entries if e.pinned is not None})
        return list(out.values())

    def held_bytes(self) -> int:
        """Bytes of pixel arrays held (full images, plus any arrays inside their metadata)."""
        total = 0
        for im in self.held():
            total += im.pixels.nbytes
        for entries in self._entries.values():
            for e in entries:
                total += sum(v.nbytes for v in e.meta.get("extra", {}).values() if isinstance(v, np.ndarray))
        return total

    def close(self) -> None:
        """Forget the images and remove the private spill folder."""
        for lru in self._lru.values():
            lru.clear()
        if self._finalizer is not None:
            self._finalizer()

    # -- internals ------------------------------------------------------------------
    def _check(self, view: str) -> str:
        if view not in self._entries:
            raise ValueError(f"unknown view {view!r}: use {' or '.join(map(repr, self._entries))}")
        return view

    def _remember(self, view: str, index: int, image: FluoroImage) -> None:
        lru = self._lru[view]
        lru[index] = image
        lru.move_to_end(index)
        while len(lru) > self.keep:
            lru.popitem(last=False)

    def _spill(self, view: str, index: int, pixels: np.ndarray) -> Path:
        if self._spill_dir is None:
            root = self._spill_root
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix="fluoronav-shots-", dir=root))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._spill_dir), True)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(pixels), allow_pickle=False)
        return write_atomic(self._spill_dir / f"{view}-{index + 1:05d}.npy", buf.getvalue())

    def _read(self, e: _Entry) -> np.ndarray:
        name = os.path.basename(e.path or "")
        what = {"spill": "the shots-cache file", "saved": "the session's file"}.get(e.kind, "the file")
        if not e.path or not os.path.isfile(e.path):
            raise ShotMissingError(f"{what} was moved or deleted: {e.path}")
        try:
            if e.kind == "spill":
                pixels = np.load(e.path, allow_pickle=False)
            else:
                from core.imaging.dicom_read import read_dicom
                from core.imaging.images import read_image
                pixels = (read_dicom(e.path, frame=e.frame) if e.frame is not None else read_image(e.path)).pixels
        except (ImageReadError, ValueError, OSError, EOFError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ShotMissingError(f"{what} is damaged ({detail.replace(e.path, name)}): {e.path}") from None
        pixels = np.asarray(pixels)
        if pixels.shape == e.shape and pixels.dtype.str != e.dtype and pixels.dtype.kind in "ui":
            pixels = pixels.astype(e.dtype)   # e.g. a uint32 shot saved as 16-bit DICOM
        if pixels.shape != e.shape or pixels.dtype.str != e.dtype or _crc(pixels) != e.crc:
            raise ShotMissingError(f"{what} was changed since (other pixels): {e.path}")
        return pixels
