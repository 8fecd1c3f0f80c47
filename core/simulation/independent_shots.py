"""Cage and plate shots through an image-formation path of their own, for checking the bead
detector on images it was not developed on.

Independent of ``core.simulation.fluoro`` and the DRR on purpose:

- steel balls: the exact chord of every sub-pixel ray through the sphere (``ss`` x ``ss``
  rays per pixel, from the point source to the sub-pixel's detector point) times steel's
  attenuation; the truth is the projection of the ball's centre (like the samples'
  ``truth.json``), per ball with its index counting through the cage file's planes;
- background: anatomy-like texture, a 1/f^beta random field (FFT-filtered white noise)
  plus a few broad soft-tissue lobes, in line-integral units;
- metal: rods as cylinders seen side on (chord 2 sqrt(w^2 - d^2)), optionally placed
  against chosen balls, dense enough to clip the detector;
- detector: transmission blurred by a two-part point-spread function (Gaussian core and an
  exponential veiling-glare tail, applied as an optical transfer function), vignetting,
  Poisson quanta times a gain plus Gaussian read noise and an offset, clipped at both ends
  of the range (dark cores and metal at 0, air at full scale);
- field: a round image-intensifier field with a dark (or padded) surround, a collimated
  rectangle (a few per cent transmission, scatter and noise, not a constant), or the full
  detector;
- files: DICOM as vendors write it (``write_vendor_dicom``): MONOCHROME2 12-bit,
  MONOCHROME1, 8-bit log-compressed, 16-bit with Rescale Slope / Intercept, Pixel Padding
  Value over the unexposed surround.

Geometry: ``ConeBeamGeometry`` in the cage frame, the beam along the view's plane normal
(``cage_geometry``), cages from ``core.calibration.cage.load_cage``.
"""
from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import from_euler

__all__ = ["ShotSpec", "Rod", "IndependentShot", "cage_geometry", "balls_of", "shoot", "rods_against",
           "scenario_shot", "SCENARIOS", "write_vendor_dicom", "VENDOR_STYLES", "STEEL_MU_PER_MM"]

STEEL_MU_PER_MM = 0.9        # effective linear attenuation of steel at C-arm energies (~70 kVp)
VENDOR_STYLES = ("mono2_12", "mono1_12", "mono2_8_log", "mono2_16_rescaled", "mono1_12_padded",
                 "mono1_12_padded_white")


@dataclass(frozen=True)
class Rod:
    """A metal rod seen side on: a segment (u0, v0) - (u1, v1) in detector pixels, its
    radius ``radius_px`` and its attenuation per pixel of chord ``mu_per_px``."""
    a_px: tuple
    b_px: tuple
    radius_px: float
    mu_per_px: float = 0.6


@dataclass(frozen=True)
class ShotSpec:
    """How one shot is formed (see the module docstring). Lengths in px unless named."""
    shape: tuple = (512, 512)
    field: str = "round"                # "round", "rect" or "full"
    field_radius: float = 0.47          # round: radius over the smaller image side
    field_centre: tuple | None = None   # round: (u, v) px, default the image centre
    rect: tuple = (0.12, 0.08, 0.9, 0.94)   # rect: (u0, v0, u1, v1) over width / height
    collimator_transmission: float = 0.03
    surround: float = 0.0               # round: the unexposed surround's counts
    photons: float = 2000.0             # quanta per pixel of open beam
    gain: float = 1.2                   # counts per quantum
    offset: float = 0.0                 # counts at no signal
    read_noise: float = 3.0             # counts RMS
    full_scale: int = 4095
    blur_sigma_px: float = 0.9
    glare_fraction: float = 0.05
    glare_length_px: float = 25.0
    vignetting: float = 0.2
    texture: float = 0.3                # line-integral RMS of the anatomy texture
    texture_beta: float = 3.2           # spectral slope of the 1/f^beta field
    lobes: float = 0.4                  # peak line integral of the broad soft-tissue lobes
    tissue: float = 1.5                 # mean line integral of the patient
    steel_mu_per_mm: float = STEEL_MU_PER_MM
    supersample: int = 4
    rods: tuple = ()
    seed: int = 0


@dataclass
class IndependentShot:
    """One shot: ``pixels`` (uint16 counts, larger = brighter), its ``field`` (bool: the
    exposed part), the ``geometry`` (cage frame) and the truth: ``balls_px`` (N, 3) rows
    [cage-file index, u, v] for every ball whose centre projects inside the field,
    ``ball_radius_px`` (N,) the shadow radius of each, ``disc_in_field`` (N,) whether the
    whole shadow is inside the field; ``extra_px`` (K, 2): the projections of the balls
    rendered without truth (``shoot``'s ``extra_balls_mm``)."""
    pixels: np.ndarray
    field: np.ndarray
    geometry: ConeBeamGeometry
    balls_px: np.ndarray
    ball_radius_px: np.ndarray
    disc_in_field: np.ndarray
    spec: ShotSpec
    extra_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    info: dict = field(default_factory=dict)

    def truth_json(self) -> dict:
        """The truth in the samples' form: {"balls_px": [[i, u, v], ...]}."""
        return {"balls_px": [[int(i), float(u), float(v)] for i, u, v in self.balls_px]}


def balls_of(cage, view: str) -> tuple[np.ndarray, np.ndarray]:
    """(index in the cage file counting through its planes in order, centres (N, 3)) of a view's balls."""
    idx, pts, k = [], [], 0
    for p in cage.planes:
        if p.view == view:
            idx.extend(range(k, k + p.n_balls))
            pts.append(p.balls_mm)
        k += p.n_balls
    return np.asarray(idx), np.concatenate(pts)


def cage_geometry(cage, view: str, shape=(512, 512), pixel_mm: float = 0.6, sid_mm: float = 1000.0,
                  cage_to_detector_mm: float = 250.0, tilt_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0)):
    """A C-arm looking through a view's two ball planes along their normal, from the first
    plane's side (the patient's) to the second, the detector ``cage_to_detector_mm`` beyond
    the planes' centre, tilted
    by ``tilt_deg`` (x, y, z Euler about the planes' centre) and shifted in the detector plane."""
    planes = cage.planes_for(view)
    centre = np.mean([p.balls_mm.mean(axis=0) for p in planes], axis=0)
    n = planes[0].normal
    # the beam runs from the view's first plane (nearest the patient) to its second
    beam = n if (planes[1].balls_mm.mean(axis=0) - planes[0].balls_mm.mean(axis=0)) @ n > 0 else -n
    du = planes[0].axes[0]
    dv = np.cross(beam, du)
    R = from_euler("xyz", np.radians(tilt_deg))[:3, :3]
    basis = np.column_stack([du, dv, beam])
    Rw = basis @ R @ basis.T
    beam, du, dv = Rw @ beam, Rw @ du, Rw @ dv
    det_centre = centre + cage_to_detector_mm * beam + shift_mm[0] * du + shift_mm[1] * dv
    src = det_centre - sid_mm * beam
    rows, cols = shape
    origin = det_centre - du * pixel_mm * (cols - 1) / 2 - dv * pixel_mm * (rows - 1) / 2
    return ConeBeamGeometry(src, origin, du, dv, (pixel_mm, pixel_mm), shape)


def rods_against(uv, radius_px, which, rng, length_px=70.0, rod_radius_px=None, gap_px=0.0, over=False):
    """Rods laid against (or ``over``: across) the balls ``which`` at ``uv`` (N, 2): each
    touches its ball's shadow from a random side, ``gap_px`` beyond its edge."""
    out = []
    for k in which:
        w = float(rod_radius_px if rod_radius_px is not None else 0.8 * radius_px[k])
        ang = rng.uniform(0, np.pi)
        axis = np.array([np.cos(ang), np.sin(ang)])
        normal = np.array([-axis[1], axis[0]])
        off = 0.0 if over else radius_px[k] + w + gap_px
        c = uv[k] + off * normal + rng.uniform(-0.3, 0.3) * length_px * axis
        out.append(Rod(tuple(c - 0.5 * length_px * axis), tuple(c + 0.5 * length_px * axis), w))
    return tuple(out)


def _ball_line_integrals(geom: ConeBeamGeometry, centres, radius_mm, mu, ss):
    """Mean over ``ss`` x ``ss`` sub-pixel rays of mu x chord through each sphere, per pixel."""
    rows, cols = geom.shape
    out = np.zeros((rows, cols))
    s = geom.source_mm
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    for c in centres:
        uv = geom.project(c[None])[0]
        dist = np.linalg.norm(c - s)
        r_px = radius_mm * geom.source_to_detector_mm / max(dist - radius_mm, 1e-6) / geom.pixel_spacing_mm[0]
        u0, u1 = int(np.floor(uv[0] - r_px - 2)), int(np.ceil(uv[0] + r_px + 2))
        v0, v1 = int(np.floor(uv[1] - r_px - 2)), int(np.ceil(uv[1] + r_px + 2))
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, cols - 1), min(v1, rows - 1)
        if u1 < u0 or v1 < v0:
            continue
        uu = (np.arange(u0, u1 + 1)[None, :, None, None] + sub[None, None, None, :])
        vv = (np.arange(v0, v1 + 1)[:, None, None, None] + sub[None, None, :, None])
        uu, vv = np.broadcast_arrays(uu, vv)
        p = geom.pixel_to_detector_mm(np.stack([uu.ravel(), vv.ravel()], -1))
        d = p - s
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        w = c - s
        perp2 = np.sum(w * w) - (d @ w) ** 2
        chord = 2.0 * np.sqrt(np.maximum(radius_mm ** 2 - perp2, 0.0))
        out[v0:v1 + 1, u0:u1 + 1] += mu * chord.reshape(uu.shape).mean(axis=(2, 3))
    return out


def _texture(shape, rng, rms, beta, lobes):
    """A 1/f^beta random field (zero mean, ``rms``) and three broad soft-tissue lobes (peaks
    0.5-1.5 x ``lobes``)."""
    rows, cols = shape
    fy, fx = np.fft.fftfreq(rows)[:, None], np.fft.rfftfreq(cols)[None, :]
    f = np.hypot(fx, fy)
    amp = 1.0 / np.maximum(f, 1.0 / max(rows, cols)) ** (beta / 2)
    amp[0, 0] = 0.0
    spec = amp * (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
    t = np.fft.irfft2(spec, s=shape)
    t *= rms / max(float(t.std()), 1e-12)
    yy, xx = np.mgrid[0:rows, 0:cols]
    for _ in range(3):
        c = rng.uniform(0.2, 0.8, 2) * (cols, rows)
        sig = rng.uniform(0.12, 0.3) * max(rows, cols)
        t += lobes * rng.uniform(0.5, 1.5) * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * sig * sig))
    return t


def _rods(shape, rods):
    rows, cols = shape
    out = np.zeros(shape)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    for r in rods:
        a, b = np.asarray(r.a_px, float), np.asarray(r.b_px, float)
        ab = b - a
        t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / max(ab @ ab, 1e-9), 0.0, 1.0)
        dist2 = (xx - a[0] - t * ab[0]) ** 2 + (yy - a[1] - t * ab[1]) ** 2
        out += r.mu_per_px * 2.0 * np.sqrt(np.maximum(r.radius_px ** 2 - dist2, 0.0))
    return out


def _blur(img, sigma, glare, length):
    """Convolution with (1 - glare) Gaussian(sigma) + glare exponential(length), via the OTF."""
    rows, cols = img.shape
    pad = int(3 * length)
    a = np.pad(img, pad, mode="reflect")
    fy, fx = np.fft.fftfreq(a.shape[0])[:, None], np.fft.rfftfreq(a.shape[1])[None, :]
    f2 = fx * fx + fy * fy
    otf = (1 - glare) * np.exp(-2 * np.pi ** 2 * sigma ** 2 * f2) + glare / (1 + 4 * np.pi ** 2 * length ** 2 * f2) ** 1.5
    out = np.fft.irfft2(np.fft.rfft2(a) * otf, s=a.shape)
    return out[pad:pad + rows, pad:pad + cols]


def _field(spec: ShotSpec):
    rows, cols = spec.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    if spec.field == "round":
        c = spec.field_centre or ((cols - 1) / 2, (rows - 1) / 2)
        R = spec.field_radius * min(rows, cols)
        return np.hypot(xx - c[0], yy - c[1]) <= R, (c, R)
    if spec.field == "rect":
        u0, v0, u1, v1 = spec.rect
        return (xx >= u0 * cols) & (xx <= u1 * cols) & (yy >= v0 * rows) & (yy <= v1 * rows), None
    if spec.field == "full":
        return np.ones(spec.shape, bool), None
    raise ValueError(f"field must be 'round', 'rect' or 'full', got {spec.field!r}")


def shoot(geometry: ConeBeamGeometry, balls_mm, ball_diameter_mm: float, spec: ShotSpec, index=None,
          extra_balls_mm=()) -> IndependentShot:
    """Form one shot of steel balls ``balls_mm`` (N, 3, geometry's frame) as ``spec`` says.
    ``index`` (N,): each ball's index in its cage file (default 0..N-1); ``extra_balls_mm``:
    more balls rendered but not in the truth (a stacked neighbour, a stray ball)."""
    if tuple(geometry.shape) != tuple(spec.shape):
        raise ValueError(f"geometry shape {geometry.shape} differs from the spec's {spec.shape}")
    rng = np.random.default_rng(spec.seed)
    balls_mm = np.asarray(balls_mm, float).reshape(-1, 3)
    index = np.arange(len(balls_mm)) if index is None else np.asarray(index)
    r_mm = 0.5 * ball_diameter_mm
    allb = np.vstack([balls_mm, np.asarray(extra_balls_mm, float).reshape(-1, 3)])
    line = spec.tissue + _texture(spec.shape, rng, spec.texture, spec.texture_beta, spec.lobes)
    line = np.maximum(line, 0.0)
    line += _ball_line_integrals(geometry, allb, r_mm, spec.steel_mu_per_mm, spec.supersample)
    line += _rods(spec.shape, spec.rods)
    trans = np.exp(-line)
    exposed, circle = _field(spec)
    rows, cols = spec.shape
    if circle is not None and spec.vignetting:
        yy, xx = np.mgrid[0:rows, 0:cols]
        trans *= 1.0 - spec.vignetting * (np.hypot(xx - circle[0][0], yy - circle[0][1]) / circle[1]) ** 2
    if spec.field == "rect":
        trans = np.where(exposed, trans, spec.collimator_transmission * trans)
    # the unexposed surround of an II is dark; scatter and glare spill only from the exposed part
    trans = _blur(np.where(exposed, trans, 0.0) if spec.field == "round" else trans,
                  spec.blur_sigma_px, spec.glare_fraction, spec.glare_length_px)
    quanta = rng.poisson(np.maximum(trans, 0.0) * spec.photons)
    counts = spec.gain * quanta + spec.offset + rng.normal(0.0, spec.read_noise, spec.shape)
    if spec.field == "round":
        counts = np.where(exposed, counts, spec.surround + rng.normal(0.0, spec.read_noise, spec.shape) * (spec.surround > 0))
    pixels = np.clip(np.rint(counts), 0, spec.full_scale).astype(np.uint16)
    uv = geometry.project(balls_mm)
    dist = np.linalg.norm(balls_mm - geometry.source_mm, axis=1)
    r_px = r_mm * geometry.source_to_detector_mm / dist / geometry.pixel_spacing_mm[0]
    inside = _inside(uv, exposed)
    whole = inside & np.array([_disc_inside(q, r + 1.0, exposed) for q, r in zip(uv, r_px)], bool)
    truth = np.column_stack([index, uv])[inside]
    extra = geometry.project(allb[len(balls_mm):]) if len(allb) > len(balls_mm) else np.zeros((0, 2))
    return IndependentShot(pixels, exposed, geometry, truth, r_px[inside], whole[inside], spec, extra,
                           {"clipped_dark": float(np.mean(pixels[exposed] == 0)),
                            "clipped_bright": float(np.mean(pixels[exposed] == spec.full_scale))})


def _inside(uv, mask):
    rows, cols = mask.shape
    q = np.rint(uv).astype(int)
    ok = (q[:, 0] >= 0) & (q[:, 0] < cols) & (q[:, 1] >= 0) & (q[:, 1] < rows)
    out = np.zeros(len(uv), bool)
    out[ok] = mask[q[ok, 1], q[ok, 0]]
    return out


def _disc_inside(c, r, mask):
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = c + r * np.column_stack([np.cos(a), np.sin(a)])
    return bool(_inside(ring, mask).all())


_XA = "1.2.840.10008.5.1.4.1.1.12.1"


def write_vendor_dicom(shot: IndependentShot, path, style: str = "mono2_12") -> Path:
    """Write a shot as one vendor would (``VENDOR_STYLES``):

    - ``mono2_12``: MONOCHROME2, 12 bits stored in 16;
    - ``mono1_12``: MONOCHROME1 (stored = 4095 - counts: dense is bright);
    - ``mono2_8_log``: 8-bit MONOCHROME2 after a logarithmic look-up table (as processed
      fluoroscopy leaves the C-arm);
    - ``mono2_16_rescaled``: 16 bits stored = (counts - intercept) / slope with Rescale
      Slope 0.25 and Intercept -1024 in the header;
    - ``mono1_12_padded``: MONOCHROME1 with the unexposed surround set to Pixel Padding
      Value (the stored value that displays black);
    - ``mono1_12_padded_white``: the same padded with 0, a value that would display white
      (readers must treat padding as no signal, not as its grey).
    Geometry tags as fluoronav reads them (Imager Pixel Spacing, Distance Source to Detector)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if style not in VENDOR_STYLES:
        raise ValueError(f"style must be one of {VENDOR_STYLES}, got {style!r}")
    counts = shot.pixels.astype(np.float64)
    fs = shot.spec.full_scale
    ds = Dataset()
    bits_alloc, bits_stored, photometric = 16, 12, "MONOCHROME2"
    if style == "mono2_12":
        a = counts
    elif style in ("mono1_12", "mono1_12_padded", "mono1_12_padded_white"):
        photometric = "MONOCHROME1"
        a = fs - counts
        if style != "mono1_12":
            pad = fs if style == "mono1_12_padded" else 0
            ds.PixelPaddingValue = pad
            a = np.where(shot.field, np.clip(a, 1, None) if pad == 0 else a, pad)
    elif style == "mono2_8_log":
        bits_alloc = bits_stored = 8
        a = 255.0 * np.log1p(counts) / np.log1p(fs)
    else:
        bits_stored = 16
        slope, intercept = 0.25, -1024.0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope}", f"{intercept}", "US"
        a = (counts - intercept) / slope
    a = np.clip(np.rint(a), 0, (1 << bits_stored) - 1).astype(np.uint8 if bits_alloc == 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _XA
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = _XA, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer = "XA", f"independent-sim {style}"
    ds.PatientName, ds.PatientID = "PHANTOM^CAGE", "INDEPENDENT-SIM"
    now = _dt.datetime.now(_dt.timezone.utc)
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    col, row = shot.geometry.pixel_spacing_mm
    ds.ImagerPixelSpacing = [f"{row:.6g}", f"{col:.6g}"]
    ds.DistanceSourceToDetector = f"{shot.geometry.source_to_detector_mm:.6g}"
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_alloc, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(a).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    p = Path(path)
    p.write_bytes(buf.getvalue())
    return p


SCENARIOS = ("plain", "dark_cores", "saturated_cores", "field_edge", "collimated", "over_metal", "touching",
             "full_field")


def scenario_shot(cage, view: str, kind: str = "plain", shape=(384, 384), seed: int = 1, pixel_mm: float = 0.7,
                  tilt_deg=(4.0, -3.0, 12.0)) -> IndependentShot:
    """A cage shot of one detection failure class (``SCENARIOS``):

    - ``plain``: round II field, textured anatomy;
    - ``dark_cores``: no veiling glare, dense steel: ball cores at the surround's zero;
    - ``saturated_cores``: the converter's black level clips 80 counts: cores flat at 0;
    - ``field_edge``: a small off-centre round field cutting through the cage;
    - ``collimated``: a collimated rectangle (3 % transmission beyond the blades);
    - ``over_metal``: rods laid against six balls (overlapping their shadow by 1 px) and two
      thin wires across two more;
    - ``touching``: six more balls, 30 mm beyond six of the cage's towards the detector, whose
      shadows overlap those balls' (rendered, not in the truth: ``extra_px``);
    - ``full_field``: the whole detector exposed."""
    if kind not in SCENARIOS:
        raise ValueError(f"kind must be one of {SCENARIOS}, got {kind!r}")
    idx, balls = balls_of(cage, view)
    g = cage_geometry(cage, view, shape, pixel_mm, tilt_deg=tilt_deg)
    rng = np.random.default_rng(seed + 1000)
    spec = dict(shape=shape, seed=seed)
    extra = ()
    r_mm = 0.5 * cage.ball_diameter_mm
    uv = g.project(balls)
    r_px = r_mm * g.source_to_detector_mm / np.linalg.norm(balls - g.source_mm, axis=1) / pixel_mm
    if kind == "dark_cores":
        spec.update(steel_mu_per_mm=1.6, glare_fraction=0.0, offset=0.0, surround=0.0)
    elif kind == "saturated_cores":
        spec.update(steel_mu_per_mm=1.4, offset=-80.0)
    elif kind == "field_edge":
        spec.update(field_radius=0.33, field_centre=(0.42 * shape[1], 0.47 * shape[0]))
    elif kind == "collimated":
        spec.update(field="rect", rect=(0.2, 0.1, 0.85, 0.8))
    elif kind == "full_field":
        spec.update(field="full")
    elif kind == "over_metal":
        inner = np.flatnonzero(np.all((uv > 0.2 * np.array(shape[::-1])) & (uv < 0.8 * np.array(shape[::-1])), axis=1))
        pick = rng.choice(inner, 8, replace=False)
        spec.update(rods=rods_against(uv, r_px, pick[:6], rng, length_px=0.15 * shape[0], gap_px=-1.0)
                    + rods_against(uv, r_px, pick[6:], rng, length_px=0.15 * shape[0], over=True, rod_radius_px=1.0))
    elif kind == "touching":
        pick = rng.choice(len(balls), 6, replace=False)
        ex = []
        for k in pick:
            d = (balls[k] - g.source_mm) / np.linalg.norm(balls[k] - g.source_mm)
            side = np.cross(d, g.detector_u)
            ex.append(balls[k] + 30.0 * d + 0.8 * cage.ball_diameter_mm * side / np.linalg.norm(side))
        extra = np.array(ex)
    return shoot(g, balls, cage.ball_diameter_mm, ShotSpec(**spec), idx, extra)
