"""The 2D/3D registration engine: fit a model to the calibrated AP and LAT shots.

Per stage (coarse to fine) the model is rendered through each shot's known pinhole on a
binned sub-detector covering the model's region (its footprint at the start, plus a
margin for the capture range), compared with the shot by that stage's similarity
(``core.registration.similarity``: global NCC coarse, patch gradient-NCC fine), and the
bi-plane mean is maximised by CMA-ES (Hansen 2016, the ``cmaes`` package) in the
model's normalised parameter space, each stage starting from the last one's best. The
coarse stage runs twice, from the given start and from the start shifted by 2-D template
matching in both views (``_translation_start``), and keeps the better.

Trust: a second run of the fine stages from a jittered copy of the answer must land on
the same pose (the model's check points within ``agree_mm``); if it does not, a full
restart with other seeds decides, and if no two runs agree, or the final similarity is
below ``min_similarity``, ``RegistrationRefused`` says so instead of returning a pose.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import triangulate_rays
from core.registration.errors import RegistrationError, RegistrationRefused
from core.registration.similarity import SIMILARITIES, ncc, patch_gradient_ncc
from core.registration.views import ShotView

__all__ = ["Stage", "RegistrationSettings", "RegistrationResult", "register", "DEFAULT_STAGES"]


@dataclass(frozen=True)
class Stage:
    """One resolution level: ``binning`` detector pixels per side per compared pixel."""
    binning: int
    similarity: str
    sigma: float              # CMA-ES initial step in normalised units
    generations: int
    popsize: int = 10

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise RegistrationError(f"similarity must be one of {sorted(SIMILARITIES)}, got {self.similarity!r}")
        if self.binning < 1 or self.generations < 1 or self.popsize < 4 or not self.sigma > 0:
            raise RegistrationError("a stage needs binning >= 1, generations >= 1, popsize >= 4 and sigma > 0")


DEFAULT_STAGES = (Stage(8, "hpncc", 0.6, 20, 12), Stage(4, "hpncc", 0.2, 12, 8), Stage(2, "gradncc", 0.06, 8, 8))


@dataclass(frozen=True)
class RegistrationSettings:
    stages: tuple = DEFAULT_STAGES
    bound: float = 3.0               # search box around the start, normalised units (30 mm, 15°)
    margin_mm: float = 25.0          # compared region beyond the model's footprint, at the model
    min_similarity: float = 0.15     # final-stage similarity below this: refused
    agree_mm: float = 2.0            # restarts agree when every check point lies this close
    jitter: float = 0.3              # verification restart offset, normalised units (3 mm, 1.5°)
    seed: int = 0

    def __post_init__(self):
        if not self.stages:
            raise RegistrationError("at least one stage is needed")
        if not (self.bound > 0 and self.margin_mm >= 0 and self.agree_mm > 0 and self.jitter >= 0):
            raise RegistrationError("bound, agree_mm must be positive and margin_mm, jitter non-negative")


@dataclass
class RegistrationResult:
    """The fitted parameters, their pose when the model has one, and the quality figures."""
    x: np.ndarray
    T_calib_model: np.ndarray | None
    similarity: float                 # final stage, mean over the views
    per_view: dict                    # view -> {"ncc": .., "gradncc": ..} at the finest binning
    disagreement_mm: float            # between the two runs that agreed (or the closest pair)
    runs: int
    evaluations: int
    seconds: float
    attempts: list = field(default_factory=list)   # per run: {"similarity", "x"}

    def to_dict(self) -> dict:
        return {"x": self.x.tolist(), "similarity": self.similarity, "per_view": self.per_view,
                "disagreement_mm": self.disagreement_mm, "runs": self.runs, "evaluations": self.evaluations,
                "seconds": self.seconds,
                "T_calib_model": None if self.T_calib_model is None else self.T_calib_model.tolist()}


@dataclass
class _Level:
    geometry: ConeBeamGeometry
    fixed: np.ndarray


def _roi(view: ShotView, points: np.ndarray, margin_mm: float, multiple: int):
    """(u0, v0, W, H) of the detector region holding ``points`` plus the margin, W and H multiples."""
    g = view.geometry
    uv = g.project(points)
    depth = (points - g.source_mm) @ -g.detector_normal
    if not np.all(np.isfinite(uv)) or np.any(depth <= 0):
        raise RegistrationError(f"the model is not in front of the {view.name.upper()} source: check the start pose")
    margin_px = margin_mm * g.source_to_detector_mm / depth.min() / min(g.pixel_spacing_mm)
    rows, cols = g.shape
    lo = np.floor(uv.min(0) - margin_px).astype(int)
    hi = np.ceil(uv.max(0) + margin_px).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [cols, rows])
    size = (hi - lo) // multiple * multiple
    if np.any(size < 4 * multiple):
        raise RegistrationError(f"the model lies outside the {view.name.upper()} shot's field at the start pose")
    return int(lo[0]), int(lo[1]), int(size[0]), int(size[1])


def _levels(views, points, settings) -> dict:
    """binning -> [per view _Level]: sub-detector geometry and the shot binned to it."""
    bins = sorted({s.binning for s in settings.stages})
    multiple = int(np.lcm.reduce(bins))
    out = {b: [] for b in bins}
    for view in views:
        u0, v0, W, H = _roi(view, points, settings.margin_mm, multiple)
        g = view.geometry
        crop = view.image[v0:v0 + H, u0:u0 + W]
        for b in bins:
            origin = g.pixel_to_detector_mm(np.array([u0 + (b - 1) / 2, v0 + (b - 1) / 2]))
            sub = ConeBeamGeometry(g.source_mm, origin, g.detector_u, g.detector_v,
                                   (b * g.pixel_spacing_mm[0], b * g.pixel_spacing_mm[1]), (H // b, W // b))
            fixed = crop if b == 1 else cv2.resize(crop, (W // b, H // b), interpolation=cv2.INTER_AREA)
            out[b].append(_Level(sub, np.ascontiguousarray(fixed, np.float32)))
    return out


class _Run:
    """CMA-ES over the stages; counts evaluations."""

    def __init__(self, model, levels, settings):
        self.model, self.levels, self.settings = model, levels, settings
        self.evaluations = 0

    def cost(self, z, stage: Stage) -> float:
        x = z * self.model.scales
        sim = SIMILARITIES[stage.similarity]
        self.evaluations += 1
        vals = [sim(self.model.render(lv.geometry, x), lv.fixed) for lv in self.levels[stage.binning]]
        return -float(np.mean(vals))

    def stage(self, z0, stage: Stage, seed: int):
        from cmaes import CMA
        n, B = self.model.n_params, self.settings.bound
        z0 = np.clip(z0, -0.95 * B, 0.95 * B)
        opt = CMA(mean=z0.astype(float), sigma=stage.sigma, bounds=np.tile([-B, B], (n, 1)), seed=seed,
                  population_size=stage.popsize)
        best_z, best_c = z0, self.cost(z0, stage)
        for _ in range(stage.generations):
            sols = []
            for _ in range(opt.population_size):
                z = opt.ask()
                c = self.cost(z, stage)
                sols.append((z, c))
                if c < best_c:
                    best_z, best_c = z, c
            opt.tell(sols)
            if opt.should_stop():
                break
        c = self.cost(opt.mean, stage)
        if c < best_c:
            best_z, best_c = opt.mean.copy(), c
        return best_z, -best_c

    def stages(self, starts, stages, seed):
        """Coarse to fine; the first stage runs from each start in ``starts``, the best kept."""
        z, sim = max((self.stage(np.asarray(z0, float), stages[0], seed * 101 + 17 * k)
                      for k, z0 in enumerate(starts)), key=lambda r: r[1])
        for i, st in enumerate(stages[1:], 1):
            z, sim = self.stage(z, st, seed * 101 + i)
        return z, sim


def _translation_start(model, levels, binning: int, bound: float) -> np.ndarray:
    """Normalised start with the translation found by 2-D template matching in each view.

    The model's DRR at the start (high-passed, cut to its support) is matched over the
    shot's region by normalised correlation (``cv2.TM_CCOEFF_NORMED``); the two image
    shifts of the model's centre are triangulated into the 3-D shift. An exhaustive
    search over the capture range, so the optimiser starts inside the right basin (a
    vertebra shifted by its own pedicle distance looks much like itself in the AP).
    """
    z0 = np.zeros(model.n_params)
    if not hasattr(model, "T_start") or model.n_params < 6:      # a translation as x[3:6] is assumed
        return z0
    foot = model.footprint(z0)
    centre = foot.mean(axis=0)
    rays = []
    for lv in levels[binning]:
        drr = model.render(lv.geometry, z0)
        if not np.any(drr > 0):
            return z0
        ys, xs = np.nonzero(drr > 0.05 * drr.max())
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        tmpl = _highpass(drr)[y0:y1, x0:x1]
        fixed = _highpass(lv.fixed)
        if tmpl.shape[0] >= fixed.shape[0] or tmpl.shape[1] >= fixed.shape[1] or tmpl.std() < 1e-9:
            return z0
        score = cv2.matchTemplate(fixed, tmpl, cv2.TM_CCOEFF_NORMED)
        _, _, _, (bx, by) = cv2.minMaxLoc(score)
        uv = lv.geometry.project(centre) + np.array([bx - x0, by - y0], float)
        rays.append(lv.geometry.ray(uv))
    p, _ = triangulate_rays(rays[0], rays[1])
    shift = p - centre
    z = z0.copy()
    z[3:6] = (model.T_start[:3, :3].T @ shift) / model.scales[3:6]   # the shift in the model frame
    return np.clip(z, -0.9 * bound, 0.9 * bound)


def _highpass(img: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    a = img.astype(np.float32) + np.float32(1.0)        # +1: no subnormals in the blur's tails
    return np.ascontiguousarray(a - cv2.GaussianBlur(a, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT))


def _figures(model, levels, z, binning) -> dict:
    x = z * model.scales
    out = {}
    for lv, name in zip(levels[binning], levels["names"]):
        drr = model.render(lv.geometry, x)
        out[name] = {"ncc": ncc(drr, lv.fixed), "gradncc": patch_gradient_ncc(drr, lv.fixed)}
    return out


def _gap(model, za, zb) -> float:
    pa = model.check_points(za * model.scales)
    pb = model.check_points(zb * model.scales)
    return float(np.max(np.linalg.norm(pa - pb, axis=1)))


def _check_views(views) -> list:
    views = list(views)
    if len(views) < 2:
        raise RegistrationError(f"registration needs two calibrated shots (AP and LAT), got {len(views)}")
    for v in views:
        if not isinstance(v, ShotView):
            raise RegistrationError("each view must be a ShotView (image and its calibrated geometry)")
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise RegistrationError(f"two views share a name: {names}")
    for v in views:
        if float(np.std(v.image)) < 1e-6:
            raise RegistrationError(f"the {v.name.upper()} shot is blank (no contrast)")
    return views


def register(model, views, settings: RegistrationSettings = RegistrationSettings()) -> RegistrationResult:
    """Fit ``model`` (a ``RegistrationModel``) to the ``ShotView``s; see the module docstring.

    Returns a ``RegistrationResult``; raises ``RegistrationError`` on bad input and
    ``RegistrationRefused`` (with ``.result``) when the fit is not to be trusted.
    """
    t0 = time.perf_counter()
    views = _check_views(views)
    footprint = model.footprint(np.zeros(model.n_params))
    levels = _levels(views, footprint, settings)
    levels["names"] = [v.name for v in views]
    run = _Run(model, levels, settings)
    stages = settings.stages
    z0 = np.zeros(model.n_params)
    # the coarse stage from the template-matched shift and from the given start: best kept
    starts = [_translation_start(model, levels, stages[0].binning, settings.bound), z0]
    rng = np.random.default_rng(settings.seed)
    attempts = []
    za, sa = run.stages(starts, stages, settings.seed)
    attempts.append((za, sa))
    fine = stages[1:] if len(stages) > 1 else stages
    zb, sb = run.stages([za + rng.uniform(-settings.jitter, settings.jitter, model.n_params)], fine,
                        settings.seed + 1)
    attempts.append((zb, sb))
    agree = None
    if _gap(model, za, zb) <= settings.agree_mm:
        agree = (0, 1)
    else:
        zc, sc = run.stages(starts, stages, settings.seed + 2)
        attempts.append((zc, sc))
        pairs = sorted(((_gap(model, attempts[i][0], attempts[j][0]), (i, j)) for i, j in ((0, 2), (1, 2))))
        if pairs[0][0] <= settings.agree_mm:
            agree = pairs[0][1]
    if agree is None:
        pairs = [(i, j) for i in range(len(attempts)) for j in range(i + 1, len(attempts))]
        agree_pair = min(pairs, key=lambda p: _gap(model, attempts[p[0]][0], attempts[p[1]][0]))
    else:
        agree_pair = agree
    i, j = agree_pair
    best = i if attempts[i][1] >= attempts[j][1] else j
    z, sim = attempts[best]
    gap = _gap(model, attempts[i][0], attempts[j][0])
    x = z * model.scales
    result = RegistrationResult(
        x=x, T_calib_model=model.pose(x) if hasattr(model, "pose") else None, similarity=float(sim),
        per_view=_figures(model, levels, z, stages[-1].binning), disagreement_mm=gap, runs=len(attempts),
        evaluations=run.evaluations, seconds=time.perf_counter() - t0,
        attempts=[{"similarity": float(s), "x": (a * model.scales).tolist()} for a, s in attempts])
    if agree is None:
        raise RegistrationRefused(f"registration did not converge: {len(attempts)} runs disagree by "
                                  f"{gap:.1f} mm or more; check the start pose and the level", result)
    if sim < settings.min_similarity:
        raise RegistrationRefused(f"registration did not converge: similarity {sim:.2f} is below "
                                  f"{settings.min_similarity:.2f}; check that the CT and the shots show "
                                  "the same level", result)
    return result
