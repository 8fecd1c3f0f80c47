"""One X-ray shot as it came from the C-arm: ``FluoroImage`` and ``ImageReadError``.

Pixels kept exactly as stored (raw, distorted), with the acquisition geometry read from
DICOM when present (DESIGN.md). Pixel coordinates ``(u, v)`` = (column, row); the centre
of the top-left pixel is (0, 0). Readers and writers are in ``images`` and ``dicom_read``.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["FluoroImage", "ImageReadError"]



class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and what to do."""


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
