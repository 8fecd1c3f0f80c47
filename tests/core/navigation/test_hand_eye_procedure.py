"""The hand-eye procedure end to end against the simulator's truth: poses chosen, cage shots
calibrated, AX = XB by every method, the mount stored and loaded by the robot configuration,
the shots folder read back (``fluoronav handeye --shots``), and each refusal."""
import json
import logging
import math

import numpy as np
import pytest

from core.navigation.hand_eye import (METHODS, HandEyeError, cage_mount_path, hand_eye_poses, load_cage_mount,
                                      save_cage_mount, solve_from_calibrations)
from core.navigation.hand_eye_shots import SHOTS_FILE, read_shots_folder
from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import load_hybrid5
from core.navigation.hand_eye_sim import HOME_POSE, simulate_hand_eye
from core.simulation.robot_truth import TrueRobot, sample_robot_errors
from resources import path as resource_path

ROBOT_FILE = resource_path("robots", "hybrid5.json")


@pytest.fixture(scope="module")
def kin():
    return load_hybrid5(hand_eye=None)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The simulated room of seed 0 (the GUI's robot), 5 poses tilted 20 deg, 256 px shots;
    the shots also written as a --shots folder."""
    folder = tmp_path_factory.mktemp("handeye_shots")
    return simulate_hand_eye(seed=0, n_poses=5, save_dir=folder), folder


def test_the_measured_mount_matches_the_truth_and_beats_the_nominal(measured):
    """Measured (seed 0): tsai/park/horaud 0.22 mm / 0.032 deg from the true mount, residual
    0.050 mm / 0.036 deg; the nominal mount is 3.76 mm / 0.57 deg off."""
    sim, _ = measured
    r = sim["measurement"].result
    assert set(r.residuals) | set(r.failed) == set(METHODS) and r.n_poses == 5
    t, a = sim["errors"][r.method]
    t0, a0 = sim["nominal_error"]
    assert t < 0.5 and a < 0.1
    assert t0 > 3.0 and a0 > 0.3
    assert t0 > 5 * t and a0 > 5 * a
    chosen = r.residuals[r.method]
    assert chosen["translation_mm"] < 0.15 and chosen["rotation_deg"] < 0.1
    # chosen by the residual alone: no method has a smaller graded residual
    score = lambda x: x["translation_mm"] + math.radians(x["rotation_deg"]) * 100
    assert all(score(x) >= score(chosen) for x in r.residuals.values())
    assert r.axis_spread_deg > 45 and r.max_rotation_deg > 20
    assert max(sim["measurement"].marks_rms_mm) < 0.15


def test_the_stored_mount_is_what_the_robot_loads(measured, tmp_path, caplog):
    sim, _ = measured
    r = sim["measurement"].result
    with caplog.at_level(logging.INFO, logger="core.robot.kinematics.hybrid5"):
        assert np.allclose(load_hybrid5().T_flange_cage, load_hybrid5(hand_eye=None).T_flange_cage)
    assert "cage mount: nominal (hybrid5.json; no measured mount" in caplog.text
    path = cage_mount_path(ROBOT_FILE)                     # under the test's own XDG_CONFIG_HOME
    path.parent.mkdir(parents=True)
    save_cage_mount(r, path, joints_used=sim["joints"], source="simulation (seed 0)")
    back, doc = load_cage_mount(path)
    np.testing.assert_allclose(back.T_flange_cage, r.T_flange_cage, atol=1e-12)
    assert doc["measured_at"].startswith("20") and len(doc["joints_used"]) == 5
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="core.robot.kinematics.hybrid5"):
        k = load_hybrid5()
    np.testing.assert_allclose(k.T_flange_cage, r.T_flange_cage, atol=1e-12)
    np.testing.assert_allclose(k.T_flange_cage_nominal, load_hybrid5(hand_eye=None).T_flange_cage)
    assert f"cage mount: measured {doc['measured_at']} by {r.method} from 5 poses" in caplog.text
    assert f"by {r.method}" in k.cage_mount
    # the controller's forward kinematics now put the cage where the true robot does (to the measurement)
    truth = TrueRobot(k, sample_robot_errors(0, nominal=k))
    q = k.joints_for_pose(HOME_POSE)
    err_measured = np.linalg.norm(k.cage(q)[:3, 3] - truth.cage(q)[:3, 3])
    err_nominal = np.linalg.norm(load_hybrid5(hand_eye=None).cage(q)[:3, 3] - truth.cage(q)[:3, 3])
    assert err_measured < 0.6 < 3.0 < err_nominal
    # measuring the mount does not move the simulator's true cage
    np.testing.assert_allclose(truth.T_flange_cage, sim["truth"], atol=1e-12)


def test_a_bad_stored_mount_is_one_clear_line(measured, tmp_path):
    r = measured[0]["measurement"].result
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "fluoronav.hand_eye/1", ')
    with pytest.raises(KinematicsError, match=r"corrupt\.json: not a JSON file.*delete the file") as e:
        load_hybrid5(hand_eye=corrupt)
    assert "\n" not in str(e.value)
    skew = tmp_path / "skew.json"
    doc = r.to_dict()
    doc["T_flange_cage"] = (np.diag([1.02, 1, 1, 1]) @ r.T_flange_cage).tolist()
    skew.write_text(json.dumps(doc))
    with pytest.raises(KinematicsError, match="skew.json: hand-eye record: T_flange_cage is not a finite rigid"):
        load_hybrid5(hand_eye=skew)
    with pytest.raises(KinematicsError, match="cannot read the measured cage mount"):
        load_hybrid5(hand_eye=tmp_path / "missing.json")
    path = cage_mount_path(ROBOT_FILE)                     # "auto" does not fall back silently either
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    with pytest.raises(KinematicsError, match="hybrid5.hand_eye.json: not a JSON file"):
        load_hybrid5()


def _rewrite(folder, tmp_path, change):
    import shutil
    dst = tmp_path / "shots"
    shutil.copytree(folder, dst)
    doc = json.loads((dst / SHOTS_FILE).read_text())
    change(doc, dst)
    (dst / SHOTS_FILE).write_text(json.dumps(doc))
    return dst


def test_shots_folder_refusals(measured, kin, tmp_path):
    from core.navigation.hand_eye_shots import measure
    _, folder = measured
    with pytest.raises(HandEyeError, match="no hand_eye_shots.json"):
        read_shots_folder(tmp_path)
    two = _rewrite(folder, tmp_path / "a", lambda d, _: d.update(poses=d["poses"][:2]))
    with pytest.raises(HandEyeError, match=r">= 3 robot poses, got 2"):
        read_shots_folder(two)
    bad = _rewrite(folder, tmp_path / "b", lambda d, _: d["poses"][1].update(joints=[1, 2]))
    with pytest.raises(HandEyeError, match="pose 2: 'joints' must be 5 finite numbers"):
        read_shots_folder(bad)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / SHOTS_FILE).write_text("{oops")
    with pytest.raises(HandEyeError, match="not a readable JSON file"):
        read_shots_folder(tmp_path / "c")
    # the same pose three times: no rotation between the poses; two tilts about one axis
    m = measured[0]["measurement"]
    with pytest.raises(HandEyeError, match=r"turns the cage at most 0\.0 deg between poses"):
        solve_from_calibrations([m.T_base_flange[0]] * 3, [m.calibrations[0]] * 3)
    with pytest.raises(HandEyeError, match=r">= 3 robot poses, got 2"):
        solve_from_calibrations(m.T_base_flange[:2], m.calibrations[:2])

    def blank(d, root):                                    # pose 2's AP shows no cage: a blank frame
        import cv2
        cv2.imwrite(str(root / "blank.png"), np.full((256, 256), 3000, np.uint16))
        d["poses"][1]["ap"] = "blank.png"
        d["poses"] = d["poses"][:3]
    failing = _rewrite(folder, tmp_path / "e", blank)
    with pytest.raises(HandEyeError, match="pose 2: the cage shots do not calibrate") as e:
        measure(kin, read_shots_folder(failing))
    assert "\n" not in str(e.value)


def test_pose_choice_spreads_the_tilt_axes_and_refuses_the_impossible(kin):
    q0 = kin.joints_for_pose(HOME_POSE)
    pivot = kin.cage(q0)[:3, 3] + [0.0, 0.0, -130.0]
    Q = hand_eye_poses(kin, q0, pivot, 4, 15.0)
    np.testing.assert_allclose(Q[0], q0)
    tilts = np.degrees(np.array([kin.pose(q)[3:] for q in Q]))
    np.testing.assert_allclose(np.linalg.norm(tilts[1:], axis=1), 15.0, atol=1e-9)
    d = tilts[1:] / 15.0
    assert abs(d[0] @ d[1]) < 0.8 and abs(d[1] @ d[2]) < 0.8    # no two about one axis
    for q in Q[1:]:                                               # the pivot stays put
        p_f = np.linalg.solve(kin.flange(q0), np.append(pivot, 1.0))
        np.testing.assert_allclose((kin.flange(q) @ p_f)[:3], pivot, atol=1e-9)
    with pytest.raises(HandEyeError, match=">= 3 robot poses, got 2"):
        hand_eye_poses(kin, q0, pivot, 2)
    with pytest.raises(HandEyeError, match=r"tilt between poses must be in \(0, 35\]"):
        hand_eye_poses(kin, q0, pivot, 4, 50.0)
    edge = kin.joints_for_pose([*HOME_POSE[:3], 0.0, math.radians(34.0)])
    with pytest.raises(HandEyeError, match=r"pose \d \(tilt 30 deg towards \d+ deg\) cannot be reached: theta5"):
        hand_eye_poses(kin, edge, pivot, 4, 30.0)


def test_handeye_command(measured, tmp_path, capsys):
    """``fluoronav handeye --shots DIR --write PATH --json``: the JSON summary as the last line, the
    stored file loadable; the folder (written beside the simulation, read back as real data would
    be) gives the simulation's mount; bad input: exit 2 and one line."""
    from app.cli import main
    sim, folder = measured
    out = tmp_path / "mount.json"
    assert main(["handeye", "--shots", str(folder), "--write", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["method"] == sim["measurement"].result.method and s["n_poses"] == 5 and s["written"] == str(out)
    assert set(s["residuals"]) | set(s["failed"]) == set(METHODS)
    np.testing.assert_allclose(np.array(s["T_flange_cage"]), sim["measurement"].result.T_flange_cage, atol=1e-6)
    np.testing.assert_allclose(load_hybrid5(hand_eye=out).T_flange_cage, np.array(s["T_flange_cage"]), atol=1e-12)
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(np.array(doc["joints_used"]), np.array(sim["joints"]), atol=1e-9)
    assert doc["source"].startswith("shots ") and doc["n_poses"] == 5
    for argv, msg in [(["handeye", "--shots", str(tmp_path / "none")], "no hand_eye_shots.json"),
                      (["handeye", "--sim", "--poses", "2"], ">= 3 robot poses, got 2"),
                      (["handeye", "--sim", "--tilt", "60"], "tilt between poses")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err and "Traceback" not in err
