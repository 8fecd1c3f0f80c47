"""Align and Verify in the application, headless (app.navigation): a fake robot client and C-arm
device layer, the real kinematics, and a small simulated room for the verification shots."""
from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pytest

from app.navigation import NavigationController, insertion_path, simulated_wire
from app.session import Session
from core.geometry.rigid import apply, invert
from core.planning.two_view import Trajectory
from core.robot.kinematics.hybrid5 import load_hybrid5
from devices.base import DeviceStatus

STAND_OFF = 20.0


class FakeClient:
    """The robot controller client's Align surface: what was sent, in order."""

    def __init__(self, stopped=False):
        self.calls, self.stopped = [], stopped

    def follow_path(self, kind, q_samples, dt):
        self.calls.append(("follow_path", kind, np.asarray(q_samples, float), dt))

    def set_deadman(self, held):
        self.calls.append(("set_deadman", bool(held)))

    def sent(self, name):
        return [c for c in self.calls if c[0] == name]


class GuideClient(FakeClient):
    """FakeClient with the virtual fixture and the simulated hand."""

    def set_fixture(self, point=None, direction=None, axial_range_mm=None):
        self.calls.append(("set_fixture", None if point is None else (np.asarray(point, float),
                                                                       np.asarray(direction, float))))

    def simulate_hand(self, wrench):
        self.calls.append(("simulate_hand", np.asarray(wrench, float)))

    def path_active(self):
        return False


class OldClient:
    """A client from before path following: set_deadman only."""
    stopped = False

    def set_deadman(self, held):
        pass


class FakeCalibration:
    """Just enough of a CageCalibration for the base frame (no views: no C-arm envelope)."""
    views: dict = {}

    def ray(self, view, uv):
        raise NotImplementedError

    def locate_many(self, a, b):
        raise NotImplementedError

    def project(self, p):
        raise NotImplementedError


@lru_cache(maxsize=1)
def kin():
    return load_hybrid5()


def home_q():
    return kin().joints_for_pose([625.0, 475.0, -135.0, 0.0, 0.0])


def put(session, name="L4 left", entry=None, target=None, level="L4", side="left"):
    tid = session.plans.add(level, side, name=name)
    t = session.plans.get(tid)
    session.plans._put(tid, dataclasses.replace(t, entry_mm=None if entry is None else tuple(map(float, entry)),
                                                target_mm=None if target is None else tuple(map(float, target))))
    session.plans.select(tid)
    return tid


def base_line(offset=(5.0, -3.0, 30.0), tilt_deg=10.0, length=45.0):
    """A planned line (base frame) near the home pose's tool: entry, target, unit direction."""
    T = kin().forward(home_q())
    z, x = T[:3, 2], T[:3, 0]
    d = math.cos(math.radians(tilt_deg)) * z + math.sin(math.radians(tilt_deg)) * x
    e = T[:3, 3] + np.asarray(offset, float)
    return e, e + length * d, d


@pytest.fixture
def aligned_case(tmp_path):
    s = Session(tmp_path, save_images=True)
    s.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")
    s.set_robot_state({"q": home_q().tolist()})
    client = FakeClient()
    nav = NavigationController(s, kin(), client, stand_off_mm=STAND_OFF)
    nav.calibration_changed(FakeCalibration())
    e, t, d = base_line()
    T_cage0_base = invert(kin().cage(home_q()))
    tid = put(s, entry=apply(T_cage0_base, e), target=apply(T_cage0_base, t))
    return s, nav, client, tid, (e, t, d)


def test_a_known_plan_lands_the_guide_on_its_line_at_the_stand_off(aligned_case):
    s, nav, client, tid, (e, t, d) = aligned_case
    seen = []
    nav.preview_changed.connect(seen.append)
    p = nav.plan_align()
    assert p is not None and seen == [p] and nav.refusal == ""
    T = kin().forward(p.plan.q_goal)
    assert np.linalg.norm(T[:3, 3] - (e - STAND_OFF * d)) < 1e-6          # tip 20 mm above the entry
    assert math.degrees(math.acos(min(1.0, T[:3, 2] @ d))) < 1e-4          # +z along the plan
    assert np.allclose(p.tip_path_mm[0], kin().forward(home_q())[:3, 3], atol=1e-6)
    assert np.allclose(p.tip_path_mm[-1], T[:3, 3], atol=1e-6)
    assert np.allclose(p.insertion_end_mm, t) and p.plan.insertion.length_mm == pytest.approx(45.0 + STAND_OFF)


def test_hold_to_move_sends_the_path_once_and_the_deadman_on_each_hold(aligned_case):
    s, nav, client, tid, (e, t, d) = aligned_case
    assert nav.hold_to_move(True)
    (_, kind, q, dt), = client.sent("follow_path")
    assert kind == "approach" and dt == pytest.approx(0.01)
    assert np.allclose(q[0], home_q()) and np.allclose(q[-1], nav.preview.plan.q_goal)
    nav.hold_to_move(False)
    nav.hold_to_move(True)
    nav.hold_to_move(False)
    assert len(client.sent("follow_path")) == 1
    assert [c[1] for c in client.sent("set_deadman")] == [True, False, True, False]
    assert nav.phase == "approach" and s.alignment is None


def test_arrival_records_the_alignment_with_the_case_and_insertion_runs_on_its_own_hold(aligned_case, tmp_path):
    s, nav, client, tid, (e, t, d) = aligned_case
    progress = []
    nav.progress_changed.connect(lambda k, f: progress.append((k, f)))
    nav.hold_to_move(True)
    q_goal = nav.preview.plan.q_goal
    s.set_robot_state({"q": home_q().tolist(), "follow": {"kind": "approach", "progress": 0.5, "arrived": False,
                                                          "paused": False, "reason": ""}})
    s.set_robot_state({"q": q_goal.tolist(), "follow": {"kind": "approach", "progress": 1.0, "arrived": True,
                                                        "paused": False, "reason": ""}})
    assert progress == [("approach", 0.5), ("approach", 1.0)]
    assert nav.phase == "aligned" and s.alignment["trajectory"] == tid
    assert s.alignment["tip_error_mm"] < 1e-6 and s.alignment["angle_error_deg"] < 1e-4
    assert s.step_blocker("verify") in (None, "the C-arm is not connected")
    stored = json.loads((s.folder / "alignment-01.json").read_text())
    assert stored["format"] == "fluoronav.alignment/1" and stored["inserted"] is False
    assert client.calls[-1] == ("set_deadman", False)          # arrived: the dead-man is let go
    # Move again does nothing; Insert is its own path, along the line to the planned depth
    n = len(client.sent("follow_path"))
    assert not nav.hold_to_move(True) and len(client.sent("follow_path")) == n
    assert nav.hold_to_insert(True)
    (_, kind, q, _), = client.sent("follow_path")[n:]
    tips = np.stack([kin().forward(x)[:3, 3] for x in q[:: max(1, len(q) // 50)]] + [kin().forward(q[-1])[:3, 3]])
    w = tips - e
    assert kind == "insert" and np.max(np.linalg.norm(w - np.outer(w @ d, d), axis=1)) < 1e-6
    assert np.linalg.norm(tips[-1] - t) < 1e-6 and np.linalg.norm(tips[0] - (e - STAND_OFF * d)) < 1e-6
    axes = np.stack([kin().forward(x)[:3, 2] for x in q[::50]])
    assert np.min(axes @ d) > math.cos(1e-6)
    s.set_robot_state({"q": q[-1].tolist(), "follow": {"kind": "insert", "progress": 1.0, "arrived": True,
                                                       "paused": False, "reason": ""}})
    assert nav.phase == "inserted" and s.alignment["inserted"] is True
    assert s.alignment["tip_error_mm"] < 1e-6 and (s.folder / "alignment-02.json").is_file()


def test_the_insertion_path_keeps_its_speed_limit():
    e, t, d = base_line()
    from core.navigation.align import plan_alignment
    plan = plan_alignment(e, t, kin(), stand_off_mm=STAND_OFF, q_current=home_q())
    q = insertion_path(plan, kin(), dt=0.01, speed_mm_s=4.0, accel_mm_s2=20.0)
    tips = np.stack([kin().forward(x)[:3, 3] for x in q])
    speed = np.linalg.norm(np.diff(tips, axis=0), axis=1) / 0.01
    assert speed.max() <= 4.0 + 1e-6 and speed.max() > 3.9
    assert len(q) == pytest.approx((65.0 / 4.0 + 4.0 / 20.0) / 0.01, abs=2)    # 65 mm trapezoid


@pytest.mark.parametrize("case, expected", [
    ("incomplete", "Align refused: L4 left has no 3D entry and target yet"),
    ("outside", "Align refused: L4 left: the tool at the stand-off would be at"),
    ("nothing_selected", "Align refused: select a complete trajectory in the Planning table"),
    ("no_calibration", "Align refused: no calibration in the robot frame"),
])
def test_refusals_are_one_line_and_nothing_moves(tmp_path, case, expected):
    s = Session(tmp_path, save_images=False)
    s.set_robot_state({"q": home_q().tolist()})
    client = FakeClient()
    nav = NavigationController(s, kin(), client)
    if case != "no_calibration":
        nav.calibration_changed(FakeCalibration())
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append((text, warn)))
    T_cage0_base = invert(kin().cage(home_q()))
    if case == "incomplete":
        put(s)
    elif case == "outside":
        e = np.array([625.0, 475.0, -135.0]) + [900.0, 0, 0]
        put(s, entry=apply(T_cage0_base, e), target=apply(T_cage0_base, e + [0, 0, 40.0]))
    elif case != "nothing_selected":
        e, t, _ = base_line()
        put(s, entry=apply(T_cage0_base, e), target=apply(T_cage0_base, t))
    assert not nav.hold_to_move(True)
    assert client.sent("follow_path") == [] and client.sent("set_deadman") == []
    text, warn = msgs[-1]
    assert warn and text.startswith(expected) and "\n" not in text and nav.preview is None


def test_a_stopped_robot_and_an_old_client_are_said_not_moved(aligned_case):
    s, nav, client, tid, _ = aligned_case
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append(text))
    client.stopped = True
    assert not nav.hold_to_move(True) and client.calls == []
    assert "STOPPED" in msgs[-1] and "Reset" in msgs[-1]
    nav.client = OldClient()
    assert not nav.hold_to_move(True)
    assert msgs[-1] == "Move: the robot controller cannot follow a path in this build"


# --- Verify, in a small simulated room ---------------------------------------------------------
@lru_cache(maxsize=1)
def sim_room():
    from core.simulation.phantom import make_spine_phantom
    from core.simulation.scene import SimulatedOR
    ph = make_spine_phantom(spacing_mm=2.0, levels=("L3", "L4"))
    return ph, SimulatedOR(seed=3, phantom=ph, shape=(256, 256), render_device="cpu")


class FakeDevices:
    """The DevicesController surface Verify uses, synchronous: calls and shots run at once."""

    def __init__(self, driver, session):
        self.driver, self.session, self.shots = driver, session, []

    def call(self, device, fn, done=None):
        try:
            result, error = fn(self.driver), ""
        except Exception as e:  # as the worker does: the caller gets one line
            result, error = None, str(e)
        if done is not None:
            done(result, error)

    def acquire(self, view):
        self.shots.append(view)
        self.session.set_image(view, self.driver.acquire(view))


class FakeRoom:
    def __init__(self, T_world_tool, T_world_cage):
        self._T, self.T_world_cage_calibrated, self.shot_cage = T_world_tool, T_world_cage, {}

    def true_tool_pose(self):
        return self._T


def test_verify_measures_the_wire_at_the_true_tool_pose_and_grades_it(tmp_path):
    from core.simulation.instruments import deviated_wire
    from core.simulation.truth_calibration import TruthCalibration
    from devices.carm import SimulatedCArm

    ph, sim = sim_room()
    ped = ph.pedicle("L4", "left")
    driver = SimulatedCArm(scene=sim, latency_s=0.0, phantom=ph)
    driver.connect()
    s = Session(tmp_path, save_images=True)
    s.set_device_status("carm", DeviceStatus.SIMULATED, "simulated C-arm")
    T_cage_world = invert(sim.T_world_cage)
    tid = put(s, entry=apply(T_cage_world, ped.entry_mm), target=apply(T_cage_world, ped.target_mm))
    s.calibration = TruthCalibration({v: sim.acquire(v, 0.0, 0.0, seed=1) for v in ("ap", "lat")})
    truth = deviated_wire(ped.entry_mm, ped.target_mm, 1.0, 2.0, 1.5, offset_azimuth_rad=0.7, tilt_azimuth_rad=2.0)
    T = np.eye(4)        # the tool frame: tip at the wire's tip, +z along it (x, y any)
    z = truth.axis
    x = np.cross(z, [0, 1.0, 0]); x /= np.linalg.norm(x)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = truth.tip_mm
    devices = FakeDevices(driver, s)
    nav = NavigationController(s, None, None, devices, FakeRoom(T, sim.T_world_cage))
    s.set_alignment({"trajectory": tid, "inserted": True})
    assert nav.verify()
    assert devices.shots == ["ap", "lat"] and len(driver.instruments) == 1
    res = s.verification
    assert res is not None and nav.phase == "verified"
    r, tr = res.record, res.truth
    # the wire placed: 1.0 mm off at the entry, 2 deg, 1.5 mm deep (tip 1.5 mm along + the tilt)
    assert tr["entry_deviation_mm"] == pytest.approx(1.0, abs=0.05) and tr["angle_deg"] == pytest.approx(2.0, abs=1e-6)
    assert abs(r.entry_deviation_mm - tr["entry_deviation_mm"]) < 0.2
    assert abs(r.tip_deviation_mm - tr["tip_deviation_mm"]) < 0.2
    assert abs(r.angle_deg - tr["angle_deg"]) < 0.3 and tr["measured_minus_true_tip_mm"] < 0.3
    assert res.grade == tr["grade"] == "A"
    stored = json.loads((s.folder / "verification-01.json").read_text())
    assert stored["trajectory"] == tid and stored["grade"]["grade"] == "A"
    assert stored["entry_deviation_mm"] == pytest.approx(r.entry_deviation_mm)
    assert set(res.detections) == {"ap", "lat"} and res.plan_uv["ap"].shape == (2, 2)


def test_verify_without_an_alignment_or_a_wire_is_one_line(tmp_path):
    s = Session(tmp_path, save_images=False)
    nav = NavigationController(s)
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append(text))
    assert not nav.verify() and msgs == ["Verify: align the robot first"]
    with pytest.raises(ValueError, match="finite 4x4"):
        simulated_wire(np.full((4, 4), np.nan), 0.0, 40.0)


# --- the closed loop from new shots, in a small simulated room with a robot that errs ---------------
CARM_TILT_DEG = 20.0


class RobotRoom:
    """The cage and tool ride on a true robot (seeded errors, a true cage mount unlike the nominal)."""

    def __init__(self, sim, true_robot, q0, session):
        self.sim, self.true, self.session = sim, true_robot, session
        true_robot.move(q0)
        self.T_world_base = sim.T_world_cage @ invert(true_robot.cage(q0))
        self.T_world_cage_calibrated, self.shot_cage = sim.T_world_cage.copy(), {}
        session.robot_state_changed.connect(self.robot_moved)

    def robot_moved(self, state):
        """The cage rides on the true flange: the next shots see it where the true robot holds it."""
        q = np.asarray(state["q"], float)
        self.true.move(q)
        self.sim.T_world_cage = self.T_world_base @ self.true.cage(q)

    def true_tool_pose(self):
        q = np.asarray(self.session.robot_state["q"], float)
        return self.T_world_base @ self.true.move(q)


def _arrive(s, q, kind="approach"):
    s.set_robot_state({"q": np.asarray(q, float).tolist(),
                       "follow": {"kind": kind, "progress": 1.0, "arrived": True, "paused": False, "reason": ""}})


def robot_room_case(tmp_path):
    """A calibrated small room whose robot errs, a plan on L4 left, the guide aligned open loop."""
    from core.simulation.robot_truth import TrueRobot, sample_robot_errors
    from devices.carm import SimulatedCArm

    from core.simulation.scene import SimulatedOR, default_T_world_cage
    ph, _ = sim_room()
    ped = ph.pedicle("L4", "left")
    # the C-arm centred on the pedicle, the cage over it (as ``sim run`` sets a case up): the
    # guide and its wire in both fields
    sim = SimulatedOR(seed=3, phantom=ph, shape=(256, 256), render_device="cpu", isocentre_mm=ped.isthmus_mm)
    T_wc = default_T_world_cage(sim.volume, sim.cage)
    T_wc[2, 3] += ped.isthmus_mm[2]
    sim.T_world_cage = T_wc
    driver = SimulatedCArm(scene=sim, latency_s=0.0, phantom=ph)
    driver.connect()
    # tilted cranio-caudally, as for pedicles: the pedicle axis then is not near the AP beam
    driver.set_pose(0.0, CARM_TILT_DEG)
    s = Session(tmp_path, save_images=True)
    s.set_device_status("carm", DeviceStatus.SIMULATED, "simulated C-arm")
    s.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")
    q0 = home_q()
    s.set_robot_state({"q": q0.tolist()})
    room = RobotRoom(sim, TrueRobot(kin(), sample_robot_errors(4)), q0, s)
    client = FakeClient()
    devices = FakeDevices(driver, s)
    # the guide's tip 10 mm over the entry, in the soft tissue (the LAT burns out the air behind the back)
    nav = NavigationController(s, kin(), client, devices, room, stand_off_mm=10.0, envelope="none")
    from core.calibration import calibrate
    from core.calibration.plate import load_plate, plate_distortion
    from resources import path as resource_path
    # the image intensifier's distortion from the plate shot of each view, as the technician does
    plate = load_plate(resource_path("plates", "default.json"))
    dist = {v: plate_distortion(plate, sim.plate_shot(v, 0.0, CARM_TILT_DEG, seed=7 + i).image.pixels)[0]
            for i, v in enumerate(("ap", "lat"))}
    cal = calibrate(sim.cage, {v: sim.acquire(v, 0.0, CARM_TILT_DEG, seed=1).image.pixels for v in ("ap", "lat")},
                    dist)
    s.calibration = cal
    nav.calibration_changed(cal)
    T_cage_world = invert(sim.T_world_cage)
    put(s, entry=apply(T_cage_world, ped.entry_mm), target=apply(T_cage_world, ped.target_mm))
    summaries = []
    nav.correction_changed.connect(summaries.append)
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append(text))
    assert not nav.correct() and msgs[-1].startswith("Correct: align first")     # nothing aligned yet
    preview = nav.plan_align()
    assert preview is not None and nav.hold_to_move(True)
    _arrive(s, preview.plan.q_goal)
    assert nav.phase == "aligned" and s.alignment is not None
    return SimpleNamespace(s=s, nav=nav, client=client, devices=devices, driver=driver, room=room,
                           summaries=summaries, msgs=msgs)


def test_closed_loop_from_shots_corrects_the_open_loop_error_and_each_iteration_is_shown(tmp_path):
    """Open loop the guide misses by the nominal cage mount's error (mm); the shots' correction
    (eq. 24), applied on the surgeon's Move hold, brings the true guide within 0.5 mm and 0.5 deg."""
    c = robot_room_case(tmp_path)
    s, nav, client, devices, room, summaries = c.s, c.nav, c.client, c.devices, c.room, c.summaries
    open_loop = nav._true_residual(room.true_tool_pose())
    assert open_loop["tip_mm"] > 1.0                    # the nominal mount's error, not a model's rounding
    for _ in range(4):                                  # at most the loop's shot pairs
        if nav.phase == "aligned" and (nav.loop is None or not nav.loop.done):
            assert nav.correct()
        if nav.phase != "correction":
            break
        n_paths = len(client.sent("follow_path"))
        assert nav.hold_to_move(True)                   # the correction moves only on the dead-man
        (_, kind, q_path, _), = client.sent("follow_path")[n_paths:]
        assert kind == "approach" and np.allclose(q_path[0], s.robot_state["q"])
        assert client.calls[-1] == ("set_deadman", True)
        _arrive(s, q_path[-1])
    loop = nav.loop
    assert loop.done and loop.converged, loop.stop_reason
    assert 2 <= len(loop.history) <= 4 and devices.shots == ["ap", "lat"] * len(loop.history)
    final = nav._true_residual(room.true_tool_pose())
    assert final["tip_mm"] < 0.5 and final["angle_deg"] < 0.5
    assert final["tip_mm"] < open_loop["tip_mm"] / 3
    # every iteration was shown: the last summary lists each pair, the truth beside it
    last = summaries[-1]
    assert [it["shot"] for it in last["iterations"]] == list(range(1, len(loop.history) + 1))
    assert last["converged"] and "converged" in last["stop_reason"]
    assert len(nav.loop_truth) == len(loop.history)
    assert nav.loop_truth[0]["tip_mm"] == pytest.approx(open_loop["tip_mm"], abs=1e-6)
    stored = json.loads(sorted(s.folder.glob("alignment-*.json"))[-1].read_text())
    assert stored["closed_loop"]["converged"] and len(stored["closed_loop"]["iterations"]) == len(loop.history)
    # the insertion then runs along the corrected line, not the nominal one
    assert nav.hold_to_insert(True)
    (_, kind, q_ins, _) = client.sent("follow_path")[-1]
    T_end = kin().forward(q_ins[-1])
    T_cmd = nav._T_cmd
    assert kind == "insert" and np.linalg.norm(np.cross(T_end[:3, 3] - T_cmd[:3, 3], T_cmd[:3, 2])) < 0.01


def test_a_carm_moved_since_the_calibration_is_caught_by_the_cage_balls_of_the_new_shots(tmp_path):
    """No angle tags compared here: the balls of the closed-loop shots, where the calibration puts
    them with the robot where it is, disagree; the calibration is dropped with its reason."""
    c = robot_room_case(tmp_path)
    said = []
    c.nav.calibration_invalidated.connect(said.append)
    c.driver.set_pose(0.0, CARM_TILT_DEG + 2.0)          # the C-arm tilted 2 deg more
    c.nav.correct()
    assert len(said) == 1 and said[0].startswith("the C-arm moved") and "calibrate again" in said[0]
    assert "\n" not in said[0] and c.s.calibration is None and c.nav.frames is None
    assert c.nav.phase == "idle" and c.nav.preview is None and c.msgs[-1] == said[0]
    assert [x for x in c.client.sent("follow_path")][-1][1] == "approach"    # only the approach ever moved


def test_closed_loop_refuses_a_correction_too_large_to_be_a_robot_error(aligned_case):
    from core.navigation.closed_loop import ClosedLoopCorrection
    s, nav, client, tid, (e, t, d) = aligned_case
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append(text))
    preview = nav.plan_align()
    nav.hold_to_move(True)
    _arrive(s, preview.plan.q_goal)
    nav.loop = ClosedLoopCorrection(preview.plan.insertion.start_mm, preview.plan.direction)
    nav._T_cmd = kin().forward(preview.plan.q_goal)
    nav.phase = "correcting"

    class Pose:                                    # a "measurement" 20 mm off: a misdetection
        tip_mm = nav.frames.to_calibration_frame(preview.plan.insertion.start_mm + [20.0, 0, 0])
        direction = nav.frames.T_cage0_base[:3, :3] @ preview.plan.direction
        tip_gap_mm = 0.1
    n = len(client.sent("follow_path"))
    nav._correction_measured(Pose(), "")
    assert nav.phase == "aligned" and nav.loop.done and not nav.loop.converged
    assert msgs[-1].startswith("Correct: refused: the correction") and "misdetected" in msgs[-1]
    assert len(client.sent("follow_path")) == n          # nothing moved


def test_hand_guiding_holds_the_fixture_on_the_planned_line_and_records_arrival_at_the_stand_off(aligned_case):
    s, nav, _, _, _ = aligned_case
    nav.client = client = GuideClient()
    assert nav.hold_to_guide(True, "in")
    plan = nav.preview.plan
    (_, (point, direction)), = client.sent("set_fixture")
    assert np.allclose(point, plan.insertion.start_mm) and np.allclose(direction, plan.direction)
    (_, F), = client.sent("simulate_hand")
    assert np.allclose(F[:3], 12.0 * plan.direction) and client.calls[-1] == ("set_deadman", True)
    # released short of the stand-off: nothing recorded, the preview planned again from here
    s.set_robot_state({"q": home_q().tolist()})
    nav.hold_to_guide(False, "in")
    assert client.sent("set_fixture")[-1] == ("set_fixture", None) and np.allclose(client.sent("simulate_hand")[-1][1], 0)
    assert ("set_deadman", False) in client.calls
    assert s.alignment is None and nav.phase == "idle" and nav.preview is not None
    # guided onto the stand-off: the alignment is recorded as after Move
    nav.hold_to_guide(True, "side")
    assert abs(float(client.sent("simulate_hand")[-1][1][:3] @ plan.direction)) < 1e-9
    s.set_robot_state({"q": nav.preview.plan.q_goal.tolist()})
    nav.hold_to_guide(False, "side")
    assert nav.phase == "aligned" and s.alignment is not None and s.alignment["tip_error_mm"] < 0.01
    msgs = []
    nav.message.connect(lambda text, warn: msgs.append(text))
    assert not nav.hold_to_guide(True, "sideways") and msgs[-1] == "Guide: unknown push 'sideways' (in, out, side)"


def test_an_old_paths_arrival_in_a_late_state_is_not_taken_for_the_new_paths(aligned_case):
    """The loop's state can still tell of the path before the one just sent: its arrival is not ours."""
    s, nav, client, tid, _ = aligned_case

    class Numbered(FakeClient):
        path_id = 0

        def follow_path(self, kind, q_samples, dt):
            super().follow_path(kind, q_samples, dt)
            self.path_id += 1

    nav.client = c = Numbered()
    preview = nav.plan_align()
    nav.hold_to_move(True)
    assert c.path_id == 1 and nav.phase == "approach"
    q_goal = preview.plan.q_goal.tolist()
    old = {"kind": "approach", "progress": 1.0, "arrived": True, "paused": False, "reason": "", "id": 0}
    s.set_robot_state({"q": q_goal, "follow": old})
    assert nav.phase == "approach" and s.alignment is None
    s.set_robot_state({"q": q_goal, "follow": dict(old, id=1)})
    assert nav.phase == "aligned" and s.alignment is not None
