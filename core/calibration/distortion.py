"""Image-intensifier distortion: raw <-> ideal pixel mappings (robot paper II.C.2).

Images stay raw; correction maps coordinates (DESIGN.md). ``ideal`` pixels are
those of a pinhole camera: the plate's balls in the central region fix them
(a homography), the rest of the plate gives the control points.

- ``LocalDistortion``: the paper's local method, a per-cell mapping between
  real (raw) and ideal control points; the cells are the Delaunay triangles
  of the control points, each mapped affinely (``linear``) or with C1 cubic
  patches (``cubic``). Outside the control points a global polynomial takes over.
- ``PolynomialDistortion``: a global bivariate polynomial per direction,
  order chosen by held-out error.
- ``NoDistortion``: a flat panel, or no plate given.

``fit_distortion`` fits all and keeps the one with the lowest held-out error.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["DistortionError", "NoDistortion", "PolynomialDistortion", "LocalDistortion",
           "fit_polynomial", "fit_local", "fit_distortion", "distortion_from_dict", "remap_to_ideal"]


class DistortionError(ValueError):
    """A distortion law's parameters or coordinates are invalid, or its correction could not be
    fitted or read."""


def _as_uv(uv):
    q = np.asarray(uv, float)
    if q.shape[-1] != 2:
        raise DistortionError(f"pixel coordinates must have shape (..., 2), got {q.shape}")
    return q


class NoDistortion:
    kind = "none"

    def raw_to_ideal(self, uv):
        return _as_uv(uv).copy()

    def ideal_to_raw(self, uv):
        return _as_uv(uv).copy()

    def to_dict(self):
        return {"kind": "none"}


def _consistent_inverse(forward, inverse, ideal, iterations=6):
    """ideal -> raw that inverts ``forward`` exactly (to 1e-6 px): start from the fitted
    inverse map, then fixed-point steps (the Jacobian of a distortion is close to I),
    so that projecting and locating agree."""
    raw = inverse(ideal)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(iterations):
            raw = raw + (ideal - forward(raw))
    return raw


RHO_MAX = 1.05


@functools.lru_cache(maxsize=None)
def _monomials(order):
    return tuple((i, j) for n in range(order + 1) for i in range(n + 1) for j in [n - i])


def _design(q, centre, scale, order):
    """Monomials x^i y^j of the normalised coordinates, one column each (``_monomials`` order).
    Each power is computed once and reused across the columns (this runs in every
    ideal -> raw iteration of the labelling's field test): the same values as x**i * y**j."""
    x = (q[:, 0] - centre[0]) / scale
    y = (q[:, 1] - centre[1]) / scale
    xp = [x ** i for i in range(order + 1)]
    yp = [y ** j for j in range(order + 1)]
    mons = _monomials(order)
    out = np.empty((len(q), len(mons)))
    for c, (i, j) in enumerate(mons):
        np.multiply(xp[i], yp[j], out=out[:, c])
    return out


@dataclass
class _Poly2D:
    """``dst = src + A(src) @ coef`` with monomials of the normalised source."""
    order: int
    centre: np.ndarray
    scale: float
    coef: np.ndarray

    @classmethod
    def fit(cls, src, dst, order, centre, scale):
        A = _design(src, centre, scale, order)
        if len(src) < A.shape[1] + 2:
            raise DistortionError(f"order-{order} polynomial needs more than {A.shape[1] + 1} plate balls")
        coef = np.linalg.lstsq(A, dst - src, rcond=None)[0]
        return cls(order, np.asarray(centre, float), float(scale), coef)

    def __call__(self, q):
        """Beyond the control points (normalised radius > 1.05) the displacement of the
        boundary point on the same ray is used: a polynomial extrapolated far out explodes."""
        shp = q.shape
        q = q.reshape(-1, 2)
        rho = np.linalg.norm(q - self.centre, axis=1) / self.scale
        far = rho > RHO_MAX
        qe = q.copy()
        qe[far] = self.centre + (q[far] - self.centre) * (RHO_MAX / rho[far])[:, None]
        return (q + _design(qe, self.centre, self.scale, self.order) @ self.coef).reshape(shp)

    def to_dict(self):
        return {"order": self.order, "centre": self.centre.tolist(), "scale": self.scale,
                "coef": self.coef.tolist()}

    @classmethod
    def from_dict(cls, d):
        return cls(int(d["order"]), np.asarray(d["centre"], float), float(d["scale"]),
                   np.asarray(d["coef"], float))


@dataclass
class PolynomialDistortion:
    forward: _Poly2D    # raw -> ideal
    inverse: _Poly2D    # ideal -> raw
    heldout_rms_px: float = float("nan")
    kind: str = "polynomial"

    def raw_to_ideal(self, uv):
        return self.forward(_as_uv(uv))

    def ideal_to_raw(self, uv):
        return _consistent_inverse(self.raw_to_ideal, self.inverse, _as_uv(uv))

    def to_dict(self):
        return {"kind": self.kind, "forward": self.forward.to_dict(), "inverse": self.inverse.to_dict(),
                "heldout_rms_px": self.heldout_rms_px}


def _folds(n, k, seed=0):
    idx = np.random.default_rng(seed).permutation(n)
    return [idx[i::k] for i in range(k)]


def _heldout(fit, raw, ideal, k=5, folds=None):
    """RMS (px) of raw -> ideal at control points left out of the fit, k-fold
    (only the first ``folds`` of the k when given: one fold holds 1/k of the points out)."""
    err = []
    for test in _folds(len(raw), k)[:folds]:
        train = np.setdiff1d(np.arange(len(raw)), test)
        f = fit(raw[train], ideal[train])
        e = np.linalg.norm(f(raw[test]) - ideal[test], axis=1)
        err.append(e[np.isfinite(e)])
    e = np.concatenate(err)
    return float(np.sqrt(np.mean(e ** 2))) if len(e) else float("inf")


def fit_polynomial(raw, ideal, orders=range(2, 8)) -> PolynomialDistortion:
    """Global polynomial, order by 5-fold held-out error (Gutierrez et al., paper ref. [37])."""
    raw, ideal = _check_pts(raw, ideal)
    centre = raw.mean(axis=0)
    scale = float(np.max(np.linalg.norm(raw - centre, axis=1)))
    best = None
    for order in orders:
        if len(raw) < 2 * len(_monomials(order)) + 2:
            break
        h = _heldout(lambda r, i: _Poly2D.fit(r, i, order, centre, scale), raw, ideal)
        if best is None or h < best[0]:
            best = (h, order)
    if best is None:
        raise DistortionError("too few plate balls for a distortion polynomial: check the plate shot")
    h, order = best
    return PolynomialDistortion(_Poly2D.fit(raw, ideal, order, centre, scale),
                                _Poly2D.fit(ideal, raw, order, centre, scale), h)


def _check_pts(raw, ideal):
    raw, ideal = np.asarray(raw, float), np.asarray(ideal, float)
    if raw.ndim != 2 or raw.shape[1] != 2 or raw.shape != ideal.shape:
        raise DistortionError(f"control points must be matching (N, 2) arrays, got {raw.shape}, {ideal.shape}")
    if len(raw) < 12:
        raise DistortionError(f"only {len(raw)} plate balls: at least 12 are needed; re-acquire the plate shot")
    if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(ideal))):
        raise DistortionError("control points have non-finite coordinates")
    return raw, ideal


class _Cells:
    """Per-cell interpolation of the displacement ``dst - src`` over Delaunay cells."""

    def __init__(self, src, dst, method, fallback):
        from scipy.interpolate import CloughTocher2DInterpolator, LinearNDInterpolator  # 0.3 s: only when used
        cls = LinearNDInterpolator if method == "linear" else CloughTocher2DInterpolator
        self.f = cls(src, dst - src)
        self.fallback = fallback

    def __call__(self, q):
        shp = q.shape
        q = q.reshape(-1, 2)
        d = self.f(q)
        out = q + d
        bad = ~np.all(np.isfinite(d), axis=1)
        if bad.any():
            out[bad] = self.fallback(q[bad])
        return out.reshape(shp)


@dataclass
class LocalDistortion:
    raw_pts: np.ndarray
    ideal_pts: np.ndarray
    method: str
    fallback: PolynomialDistortion
    heldout_rms_px: float = float("nan")
    kind: str = "local"
    _fwd: _Cells = field(init=False, repr=False)
    _inv: _Cells = field(init=False, repr=False)

    def __post_init__(self):
        self._fwd = _Cells(self.raw_pts, self.ideal_pts, self.method, self.fallback.raw_to_ideal)
        self._inv = _Cells(self.ideal_pts, self.raw_pts, self.method, self.fallback.ideal_to_raw)

    def raw_to_ideal(self, uv):
        return self._fwd(_as_uv(uv).astype(float))

    def ideal_to_raw(self, uv):
        return _consistent_inverse(self.raw_to_ideal, self._inv, _as_uv(uv).astype(float))

    def to_dict(self):
        return {"kind": "local", "method": self.method, "raw_pts": self.raw_pts.tolist(),
                "ideal_pts": self.ideal_pts.tolist(), "fallback": self.fallback.to_dict(),
                "heldout_rms_px": self.heldout_rms_px}


def fit_local(raw, ideal, method="cubic", fallback=None) -> LocalDistortion:
    """The paper's local method: per-cell maps between real and ideal control points."""
    raw, ideal = _check_pts(raw, ideal)
    fb = fallback or fit_polynomial(raw, ideal)
    # two of five folds: a per-cell interpolant's first evaluation is costly (SciPy), and
    # 40 % of the plate's balls held out already measure the local model well
    h = _heldout(lambda r, i: _Cells(r, i, method, fb.raw_to_ideal), raw, ideal, folds=2)
    return LocalDistortion(raw, ideal, method, fb, h)


MODELS = ("polynomial", "local_linear", "local_cubic")


def fit_distortion(raw, ideal, model: str | None = None):
    """All models; returns (chosen, {name: held-out RMS px}). The lowest held-out error
    wins unless ``model`` (one of ``MODELS``) names one (e.g. the paper's local_linear)."""
    if model is not None and model not in MODELS:
        raise DistortionError(f"unknown distortion model {model!r}; use one of {MODELS}")
    poly = fit_polynomial(raw, ideal)
    cands = {"polynomial": poly,
             "local_linear": fit_local(raw, ideal, "linear", poly),
             "local_cubic": fit_local(raw, ideal, "cubic", poly)}
    figs = {k: v.heldout_rms_px for k, v in cands.items()}
    best = model or min(cands, key=lambda k: figs[k])
    return cands[best], figs


def distortion_from_dict(d):
    """Rebuild a correction saved with ``to_dict`` (inside a calibration file)."""
    try:
        kind = d["kind"]
        if kind == "none":
            return NoDistortion()
        if kind == "polynomial":
            return PolynomialDistortion(_Poly2D.from_dict(d["forward"]), _Poly2D.from_dict(d["inverse"]),
                                        float(d.get("heldout_rms_px", float("nan"))))
        if kind == "local":
            return LocalDistortion(np.asarray(d["raw_pts"], float), np.asarray(d["ideal_pts"], float),
                                   d["method"], distortion_from_dict(d["fallback"]),
                                   float(d.get("heldout_rms_px", float("nan"))))
    except (KeyError, TypeError, ValueError) as e:
        raise DistortionError(f"bad distortion entry in calibration file: {e}") from None
    raise DistortionError(f"unknown distortion kind {kind!r} in calibration file")


def remap_to_ideal(image, distortion, step: int = 8) -> np.ndarray:
    """The image resampled on the ideal pixel grid (for display only): the map is
    evaluated every ``step`` px and interpolated bilinearly, then ``cv2.remap``."""
    from scipy.ndimage import map_coordinates  # display only: not at start-up
    img = np.asarray(image)
    rows, cols = img.shape[:2]
    gv, gu = np.arange(0, rows + step, step, dtype=float), np.arange(0, cols + step, step, dtype=float)
    U, V = np.meshgrid(gu, gv)
    raw = distortion.ideal_to_raw(np.stack([U, V], -1))
    yy, xx = np.mgrid[:rows, :cols].astype(np.float32) / step
    mx = map_coordinates(raw[..., 0], [yy, xx], order=1).astype(np.float32)
    my = map_coordinates(raw[..., 1], [yy, xx], order=1).astype(np.float32)
    return cv2.remap(img.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
