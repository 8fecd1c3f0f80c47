"""Per-level lumbar statistical shape model: template mesh, corresponding samples, PCA modes.

Spine-DART (papers/spine-dart-ct-free-planning.txt, section 4.1 and 4.3): each
shape is the mean plus a linear combination of modes, ``v_i = mu_i + B_i b``,
then a rigid pose; pedicle entry and target points travel with the vertices
(section 4.4: the path "is inherently transferred to the reconstructed vertebra").

Construction: the template is the marching-cubes surface of the table's mean
vertebra. Correspondence for each sampled vertebra of the family
(``samples.family_params``): a thin-plate spline from the template's part
landmarks to the sample's (``samples.part_landmarks``: the parametric
construction says where each part went) carries every template vertex near the
sample's surface, then Newton steps along the sample's signed-distance gradient
put it on the surface. The named points (body centre, isthmus and ideal entry /
target of both pedicles) are the sample's own truth, appended to the vertices,
so the modes carry them. PCA keeps the modes that explain 99 % (at most 15).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.interpolate import RBFInterpolator

from core.registration.ssm.samples import (Vertebra, build_vertebra, family_params, mean_params,
                                           part_landmarks)
from core.simulation.phantom.anatomy import PhantomError

__all__ = ["ShapeModel", "build_shape_model", "shape_model", "POINTS", "surface_mesh", "ShapeModelError"]

POINTS = ("body_centre", "isthmus_left", "isthmus_right", "entry_left", "target_left", "entry_right",
          "target_right")
MAX_MODES = 15
EXPLAINED = 0.99


class ShapeModelError(ValueError):
    """A shape model that cannot be built (level, sample count, resolution)."""


@dataclass(frozen=True, eq=False)
class ShapeModel:
    """``mean`` (V, 3) and ``modes`` (k, V, 3) in the vertebra frame (x left, y posterior, z superior,
    mm); ``sd`` (k,) mm-scale standard deviation of each mode's coefficient; shape(b) = mean +
    sum_i b_i sd_i modes_i, b in standard deviations. ``points_*`` the same for ``POINTS``."""
    level: str
    mean: np.ndarray
    modes: np.ndarray
    sd: np.ndarray
    faces: np.ndarray
    points_mean: np.ndarray
    points_modes: np.ndarray
    explained: np.ndarray            # cumulative fraction of the variance per mode kept
    n_samples: int
    correspondence_rms_mm: float     # |sdf| of the snapped sample vertices, RMS over samples

    @property
    def n_modes(self) -> int:
        return len(self.sd)

    def vertices(self, b=None) -> np.ndarray:
        """(V, 3) vertices of the shape with coefficients ``b`` (std devs; fewer than k: the rest 0)."""
        return self.mean + self._offset(self.modes, b)

    def points(self, b=None) -> dict:
        """Named points (``POINTS``) of the shape ``b``, vertebra frame."""
        p = self.points_mean + self._offset(self.points_modes, b)
        return dict(zip(POINTS, p))

    def _offset(self, modes, b):
        if b is None:
            return 0.0
        b = np.asarray(b, float)
        if b.ndim != 1 or len(b) > self.n_modes or not np.all(np.isfinite(b)):
            raise ShapeModelError(f"shape coefficients must be at most {self.n_modes} finite numbers")
        return np.tensordot(b * self.sd[:len(b)], modes[:len(b)], axes=1)


def surface_mesh(v: Vertebra, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) in the vertebra frame, faces (F, 3) wound outward) of a vertebra's bone."""
    from skimage.measure import marching_cubes
    Tinv = np.linalg.inv(v.T_world_vertebra)
    lo, hi = v.box(3.0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    local = corners @ Tinv[:3, :3].T + Tinv[:3, 3]
    lo, hi = local.min(0), local.max(0)
    axes = [np.arange(lo[i], hi[i] + spacing_mm, spacing_mm) for i in range(3)]
    Z, Y, X = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    P = np.stack([X, Y, Z], -1) @ v.T_world_vertebra[:3, :3].T + v.T_world_vertebra[:3, 3]
    d = v.signed_distance(P)
    d = np.pad(d, 1, constant_values=10.0)
    zyx, faces, _, _ = marching_cubes(d, 0.0, spacing=(spacing_mm,) * 3)
    verts = zyx[:, ::-1] + lo - spacing_mm
    faces = faces[:, ::-1] if _inward(verts, faces) else faces     # (z, y, x) -> (x, y, z) flips the winding
    return verts, np.ascontiguousarray(faces)


def _inward(verts, faces) -> bool:
    """True when the faces' normals point into the solid (their signed volume is negative)."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) < 0


def snap_to_surface(v: Vertebra, local_pts: np.ndarray, iterations: int = 4, h: float = 0.05):
    """Newton steps x <- x - d grad d / |grad d|^2 on the vertebra's signed distance (frame coordinates),
    forward differences, only where |d| > 0.01 mm; returns the points and their remaining |d| (mm)."""
    T = v.T_world_vertebra
    x = np.asarray(local_pts, float).copy()

    def sdf(q):
        return v.signed_distance(q @ T[:3, :3].T + T[:3, 3])
    d = sdf(x)
    for _ in range(iterations):
        act = np.flatnonzero(np.abs(d) > 0.01)
        if act.size == 0:
            break
        xa, da = x[act], d[act]
        g = np.stack([(sdf(xa + h * e) - da) / h for e in np.eye(3)], -1)
        g2 = np.maximum(np.sum(g * g, -1, keepdims=True), 0.25)
        step = da[:, None] * g / g2
        n = np.linalg.norm(step, axis=1, keepdims=True)
        x[act] = xa - step * np.minimum(1.0, 3.0 / np.maximum(n, 1e-9))      # at most 3 mm a step
        d[act] = sdf(x[act])
    return x, np.abs(d)


def named_points(v: Vertebra) -> np.ndarray:
    """``POINTS`` of a drawn vertebra in its own frame."""
    Tinv = np.linalg.inv(v.T_world_vertebra)
    pw = [v.T_world_vertebra[:3, 3]]
    for s in ("left", "right"):
        pw.append(v.pedicles[s].isthmus_mm)
    for s in ("left", "right"):
        pw += [v.pedicles[s].entry_mm, v.pedicles[s].target_mm]
    pw = np.array(pw)
    return pw @ Tinv[:3, :3].T + Tinv[:3, 3]


def correspond(template_verts, template_landmarks, v: Vertebra) -> tuple[np.ndarray, np.ndarray]:
    """Template vertices carried onto vertebra ``v`` (thin-plate spline of the part landmarks, then snapped)."""
    warp = RBFInterpolator(template_landmarks, part_landmarks(v) - template_landmarks,
                           kernel="thin_plate_spline", smoothing=1e-3)
    moved = template_verts + warp(template_verts)
    return snap_to_surface(v, moved)


def build_shape_model(level: str, n_samples: int = 40, seed: int = 0, spacing_mm: float = 1.5) -> ShapeModel:
    """The level's model from ``n_samples`` family members (module docstring); seeded."""
    if not isinstance(n_samples, (int, np.integer)) or not 8 <= n_samples <= 2000:
        raise ShapeModelError(f"a shape model needs 8-2000 sample vertebrae, got {n_samples!r}")
    if not 0.5 <= float(spacing_mm) <= 3.0:
        raise ShapeModelError(f"template mesh spacing must be 0.5-3 mm, got {spacing_mm}")
    try:
        template = build_vertebra(mean_params(level))
    except PhantomError as e:
        raise ShapeModelError(str(e)) from None
    verts, faces = surface_mesh(template, float(spacing_mm))
    lm = part_landmarks(template)
    rng = np.random.default_rng([seed, 16])
    rows, residuals = [], []
    for _ in range(n_samples):
        v = build_vertebra(family_params(level, rng))
        x, r = correspond(verts, lm, v)
        rows.append(np.concatenate([x, named_points(v)]).ravel())
        residuals.append(r)
    X = np.array(rows)
    mu = X.mean(0)
    U, S, Vt = np.linalg.svd(X - mu, full_matrices=False)
    var = S ** 2 / (n_samples - 1)
    cum = np.cumsum(var) / var.sum()
    k = int(min(MAX_MODES, np.searchsorted(cum, EXPLAINED) + 1, n_samples - 1))
    nv = len(verts)
    modes = Vt[:k].reshape(k, -1, 3)
    return ShapeModel(level=level, mean=mu.reshape(-1, 3)[:nv], modes=modes[:, :nv], sd=np.sqrt(var[:k]),
                      faces=faces, points_mean=mu.reshape(-1, 3)[nv:], points_modes=modes[:, nv:],
                      explained=cum[:k], n_samples=n_samples,
                      correspondence_rms_mm=float(np.sqrt(np.mean(np.concatenate(residuals) ** 2))))


@lru_cache(maxsize=8)
def shape_model(level: str, n_samples: int = 40, seed: int = 0, spacing_mm: float = 1.5) -> ShapeModel:
    """``build_shape_model``, built once per process per arguments."""
    return build_shape_model(level, n_samples, seed, spacing_mm)
