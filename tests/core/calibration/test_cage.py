"""Cage files: the default cage's design properties and one failure per bad input."""
import copy
import importlib.util
import json

import numpy as np
import pytest

from core.calibration.cage import CageFileError, cage_from_dict, load_cage
from resources import path

DEFAULT = path("cages", "default.json")


@pytest.fixture(scope="module")
def raw():
    return json.loads(DEFAULT.read_text())


def test_default_cage_layout():
    cage = load_cage(DEFAULT)
    assert cage.ball_diameter_mm == 4.0
    assert [p.id for p in cage.planes_for("ap")] == ["ap_1", "ap_2"]
    assert [p.id for p in cage.planes_for("lat")] == ["lat_1", "lat_2"]
    for view, axis in (("ap", 2), ("lat", 0)):
        a, b = cage.planes_for(view)
        assert a.n_balls >= 40 and b.n_balls >= 40
        assert abs(abs(a.normal[axis]) - 1) < 1e-9                    # layers perpendicular to the beam
        gap = abs((b.balls_mm[0] - a.balls_mm[0]) @ a.normal)
        assert 40 <= gap <= 60                                        # depth conditioning
        span = np.ptp(a.balls_2d, axis=0)
        assert np.all(span > 120)                                     # spread over the field
        d = np.linalg.norm(a.balls_2d[:, None] - a.balls_2d[None], axis=-1) + 1e9 * np.eye(a.n_balls)
        assert d.min() >= 6.0                                         # paper: adjacent balls >= 6 mm
        b_in_a = (b.balls_mm - a.origin_mm) @ a.axes.T                # twin layer along the normal
        d2 = np.linalg.norm(a.balls_2d[:, None] - b_in_a[None], axis=-1)
        assert d2.min() >= 6.5                                        # layers offset in projection
    assert len(cage.sha256) == 64 and cage.source.endswith("default.json")


def test_in_plane_coordinates_round_trip():
    cage = load_cage(DEFAULT)
    for p in cage.planes:
        assert np.allclose(p.to_3d(p.balls_2d), p.balls_mm, atol=1e-9)


def _generator():
    spec = importlib.util.spec_from_file_location("make_default", path("cages", "make_default.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_similarity_maps_a_layer_onto_itself_or_its_twin():
    """No similarity (scale 0.7-1.4, with or without reflection) puts more than
    10 of 48 balls within 1.5 mm of balls of the same layer (identity excluded)
    or of the other layer of the part."""
    gen = _generator()
    cage = load_cage(DEFAULT)
    a, b = (p.balls_2d for p in cage.planes_for("ap"))
    assert gen.max_self_matches(a, a, same=True) <= 10
    assert gen.max_self_matches(a, b) <= 10
    # and the check can fail: a symmetric grid maps onto itself
    g = np.array([[x, y] for x in range(0, 60, 12) for y in range(0, 60, 12)], float)
    assert gen.max_self_matches(g, g, same=True) >= 20


def _mut(raw, f):
    d = copy.deepcopy(raw)
    f(d)
    return d


def _set(d, keys, value):
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


BAD = {
    "format": lambda d: _set(d, ["format"], "fluoronav.cage/2"),
    "diameter": lambda d: _set(d, ["ball_diameter_mm"], -4),
    "planes_missing": lambda d: d.pop("planes"),
    "plane_not_object": lambda d: _set(d, ["planes", 0], [1, 2]),
    "no_id": lambda d: d["planes"][0].pop("id"),
    "bad_view": lambda d: _set(d, ["planes", 0, "view"], "oblique"),
    "bad_shape": lambda d: _set(d, ["planes", 0, "balls_mm"], [[1, 2]] * 10),
    "non_numeric": lambda d: _set(d, ["planes", 0, "balls_mm", 0], ["a", 1, 2]),
    "non_finite": lambda d: _set(d, ["planes", 0, "balls_mm", 0], [float("nan"), 1, 2]),
    "too_few": lambda d: _set(d, ["planes", 0, "balls_mm"], d["planes"][0]["balls_mm"][:4]),
    "collinear": lambda d: _set(d, ["planes", 0, "balls_mm"], [[i * 10.0, 0, 0] for i in range(8)]),
    "not_coplanar": lambda d: _set(d, ["planes", 0, "balls_mm", 0], [d["planes"][0]["balls_mm"][0][0],
                                                                     d["planes"][0]["balls_mm"][0][1], 1.0]),
    "duplicate_id": lambda d: _set(d, ["planes", 1, "id"], "ap_1"),
    "one_lat_plane": lambda d: d["planes"].pop(3),
    "balls_overlap": lambda d: _set(d, ["planes", 0, "balls_mm", 1],
                                    [d["planes"][0]["balls_mm"][0][0] + 1.0, d["planes"][0]["balls_mm"][0][1], 0.0]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_cage_rejected_with_one_line(raw, name):
    with pytest.raises(CageFileError) as e:
        cage_from_dict(_mut(raw, BAD[name]))
    assert "\n" not in str(e.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CageFileError, match="cannot read"):
        load_cage(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CageFileError, match="not valid JSON"):
        load_cage(bad)


def test_planes_for_rejects_unknown_view():
    with pytest.raises(CageFileError):
        load_cage(DEFAULT).planes_for("oblique")
