"""A simulated robot that errs like a real one: the true kinematics behind the nominal model.

The controller plans with the nominal ``Hybrid5`` (robot paper, eq. 10-11) and reads its
encoders ``q``; the mechanism the simulator moves differs from that model by small
unknowns, as a built robot does:

- link lengths and the structure's angles (table 2's l12, l13, L1, gamma, theta, L2, d),
- joint zero offsets (encoder zero vs the joint's true zero),
- backlash per joint: the joint lags the encoder by half its backlash against the last
  direction of motion (a hysteresis, so the same reading gives two poses),
- compliance under the payload's weight: the flange sags along gravity and turns about
  the weight's moment at the flange (the moment the paper's eq. 17-19 compensate in the
  force reading, here bending the structure),
- the cage's true mount ``T_flange_cage``: the nominal one composed with a few mm and
  about half a degree of offset.

With ``sample_robot_errors(seed)`` open-loop positioning of the tool tip (nominal IK, the
truth executes it) misses by 0.1-0.5 mm over the workspace (the robot paper measured a
0.17 mm mean distance error); ``scale=0`` gives exactly the nominal robot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import make_transform
from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import Hybrid5, load_hybrid5
from core.robot.weight_compensation import GRAVITY_BASE

__all__ = ["RobotErrors", "sample_robot_errors", "TrueRobot", "default_payload", "open_loop_rms_mm",
           "probe_joints", "TARGET_RMS_MM"]

_PARAMS = ("l12", "l13", "L1", "gamma", "theta", "L2", "d")


@dataclass(frozen=True)
class RobotErrors:
    """How the true robot differs from the nominal one (mm, rad; per joint in joint units).

    ``params``: additive errors of ``Hybrid5Parameters`` by name; ``joint_offset``: true
    joint = encoder + offset; ``backlash``: full dead band per joint (the joint lags half of
    it); ``compliance_rad_per_Nmm``: flange rotation per N*mm of the payload's moment;
    ``compliance_mm_per_N``: flange sag per N of payload weight; ``T_cage_offset``: true
    ``T_flange_cage = nominal @ T_cage_offset``.
    """
    params: dict = field(default_factory=dict)
    joint_offset: np.ndarray = field(default_factory=lambda: np.zeros(5))
    backlash: np.ndarray = field(default_factory=lambda: np.zeros(5))
    compliance_rad_per_Nmm: float = 0.0
    compliance_mm_per_N: float = 0.0
    T_cage_offset: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        bad = set(self.params) - set(_PARAMS)
        if bad:
            raise KinematicsError(f"unknown robot parameter error(s) {sorted(bad)}: use {list(_PARAMS)}")
        for name in ("joint_offset", "backlash"):
            a = np.asarray(getattr(self, name), float).copy()
            if a.shape != (5,) or not np.all(np.isfinite(a)):
                raise KinematicsError(f"{name} must be 5 finite numbers (one per joint)")
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        if np.any(self.backlash < 0) or self.compliance_rad_per_Nmm < 0 or self.compliance_mm_per_N < 0:
            raise KinematicsError("backlash and compliance must be >= 0")
        T = np.asarray(self.T_cage_offset, float).copy()
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise KinematicsError("T_cage_offset must be a finite 4x4 transform")
        object.__setattr__(self, "T_cage_offset", T)


def _signed(rng, lo, hi, n=None):
    """Magnitudes uniform in [lo, hi] with random signs: every error is present, none is huge."""
    mag = rng.uniform(lo, hi, n)
    return mag * rng.choice([-1.0, 1.0], n)


TARGET_RMS_MM = 0.15    # open-loop tip error (RMS over the probe poses) of the sampled robot
_PROBE_SEED = 20200   # the probe poses do not depend on the robot's seed


def sample_robot_errors(seed: int, scale: float = 1.0, nominal: Hybrid5 | None = None,
                        target_rms_mm: float = TARGET_RMS_MM) -> RobotErrors:
    """Seeded errors of a well-built robot; ``scale`` multiplies every one (0 = nominal).

    Drawn with random signs: link lengths 0.04-0.12 mm, structure angles 0.002-0.008 deg,
    slider zeros 0.02-0.05 mm, rotary zeros 0.01-0.03 deg, backlash 0.01-0.03 mm /
    0.005-0.015 deg, compliance that turns the flange 0.3-0.6 urad per N*mm of the
    payload's moment and sags it 1-2 um per N (a 30 N tool: about 0.1 mm at the tip).
    The draw is then scaled as a whole so that the open-loop tip error, RMS over fixed
    probe poses of ``nominal``'s workspace, is ``target_rms_mm`` (a robot accepted to a
    positioning spec: random signs alone would spread it 0.1-0.4 mm from seed to seed).
    The cage mount is off by 1-3 mm per axis and 0.3-0.7 deg (not scaled to the spec).
    """
    if not (np.isfinite(scale) and scale >= 0):
        raise KinematicsError(f"scale must be a finite number >= 0, got {scale}")
    if not (np.isfinite(target_rms_mm) and target_rms_mm > 0):
        raise KinematicsError(f"target_rms_mm must be a positive number, got {target_rms_mm}")
    rng = np.random.default_rng(seed)
    deg = math.radians(1.0)
    lengths = _signed(rng, 0.04, 0.12, 4)          # l12, l13, L1, L2
    angles = _signed(rng, 0.002, 0.008, 2) * deg   # gamma, theta
    d = _signed(rng, 0.02, 0.05)
    params = {"l12": lengths[0], "l13": lengths[1], "L1": lengths[2], "L2": lengths[3],
              "gamma": angles[0], "theta": angles[1], "d": d}
    offset = np.concatenate([_signed(rng, 0.02, 0.05, 3), _signed(rng, 0.01, 0.03, 2) * deg])
    backlash = np.concatenate([rng.uniform(0.01, 0.03, 3), rng.uniform(0.005, 0.015, 2) * deg])
    c_rot = rng.uniform(0.3e-6, 0.6e-6)
    c_lin = rng.uniform(1e-3, 2e-3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(axis * rng.uniform(0.3, 0.7) * deg * scale).as_matrix()
    T_cage = make_transform(rot, _signed(rng, 1.0, 3.0, 3) * scale)
    raw = RobotErrors({k: float(v) for k, v in params.items()}, offset, backlash, c_rot, c_lin)
    if scale == 0:
        return RobotErrors({k: 0.0 for k in params}, np.zeros(5), np.zeros(5), 0.0, 0.0, T_cage)
    f = scale * target_rms_mm / open_loop_rms_mm(raw, nominal)
    return RobotErrors({k: v * f for k, v in raw.params.items()}, offset * f, backlash * f, c_rot * f, c_lin * f,
                       T_cage)


def probe_joints(nominal: Hybrid5, n: int = 48) -> np.ndarray:
    """(n, 5) encoder readings of fixed random tool poses inside ``nominal``'s workspace box
    (tilts within +-30 deg about x, +-25 deg about y), each reachable within the joint limits."""
    nominal = nominal or load_hybrid5()
    ws = nominal.workspace_mm
    if ws is None:
        raise KinematicsError("the robot has no workspace box to probe")
    rng = np.random.default_rng(_PROBE_SEED)
    tilt = np.radians([30.0, 25.0])
    out = []
    for _ in range(50 * n):
        X = np.concatenate([rng.uniform(ws[:, 0], ws[:, 1]), rng.uniform(-tilt, tilt)])
        try:
            out.append(nominal.joints_for_pose(X))
        except KinematicsError:
            continue
        if len(out) == n:
            return np.array(out)
    raise KinematicsError("too few reachable poses in the robot's workspace box to probe it")


def open_loop_rms_mm(errors: RobotErrors, nominal: Hybrid5 | None = None) -> float:
    """RMS tool-tip miss over ``probe_joints``: nominal IK commanded, the truth executes it
    (every joint last moved forwards)."""
    nominal = nominal or load_hybrid5()
    truth = TrueRobot(nominal, errors, direction=1.0)
    Q = probe_joints(nominal)
    e = [np.linalg.norm(truth.forward(q)[:3, 3] - nominal.forward(q)[:3, 3]) for q in Q]
    return float(np.sqrt(np.mean(np.square(e))))


def default_payload() -> tuple[float, np.ndarray]:
    """(weight N, centre of mass in the flange frame mm) of the robot file's simulated tool."""
    import json

    from resources import path as resource_path
    with open(resource_path("robots", "hybrid5.json")) as f:
        tool = json.load(f)["simulated_tool"]
    return float(tool["weight_N"]), np.asarray(tool["com_flange_mm"], float)


class TrueRobot:
    """The mechanism the simulator moves, for encoder readings ``q`` of ``nominal``.

    ``flange(q)``, ``forward(q)`` (tool) and ``cage(q)`` give the true ``T_base_*``.
    Backlash needs the direction each joint last moved in: ``move(q)`` records it (a joint
    that does not move keeps its last direction), or pass ``direction`` (+1/-1/0 per joint,
    or one number for all) to any pose method; ``direction`` at construction is the state
    before the first move (default +1: every joint last moved forwards).
    """

    def __init__(self, nominal: Hybrid5, errors: RobotErrors | None = None, payload_N: float | None = None,
                 payload_com_flange_mm=None, direction=1.0):
        self.nominal = nominal
        self.errors = errors or RobotErrors()
        if payload_N is None or payload_com_flange_mm is None:
            w, com = default_payload()
            payload_N = w if payload_N is None else payload_N
            payload_com_flange_mm = com if payload_com_flange_mm is None else payload_com_flange_mm
        self.payload_N = float(payload_N)
        self.payload_com_flange_mm = np.asarray(payload_com_flange_mm, float)
        if self.payload_com_flange_mm.shape != (3,) or not (self.payload_N >= 0):
            raise KinematicsError("the payload is a weight >= 0 N and a 3-vector centre of mass (mm)")
        p = nominal.p
        true_params = replace(p, **{k: getattr(p, k) + v for k, v in self.errors.params.items()})
        self.kinematics = Hybrid5(true_params, nominal.joint_limits,
                                  self.design_T_flange_cage(nominal) @ self.errors.T_cage_offset,
                                  nominal.workspace_mm)
        self.direction = self._direction(direction)
        self.q: np.ndarray | None = None

    @staticmethod
    def design_T_flange_cage(nominal) -> np.ndarray:
        """The mount the truth errs from: the robot file's nominal one, even when the controller
        uses a measured mount (``Hybrid5.use_cage_mount``): measuring it does not move the cage."""
        return np.asarray(getattr(nominal, "T_flange_cage_nominal", nominal.T_flange_cage), float)

    @property
    def T_flange_cage(self) -> np.ndarray:
        """The cage's true mount on the flange."""
        return self.kinematics.T_flange_cage.copy()

    @property
    def T_flange_tool(self) -> np.ndarray:
        return self.kinematics.T_flange_tool

    @staticmethod
    def _direction(direction) -> np.ndarray:
        d = np.broadcast_to(np.asarray(direction, float), (5,)).copy()
        if not np.all(np.isin(d, (-1.0, 0.0, 1.0))):
            raise KinematicsError("a motion direction is +1, -1 or 0 per joint")
        return d

    def move(self, q) -> np.ndarray:
        """Drive to encoder reading ``q``: a joint pushed past its dead band sets its backlash
        side; one that jitters inside it (encoder noise at rest) stays. Returns the true
        ``T_base_tool`` there."""
        q = self.nominal._q(q).copy()
        b = self.errors.backlash
        if self.q is None:
            self._lag = -0.5 * self.direction * b
        else:
            step = np.sign(q - self.q)
            self.direction = np.where(step != 0, step, self.direction)
            # play: the joint moves only when the encoder side pushes it from one end of the dead
            # band, so encoder noise under the band (a robot at rest) does not flip its side
            self._lag = np.clip(self.q + self._lag, q - 0.5 * b, q + 0.5 * b) - q
        self.q = q
        return self.forward(q)

    def joints(self, q, direction=None) -> np.ndarray:
        """The true joint values behind encoder reading ``q``: zero offset, then the backlash
        lag of half the dead band against the last direction of motion."""
        q = self.nominal._q(q)
        if direction is None and self.q is not None and np.array_equal(q, self.q):
            return q + self.errors.joint_offset + self._lag        # where the play left it
        d = self.direction if direction is None else self._direction(direction)
        return q + self.errors.joint_offset - 0.5 * d * self.errors.backlash

    def flange(self, q, direction=None) -> np.ndarray:
        """True ``T_base_flange``: the true geometry at the true joints, deflected by the
        payload (a rotation about the flange by compliance x moment, a sag along gravity)."""
        T = self.kinematics.flange(self.joints(q, direction))
        e = self.errors
        if e.compliance_rad_per_Nmm == 0 and e.compliance_mm_per_N == 0:
            return T
        g = GRAVITY_BASE / np.linalg.norm(GRAVITY_BASE)
        force = self.payload_N * g                                   # N, base frame
        moment = np.cross(T[:3, :3] @ self.payload_com_flange_mm, force)  # N*mm about the flange
        out = T.copy()
        out[:3, :3] = Rotation.from_rotvec(e.compliance_rad_per_Nmm * moment).as_matrix() @ T[:3, :3]
        out[:3, 3] = T[:3, 3] + e.compliance_mm_per_N * force
        return out

    def forward(self, q, direction=None) -> np.ndarray:
        """True ``T_base_tool``."""
        return self.flange(q, direction) @ self.kinematics.T_flange_tool

    def cage(self, q, direction=None) -> np.ndarray:
        """True ``T_base_cage``."""
        return self.flange(q, direction) @ self.kinematics.T_flange_cage
