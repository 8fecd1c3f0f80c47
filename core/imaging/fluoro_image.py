"""One X-ray shot as it came from the C-arm: ``FluoroImage`` and ``ImageReadError``.

Pixels kept exactly as stored (raw, distorted), with the acquisition geometry read from
DICOM when present (DESIGN.md). Pixel coordinates ``(u, v)`` = (column, row); the centre
of the top-left pixel is (0, 0). Readers and writers are in ``images`` and ``dicom_read``.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["FluoroImage", "ImageReadError", "MAX_SIDE_PX", "MAX_PIXELS", "MAX_RUN_PIXELS", "check_image_size"]

# The largest flat-panel detectors are 3,000-4,000 px a side: a header claiming more than
# these is damaged, and is refused before any pixel buffer is allocated.
MAX_SIDE_PX = 16384
MAX_PIXELS = 8192 * 8192           # one frame (128 MB at 16 bit)
MAX_RUN_PIXELS = 4 * MAX_PIXELS    # all frames of a multi-frame run read at once


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and what to do."""


def check_image_size(name: str, rows: int, columns: int, frames: int = 1) -> None:
    """Refuse, from the header's figures, an image too large to be an X-ray shot (memory guard)."""
    if rows < 1 or columns < 1:
        raise ImageReadError(f"{name}: the header gives a {columns} x {rows} px image: the file is damaged")
    if max(rows, columns) > MAX_SIDE_PX or rows * columns > MAX_PIXELS:
        raise ImageReadError(f"{name}: the header claims {columns} x {rows} px, more than any C-arm "
                             f"detector (at most {MAX_SIDE_PX} px a side): the file is damaged")
    if frames > 1 and rows * columns * frames > MAX_RUN_PIXELS:
        raise ImageReadError(f"{name}: the header claims {frames} frames of {columns} x {rows} px, "
                             "too many to read at once: the file is damaged, or open one frame")


@dataclass(frozen=True)
class FluoroImage:
    """One X-ray shot, raw as stored.

    ``pixels``: 2-D unsigned integer array (rows, cols) exactly as stored.
    ``photometric``: "MONOCHROME2" (larger = brighter) or "MONOCHROME1"
    (larger = darker). In fluoroscopy, dense objects (bone, steel) attenuate
    the beam and show DARK in MONOCHROME2.
    ``pixel_spacing_mm``: (column spacing, row spacing) at the detector, i.e.
    DICOM Imager Pixel Spacing (0018,1164) reversed (DICOM lists row first);
    None when unknown. ``sid_mm``: Distance Source to Detector (0018,1110).
    ``primary_angle_deg`` / ``secondary_angle_deg``: Positioner Primary /
    Secondary Angle (0018,1510/1511). ``view``: "ap", "lat" or None.
    """
    pixels: np.ndarray
    photometric: str = "MONOCHROME2"
    pixel_spacing_mm: tuple[float, float] | None = None
    sid_mm: float | None = None
    primary_angle_deg: float | None = None
    secondary_angle_deg: float | None = None
    view: str | None = None
    acquired_at: _dt.datetime | None = None
    source: str = ""
    bits_stored: int = 16
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        p = np.asarray(self.pixels)
        if p.ndim != 2 or p.size == 0:
            raise ImageReadError(f"an image must be a non-empty 2-D array, got shape {p.shape}")
        if not np.issubdtype(p.dtype, np.integer):
            raise ImageReadError(f"image pixels must be integers (as stored), got {p.dtype}")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ImageReadError(f"unsupported photometric interpretation {self.photometric!r}: "
                                 "only MONOCHROME1/2 fluoroscopy images are supported")
        if self.view not in (None, "ap", "lat"):
            raise ImageReadError(f"view must be 'ap', 'lat' or None, got {self.view!r}")
        object.__setattr__(self, "pixels", p)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)

    def display(self) -> np.ndarray:
        """float32 array where larger = brighter on screen (MONOCHROME1 inverted). Padding
        pixels (``extra["padding"]``: the inclusive stored range of DICOM Pixel Padding) are
        shown as 0, no signal, as the unexposed surround of a field is: a vendor that pads
        with a value that would display white must not make the surround look exposed."""
        a = self.pixels.astype(np.float32)
        if self.photometric == "MONOCHROME1":
            a = float((1 << self.bits_stored) - 1) - a
        pad = self.extra.get("padding")
        if pad is not None:
            a[(self.pixels >= pad[0]) & (self.pixels <= pad[1])] = 0.0
        return a

    def density(self) -> np.ndarray:
        """float32 array where denser (more attenuating) = larger."""
        return -self.display()

    def with_view(self, view: str | None) -> "FluoroImage":
        return replace(self, view=view)
