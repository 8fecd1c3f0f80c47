"""Align: a plan lands on its pose, the motion keeps the limits, each refusal says why."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from core.calibration.cage import load_cage
from core.navigation.align import (AlignJointLimitError, Box, Capsule, CollisionError, HalfSpace,
                                   IncompleteTrajectoryError, SingularityRefusal, UnreachableError,
                                   WorkspaceError, cage_bodies, carm_envelope, default_cartesian_limits,
                                   distance, guide_body, patient_surface, plan_alignment)
from core.robot.kinematics.hybrid5 import load_hybrid5
from resources import path as resource_path

K = load_hybrid5()
LIMITS = default_cartesian_limits()
Q_HOME = K.joints_for_pose([625.0, 475.0, -135.0, 0.0, 0.0])
ENTRY = np.array([615.0, 485.0, -205.0])


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def wide(**kw):
    """The robot's limits with the workspace box opened (to reach the joint-level refusals)."""
    return dataclasses.replace(LIMITS, box_lower=np.array([-1e4, -1e4, -1e4, -3.0, -3.0]),
                               box_upper=np.array([1e4, 1e4, 1e4, 3.0, 3.0]), **kw)


@pytest.mark.parametrize("direction", [(0, 0, -1.0), (0.25, -0.1, -1.0), (-0.2, 0.35, -1.0)])
def test_a_known_plan_lands_on_its_pose(direction):
    d = unit(direction)
    target = ENTRY + 45.0 * d
    plan = plan_alignment(ENTRY, target, K, stand_off_mm=25.0, q_current=Q_HOME)
    T = K.forward(plan.q_goal)
    tip = ENTRY - 25.0 * d
    assert np.linalg.norm(T[:3, 3] - tip) < 1e-6
    assert math.degrees(math.acos(min(1.0, T[:3, 2] @ d))) < 1e-6
    assert np.abs(plan.T_base_tool - T).max() < 1e-9
    # the insertion is the separate segment stand-off -> planned depth, along the line
    ins = plan.insertion
    assert np.linalg.norm(ins.start_mm - tip) < 1e-9 and np.linalg.norm(ins.end_mm - target) < 1e-9
    assert ins.length_mm == pytest.approx(70.0) and np.linalg.norm(ins.tip_at(1e3) - target) < 1e-9
    assert plan.singularity_margin >= LIMITS.min_singularity_margin
    prev = plan.preview_poses(9)
    assert prev["T_base_tool"].shape == (9, 4, 4) and prev["T_base_cage"].shape == (9, 4, 4)
    assert np.abs(prev["T_base_tool"][0] - K.forward(Q_HOME)).max() < 1e-9
    assert np.abs(prev["T_base_tool"][-1] - T).max() < 1e-9


def test_the_motion_keeps_joint_and_tool_limits():
    d = unit([0.3, 0.25, -1.0])
    q_start = K.joints_for_pose([560.0, 400.0, -80.0, math.radians(-10), math.radians(8)])
    plan = plan_alignment(ENTRY, ENTRY + 40 * d, K, q_current=q_start)
    m = plan.motion
    dt = 0.001
    t, q, qd = m.samples(dt)
    assert np.abs(q[0] - q_start).max() < 1e-12 and np.abs(q[-1] - plan.q_goal).max() < 1e-12
    assert np.abs(qd[0]).max() < 1e-12 and np.abs(qd[-1]).max() < 1e-9
    jl = K.joint_limits
    assert np.all(np.abs(qd) <= jl.velocity * (1 + 1e-9))
    qdd = np.diff(qd, axis=0) / dt
    assert np.all(np.abs(qdd) <= jl.acceleration * (1 + 1e-6))
    # synchronised: every joint is at the same fraction of its way at every sample
    dq = plan.q_goal - q_start
    frac = (q - q_start) / dq
    assert np.abs(frac - frac[:, :1]).max() < 1e-9
    # the tool tip's speed and turn rate, by finite differences of forward kinematics
    T = np.stack([K.forward(x) for x in q[::10]])
    v = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1) / (10 * dt)
    turn = np.arccos(np.clip(np.sum(T[1:, :3, 2] * T[:-1, :3, 2], 1), -1, 1)) / (10 * dt)
    assert v.max() <= LIMITS.linear_speed * 1.001 and turn.max() <= LIMITS.angular_speed * 1.001
    assert v.max() > 0.5 * LIMITS.linear_speed or turn.max() > 0.5 * LIMITS.angular_speed  # not timid
    assert m.duration_s == pytest.approx(t[-1]) and m.limited_by
    # already there: no motion
    still = plan_alignment(ENTRY, ENTRY + 40 * d, K)
    assert still.motion.duration_s == 0.0 and len(still.motion.samples(dt)[0]) == 2


def test_refusals_say_why():
    d = unit([0.0, 0.0, -1.0])
    with pytest.raises(IncompleteTrajectoryError, match="no 3D target"):
        plan_alignment(ENTRY, None, K, name="L4 left")
    with pytest.raises(IncompleteTrajectoryError, match="apart"):
        plan_alignment(ENTRY, ENTRY + 0.2 * d, K)
    low = np.array([620.0, 480.0, -300.0])
    with pytest.raises(WorkspaceError, match=r"z = -280.0 mm, outside the workspace \[-260, -10\] mm"):
        plan_alignment(low, low + 40 * d, K)
    steep = unit([0.0, math.tan(math.radians(50)), -1.0])
    with pytest.raises(WorkspaceError, match="theta_x = 50.0°"):
        plan_alignment(ENTRY, ENTRY + 40 * steep, K)
    tilt_y = unit([-math.tan(math.radians(40)), 0.0, -1.0])    # theta_y = 40 deg: joint theta5 is +-35
    with pytest.raises(AlignJointLimitError, match=r"joint theta5 would be at -40.0°, outside \[-35.0°, 35.0°\]") as e:
        plan_alignment(ENTRY, ENTRY + 40 * tilt_y, K, limits=wide())
    assert "\n" not in str(e.value)
    far = np.array([620.0, 2500.0, -150.0])
    with pytest.raises(UnreachableError, match="out of reach"):
        plan_alignment(far, far + 40 * d, K, limits=wide())
    with pytest.raises(SingularityRefusal, match="near a singularity"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, limits=dataclasses.replace(LIMITS, min_singularity_margin=0.95))
    with pytest.raises(AlignJointLimitError, match="outside the range of l11"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, q_current=Q_HOME + [1000, 0, 0, 0, 0])
    with pytest.raises(UnreachableError, match="insertion axis"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, stand_off_mm=30, max_insertion_mm=60)


def test_collisions_with_the_envelope():
    d = unit([0.0, 0.0, -1.0])
    tip = ENTRY - 20 * d
    # a detector housing 30 mm beside the guide at the aligned pose
    box = Box(np.eye(4), [20.0, 20.0, 20.0], "LAT detector housing")
    box.T[:3, 3] = tip + [0.0, 8.0 + 20.0 + 3.0, 40.0]
    with pytest.raises(CollisionError, match="tool guide would be 3.0 mm from the LAT detector housing"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[box])
    ok = plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[box], clearance_mm=2.0)
    assert ok.clearance_mm == pytest.approx(3.0, abs=1e-6) and "LAT detector housing" in ok.nearest
    # the patient's skin 10 mm above the entry with a 20 mm stand-off: fine; 30 mm above: refused
    skin = lambda h: patient_surface(ENTRY + [0, 0, h], [0, 0, 1.0])
    assert plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[skin(10.0)], clearance_mm=1.0).clearance_mm \
        == pytest.approx(10.0 - 8.0, abs=1e-6)                      # tip 10 mm above, guide radius 8 mm
    with pytest.raises(CollisionError, match="patient surface.*raise the stand-off by"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[skin(30.0)])
    # on the way: an obstacle between the start and the aligned pose
    q_start = K.joints_for_pose([625.0, 380.0, -135.0, 0.0, 0.0])
    mid = Capsule([560.0, 432.0, -100.0], [700.0, 432.0, -100.0], 20.0, "C-arm source housing")
    with pytest.raises(CollisionError, match="on the way.*C-arm source housing"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[mid], q_current=q_start,
                       bodies=[guide_body(K, 8.0)])
    plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=[mid])        # at the pose itself: clear


def test_cage_bodies_and_c_arm_envelope():
    cage = load_cage(resource_path("cages", "default.json"))
    bodies = cage_bodies(cage, margin_mm=5.0)
    assert [b.name for b in bodies] == ["cage AP part", "cage LAT part"]
    lat = bodies[1].shape
    assert np.allclose(lat.T[:3, 3][0], 195.0) and lat.half_mm[0] == pytest.approx(25.0 + 2.0 + 5.0)
    d = unit([0.0, 0.0, -1.0])
    plan = plan_alignment(ENTRY, ENTRY + 40 * d, K)
    T_cage = K.cage(plan.q_goal)
    lat_centre = T_cage[:3, :3] @ lat.T[:3, 3] + T_cage[:3, 3]
    # a lateral detector 500 mm from its source, whose housing face is 12 mm beyond the cage's LAT part
    face_x = lat_centre[0] + lat.half_mm[0] + 12.0
    env = carm_envelope([face_x - 500.0, lat_centre[1], lat_centre[2]], [1.0, 0, 0], sid_mm=500.0, name="LAT")
    with pytest.raises(CollisionError, match="cage LAT part would be .* from the LAT detector housing"):
        plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=env, bodies=bodies, clearance_mm=20.0)
    ok = plan_alignment(ENTRY, ENTRY + 40 * d, K, envelope=env[:1], bodies=bodies, clearance_mm=5.0)
    assert ok.clearance_mm == pytest.approx(12.0, abs=1e-6)


def test_distances():
    c = Capsule([0, 0, 0.0], [10, 0, 0.0], 1.0)
    assert distance(c, Capsule([5, 5, 0.0], [5, 5, 9.0], 0.5)) == pytest.approx(5 - 1.5)
    assert distance(c, Capsule([13, 4, 0.0], [20, 4, 0.0], 0.0)) == pytest.approx(5.0 - 1.0)
    assert distance(c, Capsule([3, -1, 0.0], [3, 1, 0.0], 0.0)) == pytest.approx(-1.0)   # crossing
    b = Box(np.eye(4), [1.0, 1.0, 1.0])
    assert distance(Capsule([3, 0, 0.0], [3, 5, 0.0], 0.5), b) == pytest.approx(1.5, abs=1e-7)
    assert distance(Capsule([-5, 0, 0.0], [5, 0, 0.0], 0.5), b) == pytest.approx(-0.5, abs=1e-7)
    assert distance(Capsule([3, 3, 0.0], [4, 4, 0.0], 0.0), b) == pytest.approx(math.sqrt(8), abs=1e-7)
    T = np.eye(4)
    T[:3, 3] = [5.0, 0, 0]
    assert distance(b, Box(T, [1.0, 2.0, 3.0])) == pytest.approx(3.0)
    assert distance(b, Box(np.eye(4), [0.5, 0.5, 0.5])) <= 0.0
    h = HalfSpace([0, 0, -2.0], [0, 0, 1.0])
    assert distance(b, h) == pytest.approx(1.0) and distance(c, h) == pytest.approx(1.0)
