"""Spine phantom: tissue HU, morphometry trends, seeds, fracture, and truth consistent with the voxels."""
import numpy as np
import pytest

from core.simulation.phantom import CANONICAL_LEVELS, PhantomError, make_spine_phantom
from core.simulation.phantom.build import _cached
from core.planning.grading import grade_trajectory

TEXTURE_HU = 4 * 25.0      # trabecular texture: smooth field with a 25 HU standard deviation


@pytest.fixture(scope="module")
def small():
    return make_spine_phantom(spacing_mm=2.0, levels=("L3", "L4"))


@pytest.fixture(scope="module")
def fine_l3():
    """L3 alone at 0.5 mm in a 60 x 60 x 40 mm field around its pedicles."""
    return make_spine_phantom(spacing_mm=0.5, levels=("L3",), shape=(80, 120, 120), center_mm=(0.0, 15.0, 5.0))


@pytest.fixture(scope="module")
def coarse():
    return {s: make_spine_phantom(seed=s, spacing_mm=3.0) for s in (0, 1, 2)}


def _local(vt, p):
    T = vt.T_world_vertebra
    return (np.asarray(p) - T[:3, 3]) @ T[:3, :3]


def test_small_phantom_layout(small):
    v = small.volume
    assert v.hu.dtype == np.float32 and v.spacing_mm == (2.0, 2.0, 2.0)
    assert list(small.levels) == ["L3", "L4"]
    assert np.allclose(small.levels["L3"].body_center_mm, 0.0)          # world origin at L3's body
    l4 = small.levels["L4"].body_center_mm
    assert l4[2] < -30.0 and abs(l4[0]) < 1e-9                          # L4 below L3, on the midline
    assert len(small.pedicles) == 4 and small.pedicles[0].level == "L3"


def test_tissue_hu_at_known_points(small):
    v, l3, l4 = small.volume, small.levels["L3"], small.levels["L4"]
    assert v.sample(l3.body_center_mm) == pytest.approx(small.hu_cancellous, abs=TEXTURE_HU)
    assert 150.0 <= small.hu_cancellous <= 300.0 and 800.0 <= small.hu_cortical <= 1200.0
    disc = 0.5 * (l3.inferior_endplate_mm + l4.superior_endplate_mm)
    assert v.sample(disc) == pytest.approx(80.0, abs=3.0)
    canal = l3.body_center_mm + l3.T_world_vertebra[:3, 1] * (0.5 * l3.body_depth_mm + 0.5 * small.params["L3"].canal_depth)
    assert v.sample(canal) == pytest.approx(10.0, abs=3.0)             # CSF in the thecal sac
    assert v.sample(v.bounds_world()[0]) == pytest.approx(-1000.0)
    # a line from the back through the left erector spinae: air, fat, muscle
    z = l3.body_center_mm[2] + 20.0
    line = np.column_stack([np.full(200, 36.0), np.linspace(140.0, 40.0, 200), np.full(200, z)])
    hu = v.sample(line)
    assert hu[0] == pytest.approx(-1000.0)
    assert np.any(np.abs(hu + 100.0) < 3.0)     # subcutaneous fat plateau
    assert np.any(np.abs(hu - 50.0) < 3.0)      # erector spinae


def test_trabecular_texture_has_the_stated_spread():
    g = np.stack(np.meshgrid(*[np.linspace(-8.0, 8.0, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    textured = make_spine_phantom(spacing_mm=1.0, levels=("L3",), shape=(40, 50, 60), center_mm=(0, 0, 0))
    hu = textured.volume.sample(g)
    assert hu.std() == pytest.approx(25.0, abs=8.0)
    assert hu.mean() == pytest.approx(textured.hu_cancellous, abs=12.0)
    plain = make_spine_phantom(spacing_mm=1.0, levels=("L3",), shape=(40, 50, 60), center_mm=(0, 0, 0),
                               trabecular_hu_sd=0.0)
    assert np.allclose(plain.volume.sample(g), plain.hu_cancellous, atol=0.01)


def test_cortical_shell_around_cancellous_core(fine_l3):
    v, l3 = fine_l3.volume, fine_l3.levels["L3"]
    R, c = l3.T_world_vertebra[:3, :3], l3.body_center_mm
    y = np.linspace(-0.5 * l3.body_depth_mm - 4.0, 0.0, 200)            # anterior wall -> centre
    hu = v.sample(c + y[:, None] * R[:, 1])
    assert hu.max() == pytest.approx(fine_l3.hu_cortical, abs=150.0)
    assert hu[-1] == pytest.approx(fine_l3.hu_cancellous, abs=TEXTURE_HU)
    assert hu[0] < 100.0


def test_pedicle_width_and_transverse_angle_grow_caudally(coarse):
    for seed, ph in coarse.items():
        w = {n: np.mean([ph.pedicle(n, s).width_mm for s in ("left", "right")]) for n in ph.levels}
        a = {n: np.mean([ph.pedicle(n, s).transverse_angle_rad for s in ("left", "right")]) for n in ph.levels}
        assert w["L1"] < w["L3"] < w["L5"], seed
        assert a["L1"] < a["L3"] < a["L5"], seed
        assert 6.5 < w["L1"] < 10.5 and 13.0 < w["L5"] < 20.0
        assert np.degrees(a["L1"]) == pytest.approx(11.0, abs=4.5)
        assert np.degrees(a["L5"]) == pytest.approx(28.0, abs=4.5)
    w0 = [np.mean([coarse[0].pedicle(n, s).width_mm for s in ("left", "right")]) for n in ("L1", "L2", "L3", "L4", "L5")]
    assert np.all(np.diff(w0) > 0)


def test_pedicle_axis_matches_its_transverse_angle(coarse):
    for pt in coarse[0].pedicles:
        a = _local(coarse[0].levels[pt.level], coarse[0].levels[pt.level].body_center_mm + pt.axis)
        medial = -a[0] if pt.side == "left" else a[0]                    # converges toward the midline
        assert np.arctan2(medial, -a[1]) == pytest.approx(pt.transverse_angle_rad, abs=1e-6)
        assert np.linalg.norm(pt.axis) == pytest.approx(1.0)
        assert np.allclose(pt.axis, (pt.target_mm - pt.entry_mm) / pt.length_mm, atol=1e-9)


def test_seeds_differ_and_repeat(coarse):
    a, b = coarse[0], coarse[1]
    assert not np.array_equal(a.volume.hu, b.volume.hu)
    assert np.linalg.norm(a.pedicle("L4", "left").entry_mm - b.pedicle("L4", "left").entry_mm) > 0.5
    assert a.lordosis_deg != b.lordosis_deg
    _cached.cache_clear()
    again = make_spine_phantom(seed=0, spacing_mm=3.0)
    assert again is not a and np.array_equal(again.volume.hu, a.volume.hu)


def test_lordosis_and_axial_rotation_are_applied():
    ph = make_spine_phantom(spacing_mm=4.0, lordosis_deg=42.0, axial_rotation_deg={"L3": 10.0},
                            soft_tissue=False)
    z1 = ph.levels["L1"].T_world_vertebra[:3, 2]
    zs = ph.levels["S1"].T_world_vertebra[:3, 2]
    assert np.degrees(np.arccos(np.clip(z1 @ zs, -1, 1))) == pytest.approx(42.0, abs=1e-6)
    assert z1[1] > 0 > zs[1]                                              # lordotic: apex anterior
    x3 = ph.levels["L3"].T_world_vertebra[:3, 0]
    assert np.degrees(np.arctan2(x3[1], x3[0])) == pytest.approx(10.0, abs=1e-6)
    assert ph.axial_rotation_deg["L4"] == 0.0


def _bone_extent(ph, level, y_local):
    """Cranio-caudal length of bone along the body's local z at depth y_local (mm)."""
    vt = ph.levels[level]
    R, c = vt.T_world_vertebra[:3, :3], vt.body_center_mm
    z = np.arange(-25.0, 25.0, 0.05)
    hu = ph.volume.sample(c + y_local * R[:, 1] + z[:, None] * R[:, 2])
    bone = hu > 0.5 * (ph.hu_cancellous + 80.0)
    centre = len(z) // 2
    gaps = np.nonzero(~bone)[0]
    top, bottom = gaps[gaps > centre].min(), gaps[gaps < centre].max()    # the run of bone through z=0
    return (top - bottom - 1) * 0.05


def test_fracture_reduces_anterior_height():
    kw = dict(seed=4, spacing_mm=1.0, levels=("L2", "L3", "L4"), soft_tissue=False)
    intact = make_spine_phantom(**kw)
    broken = make_spine_phantom(fracture_level="L3", fracture_loss=0.4, **kw)
    y_ant = -0.5 * intact.levels["L3"].body_depth_mm + 5.0
    y_post = 0.5 * intact.levels["L3"].body_depth_mm - 5.0
    ratio = _bone_extent(broken, "L3", y_ant) / _bone_extent(intact, "L3", y_ant)
    assert ratio == pytest.approx(0.62, abs=0.07)     # 40 % anterior loss, measured 5 mm inside the wall
    assert _bone_extent(broken, "L3", y_post) == pytest.approx(_bone_extent(intact, "L3", y_post), abs=1.5)
    assert broken.levels["L3"].fractured and not broken.levels["L2"].fractured
    assert broken.levels["L3"].height_anterior_mm == pytest.approx(0.6 * intact.levels["L3"].height_anterior_mm)
    # only the superior end-plate collapses: it tilts forward by atan(lost height / depth)
    b3, i3 = broken.levels["L3"], intact.levels["L3"]
    lost, D = 0.4 * i3.height_anterior_mm, i3.body_depth_mm
    slope = (i3.height_anterior_mm - i3.height_posterior_mm) / (2 * D)       # intact wedge of the rim
    tilt = np.degrees(np.arccos(np.clip(b3.superior_normal @ i3.superior_normal, -1, 1)))
    assert tilt == pytest.approx(np.degrees(np.arctan(slope) - np.arctan(slope - lost / D)), abs=1e-6)
    assert _local(b3, b3.body_center_mm + b3.superior_normal)[1] < _local(i3, i3.body_center_mm + i3.superior_normal)[1]
    assert np.allclose(b3.inferior_normal, i3.inferior_normal, atol=1e-9)
    # and the spine above kyphoses by the same angle
    z2b, z2i = broken.levels["L2"].T_world_vertebra[:3, 2], intact.levels["L2"].T_world_vertebra[:3, 2]
    assert np.degrees(np.arccos(np.clip(z2b @ z2i, -1, 1))) == pytest.approx(np.degrees(np.arctan(lost / D)), abs=1e-6)


def test_entry_on_posterior_cortex_and_target_in_anterior_body(fine_l3):
    v, l3 = fine_l3.volume, fine_l3.levels["L3"]
    for side in ("left", "right"):
        p = l3.pedicles[side]
        assert v.sample(p.entry_mm + 0.5 * p.axis) > 400.0                # just inside: cortex
        assert v.sample(p.entry_mm - 1.0 * p.axis) < 100.0                # just outside: soft tissue
        assert _local(l3, p.entry_mm)[1] > 0.5 * l3.body_depth_mm + 10.0  # behind the canal's front
        assert v.sample(p.target_mm) == pytest.approx(fine_l3.hu_cancellous, abs=TEXTURE_HU)
        assert _local(l3, p.target_mm)[1] < -l3.body_depth_mm / 6.0       # anterior third
        assert 35.0 < p.length_mm < 60.0


def test_drawn_pedicle_is_the_graded_pedicle(fine_l3):
    """The 50 % partial-volume edge of the drawn cortex lies on the truth ellipse (0.5 mm voxels)."""
    v = fine_l3.volume
    mid = 0.5 * (fine_l3.hu_cortical + 35.0)
    for p in fine_l3.levels["L3"].pedicles.values():
        for s in (-0.5 * p.half_length_mm, 0.0, 0.5 * p.half_length_mm):
            aw, ah = p.half_axes(s)
            for direction, semi in ((p.lateral, aw), (-p.lateral, aw), (p.superior, ah), (-p.superior, ah)):
                r = np.arange(0.0, semi + 6.0, 0.02)
                hu = v.sample(p.isthmus_mm + s * p.axis + r[:, None] * direction)
                edge = r[np.nonzero(hu > mid)[0][-1]]
                assert edge == pytest.approx(semi, abs=0.15), (p.side, s)


def test_ideal_trajectory_grades_a(coarse):
    for p in coarse[0].pedicles:
        if p.level == "S1":
            continue
        g = grade_trajectory(p.entry_mm, p.target_mm, 0.6 * p.width_mm, p)
        # a circle centred in an ellipse clears it by the minor semi-axis minus its radius
        expected = 0.5 * min(p.width_mm, p.height_mm) - 0.3 * p.width_mm
        assert g.grade == "A" and g.clearance_mm == pytest.approx(expected, abs=0.02)


def test_rejects_unknown_level():
    with pytest.raises(PhantomError, match="unknown level"):
        make_spine_phantom(levels=("L3", "L6"))


def test_rejects_bad_spacing():
    with pytest.raises(PhantomError, match="spacing"):
        make_spine_phantom(spacing_mm=0.0)


def test_rejects_fracture_of_a_level_not_drawn():
    with pytest.raises(PhantomError, match="fracture level"):
        make_spine_phantom(levels=("L3",), fracture_level="L1")


def test_rejects_lordosis_out_of_range():
    with pytest.raises(PhantomError, match="lordosis"):
        make_spine_phantom(lordosis_deg=120.0)


def test_rejects_negative_seed():
    with pytest.raises(PhantomError, match="seed"):
        make_spine_phantom(seed=-1)


def test_rejects_bad_shape():
    with pytest.raises(PhantomError, match="shape"):
        make_spine_phantom(shape=(4, 4))


def test_rejects_unknown_side(small):
    with pytest.raises(PhantomError, match="side"):
        small.pedicle("L3", "middle")


def test_rejects_a_level_not_in_the_phantom(small):
    with pytest.raises(PhantomError, match="not in this phantom"):
        small.pedicle("L1", "left")


def test_exact_ellipse_distance_against_a_dense_polygon():
    """The pedicle surface distance (truth and voxels) is exact: 1e-5 mm against 400 000 vertices."""
    from scipy.spatial import cKDTree
    from core.simulation.phantom.sdf import ellipse_exact
    rng = np.random.default_rng(0)
    for a, b in ((6.0, 2.5), (3.5, 8.0), (9.0, 7.0)):
        th = np.linspace(0.0, 2 * np.pi, 400001)
        P = rng.uniform(-15, 15, (500, 2))
        d_ref, _ = cKDTree(np.column_stack([a * np.cos(th), b * np.sin(th)])).query(P)
        d_ref = np.where((P[:, 0] / a) ** 2 + (P[:, 1] / b) ** 2 < 1, -d_ref, d_ref)
        assert np.max(np.abs(ellipse_exact(P[:, 0], P[:, 1], a, b) - d_ref)) < 1e-5


def test_phantom_pickles_for_worker_processes(small):
    import pickle
    copy = pickle.loads(pickle.dumps(small))
    assert np.array_equal(copy.volume.hu, small.volume.hu)
    assert np.allclose(copy.pedicle("L4", "left").entry_mm, small.pedicle("L4", "left").entry_mm)
    assert copy.levels["L3"].bone_sdf is None and small.levels["L3"].bone_sdf is not None


def test_canonical_levels():
    assert CANONICAL_LEVELS == ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
