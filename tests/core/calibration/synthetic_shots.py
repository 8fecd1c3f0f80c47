"""Synthetic fluoroscopy shots of a cage with exact ground truth (test helper).

Balls are rendered as exact sphere chords along each pixel's X-ray (4x4
supersampling) through a ``ConeBeamGeometry`` in the cage frame, Beer-Lambert,
over a smooth random background with anatomy-like blobs, clutter blobs, a
K-wire line and Poisson noise; an optional radial+tangential distortion maps
ideal to raw pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import apply, from_euler


@dataclass
class BrownDistortion:
    """Radial + tangential distortion about ``centre`` (px), radius normalised by ``scale`` px."""
    centre: tuple
    scale: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    def ideal_to_raw(self, uv):
        q = (np.asarray(uv, float) - self.centre) / self.scale
        x, y = q[..., 0], q[..., 1]
        r2 = x * x + y * y
        f = 1 + self.k1 * r2 + self.k2 * r2 * r2
        xd = x * f + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
        yd = y * f + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        return np.stack([xd, yd], -1) * self.scale + self.centre

    def raw_to_ideal(self, uv):
        uv = np.asarray(uv, float)
        q = uv.copy()
        for _ in range(12):      # fixed point: contraction ~0.2 per step here
            q = q + (uv - self.ideal_to_raw(q))
        return q


def carm_geometry(view, shape=(512, 512), pixel_mm=0.5, sid=1000.0, sod=600.0,
                  iso=None, angles_deg=(0, 0, 0), shift_mm=(0, 0, 0)):
    """A C-arm in the default cage's frame: AP looks along +z, LAT along +x."""
    rows, cols = shape
    if view == "ap":
        iso = np.array([0, 0, -120.0]) if iso is None else np.asarray(iso, float)
        axis, du, dv = np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    else:
        iso = np.array([0, 0, -140.0]) if iso is None else np.asarray(iso, float)
        axis, du, dv = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    R = from_euler("xyz", np.radians(angles_deg))[:3, :3]
    axis, du, dv = R @ axis, R @ du, R @ dv
    iso = iso + np.asarray(shift_mm, float)
    src = iso - sod * axis
    centre = src + sid * axis
    origin = centre - du * pixel_mm * (cols - 1) / 2 - dv * pixel_mm * (rows - 1) / 2
    return ConeBeamGeometry(src, origin, du, dv, (pixel_mm, pixel_mm), shape)


def _ball_chords(geom, centre, radius, distortion, ss=4):
    """(rows, cols) slice box and the mean chord length (mm) per pixel of one ball."""
    c_uv = geom.project(centre)
    raw_to_ideal = None
    if distortion is not None:
        c_uv = distortion.ideal_to_raw(c_uv)
        raw_to_ideal = distortion.raw_to_ideal
    dist = np.linalg.norm(centre - geom.source_mm)
    r_px = radius * geom.source_to_detector_mm / dist / geom.pixel_spacing_mm[0] * 1.15 + 3
    u0, u1 = int(np.floor(c_uv[0] - r_px)), int(np.ceil(c_uv[0] + r_px))
    v0, v1 = int(np.floor(c_uv[1] - r_px)), int(np.ceil(c_uv[1] + r_px))
    rows, cols = geom.shape
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, cols - 1), min(v1, rows - 1)
    if u1 < u0 or v1 < v0:
        return None
    off = (np.arange(ss) + 0.5) / ss - 0.5
    uu = (np.arange(u0, u1 + 1)[:, None] + off).ravel()
    vv = (np.arange(v0, v1 + 1)[:, None] + off).ravel()
    U, V = np.meshgrid(uu, vv)
    q = np.stack([U, V], -1)
    if raw_to_ideal is not None:
        q = raw_to_ideal(q)
    d = geom.pixel_to_detector_mm(q) - geom.source_mm
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    w = centre - geom.source_mm
    t = d @ w
    perp2 = np.maximum(w @ w - t * t, 0)
    chord = 2 * np.sqrt(np.maximum(radius ** 2 - perp2, 0))
    nv, nu = v1 - v0 + 1, u1 - u0 + 1
    chord = chord.reshape(nv, ss, nu, ss).mean(axis=(1, 3))
    return (slice(v0, v1 + 1), slice(u0, u1 + 1)), chord


def render(geom, balls_mm, ball_diameter_mm=4.0, mu_ball=0.35, distortion=None, seed=0,
           background=True, clutter=True, kwire=True, noise=True, i0=20000.0,
           extra_balls_mm=None):
    """A uint16 MONOCHROME2 image (larger = brighter = less dense) and the raw ball pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = geom.shape
    att = np.zeros(geom.shape)
    if background:
        att += 0.4 * gaussian_filter(rng.normal(size=geom.shape), min(rows, cols) / 12) * (min(rows, cols) / 12)
        yy, xx = np.mgrid[:rows, :cols]
        for _ in range(6):   # anatomy: broad blobs
            cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
            s = rng.uniform(0.05, 0.2) * min(rows, cols)
            att += rng.uniform(0.2, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        att += 0.6 * np.exp(-((xx - cols * 0.5) ** 2) / (2 * (0.06 * cols) ** 2))  # spine column
    if clutter:
        yy, xx = np.mgrid[:rows, :cols]
        for _ in range(8):
            cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
            s = rng.uniform(1.5, 12) * cols / 512
            att += rng.uniform(-0.3, 0.8) * ((yy - cy) ** 2 + (xx - cx) ** 2 < s * s)
    if kwire:
        yy, xx = np.mgrid[:rows, :cols]
        a = rng.uniform(0, np.pi)
        d = np.abs((xx - cols * 0.4) * np.sin(a) - (yy - rows * 0.55) * np.cos(a))
        att += 1.5 * (d < 1.5 * cols / 512)
    balls = np.asarray(balls_mm, float)
    allb = balls if extra_balls_mm is None else np.vstack([balls, extra_balls_mm])
    for c in allb:
        res = _ball_chords(geom, c, ball_diameter_mm / 2, distortion)
        if res is not None:
            sl, chord = res
            att[sl] += mu_ball * chord
    img = i0 * np.exp(-att)
    if noise:
        img = rng.poisson(img).astype(float)
    uv = geom.project(balls)
    if distortion is not None:
        uv = distortion.ideal_to_raw(uv)
    return np.clip(img, 0, 65535).astype(np.uint16), uv


def default_pair(cage, shape=(512, 512), pixel_mm=0.5, seed=0, distortion=False, angles=None, **kw):
    """AP and LAT shots of ``cage`` with random small C-arm tilts; dict per view."""
    rng = np.random.default_rng(seed)
    out = {}
    for view in ("ap", "lat"):
        ang = rng.uniform(-8, 8, 3) if angles is None else angles[view]
        geom = carm_geometry(view, shape, pixel_mm, angles_deg=ang, shift_mm=rng.uniform(-10, 10, 3))
        dist = None
        if distortion:
            h = max(shape) / 2
            dist = BrownDistortion(((shape[1] - 1) / 2 + 7, (shape[0] - 1) / 2 - 5), h,
                                   k1=rng.uniform(0.03, 0.06), k2=0.01, p1=0.004, p2=-0.003)
        balls = cage.balls_for(view)
        img, uv = render(geom, balls, cage.ball_diameter_mm, distortion=dist, seed=seed * 7 + len(out), **kw)
        out[view] = dict(image=img, geometry=geom, distortion=dist, uv_raw=uv, balls_mm=balls)
    return out


def plate_shot(plate_xy, geom, distortion=None, rot_deg=7.0, flip=False, gap_mm=30.0, seed=0,
               diameter_mm=2.0, **kw):
    """A shot of a distortion plate held ``gap_mm`` in front of the detector."""
    rows, cols = geom.shape
    centre = geom.pixel_to_detector_mm(np.array([(cols - 1) / 2, (rows - 1) / 2]))
    centre = centre + gap_mm * geom.detector_normal
    a = np.radians(rot_deg)
    u = np.cos(a) * geom.detector_u + np.sin(a) * geom.detector_v
    v = -np.sin(a) * geom.detector_u + np.cos(a) * geom.detector_v
    if flip:
        v = -v
    xy = np.asarray(plate_xy, float)
    balls = centre + xy[:, :1] * u + xy[:, 1:] * v
    kw.setdefault("clutter", False)
    kw.setdefault("kwire", False)
    img, uv = render(geom, balls, diameter_mm, mu_ball=0.6, distortion=distortion, seed=seed, **kw)
    return img, uv
