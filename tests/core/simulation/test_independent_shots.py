"""The independent image source: its truth against its own rendering, its fields, and its DICOM
files as vendors write them."""
import numpy as np
import pydicom
import pytest

from core.calibration.cage import load_cage
from core.imaging.images import read_image
from core.simulation import independent_shots as IS
from resources import path


@pytest.fixture(scope="module")
def cage():
    return load_cage(path("cages", "default.json"))


@pytest.fixture(scope="module")
def plain(cage):
    return IS.scenario_shot(cage, "ap", "plain")


def test_truth_is_the_centroid_of_the_rendered_shadows(cage):
    """Noise-free, no texture, no blur: the attenuation-weighted centroid of each isolated ball's
    rendered shadow is its truth pixel within 0.01 px (a sphere's perspective shadow centroid
    sits on its centre's projection to ~1e-3 px at these distances), indices count through the
    cage file's planes."""
    idx, balls = IS.balls_of(cage, "lat")
    assert idx.tolist() == list(range(sum(p.n_balls for p in cage.planes_for("ap")), sum(p.n_balls for p in cage.planes)))
    g = IS.cage_geometry(cage, "lat", (256, 256), 1.0)
    spec = IS.ShotSpec(shape=(256, 256), field="full", texture=0.0, photons=1e6, gain=0.003, read_noise=0.0,
                       blur_sigma_px=0.0, glare_fraction=0.0, vignetting=0.0, tissue=0.5, lobes=0.0)
    shot = IS.shoot(g, balls, cage.ball_diameter_mm, spec, idx)
    assert set(shot.balls_px[:, 0].astype(int)) <= set(idx.tolist())
    line = -np.log(shot.pixels.astype(float) / np.median(shot.pixels))
    uv = shot.balls_px[:, 1:]
    near = np.linalg.norm(uv[:, None] - uv[None], axis=-1) + 1e9 * np.eye(len(uv))
    errs = []
    for k in np.flatnonzero(near.min(axis=1) > 4 * shot.ball_radius_px + 4):
        r = int(np.ceil(shot.ball_radius_px[k] + 3))
        u0, v0 = np.floor(uv[k]).astype(int) - r
        vv, uu = np.mgrid[v0:v0 + 2 * r + 2, u0:u0 + 2 * r + 2]
        patch = line[v0:v0 + 2 * r + 2, u0:u0 + 2 * r + 2]
        if patch.shape != uu.shape:
            continue
        # a disc centred on the truth, past the shadow's edge: pixel noise (~1e-3) left out
        w = np.where((np.hypot(uu - uv[k, 0], vv - uv[k, 1]) <= shot.ball_radius_px[k] + 1.5) & (patch > 0.01),
                     patch, 0.0)
        errs.append(np.hypot((w * uu).sum() / w.sum() - uv[k, 0], (w * vv).sum() / w.sum() - uv[k, 1]))
    assert len(errs) >= 20 and max(errs) < 0.01, (len(errs), max(errs) if errs else None)


@pytest.mark.parametrize("kind", ["plain", "collimated", "field_edge"])
def test_fields_and_truth_inside_them(cage, kind):
    shot = IS.scenario_shot(cage, "ap", kind, shape=(256, 256))
    q = np.rint(shot.balls_px[:, 1:]).astype(int)
    assert shot.field[q[:, 1], q[:, 0]].all()                    # the truth lists balls in the field only
    rows, cols = shot.field.shape
    if kind == "collimated":
        assert not shot.field[:, :int(0.19 * cols)].any() and shot.field[int(0.5 * rows), int(0.5 * cols)]
        outside = shot.pixels[:, :int(0.15 * cols)].astype(float)
        assert 0 < outside.mean() < 0.1 * shot.pixels[shot.field].mean() and outside.std() > 1.0   # not a constant
    else:
        assert np.all(shot.pixels[~shot.field] == 0)             # the II's dark surround


def test_saturation_and_dark_cores(cage):
    """The clipping classes really clip: saturated cores sit at 0 over several pixels."""
    sat = IS.scenario_shot(cage, "ap", "saturated_cores", shape=(256, 256))
    q = np.rint(sat.balls_px[sat.disc_in_field, 1:]).astype(int)
    assert np.mean(sat.pixels[q[:, 1], q[:, 0]] == 0) > 0.9
    plain = IS.scenario_shot(cage, "ap", "plain", shape=(256, 256))
    assert np.mean(plain.pixels[q[:, 1], q[:, 0]] == 0) < 0.1


@pytest.mark.parametrize("style", IS.VENDOR_STYLES)
def test_vendor_dicom_round_trip(plain, tmp_path, style):
    """Each style reads back through fluoronav's reader with its header as written; the display
    pixels are a monotone (linear, or log for 8-bit) function of the counts."""
    f = IS.write_vendor_dicom(plain, tmp_path / "x.dcm", style)
    ds = pydicom.dcmread(f)
    img = read_image(f)
    disp = img.display().astype(float)
    c = plain.pixels.astype(float)
    inside = plain.field
    if style.startswith("mono1"):
        assert ds.PhotometricInterpretation == "MONOCHROME1" and img.photometric == "MONOCHROME1"
    if style == "mono2_8_log":
        assert ds.BitsAllocated == 8 and img.pixels.dtype == np.uint8
        expect = np.clip(np.rint(255 * np.log1p(c) / np.log1p(4095)), 0, 255)
    elif style == "mono2_16_rescaled":
        assert float(ds.RescaleSlope) == 0.25 and float(ds.RescaleIntercept) == -1024
        expect = (c + 1024) * 4
        assert np.allclose(img.pixels * 0.25 - 1024, c)          # the modality LUT gives the counts back
    else:
        expect = c
    if style == "mono1_12_padded":
        assert int(ds.PixelPaddingValue) == 4095 and np.all(img.pixels[~inside] == 4095)
    assert np.array_equal(disp[inside], expect[inside])
    assert ds.ImagerPixelSpacing[0] == pytest.approx(0.7) and float(ds.DistanceSourceToDetector) == pytest.approx(1000)


def test_bad_input(cage, plain, tmp_path):
    with pytest.raises(ValueError, match="style must be one of"):
        IS.write_vendor_dicom(plain, tmp_path / "x.dcm", "mono3")
    with pytest.raises(ValueError, match="kind must be one of"):
        IS.scenario_shot(cage, "ap", "underwater")
    g = IS.cage_geometry(cage, "ap", (128, 128), 1.0)
    with pytest.raises(ValueError, match="differs from the spec"):
        IS.shoot(g, cage.balls_for("ap"), 4.0, IS.ShotSpec(shape=(256, 256)))
    with pytest.raises(ValueError, match="field must be"):
        IS.shoot(g, cage.balls_for("ap"), 4.0, IS.ShotSpec(shape=(128, 128), field="hexagon"))
