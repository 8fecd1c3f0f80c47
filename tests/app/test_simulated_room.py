"""The simulated room: the robot (its true kinematics) holds the cage; a jog moves the balls in
the next shot by the projected amount and keeps the calibration; a C-arm move invalidates it
with a reason; requests run in the C-arm's thread."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from app.config import load_defaults
from app.devices_controller import DevicesController
from app.session import Session
from app.simulated_room import SimulatedRoom, T_world_base_holding, cage_pose_change, robot_home_q
from core.geometry.rigid import from_euler, invert, make_transform
from core.robot.kinematics.hybrid5 import load_hybrid5
from core.simulation.robot_truth import RobotErrors
from devices.carm import SimulatedCArm

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def kin():
    return load_hybrid5()


def test_base_placement_makes_the_held_cage_coincide_with_the_given_pose(kin):
    q0 = robot_home_q(kin)
    T_world_cage = make_transform(from_euler("xyz", [0.3, -0.2, 1.1])[:3, :3], [12.0, 250.0, -40.0])
    T_world_base = T_world_base_holding(kin, q0, T_world_cage)
    assert np.abs(T_world_base @ kin.cage(q0) - T_world_cage).max() < 1e-9
    # a +10 mm jog along the base x moves the cage 10 mm along the base's x axis in the world
    q1 = kin.joints_for_pose(kin.pose(q0) + np.array([10.0, 0, 0, 0, 0]))
    moved = T_world_base @ kin.cage(q1)
    assert moved[:3, 3] - T_world_cage[:3, 3] == pytest.approx(10.0 * T_world_base[:3, 0], abs=1e-6)
    mm, deg = cage_pose_change(T_world_cage, moved)
    assert mm == pytest.approx(10.0, abs=1e-6) and deg == pytest.approx(0.0, abs=1e-6)


def test_bad_cage_pose_is_refused(kin):
    with pytest.raises(ValueError, match="finite 4x4"):
        T_world_base_holding(kin, robot_home_q(kin), np.eye(3))
    T = np.eye(4)
    T[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite 4x4"):
        T_world_base_holding(kin, robot_home_q(kin), T)


class ThreadCheckedCArm(SimulatedCArm):
    """The simulated C-arm, noting the thread of each cage-pose change and acquisition."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.threads = []

    def set_cage_pose(self, T):
        self.threads.append(("cage", threading.get_ident()))
        super().set_cage_pose(T)

    def acquire(self, view, **kw):
        self.threads.append(("acquire", threading.get_ident()))
        return super().acquire(view, **kw)


@pytest.fixture
def room(qtbot, kin, tmp_path):
    session = Session(tmp_path, save_images=False)
    devices = DevicesController(load_defaults(), session)
    carm = ThreadCheckedCArm(seed=0, shape=(256, 256), latency_s=0.0)
    devices.add_device("carm", lambda: carm)
    qtbot.waitUntil(lambda: session.device_ready("carm"), timeout=60000)
    room = SimulatedRoom(devices, session, kin, robot_home_q(kin))
    with qtbot.waitSignal(room.scene_ready, timeout=60000):
        room.request_scene(step_mm=4.0)
    shots = {}
    devices.simulated_shot.connect(lambda view, truth: shots.__setitem__(view, truth["shot"]))
    yield room, devices, session, carm, shots
    devices.shutdown()


def _shoot(qtbot, devices, shots, view):
    shots.pop(view, None)
    devices.acquire(view)
    qtbot.waitUntil(lambda: view in shots, timeout=30000)
    return shots[view]


def test_jog_moves_the_balls_in_the_next_shot_and_keeps_the_calibration(room, qtbot, kin, caplog):
    room, devices, session, carm, shots = room
    q0 = robot_home_q(kin)
    true = room.true_robot
    assert np.abs(room.T_world_base @ true.cage(q0) - room.scene["T_world_cage"]).max() < 1e-9
    assert len(room.scene["mesh"]) > 1000  # the bone surface came from the C-arm's thread
    room.robot_moved(q0)  # the robot at home: the cage stays where the simulator put it
    before = _shoot(qtbot, devices, shots, "ap")
    assert np.abs(before.T_world_cage - room.scene["T_world_cage"]).max() < 1e-9
    session.set_calibration({"rms_px": 0.2})  # calibrated on this shot's cage pose
    assert "plan" in session.allowed_steps()
    invalidated = []
    room.calibration_invalidated.connect(invalidated.append)

    q1 = kin.joints_for_pose(kin.pose(q0) + np.array([10.0, 0, 0, 0, 0]))  # jog +10 mm in x
    with caplog.at_level(logging.INFO, logger="app.simulated_room"):
        room.robot_state({"q": q1})
    after = _shoot(qtbot, devices, shots, "ap")
    balls = np.concatenate([p.balls_mm for p in room.scene["cage"].planes])
    # expected: the same pinhole, the cage where the TRUE kinematics put it
    T_expected = room.T_world_base @ true.cage(q1)
    assert np.abs(after.T_world_cage - T_expected).max() < 1e-9
    # the nominal model misplaces it by the unmeasured cage mount (1-3 mm per axis, 0.3-0.7°)
    mm, deg = cage_pose_change(room.T_world_base @ kin.cage(q1), T_expected)
    assert 1.0 < mm < 6.0 and 0.3 < deg < 0.8
    uv_expected = before.geometry_world.project(balls @ T_expected[:3, :3].T + T_expected[:3, 3])
    if before.distortion is not None:
        uv_expected = after.distortion.ideal_to_raw(uv_expected)
    uv_before, uv_after = before.project_raw(balls), after.project_raw(balls)
    moved_px = np.linalg.norm(uv_after - uv_before, axis=1)
    assert moved_px.min() > 2.0, "a 10 mm move must show in the image"
    assert np.abs(uv_after - uv_expected).max() < 0.1
    # the image itself: each well-separated ball's dark disc is found at its new place
    from core.calibration.beads import density_of, refine_centre
    d = density_of(after.image.pixels.astype(np.float32))
    r_px = 0.5 * room.scene["cage"].ball_diameter_mm * 1.6 / after.image.pixel_spacing_mm[0]
    sep = np.linalg.norm(uv_after[:, None] - uv_after[None], axis=2) + 1e9 * np.eye(len(uv_after))
    lone = np.flatnonzero((sep.min(axis=1) > 6 * r_px) & after.in_field(uv_after, 4 * r_px))
    assert len(lone) >= 5
    found = [refine_centre(d, uv_after[i], r_px)[0] for i in lone]
    err = [np.linalg.norm(np.asarray(f) - uv_after[i]) for f, i in zip(found, lone) if f is not None]
    assert len(err) >= 5 and np.median(err) < 0.5
    # the C-arm did not move: the calibration and the Plan step stay; nothing alarming said
    assert session.calibration == {"rms_px": 0.2} and "plan" in session.allowed_steps()
    assert not invalidated
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # every driver call ran in the C-arm's thread, none on this (the GUI) thread
    assert {t for _, t in carm.threads} and threading.get_ident() not in {t for _, t in carm.threads}
    assert [k for k, _ in carm.threads][-2:] == ["cage", "acquire"]


def test_true_tool_pose_and_a_cage_calibration_kept_in_the_base_frame(room, qtbot, kin):
    """The tool as the true robot holds it (off the nominal model by a real robot's error);
    a calibration with geometry (ray, locate_many, project, views) re-expressed in the robot
    base frame at the joints of its shots, left as it is by a later robot motion."""
    room, devices, session, carm, shots = room
    q0 = robot_home_q(kin)
    q1 = kin.joints_for_pose(kin.pose(q0) + np.array([-15.0, 20.0, 10.0, 0.2, -0.1]))
    room.robot_moved(q1)
    T = room.true_tool_pose()
    assert T.shape == (4, 4)
    assert np.abs(T - room.T_world_base @ room.true_robot.forward(q1)).max() < 1e-12
    # in the base frame the true tool tip misses the nominal one by tenths of a mm (the
    # robot paper measured 0.17 mm), the cage follows the true robot, the controller's model is nominal
    T_base_tool = invert(room.T_world_base) @ T
    miss = np.linalg.norm(T_base_tool[:3, 3] - kin.forward(q1)[:3, 3])
    assert 0.02 < miss < 0.6
    assert room.true_robot.nominal is kin
    # a robot exactly as modelled: the tool where the model says
    exact = SimulatedRoom(devices, session, kin, q0, robot_errors=RobotErrors())
    exact.T_world_base = room.T_world_base
    exact.robot_moved(q1)
    assert np.abs(exact.true_tool_pose() - room.T_world_base @ kin.forward(q1)).max() < 1e-9
    # the calibration in the base frame
    q_shots = kin.joints_for_pose(kin.pose(q0) + np.array([4.0, 0, 0, 0, 0]))
    room.robot_moved(q_shots)
    _shoot(qtbot, devices, shots, "ap")
    _shoot(qtbot, devices, shots, "lat")

    class Geometry:                     # the interface BaseFrameCalibration wraps
        views = {}

        def ray(self, view, uv):
            raise NotImplementedError

        locate_many = project = ray

    cal = Geometry()
    session.set_calibration(cal)
    bc = room.base_calibration
    assert bc is not None and bc.calibration is cal and np.allclose(bc.q0, q_shots)
    assert np.abs(bc.T_base_cage0 - kin.cage(q_shots)).max() < 1e-12
    assert bc.carm_angles_deg == {"ap": (0.0, 0.0), "lat": (0.0, 0.0)}
    room.robot_moved(q0)
    assert room.base_calibration is bc and session.calibration is cal
    p = np.array([1.0, 2.0, 3.0])                   # a planned point, cage frame at the shots
    assert np.allclose(bc.to_base(p), kin.cage(q_shots)[:3, :3] @ p + kin.cage(q_shots)[:3, 3])


def test_carm_pose_runs_in_its_thread_and_bad_angles_come_back_as_one_line(room, qtbot):
    room, devices, session, carm, shots = room
    answers = []
    devices.set_carm_pose(20.0, -10.0, lambda r, err: answers.append(err))
    qtbot.waitUntil(lambda: len(answers) == 1, timeout=5000)
    assert answers == [""] and (carm.primary_deg, carm.secondary_deg) == (20.0, -10.0)
    shot = _shoot(qtbot, devices, shots, "ap")
    assert shot.image.primary_angle_deg == 20.0 and shot.image.secondary_angle_deg == -10.0
    devices.set_carm_pose(150.0, 0.0, lambda r, err: answers.append(err))
    qtbot.waitUntil(lambda: len(answers) == 2, timeout=5000)
    assert "out of range" in answers[1] and carm.primary_deg == 20.0
    from devices.base import DeviceError
    with pytest.raises(DeviceError, match="tracker is not running"):
        devices.call("tracker", lambda d: None)


def test_true_tool_pose_is_none_before_the_scene(qtbot, kin, tmp_path):
    session = Session(tmp_path, save_images=False)
    devices = DevicesController(load_defaults(), session)
    try:
        room = SimulatedRoom(devices, session, kin, robot_home_q(kin))
        assert room.true_tool_pose() is None and room.T_world_base is None
    finally:
        devices.shutdown()


def test_a_carm_move_invalidates_the_calibration_with_a_reason(room, qtbot, kin):
    room, devices, session, carm, shots = room
    q0 = robot_home_q(kin)
    room.robot_moved(q0)
    _shoot(qtbot, devices, shots, "ap")
    _shoot(qtbot, devices, shots, "lat")
    session.set_calibration({"rms_px": 0.2})
    assert room.calibration_angles == {"ap": (0.0, 0.0), "lat": (0.0, 0.0)}
    invalidated = []
    room.calibration_invalidated.connect(invalidated.append)
    room.robot_moved(kin.joints_for_pose(kin.pose(q0) + np.array([5.0, -5.0, 0, 0.1, 0])))
    _shoot(qtbot, devices, shots, "ap")            # robot moved, C-arm did not: still valid
    assert session.calibration == {"rms_px": 0.2} and not invalidated
    answers = []
    room.set_carm_pose(0.3, -0.2, lambda r, err: answers.append(err))   # within the tags' 0.5°
    qtbot.waitUntil(lambda: len(answers) == 1, timeout=5000)
    assert session.calibration == {"rms_px": 0.2} and not invalidated
    room.set_carm_pose(15.0, 0.0, lambda r, err: answers.append(err))   # the C-arm orbits
    qtbot.waitUntil(lambda: len(answers) == 2, timeout=5000)
    assert answers == ["", ""] and session.calibration is None
    assert session.step_blocker("plan") == "calibrate the cage first"
    assert len(invalidated) == 1
    line = invalidated[0]
    assert line.startswith("the C-arm moved") and "+15.0°/+0.0°" in line and "+0.0°/+0.0°" in line
    assert "calibrate" in line and "\n" not in line
    # calibrated again at the new pose; the C-arm then orbits from its own panel (not through
    # the room): the next shot's angle tags say so
    _shoot(qtbot, devices, shots, "ap")
    _shoot(qtbot, devices, shots, "lat")
    session.set_calibration({"rms_px": 0.3})
    assert room.calibration_angles == {"ap": (15.0, 0.0), "lat": (15.0, 0.0)}
    devices.set_carm_pose(15.0, 8.0, lambda r, err: answers.append(err))
    qtbot.waitUntil(lambda: len(answers) == 3, timeout=5000)
    assert session.calibration is not None        # nothing told the room yet
    _shoot(qtbot, devices, shots, "lat")
    assert session.calibration is None and len(invalidated) == 2
    assert "new LAT shot is at +15.0°/+8.0°" in invalidated[1]
    assert room.base_calibration is None and room.calibration_angles == {}
