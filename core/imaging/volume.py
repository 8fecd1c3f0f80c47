"""A CT volume in Hounsfield units on a regular grid placed in the world.

Array layout: ``hu[k, j, i]`` = (slice, row, column), i.e. shape (nz, ny, nx).
Index coordinates are ``(i, j, k)`` = (x column, y row, z slice); the centre of
voxel (0, 0, 0) is index (0, 0, 0). ``T_world_voxel`` is the 4x4 affine
``p_world = T_world_voxel @ [i, j, k, 1]``: its 3x3 part is a rotation times
``diag(spacing_mm)`` (DICOM's ImageOrientationPatient/PixelSpacing model), so
its columns are orthogonal with lengths ``spacing_mm``.

Attenuation: ``mu = mu_water(E) * (1 + HU / 1000)``, clipped at 0 (the
definition of the Hounsfield scale, water-equivalent). ``MU_WATER_PER_MM`` =
0.0193/mm is water at 70 keV, about the effective energy of the CT that the HU
come from. At a lower fluoroscopy energy bone attenuates relatively more
(photo-electric effect); ``mu(energy_kev, bone_model=True)`` uses the bilinear
water/bone scaling (Kinahan et al., Med Phys 1998;25:2046): HU <= 0 is an
air-water mix, HU > 0 a water-cortical bone mix whose bone fraction is
HU / ``HU_CORTICAL_70KEV``. Tables: NIST XCOM mass attenuation of liquid water
and of cortical bone (ICRU-44, 1.92 g/cm^3), log-log interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Volume", "VolumeError", "MU_WATER_PER_MM", "mu_water", "mu_bone", "HU_AIR", "HU_CORTICAL_70KEV"]

HU_AIR = -1000.0

# NIST XCOM, water (liquid), total attenuation with coherent scattering, cm^2/g (rho = 1 g/cm^3).
_NIST_WATER_KEV = np.array([30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
_NIST_WATER_CM2_G = np.array([0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505])
_NIST_BONE_CM2_G = np.array([1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480])   # ICRU-44 cortical
_BONE_DENSITY = 1.92


class VolumeError(ValueError):
    """A volume (array, spacing, placement) or a request on it is invalid."""


def _nist(energy_kev, table_cm2_g, density) -> float:
    e = float(energy_kev)
    if not np.isfinite(e) or not (_NIST_WATER_KEV[0] <= e <= _NIST_WATER_KEV[-1]):
        raise VolumeError(f"energy {energy_kev} keV is outside the tabulated 30-150 keV range")
    log_mu = np.interp(np.log(e), np.log(_NIST_WATER_KEV), np.log(table_cm2_g))
    return float(np.exp(log_mu)) * density / 10.0  # cm^-1 -> mm^-1


def mu_water(energy_kev: float = 70.0) -> float:
    """Linear attenuation of water in 1/mm at a photon energy (NIST XCOM, log-log interpolation)."""
    return _nist(energy_kev, _NIST_WATER_CM2_G, 1.0)


def mu_bone(energy_kev: float = 70.0) -> float:
    """Linear attenuation of cortical bone (ICRU-44, 1.92 g/cm^3) in 1/mm (NIST XCOM)."""
    return _nist(energy_kev, _NIST_BONE_CM2_G, _BONE_DENSITY)


MU_WATER_PER_MM = mu_water(70.0)
HU_CORTICAL_70KEV = 1000.0 * (mu_bone(70.0) / MU_WATER_PER_MM - 1.0)   # ~1600 HU


def _as_points(points, name: str) -> tuple[np.ndarray, tuple]:
    a = np.asarray(points, dtype=float)
    if a.ndim == 0 or a.shape[-1] != 3:
        raise VolumeError(f"{name} must have shape (..., 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise VolumeError(f"{name} has non-finite values")
    return a.reshape(-1, 3), a.shape[:-1]


@dataclass(frozen=True, eq=False)
class Volume:
    """CT grid in HU; see the module docstring for the conventions."""
    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    T_world_voxel: np.ndarray | None = None  # None: axis-aligned, voxel (0,0,0) at the world origin

    def __post_init__(self):
        hu = np.asarray(self.hu)
        if hu.ndim != 3 or min(hu.shape) < 1:
            raise VolumeError(f"hu must be a 3-D (nz, ny, nx) array, got shape {hu.shape}")
        if hu.dtype not in (np.float32, np.int16):
            raise VolumeError(f"hu must be float32 or int16, got {hu.dtype}: convert with .astype")
        sp = np.asarray(self.spacing_mm, dtype=float)
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise VolumeError(f"spacing_mm must be three positive numbers (sx, sy, sz), got {self.spacing_mm}")
        T = np.diag([*sp, 1.0]) if self.T_world_voxel is None else np.asarray(self.T_world_voxel, float)
        self._check_affine(T, sp)
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in sp))
        object.__setattr__(self, "T_world_voxel", T)

    @staticmethod
    def _check_affine(T: np.ndarray, sp: np.ndarray) -> None:
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise VolumeError("T_world_voxel must be a finite 4x4 matrix")
        if not np.allclose(T[3], [0, 0, 0, 1]):
            raise VolumeError("T_world_voxel last row must be 0 0 0 1")
        A = T[:3, :3]
        if not np.allclose(np.linalg.norm(A, axis=0), sp, rtol=1e-5, atol=1e-6):
            raise VolumeError(f"T_world_voxel column lengths {np.linalg.norm(A, axis=0)} "
                              f"do not match spacing_mm {sp}")
        R = A / sp
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise VolumeError("T_world_voxel must be a rotation times diag(spacing) (right-handed axes)")

    @classmethod
    def from_grid(cls, hu, spacing_mm, origin_mm=(0.0, 0.0, 0.0), rotation=None) -> "Volume":
        """Volume whose voxel (0,0,0) centre is at ``origin_mm`` with index axes along ``rotation``'s columns."""
        sp = np.asarray(spacing_mm, dtype=float)
        R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        if R.shape != (3, 3):
            raise VolumeError(f"rotation must be 3x3, got {R.shape}")
        T = np.eye(4)
        T[:3, :3] = R * sp
        T[:3, 3] = np.asarray(origin_mm, dtype=float)
        return cls(hu, tuple(sp), T)

    # --- geometry -------------------------------------------------------
    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """(nx, ny, nz): number of columns, rows, slices."""
        nz, ny, nx = self.hu.shape
        return nx, ny, nz

    @property
    def rotation(self) -> np.ndarray:
        """Directions of the index axes i, j, k in the world (unit columns)."""
        return self.T_world_voxel[:3, :3] / np.asarray(self.spacing_mm)

    @property
    def origin_mm(self) -> np.ndarray:
        """World position of the centre of voxel (0, 0, 0)."""
        return self.T_world_voxel[:3, 3].copy()

    def index_to_world(self, idx) -> np.ndarray:
        """World mm of index coordinates (i, j, k), shape (..., 3)."""
        a, shape = _as_points(idx, "index coordinates")
        return (a @ self.T_world_voxel[:3, :3].T + self.T_world_voxel[:3, 3]).reshape(*shape, 3)

    def world_to_index(self, points) -> np.ndarray:
        """Fractional index coordinates (i, j, k) of world points, shape (..., 3)."""
        a, shape = _as_points(points, "world points")
        A_inv = np.linalg.inv(self.T_world_voxel[:3, :3])
        return ((a - self.T_world_voxel[:3, 3]) @ A_inv.T).reshape(*shape, 3)

    def bounds_world(self) -> np.ndarray:
        """The 8 world corners (8, 3) of the box through the outer voxel centres."""
        nx, ny, nz = self.shape_xyz
        c = np.array([[i, j, k] for k in (0, nz - 1) for j in (0, ny - 1) for i in (0, nx - 1)], float)
        return self.index_to_world(c)

    def extent_world(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) world corners of the voxel boxes (centres +- half a voxel)."""
        nx, ny, nz = self.shape_xyz
        c = np.array([[i, j, k] for k in (-0.5, nz - 0.5) for j in (-0.5, ny - 0.5)
                      for i in (-0.5, nx - 0.5)], float)
        w = self.index_to_world(c)
        return w.min(axis=0), w.max(axis=0)

    def center_world(self) -> np.ndarray:
        nx, ny, nz = self.shape_xyz
        return self.index_to_world([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2])

    # --- values ---------------------------------------------------------
    def sample(self, points_world, order: int = 1) -> np.ndarray:
        """HU at world points (trilinear for ``order=1``); air (-1000) outside the grid."""
        if order not in (0, 1, 3):
            raise VolumeError(f"interpolation order must be 0, 1 or 3, got {order}")
        ijk = self.world_to_index(points_world)
        flat = ijk.reshape(-1, 3)
        coords = flat[:, ::-1].T  # (k, j, i) rows for the (nz, ny, nx) array
        from scipy import ndimage  # lazy: ~0.4 s of start-up
        vals = ndimage.map_coordinates(self.hu, coords, output=np.float32, order=order,   # no copy of hu
                                       mode="constant", cval=HU_AIR, prefilter=order > 1)
        return vals.reshape(ijk.shape[:-1])

    def mu(self, energy_kev: float | None = None, bone_model: bool = False) -> np.ndarray:
        """Linear attenuation per mm, float32 (nz, ny, nx), clipped at 0 (module docstring).

        Default: ``mu_water(E) * (1 + HU/1000)`` at E = 70 keV. ``bone_model=True``: the
        bilinear water/bone scaling at ``energy_kev`` (identical to the default at 70 keV).
        """
        e = 70.0 if energy_kev is None else float(energy_kev)
        mw = mu_water(e)
        hu = self.hu.astype(np.float32)
        out = hu * np.float32(mw / 1000.0) + np.float32(mw)
        if bone_model:
            slope = np.float32((mu_bone(e) - mw) / HU_CORTICAL_70KEV)
            np.copyto(out, np.float32(mw) + hu * slope, where=hu > 0)
        np.maximum(out, 0.0, out=out)
        return out

    # --- derived volumes ------------------------------------------------
    def resampled(self, spacing_mm, order: int = 1) -> "Volume":
        """Same world box and axes on a new spacing (scalar or (sx, sy, sz)); air outside."""
        new_sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,)).copy()
        if not np.all(np.isfinite(new_sp)) or np.any(new_sp <= 0):
            raise VolumeError(f"spacing_mm must be positive, got {spacing_mm}")
        old_sp = np.asarray(self.spacing_mm)
        n_old = np.array(self.shape_xyz, float)
        n_new = np.maximum(1, np.floor((n_old - 1) * old_sp / new_sp + 1e-9).astype(int) + 1)
        axes = [np.arange(n_new[a]) * new_sp[a] / old_sp[a] for a in range(3)]  # old index coords
        kk, jj, ii = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        from scipy import ndimage  # lazy: ~0.4 s of start-up
        vals = ndimage.map_coordinates(self.hu, [kk, jj, ii], output=np.float32,
                                       order=order, mode="nearest", prefilter=order > 1)
        T = self.T_world_voxel.copy()
        T[:3, :3] = self.rotation * new_sp
        if self.hu.dtype == np.int16:
            vals = np.round(vals)
        return Volume(vals.astype(self.hu.dtype), tuple(new_sp), T)

    def cropped(self, index_min, index_max) -> "Volume":
        """Sub-volume of voxels with index_min <= (i, j, k) < index_max (clipped to the grid)."""
        lo = np.asarray(index_min, dtype=int)
        hi = np.asarray(index_max, dtype=int)
        if lo.shape != (3,) or hi.shape != (3,):
            raise VolumeError("index_min and index_max must be (i, j, k) triples")
        lo = np.clip(lo, 0, self.shape_xyz)
        hi = np.clip(hi, 0, self.shape_xyz)
        if np.any(hi <= lo):
            raise VolumeError(f"empty crop: index range {lo.tolist()}..{hi.tolist()} holds no voxel")
        hu = self.hu[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]].copy()
        T = self.T_world_voxel.copy()
        T[:3, 3] = self.index_to_world(lo.astype(float))
        return Volume(hu, self.spacing_mm, T)

    def cropped_to_world_box(self, min_mm, max_mm, margin_vox: int = 1) -> "Volume":
        """Smallest sub-volume holding the world-axis-aligned box [min_mm, max_mm]."""
        lo_w, hi_w = np.asarray(min_mm, float), np.asarray(max_mm, float)
        corners = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1])
                            for z in (lo_w[2], hi_w[2])])
        ijk = self.world_to_index(corners)
        lo = np.floor(ijk.min(axis=0)).astype(int) - margin_vox
        hi = np.ceil(ijk.max(axis=0)).astype(int) + 1 + margin_vox
        return self.cropped(lo, hi)
