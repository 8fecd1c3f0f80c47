"""The calibration workflow on simulated shots: end to end to an accepted calibration,
manual fixes, reject, failures as one line. Ground truth from the simulator."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.calibration_workflow import CalibrationWorkflow, residual_vectors_px
from app.session import Session
from core.calibration import CageCalibration
from core.calibration import manual
from core.calibration.manual import ManualEditError

SHAPE = (384, 384)
LOCATE_TOL_MM = 0.5


@pytest.fixture(scope="module")
def sim():
    """A flat-panel simulated room (block phantom: fast), its AP/LAT cage shots and a no-cage shot."""
    import torch
    torch.set_num_threads(2)
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    s = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), detector="flat_panel", shape=SHAPE)
    shots = {v: s.acquire(v) for v in ("ap", "lat")}
    empty = s.acquire("ap", with_cage=False)
    return s, shots, empty


def targets_cage(sim_):
    """Points 90-220 mm from the AP cage planes, inside both fields (cage frame)."""
    s, shots, _ = sim_
    rng = np.random.default_rng(4)
    ap_z = np.mean([p.origin_mm for p in s.cage.planes_for("ap")], axis=0)
    pts = []
    while len(pts) < 12:
        p = ap_z + np.array([rng.uniform(-40, 40), rng.uniform(-40, 40), -rng.uniform(90, 220)])
        if all(shots[v].in_field(shots[v].project_raw(p), 10).all() for v in shots):
            pts.append(p)
    return np.array(pts)


def run(qtbot, wf, call, *args, timeout=20000):
    with qtbot.waitSignal(wf.finished, timeout=timeout):
        assert call(*args)


@pytest.fixture
def calibrated(qtbot, sim, tmp_path):
    s, shots, _ = sim
    session = Session(tmp_path / "sessions", save_images=False)
    wf = CalibrationWorkflow(session)
    assert wf.set_cage()
    wf.set_use_plate(False)
    for v, shot in shots.items():
        assert wf.set_shot(v, shot.image)
    run(qtbot, wf, wf.run_calibration)
    assert wf.calibration is not None, wf.calibration_error
    return wf, session


def locate_errors(cal, sim_):
    _, shots, _ = sim_
    pts = targets_cage(sim_)
    p, gap = cal.locate_many(shots["ap"].project_raw(pts), shots["lat"].project_raw(pts))
    return np.linalg.norm(p - pts, axis=1), gap


@pytest.mark.gui
def test_end_to_end_accept_saves_with_session_and_moves_to_plan(calibrated, sim):
    wf, session = calibrated
    figs = wf.figures()
    for v in ("ap", "lat"):
        for pid, f in figs["views"][v]["planes"].items():
            assert f["matched"] >= 0.95 * f["expected"], (pid, f)
            assert f["rms_px"] < 0.3
        assert figs["views"][v]["loo_rms_px"] < 0.3
    assert 80 < figs["view_angle_deg"] < 100
    err, gap = locate_errors(wf.calibration, sim)
    assert err.max() < LOCATE_TOL_MM and gap.max() < 0.5
    path = wf.accept()
    assert path.parent == session.folder and path.exists()
    assert session.calibration is wf.calibration and session.step == "plan"
    d = json.loads(path.read_text())
    assert d["figures"]["accepted_utc"] and d["created_utc"]
    err2, _ = locate_errors(CageCalibration.load(path), sim)
    np.testing.assert_allclose(err2, err, atol=1e-6)


@pytest.mark.gui
def test_remove_then_add_a_ball_changes_the_matched_set(qtbot, calibrated, sim):
    wf, _ = calibrated
    cal0 = wf.calibration
    labels = wf.shots["ap"].labels
    pid = wf.cage.planes_for("ap")[0].id
    bi, di = labels.matched(pid)
    k = len(bi) // 2
    ball, det, uv = int(bi[k]), int(di[k]), labels.centres_px[di[k]].copy()
    n0 = wf.figures()["views"]["ap"]["planes"][pid]["matched"]
    run(qtbot, wf, wf.remove_detection, "ap", det)
    assert wf.figures()["views"]["ap"]["planes"][pid]["matched"] == n0 - 1
    assert wf.calibration is not cal0 and wf.calibration.views["ap"].figures["manual_edits"] == 1
    assert ball not in wf.shots["ap"].labels.matched(pid)[0]
    missing = wf.missing_balls_px("ap")           # drawn as "predicted, not found"
    assert np.min(np.linalg.norm(missing - uv, axis=1)) < 0.2
    # add it back by a click 1.5 px off its centre: refined, labelled from the plane's fit
    run(qtbot, wf, wf.add_ball, "ap", uv + [1.0, -1.1])
    labels = wf.shots["ap"].labels
    assert labels.label_of(len(labels) - 1) == (pid, ball)
    assert np.linalg.norm(labels.centres_px[-1] - uv) < 0.05
    assert wf.figures()["views"]["ap"]["planes"][pid]["matched"] == n0
    err, _ = locate_errors(wf.calibration, sim)
    assert err.max() < LOCATE_TOL_MM


@pytest.mark.gui
def test_wrong_assignment_fails_the_residual_gate_and_unassign_recovers(qtbot, calibrated):
    wf, _ = calibrated
    pid = wf.cage.planes_for("lat")[1].id
    bi, di = wf.shots["lat"].labels.matched(pid)
    run(qtbot, wf, wf.assign, "lat", int(di[0]), pid, int(bi[len(bi) // 2]))   # a far ball
    assert wf.calibration is None
    assert "residual" in wf.calibration_error and "\n" not in wf.calibration_error
    vec = residual_vectors_px(wf.cage, wf.shots["lat"], wf.method)   # no fit: a robust homography's
    length = np.linalg.norm(vec, axis=1)                               # offsets point at the wrong label
    assert np.nanargmax(length) == di[0] and length[di[0]] > 10
    assert np.nanmedian(length) < 0.3
    run(qtbot, wf, wf.unassign, "lat", int(di[0]))
    assert wf.calibration is not None
    assert wf.suggest_label("lat", int(di[0]))[:2] == (pid, int(bi[0]))   # the fit says which ball it is
    vec = residual_vectors_px(wf.cage, wf.shots["lat"], wf.method)
    ok = np.isfinite(vec[:, 0])
    assert ok.sum() >= 50 and np.sqrt(np.mean(np.sum(vec[ok] ** 2, 1))) < 0.3


@pytest.mark.gui
def test_reject_leaves_the_session_unchanged(qtbot, calibrated):
    wf, session = calibrated
    before = (session.calibration, session.step, sorted(p.name for p in session.folder.iterdir()))
    with qtbot.waitSignal(wf.rejected, timeout=1000):
        wf.reject()
    assert wf.calibration is None and not wf.shots
    assert (session.calibration, session.step, sorted(p.name for p in session.folder.iterdir())) == before
    assert wf.accept() is None


@pytest.mark.gui
def test_a_shot_without_the_cage_fails_with_one_line(qtbot, sim, tmp_path):
    s, shots, empty = sim
    wf = CalibrationWorkflow(Session(tmp_path, save_images=False))
    wf.set_cage()
    wf.set_use_plate(False)
    wf.set_shot("ap", empty.image)
    wf.set_shot("lat", shots["lat"].image)
    run(qtbot, wf, wf.run_calibration)
    assert wf.calibration is None
    msg = wf.shots["ap"].error
    assert msg.startswith("AP shot:") and "\n" not in msg and len(msg) < 200
    assert not wf.shots["lat"].error
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        wf.accept()
    assert sig.args[0] == "accept" and sig.args[1] == msg


@pytest.mark.gui
def test_bad_inputs_are_one_line_failures(qtbot, tmp_path):
    wf = CalibrationWorkflow(None)
    bad = tmp_path / "cage.json"
    bad.write_text("{}")
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        assert not wf.set_cage(bad)
    assert sig.args[0] == "cage" and "format" in sig.args[1]
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        assert not wf.run_calibration()
    assert "no AP and LAT shot" in sig.args[1]
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        assert not wf.remove_detection("ap", 0)
    assert "calibrate first" in sig.args[1]
    with qtbot.waitSignal(wf.failed, timeout=1000):
        assert not wf.set_shot("ap", tmp_path / "missing.dcm")
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        assert not wf.acquire_shot("ap")
    assert "load the shot from a file" in sig.args[1]
    wf.acquire_fn = lambda view: None          # the C-arm refuses (not connected, busy)
    with qtbot.waitSignal(wf.failed, timeout=1000) as sig:
        assert not wf.acquire_shot("lat")
    assert sig.args[1].startswith("the C-arm cannot take the LAT shot now")


# -- core.calibration.manual: the edits' input checks ------------------------------------
@pytest.fixture(scope="module")
def labels_ap(sim):
    from app.calibration_workflow import calibrate_shot
    from core.calibration.cage import load_cage
    import resources
    s, shots, _ = sim
    cage = load_cage(resources.path("cages", "default.json"))
    return cage, calibrate_shot(cage, "ap", shots["ap"].image)


def test_manual_add_ball_off_any_ball_is_refused(labels_ap):
    cage, shot = labels_ap
    with pytest.raises(ManualEditError, match="no ball"):
        manual.add_ball(shot.labels, (3.0, 3.0), shot.image.display())


def test_manual_add_ball_outside_image_is_refused(labels_ap):
    cage, shot = labels_ap
    with pytest.raises(ManualEditError, match="outside"):
        manual.add_ball(shot.labels, (-20.0, 40.0), shot.image.display())


def test_manual_add_existing_ball_is_refused(labels_ap):
    cage, shot = labels_ap
    with pytest.raises(ManualEditError, match="already"):
        manual.add_ball(shot.labels, shot.labels.centres_px[0], shot.image.display())


def test_manual_assign_to_other_views_plane_is_refused(labels_ap):
    cage, shot = labels_ap
    with pytest.raises(ManualEditError, match="not a ball plane"):
        manual.assign(shot.labels, 0, cage, cage.planes_for("lat")[0].id, 0)


def test_manual_assign_ball_out_of_range_is_refused(labels_ap):
    cage, shot = labels_ap
    p = cage.planes_for("ap")[0]
    with pytest.raises(ManualEditError, match="has balls"):
        manual.assign(shot.labels, 0, cage, p.id, p.n_balls)


def test_manual_remove_unknown_detection_is_refused(labels_ap):
    cage, shot = labels_ap
    with pytest.raises(ManualEditError, match="no detection"):
        manual.remove_detection(shot.labels, len(shot.labels))


def test_manual_too_few_balls_is_a_calibration_error(labels_ap):
    from core.calibration import CalibrationError
    cage, shot = labels_ap
    pid = cage.planes_for("ap")[0].id
    lab = shot.labels
    for i in lab.matched(pid)[1][5:][::-1]:
        lab = manual.unassign(lab, int(i))
    with pytest.raises(CalibrationError, match="only 5 balls of plane"):
        manual.fit_view(cage, lab, shot.image.display())


def test_manual_labelling_from_four_assigned_balls_is_completed(labels_ap, sim):
    """A failed labelling fixed by hand: 4 balls per plane assigned, the rest predicted;
    the completed set equals the automatic one and refits to the same camera."""
    cage, shot = labels_ap
    auto = shot.labels
    blank = manual.ViewLabels("ap", auto.centres_px, [""] * len(auto), np.full(len(auto), -1),
                              auto.polarity, auto.radius_px)
    lab = blank
    for p in cage.planes_for("ap"):
        bi, di = auto.matched(p.id)
        for k in np.linspace(0, len(bi) - 1, 4).astype(int):
            lab = manual.assign(lab, int(di[k]), cage, p.id, int(bi[k]))
    lab = manual.complete_labels(lab, cage)
    done = np.array([p != "" for p in auto.plane_ids])
    assert [lab.label_of(i) for i in np.flatnonzero(done)] == [auto.label_of(i) for i in np.flatnonzero(done)]
    assert sum(p != "" for p in np.array(lab.plane_ids)[~done]) <= 2   # at most a ball the auto fit set aside
    vc = manual.fit_view(cage, lab, shot.image.display())
    _, shots, _ = sim
    truth = shots["ap"].project_raw(cage.balls_for("ap"))
    uv = vc.project(cage.balls_for("ap"), "3d2d")
    ok = np.isfinite(truth[:, 0])
    assert np.sqrt(np.mean(np.sum((uv[ok] - truth[ok]) ** 2, 1))) < 0.1


@pytest.mark.gui
def test_plate_shot_from_the_c_arm_fits_the_distortion(qtbot, tmp_path):
    """Image intensifier: the simulated C-arm shoots the plate; the correction agrees with the
    simulator's distortion up to the ideal frame's homography; a cage shot is no plate shot."""
    import cv2
    from app.calibration_workflow import plate_source_from
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    from devices.carm import SimulatedCArm
    scene = SimulatedOR(seed=5, phantom=block_phantom(4.0, seed=2), shape=SHAPE)
    carm = SimulatedCArm(scene=scene, latency_s=0.0)
    carm.connect()
    wf = CalibrationWorkflow(None, plate_source_from(carm))
    run(qtbot, wf, wf.acquire_plate_shot, "ap", timeout=40000)
    res = wf.plates["ap"]
    assert set(res.figures) >= {"heldout_rms_px_polynomial", "heldout_rms_px_local_linear",
                                "heldout_rms_px_local_cubic", "model"}
    assert min(v for k, v in res.figures.items() if k.startswith("heldout")) < 0.1
    assert len(res.raw_px) > 250 and np.median(res.residual_px) < 0.1
    truth = scene.plate_shot("ap")
    ok = np.isfinite(truth.balls_raw_px[:, 0])
    j = np.argmin(np.linalg.norm(truth.balls_raw_px[ok][None] - res.raw_px[:, None], axis=2), axis=1)
    corr = res.distortion.raw_to_ideal(truth.balls_raw_px[ok][j])
    H, _ = cv2.findHomography(truth.balls_ideal_px[ok][j], corr, 0)
    p = truth.balls_ideal_px[ok][j] @ H[:, :2].T + H[:, 2]
    assert np.sqrt(np.mean(np.sum((p[:, :2] / p[:, 2:3] - corr) ** 2, 1))) < 0.05
    assert not wf.distortion_done()          # LAT still missing
    wf.set_use_plate(False)
    assert wf.distortion_done()
    wf.set_use_plate(True)
    with qtbot.waitSignal(wf.failed, timeout=40000) as sig:
        wf.load_plate_shot("lat", scene.acquire("lat").image)
    assert sig.args[0] == "plate" and "\n" not in sig.args[1] and "lat" not in wf.plates


def test_a_shifted_detection_shows_in_the_residuals_and_removing_it_restores_the_fit(labels_ap, sim):
    """A blob 2 px off its ball (e.g. a ball over a screw head) labelled as that ball: its plane's
    RMS rises and its residual is the largest; removing it gives back the clean fit."""
    cage, shot = labels_ap
    _, shots, _ = sim
    pixels = shot.image.display()
    pid = cage.planes_for("ap")[0].id
    clean = manual.fit_view(cage, shot.labels, pixels)
    bi, di = shot.labels.matched(pid)
    k = int(di[len(di) // 2])
    c = shot.labels.centres_px.copy()
    c[k] += [2.0, 0.0]
    bad = manual.ViewLabels("ap", c, shot.labels.plane_ids, shot.labels.ball_idx, shot.labels.polarity,
                            shot.labels.radius_px)
    vc = manual.fit_view(cage, bad, pixels)
    f0, f1 = clean.figures["planes"][pid], vc.figures["planes"][pid]
    assert f1["rms_px_3d2d"] > f0["rms_px_3d2d"] + 0.1
    pf = next(p for p in vc.planes if p.plane_id == pid)
    assert np.argmax(pf.residual_px) == list(di).index(k) and 1.5 < pf.residual_px.max() < 2.1
    fixed = manual.fit_view(cage, manual.remove_detection(bad, k), pixels)
    assert fixed.figures["planes"][pid]["matched"] == f0["matched"] - 1
    assert abs(fixed.figures["planes"][pid]["rms_px_3d2d"] - f0["rms_px_3d2d"]) < 0.02
    truth = shots["ap"].project_raw(cage.balls_for("ap"))
    ok = np.isfinite(truth[:, 0])
    err = lambda v: np.sqrt(np.mean(np.sum((v.project(cage.balls_for("ap"), "3d2d")[ok] - truth[ok]) ** 2, 1)))
    assert err(fixed) < 0.03 and err(vc) > 2 * err(fixed)     # reprojection vs truth, px
