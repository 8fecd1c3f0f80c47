"""What registration compares against: one calibrated shot as line integrals on its ideal pixel grid.

A shot's raw pixels become ``-log(I)`` (MONOCHROME2: dense is dark; Beer-Lambert,
so the image is ∫μ dl up to an offset and a gain, which NCC ignores), resampled onto
the ideal (distortion-free) grid of its pinhole when the view has a distortion, so a
DRR through the same ``ConeBeamGeometry`` lines up pixel for pixel. Geometry is in the
calibration frame (the cage frame for a ``CageCalibration``, the room in the simulator).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.linalg

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import GeometryError
from core.registration.errors import RegistrationError

__all__ = ["ShotView", "geometry_from_projection", "views_from_calibration", "line_integral_image",
           "suppress_metal_blobs"]

METAL_BLOB_MM = 9.0          # at the detector: a 4 mm cage ball magnified up to ~2x, with its blur
METAL_LINE_INTEGRAL = 1.0    # a steel ball adds ~3.6 (4 mm at 0.9/mm); a bone edge over its
                             # surroundings well under 1


def line_integral_image(pixels, photometric: str = "MONOCHROME2") -> np.ndarray:
    """float32 ``-log(I + 1)`` of raw detector values (MONOCHROME1 is inverted first)."""
    a = np.asarray(pixels)
    if a.ndim != 2 or min(a.shape) < 16:
        raise RegistrationError(f"a shot must be a 2-D image of at least 16x16 pixels, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
        raise RegistrationError("the shot's pixels must be finite numbers")
    a = a.astype(np.float32)
    if a.min() < 0:
        raise RegistrationError("raw detector values must be non-negative (give the stored pixels, not a log)")
    if photometric == "MONOCHROME1":
        a = a.max() - a
    elif photometric != "MONOCHROME2":
        raise RegistrationError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    return -np.log(a + 1.0)


def suppress_metal_blobs(image: np.ndarray, blob_px: float) -> np.ndarray:
    """The image with small dense blobs (cage balls) replaced by their surroundings.

    A grey opening with a disc wider than a ball removes the balls; where the image
    exceeds its opening by more than ``METAL_LINE_INTEGRAL`` (a ball, not bone: the top-hat
    of a cortex is far smaller) it takes the opening's value, grown by 2 px for the blur.
    """
    k = int(np.ceil(blob_px)) | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(image, cv2.MORPH_OPEN, disc)
    mask = ((image - opened) > METAL_LINE_INTEGRAL).astype(np.uint8)
    if not mask.any():
        return image
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    out = image.copy()
    out[mask] = opened[mask]
    return out


@dataclass(frozen=True)
class ShotView:
    """One shot for registration: ``image`` (rows, cols) line integrals on the ideal grid of ``geometry``."""
    name: str
    image: np.ndarray
    geometry: ConeBeamGeometry

    def __post_init__(self):
        img = np.asarray(self.image, np.float32)
        if not isinstance(self.geometry, ConeBeamGeometry):
            raise RegistrationError(f"view {self.name}: geometry must be a ConeBeamGeometry")
        if img.shape != tuple(self.geometry.shape):
            raise RegistrationError(f"view {self.name}: image {img.shape} and detector {self.geometry.shape} "
                                    "differ in size")
        if not np.all(np.isfinite(img)):
            raise RegistrationError(f"view {self.name}: the image has non-finite values")
        object.__setattr__(self, "image", img)

    @classmethod
    def from_raw(cls, name, pixels, geometry: ConeBeamGeometry, distortion=None,
                 photometric: str = "MONOCHROME2") -> "ShotView":
        """From stored raw pixels; ``distortion`` (``ideal_to_raw``) resamples them onto the ideal grid.
        Cage balls are suppressed (``suppress_metal_blobs``): they are in every shot, not in the CT."""
        img = line_integral_image(pixels, photometric)
        img = suppress_metal_blobs(img, METAL_BLOB_MM / min(geometry.pixel_spacing_mm))
        if distortion is not None:
            rows, cols = img.shape
            vv, uu = np.mgrid[0:rows, 0:cols].astype(float)
            raw = distortion.ideal_to_raw(np.stack([uu.ravel(), vv.ravel()], 1)).reshape(rows, cols, 2)
            raw = np.nan_to_num(raw, nan=-10.0).astype(np.float32)
            img = cv2.remap(img, raw[..., 0].copy(), raw[..., 1].copy(), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        return cls(name, img, geometry)


def geometry_from_projection(P, shape, in_front_mm, sid_mm: float = 1000.0) -> ConeBeamGeometry:
    """A ``ConeBeamGeometry`` with projection ``P`` (3x4, ideal pixels), detector at ``sid_mm``.

    P's sign is fixed by ``in_front_mm``, a point between source and detector (the cage);
    then ``P = K [R | -R C]`` (RQ of its left 3x3, K with a positive diagonal; R may be a
    reflection: a detector read from behind): the source is C, the detector the plane at
    ``sid_mm`` along the viewing axis R[2], with spacing ``sid_mm / f``. The skew of K (zero
    for a real detector, tiny for a DLT) is dropped.
    """
    P = np.asarray(P, float)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise RegistrationError(f"a projection must be a finite 3x4 matrix, got shape {P.shape}")
    M = P[:, :3]
    if not np.isfinite(np.linalg.cond(M)) or np.linalg.cond(M) > 1e12:
        raise RegistrationError("the projection matrix is singular: re-run the calibration")
    front = np.asarray(in_front_mm, float)
    if front.shape != (3,) or not np.all(np.isfinite(front)):
        raise RegistrationError("in_front_mm must be a finite 3-vector")
    if P[2, :3] @ front + P[2, 3] < 0:
        P, M = -P, -M
    K, R = scipy.linalg.rq(M)
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R
    K = K / K[2, 2]
    C = -np.linalg.solve(M, P[:, 3])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    origin = C + sid_mm * (R.T @ np.array([-cx / fx, -cy / fy, 1.0]))
    try:
        return ConeBeamGeometry(C, origin, R[0], R[1], (sid_mm / fx, sid_mm / fy), tuple(shape))
    except GeometryError as e:
        raise RegistrationError(f"the projection gives no usable detector: {e}") from None


def views_from_calibration(calibration, images: dict, sid_mm: float = 1000.0) -> list[ShotView]:
    """The AP and LAT ``ShotView`` of a ``CageCalibration`` and its raw images {"ap": pixels, "lat": pixels}."""
    views = []
    for name in ("ap", "lat"):
        if name not in images:
            raise RegistrationError(f"the {name.upper()} image is missing")
        vc = calibration.views[name]
        px = np.asarray(images[name])
        if px.shape != tuple(vc.image_shape):
            raise RegistrationError(f"the {name.upper()} image is {px.shape} but was calibrated at {vc.image_shape}")
        front = np.mean([p.origin_mm for p in vc.planes], axis=0)      # the cage: in the beam
        geo = geometry_from_projection(vc.P, vc.image_shape, front, sid_mm)
        views.append(ShotView.from_raw(name, px, geo, vc.distortion))
    return views
