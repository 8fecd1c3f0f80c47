"""An attenuation grid as the renderers see it: μ per mm on voxel centres and its pose."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry


class DrrError(ValueError):
    """A DRR cannot be rendered; the message says which input to fix."""


@dataclass(frozen=True)
class MuGrid:
    """``mu`` (nz, ny, nx) float32 in 1/mm; ``T_world_voxel`` maps index (i=x, j=y, k=z, 1) to world mm.

    Voxel (i, j, k) is a box centred on its index; μ is zero outside the grid.
    """
    mu: np.ndarray
    T_world_voxel: np.ndarray

    def __post_init__(self):
        mu = np.ascontiguousarray(self.mu, dtype=np.float32)
        T = np.asarray(self.T_world_voxel, float)
        if mu.ndim != 3 or min(mu.shape) < 2:
            raise DrrError(f"the attenuation grid must be 3-D with at least 2 voxels per axis, got {mu.shape}")
        if not np.all(np.isfinite(mu)) or mu.min() < 0:
            raise DrrError("attenuation must be finite and non-negative: check the HU to μ conversion")
        if T.shape != (4, 4) or not np.all(np.isfinite(T)) or abs(np.linalg.det(T[:3, :3])) < 1e-12:
            raise DrrError("T_world_voxel must be an invertible finite 4x4 affine matrix")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "T_world_voxel", T)

    @classmethod
    def from_volume(cls, volume, energy_kev: float | None = None) -> "MuGrid":
        """From a ``core.imaging.volume.Volume``: μ at 70 keV, or at ``energy_kev`` with the water/bone model."""
        mu = volume.mu() if energy_kev is None else volume.mu(energy_kev, bone_model=True)
        return cls(np.clip(mu, 0.0, None), volume.T_world_voxel)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        nz, ny, nx = self.mu.shape
        return nx, ny, nz

    def projection_matrix_index(self, geometry: ConeBeamGeometry) -> np.ndarray:
        """3x4 matrix mapping voxel index (i, j, k, 1) to homogeneous pixel (u, v, 1)."""
        return geometry.projection_matrix @ self.T_world_voxel

    def source_index(self, geometry: ConeBeamGeometry) -> np.ndarray:
        return (np.linalg.inv(self.T_world_voxel) @ np.append(geometry.source_mm, 1.0))[:3]

    def main_axis(self, geometry: ConeBeamGeometry) -> int:
        """Index axis (0=i/x, 1=j/y, 2=k/z) most aligned with the central ray (Joseph's choice)."""
        rows, cols = geometry.shape
        centre = geometry.pixel_to_detector_mm(np.array([(cols - 1) / 2, (rows - 1) / 2]))
        d = centre - geometry.source_mm
        axes = self.T_world_voxel[:3, :3] / np.linalg.norm(self.T_world_voxel[:3, :3], axis=0)
        return int(np.argmax(np.abs(d @ axes)))

    def path_weight(self, geometry: ConeBeamGeometry, axis: int) -> np.ndarray:
        """(rows, cols) ray length in mm between consecutive slices across ``axis``: |d| / |(A⁻¹ d)_axis|.

        d = w + u·su·U + v·sv·V (w = pixel (0, 0) minus the source) is affine in the pixel and U ⟂ V
        (ConeBeamGeometry orthogonalises them), so |d|² and (A⁻¹ d)_axis are sums of a column term
        and a row term: two broadcast additions instead of a (rows, cols, 3) array.
        """
        rows, cols = geometry.shape
        su, sv = geometry.pixel_spacing_mm
        U, V = geometry.detector_u, geometry.detector_v
        w = geometry.detector_origin_mm - geometry.source_mm
        a = np.linalg.inv(self.T_world_voxel[:3, :3])[axis]
        du, dv = np.arange(cols) * su, np.arange(rows) * sv
        f32 = np.float32
        norm2 = (du * (2 * (U @ w) + du)).astype(f32)[None, :] + (w @ w + dv * (2 * (V @ w) + dv)).astype(f32)[:, None]
        step = (du * (a @ U)).astype(f32)[None, :] + (a @ w + dv * (a @ V)).astype(f32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.sqrt(np.maximum(norm2, f32(0), out=norm2), out=norm2)
            out /= np.abs(step, out=step)
        out[~np.isfinite(out)] = 0.0
        return out
