"""Instruments for the verification shots: exact chords of the frustum, K-wire and guide tube,
their shadows in a simulated shot, the deviated wire's geometry, bad input."""
import math

import numpy as np
import pytest

from core.geometry.cone_beam import ConeBeamGeometry
from core.geometry.rigid import from_euler, invert
from core.simulation.fluoro import object_transmission
from core.simulation.instruments import GuideTube, KWire, attenuators, deviated_wire
from core.simulation.objects import MU_STEEL_PER_MM, Cylinder, Frustum, SceneError


def numeric_chords(inside, source, dirs, t0, t1, n=30001):
    """Chords by sampling each ray every (t1 - t0) / (n - 1) mm between t0 and t1."""
    t = np.linspace(t0, t1, n)
    dt = t[1] - t[0]
    return np.array([inside(source + t[:, None] * d).sum() * dt for d in dirs])


def frustum_inside(f):
    a = f.p1_mm - f.p0_mm
    L = np.linalg.norm(a)
    a = a / L

    def inside(X):
        h = (X - f.p0_mm) @ a
        rho = np.linalg.norm((X - f.p0_mm) - h[:, None] * a, axis=1)
        return (h >= 0) & (h <= L) & (rho <= f.r0_mm + (f.r1_mm - f.r0_mm) * h / L)
    return inside


def unit_rows(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("r0,r1", [(2.0, 0.0), (1.0, 3.0), (2.5, 1.5)])
def test_frustum_chords_match_a_fine_numerical_integral(r0, r1):
    f = Frustum([1.0, 2.0, 3.0], [4.0, -2.0, 10.0], r0, r1)
    rng = np.random.default_rng(0)
    axis = f.p1_mm - f.p0_mm
    for source in (np.array([-50.0, 30.0, -20.0]),                    # across the axis
                   f.p1_mm + 80 * axis / np.linalg.norm(axis),        # nearly along it, from the narrow end
                   f.p0_mm - 80 * axis / np.linalg.norm(axis)):       # and from the wide end
        aim = f.p0_mm + rng.uniform(-3, 3, (60, 3)) + rng.uniform(0, 1, (60, 1)) * axis
        dirs = unit_rows(aim - source)
        exact = f.chords(source, dirs)
        assert (exact > 0).sum() > 15
        d0 = np.linalg.norm(0.5 * (f.p0_mm + f.p1_mm) - source)
        np.testing.assert_allclose(exact, numeric_chords(frustum_inside(f), source, dirs, d0 - 15, d0 + 15),
                                   atol=0.003)


def test_frustum_closed_forms():
    f = Frustum([0, 0, 0.0], [0, 0, 10.0], 2.0, 0.0)
    src = np.array([-100.0, 0, 4.0])                       # across the axis at h = 4: r = 1.2
    assert f.chords(src, np.array([[1.0, 0, 0]]))[0] == pytest.approx(2.4, abs=1e-12)
    off = np.array([[100.0, 0.5, 0.0]]) / np.linalg.norm([100.0, 0.5, 0.0])
    assert f.chords(src, off)[0] == pytest.approx(2 * math.sqrt(1.2 ** 2 - 0.25), abs=1e-4)
    assert f.chords(np.array([0, 0, -50.0]), np.array([[0, 0, 1.0]]))[0] == pytest.approx(10.0)
    assert f.chords(src, np.array([[0, 1.0, 0]]))[0] == 0.0


def test_kwire_chords():
    w = KWire([0, 0, 0.0], [0, 0, -40.0], diameter_mm=2.0, outside_mm=60.0, tip="sharp", tip_length_mm=3.0)
    assert w.length_mm == pytest.approx(100.0)
    np.testing.assert_allclose(w.back_mm, [0, 0, 60.0])
    across = np.array([[1.0, 0, 0]])
    assert w.chords(np.array([-100.0, 0, 10.0]), across)[0] == pytest.approx(2.0)          # shaft
    assert w.chords(np.array([-100.0, 0, -38.5]), across)[0] == pytest.approx(1.0)         # half-way down the cone
    assert w.chords(np.array([-100.0, 0, -40.5]), across)[0] == 0.0                        # beyond the apex
    assert w.chords(np.array([0, 0, 200.0]), np.array([[0, 0, -1.0]]))[0] == pytest.approx(100.0)
    flat = KWire([0, 0, 0.0], [0, 0, -40.0], outside_mm=60.0, tip="flat")
    assert flat.chords(np.array([-100.0, 0, -39.9]), across)[0] == pytest.approx(2.0)
    assert len(w.attenuators()) == 2 and len(flat.attenuators()) == 1


def test_guide_tube_chords_are_the_wall_only():
    g = GuideTube([0, 0, 0.0], [0, 0, -50.0], 8.0, 2.5, length_mm=60.0, standoff_mm=30.0)
    np.testing.assert_allclose(g.front_mm, [0, 0, 30.0])
    np.testing.assert_allclose(g.back_mm, [0, 0, 90.0])
    across = np.array([[1.0, 0, 0]])
    src = np.array([-100.0, 0, 50.0])
    assert g.chords(src, across)[0] == pytest.approx(8.0 - 2.5)                             # both walls
    tangent = np.array([-100.0, 2.0, 50.0])                                                # misses the lumen
    assert g.chords(tangent, across)[0] == pytest.approx(2 * math.sqrt(16 - 4))
    assert g.chords(np.array([-100.0, 0, 20.0]), across)[0] == 0.0                          # in the stand-off
    outer, lumen = g.attenuators()
    assert lumen.mu_per_mm == -outer.mu_per_mm
    dirs = unit_rows(np.random.default_rng(1).normal([1.0, 0, 0], 0.02, (50, 3)))
    np.testing.assert_allclose(g.chords(src, dirs), outer.chords(src, dirs) - lumen.chords(src, dirs))


def test_wire_shadow_in_a_shot_is_exact():
    """Flat detector, no noise: the transmission across the shaft is exp(-mu * chord) at the centre
    pixel, and the shadow ends where the tip projects."""
    ps, shape = 0.2, (96, 160)
    rows, cols = shape
    geo = ConeBeamGeometry([0, -625.0, 0], [-(cols - 1) / 2 * ps, 375.0, (rows - 1) / 2 * ps],
                           [1.0, 0, 0], [0, 0, -1.0], (ps, ps), shape)
    w = KWire([-10.0, 0, 0.0], [8.0, 0, 0.0], diameter_mm=2.0, outside_mm=5.0, tip="flat")
    T = object_transmission(attenuators([w]), geo, None, supersample=8)
    uv = geo.project(np.array([[0.0, 0, 0], w.tip_mm]))
    c = np.rint(uv[0]).astype(int)
    # the pixel centre's ray meets the shaft across its axis: chord 2 mm (to the pixel's curvature)
    ray = geo.ray(c.astype(float))
    chord = w.chords(ray.origin, ray.direction[None])[0]
    assert chord == pytest.approx(2.0, abs=0.01)
    assert T[c[1], c[0]] == pytest.approx(math.exp(-MU_STEEL_PER_MM * chord), rel=2e-3)
    row = -np.log(T[c[1]])
    end = np.flatnonzero(row > 0.5 * row[c[0]]).max()        # the last column darker than half
    assert abs(end + 0.5 - uv[1][0]) < 1.0


def test_deviated_wire_has_the_asked_deviation():
    e, t = np.array([10.0, 40.0, -20.0]), np.array([2.0, -8.0, -25.0])
    a = (t - e) / np.linalg.norm(t - e)
    for off, ang, depth, az in ((1.0, 2.0, 1.5, 0.7), (3.0, 0.0, -2.0, 2.0), (0.0, 5.0, 0.0, 4.0)):
        w = deviated_wire(e, t, off, ang, depth, offset_azimuth_rad=az, tilt_azimuth_rad=az + 1.0, tip="flat")
        assert np.linalg.norm(w.entry_mm - e) == pytest.approx(off, abs=1e-12)
        assert (w.entry_mm - e) @ a == pytest.approx(0.0, abs=1e-12)
        assert math.degrees(math.acos(w.axis @ a)) == pytest.approx(ang, abs=1e-6)
        assert np.linalg.norm(w.tip_mm - w.entry_mm) == pytest.approx(np.linalg.norm(t - e) + depth, abs=1e-9)


def test_instruments_move_between_frames():
    T = from_euler("xyz", [0.3, -0.2, 1.1], [10.0, -20.0, 30.0])
    w = KWire([1.0, 2, 3], [4.0, 5, -30], tip="sharp")
    back = w.in_frame(T).in_frame(invert(T))
    np.testing.assert_allclose(back.tip_mm, w.tip_mm, atol=1e-12)
    assert back.tip_length_mm == w.tip_length_mm
    g = GuideTube([0, 0, 0.0], [0, 0, -50.0]).in_frame(T)
    np.testing.assert_allclose(g.axis, T[:3, :3] @ [0, 0, -1.0], atol=1e-12)


def test_bad_instruments_are_refused():
    with pytest.raises(SceneError, match="diameter"):
        KWire([0, 0, 0.0], [0, 0, 10.0], diameter_mm=0.0)
    with pytest.raises(SceneError, match="tip must be"):
        KWire([0, 0, 0.0], [0, 0, 10.0], tip="round")
    with pytest.raises(SceneError, match="coincide"):
        KWire([0, 0, 0.0], [0, 0, 0.0])
    with pytest.raises(SceneError, match="finite"):
        KWire([0, np.nan, 0.0], [0, 0, 1.0])
    with pytest.raises(SceneError, match="inner < outer"):
        GuideTube([0, 0, 0.0], [0, 0, 10.0], 4.0, 5.0)
    with pytest.raises(SceneError, match="radii"):
        Frustum([0, 0, 0.0], [0, 0, 1.0], 0.0, 0.0)
    with pytest.raises(SceneError, match="degrees"):
        deviated_wire([0, 0, 0.0], [0, 0, 10.0], angle_deg=75.0)
    with pytest.raises(SceneError, match="4x4"):
        KWire([0, 0, 0.0], [0, 0, 10.0]).in_frame(np.eye(3))
    # a cylinder of negative attenuation (a lumen) stays allowed, as gas spheres are
    assert Cylinder([0, 0, 0.0], [0, 0, 1.0], 1.0, -0.5).mu_per_mm == -0.5
