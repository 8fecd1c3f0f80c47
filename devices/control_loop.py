"""One cycle of the robot control loop: watchdog, weight compensation, admittance or jog,
limits, command. Runs inside the control process (``devices.robot_controller``); kept
apart so that a test can drive it cycle by cycle with a fake clock.

Every motion command expires (jogs after ``jog_hold_s`` unless renewed, admittance
after ``deadman_s`` without a dead-man heartbeat). STOP zeroes the command at once and
latches: it raises the loop's *epoch*, every command carries the epoch it was issued in
(``submit``), and one issued before the STOP is discarded wherever it was queued; a
motion command after a STOP is refused with one line until Reset, which is its own
step: the loop re-enables the devices, waits for fresh robot and sensor data, and
acknowledges (``reset_epoch``, a ``reset_done`` event), or faults saying which device
did not come back. Limits (``core.robot.limits``) apply to every mode, on the commanded
reference integrated over the true elapsed time together with the measured joints;
a cycle later than ``late_cycle_s`` while moving is a fault. Faults carry a
``devices.base.FaultKind``.

Path following (``follow``): the client sends joint samples at a fixed ``dt`` tagged
``approach`` or ``insert`` (checked by ``check_path``: finite, inside the joint ranges,
within the joint speeds and accelerations, starting where the robot is; a refusal is a
``PathError`` with its ``PathRefusal``). The loop advances along the path only while
the dead-man is held (``follow_hold`` and its heartbeat): released, or the heartbeat
lost, the very next command asks for zero and the limiter brakes; re-held, it resumes
from where the robot stopped (the braking carried it a little further along the path).
``insert`` starts only at the arrived end of an ``approach``, on a hold of its own.
STOP (or a fault) aborts the path: a new one is needed after Reset.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from core.robot.admittance import ORIENTATION, FuzzyAdmittance
from core.robot.limits import MotionLimiter
from core.robot.kinematics.base import KinematicsError
from core.robot.kinematics.hybrid5 import Hybrid5
from core.robot.weight_compensation import (ToolLoad, WeightCompensationError, hand_wrench,
                                            identify_tool_load, rezero)
from devices.base import DeviceError, FaultKind, Simulator

__all__ = ["IDLE", "JOG_JOINT", "JOG_TASK", "MOVE", "ADMITTANCE", "IDENTIFY", "STOPPED",
           "FAULT", "RESETTING", "FOLLOW", "SETTINGS", "LoopTiming", "ControlLoop", "PathRefusal",
           "PathError", "check_path", "PATH_KINDS", "MAX_PATH_SAMPLES"]

IDLE, JOG_JOINT, JOG_TASK, MOVE = "idle", "jog_joint", "jog_task", "move"
ADMITTANCE, IDENTIFY, STOPPED, FAULT = "admittance", "identify", "stopped", "fault"
RESETTING, FOLLOW = "resetting", "follow"
MODE_CODES = {m: i for i, m in enumerate((IDLE, JOG_JOINT, JOG_TASK, MOVE, ADMITTANCE, IDENTIFY,
                                          STOPPED, FAULT, RESETTING, FOLLOW))}
# commands that set a preference and move nothing: applied even when issued before a STOP
SETTINGS = ("speed", "drag_mode", "tool_load", "fixture")
FIXTURE_ENGAGE_MM, FIXTURE_ENGAGE_DEG = 5.0, 5.0   # the line's fixture holds only a tool this near it


@dataclass
class LoopTiming:
    period_s: float = 0.001
    watchdog_s: float = 0.02
    jog_hold_s: float = 0.3           # a jog lapses unless renewed (a frozen GUI stops it)
    deadman_s: float = 0.4            # admittance lapses without a dead-man heartbeat
    move_gain: float = 10.0           # 1/s, task-space P gain of step moves
    follow_gain: float = 20.0         # 1/s, joint-space P gain on a followed path (with the
                                      # path's velocity fed forward; 0.2 x the servo's 10 ms lag)
    settle_s: float = 0.4             # identification: dwell at rest before averaging
    average_s: float = 0.3            # identification: averaging window
    average_min_samples: int = 20     # ... and at least this many readings in it
    following_mm: float = 3.0         # largest measured lag behind the command (linear joints)
    following_rad: float = 0.05       # largest measured lag behind the command (rotary joints)
    late_cycle_s: float = 0.1         # a cycle later than this while moving is a fault; the
                                      # limits hold every command for this long (the horizon)
    reset_timeout_s: float = 1.0      # Reset waits this long for fresh robot and sensor data
    rest_mm_s: float = 0.05           # measured speeds below these: the robot is at rest
    rest_rad_s: float = 5e-4


PATH_KINDS = ("approach", "insert")
MAX_PATH_SAMPLES = 20000          # 20 s at 1 ms, 200 s at 10 ms: 0.8 MB as a message at most
PATH_DT_S = (0.0005, 0.1)         # sample spacing accepted (s)
START_TOL = (0.5, 0.005)          # mm, rad per joint: the path starts where the robot is
ARRIVE_MM, ARRIVE_RAD = 0.004, 3e-5   # tool tip from the goal (filtered measurement)
ARRIVE_FILTER_S = 0.02            # the arrival test averages the encoders over this time
SETTLE_TIMEOUT_S = 3.0            # at the path's end, held, not arrived after this: say why
_PATH_SLACK = 1.05                # speed/acceleration of the samples over the joint limits


class PathRefusal(enum.Enum):
    """Why a path was refused (the client decides on this, never on the text)."""
    KIND = "kind"                  # neither "approach" nor "insert"
    SHAPE = "shape"                # not (N, 5) with 2 <= N <= MAX_PATH_SAMPLES
    NOT_FINITE = "not_finite"
    PERIOD = "period"              # dt outside PATH_DT_S
    JOINT_RANGE = "joint_range"    # a sample outside a joint's range
    DISCONTINUOUS = "discontinuous"  # a jump: faster or harder than the joint limits
    START_AWAY = "start_away"      # the first sample is not where the robot is
    UNREACHABLE = "unreachable"    # no closed chain, near a singularity, or outside the box
    NOT_ARRIVED = "not_arrived"    # insert before the approach arrived
    BUSY = "busy"                  # stopped, in fault, or no robot state yet


class PathError(ValueError):
    """A path refused; ``kind`` is its ``PathRefusal``, the message one line."""

    def __init__(self, kind: PathRefusal, message: str):
        super().__init__(message)
        self.kind = kind


def _joint_text(kin, j, value) -> str:
    if kin.revolute[j]:
        return f"{math.degrees(value):.2f}°"
    return f"{value:.2f} mm"


def check_path(kin: Hybrid5, kind, q_samples, dt, q_now=None, box=None) -> tuple[np.ndarray, float]:
    """The path as (N, 5) float samples and dt, or ``PathError``: finite, inside the joint
    ranges, no step faster than the joint speeds nor a change of step harder than their
    accelerations (5 % slack for sampling), first sample within ``START_TOL`` of ``q_now``;
    the chain is checked closed, away from singularities and inside ``box`` (lower, upper)
    at up to 9 evenly spread samples (the limiter guards every cycle in between)."""
    if kind not in PATH_KINDS:
        raise PathError(PathRefusal.KIND, f"a path is 'approach' or 'insert', got {kind!r}")
    try:
        Q = np.array(q_samples, dtype=float)
        dt = float(dt)
    except (TypeError, ValueError):
        raise PathError(PathRefusal.SHAPE, "a path is an (N, 5) array of joint samples and a "
                        "sample period in seconds") from None
    if Q.ndim != 2 or Q.shape[1] != kin.n_joints or not 2 <= len(Q) <= MAX_PATH_SAMPLES:
        raise PathError(PathRefusal.SHAPE, f"a path is (N, {kin.n_joints}) joint samples with 2 <= N <= "
                        f"{MAX_PATH_SAMPLES}, got shape {Q.shape}")
    if not np.all(np.isfinite(Q)):
        i = int(np.flatnonzero(~np.all(np.isfinite(Q), axis=1))[0])
        raise PathError(PathRefusal.NOT_FINITE, f"path sample {i} is not finite: plan again")
    if not (math.isfinite(dt) and PATH_DT_S[0] <= dt <= PATH_DT_S[1]):
        raise PathError(PathRefusal.PERIOD, f"the path's sample period must be {1e3 * PATH_DT_S[0]:g}-"
                        f"{1e3 * PATH_DT_S[1]:g} ms, got {dt!r} s")
    jl, names = kin.joint_limits, kin.joint_names
    out = (Q < jl.lower - 1e-9) | (Q > jl.upper + 1e-9)
    if out.any():
        i, j = (int(a[0]) for a in np.nonzero(out))
        raise PathError(PathRefusal.JOINT_RANGE, f"path sample {i} puts joint {names[j]} at "
                        f"{_joint_text(kin, j, Q[i, j])}, outside [{_joint_text(kin, j, jl.lower[j])}, "
                        f"{_joint_text(kin, j, jl.upper[j])}]: plan again")
    d1 = np.diff(Q, axis=0)
    fast = np.abs(d1) > _PATH_SLACK * jl.velocity * dt + 1e-9
    if fast.any():
        i, j = (int(a[0]) for a in np.nonzero(fast))
        raise PathError(PathRefusal.DISCONTINUOUS, f"the path jumps between samples {i} and {i + 1}: joint "
                        f"{names[j]} by {_joint_text(kin, j, abs(d1[i, j]))} in {1e3 * dt:g} ms, faster than "
                        f"its {_joint_text(kin, j, jl.velocity[j])}/s: plan again")
    if len(Q) > 2:
        d2 = np.abs(np.diff(d1, axis=0))
        hard = d2 > _PATH_SLACK * jl.acceleration * dt * dt + 1e-9
        if hard.any():
            i, j = (int(a[0]) for a in np.nonzero(hard))
            raise PathError(PathRefusal.DISCONTINUOUS, f"the path's speed jumps at sample {i + 1}: joint "
                            f"{names[j]} accelerates beyond its {_joint_text(kin, j, jl.acceleration[j])}/s²:"
                            " plan again")
    if q_now is not None:
        tol = np.where(kin.revolute, START_TOL[1], START_TOL[0])
        off = np.abs(Q[0] - np.asarray(q_now, float))
        if np.any(off > tol):
            j = int(np.argmax(off / tol))
            raise PathError(PathRefusal.START_AWAY, f"the path starts {_joint_text(kin, j, off[j])} away from "
                            f"where joint {names[j]} is: the robot moved since the plan; plan again")
    for i in np.unique(np.linspace(0, len(Q) - 1, min(len(Q), 9)).round().astype(int)):
        try:
            X = kin.pose(Q[i])
            margin = kin.singularity_margin(Q[i])
        except KinematicsError as e:
            raise PathError(PathRefusal.UNREACHABLE, f"path sample {i}: {e}") from None
        if margin < 0.1:
            raise PathError(PathRefusal.UNREACHABLE, f"path sample {i} passes near a singular configuration "
                            f"(margin {margin:.2f}): plan another approach")
        if box is not None and (np.any(X < box[0] - 1e-9) or np.any(X > box[1] + 1e-9)):
            raise PathError(PathRefusal.UNREACHABLE, f"path sample {i} leaves the allowed workspace: "
                            "plan again nearer the middle of the workspace")
    return Q, dt


@dataclass
class _Path:
    """A path being followed: samples ``Q`` every ``dt``; ``tau`` the time along it, ``rate``
    its time scale (0 paused, 1 at the planned speed)."""
    kind: str
    Q: np.ndarray
    dt: float
    rate_accel: float
    tau: float = 0.0
    rate: float = 0.0
    held: bool = False
    arrived: bool = False
    aborted: bool = False
    reason: str = "waiting for the dead-man"
    path_id: object = None                 # the sender's number for this path
    stale_hold: int = -1                   # presses up to this number came before the path
    told: bool = False                     # the one refusal of a hold was sent
    err: np.ndarray | None = None          # filtered joint error at the end
    t_end: float | None = None             # when tau reached the end while held
    D: np.ndarray | None = None            # per segment: Q[i + 1] - Q[i] (precomputed)
    V: np.ndarray | None = None            # ... and its velocity D / dt

    def __post_init__(self):
        if self.D is None:
            self.D = np.diff(self.Q, axis=0)
        self.V = self.D / self.dt

    @property
    def duration(self) -> float:
        return (len(self.Q) - 1) * self.dt

    def at(self, tau) -> tuple[np.ndarray, np.ndarray]:
        """(q, qd) at path time ``tau``: linear between samples."""
        x = min(max(tau / self.dt, 0.0), len(self.Q) - 1.0)
        i = min(int(x), len(self.Q) - 2)
        return self.Q[i] + (x - i) * self.D[i], self.V[i]

    def report(self) -> dict:
        T = self.duration
        return {"kind": self.kind, "progress": 1.0 if T == 0 else float(min(self.tau / T, 1.0)),
                "arrived": self.arrived, "paused": not (self.held and not self.arrived and not self.aborted),
                "reason": self.reason, "id": self.path_id}


@dataclass
class _Identify:
    targets: list
    start: np.ndarray
    index: int = 0
    t_arrived: float | None = None
    R: list = field(default_factory=list)
    W: list = field(default_factory=list)
    acc: list = field(default_factory=list)


class ControlLoop:
    """``cycle(now)`` once per period; ``submit(epoch, cmd, now)`` for each queued command
    (``handle(cmd, now)``: in the current epoch); ``stop(now)`` for STOP."""

    def __init__(self, robot, sensor, kin: Hybrid5, limiter: MotionLimiter,
                 T_flange_sensor, tool_load: ToolLoad | None, timing: LoopTiming, clock=None):
        """``clock``: the devices' time base, read as each command goes out (None: commands
        are taken to go out at the cycle's ``now``, as a fake-clock test drives it)."""
        self.clock = clock
        self.robot, self.sensor, self.kin, self.limiter = robot, sensor, kin, limiter
        self.R_flange_sensor = np.asarray(T_flange_sensor, float)[:3, :3]
        self.tool_load = tool_load
        self.timing = timing
        self.admittance = FuzzyAdmittance()
        self.fixture = None          # core.robot.virtual_fixture.LineFixture: hand guiding along a line
        self.mode = IDLE
        self.fault: str | None = None
        self.fault_kind: FaultKind | None = None
        self.speed = 0.5
        self.qd_cmd = np.zeros(kin.n_joints)
        self.want = np.zeros(kin.n_joints)
        self.q = self.X = self.q_ref = None
        self.qd_meas = np.zeros(kin.n_joints)
        self.wrench = np.zeros(6)
        self.hand = np.zeros(6)
        self.reasons: list = []
        self.events: list = []            # (kind, payload) for the GUI: faults, results
        self.epoch = 0                    # STOPs seen
        self.reset_epoch = 0              # the epoch of the last acknowledged Reset
        self.discarded = 0                # commands dropped for being issued before a STOP
        self.late_cycles = 0              # cycles later than twice the period
        self.longest_cycle_s = 0.0
        self.identify_start: np.ndarray | None = None   # the pose an interrupted routine left
        self._told = False                # the refusal line after a STOP/fault was sent
        self._expires = 0.0
        self._deadman_until = 0.0
        self._jog = np.zeros(5)
        self._target = None
        self._deadline = 0.0
        self._reset_deadline = 0.0
        self._now = 0.0
        self._ident: _Identify | None = None
        self._path: _Path | None = None
        self._approach_end: np.ndarray | None = None   # joints where an approach arrived
        self._last_hold_id = -1           # the newest dead-man press seen (its number)
        self._last_t = None
        self._rest_tol = np.where(kin.revolute, timing.rest_rad_s, timing.rest_mm_s)
        self._following_key = None
        self._following_tol = None
        # the command in force before the last one went out, and how long after its cycle's
        # start that was: the reference integrates each command over the time it really held
        self._qd_before = np.zeros(kin.n_joints)
        self._sent_after = 0.0

    # -- commands -----------------------------------------------------------------
    def submit(self, epoch: int, cmd: tuple, now: float) -> None:
        """A command issued in ``epoch``: one from before the newest STOP is discarded; one
        from a newer epoch means a STOP this loop has not seen yet, which is applied first."""
        epoch = int(epoch)
        if epoch > self.epoch:
            self.stop(now, epoch)
        if epoch < self.epoch and cmd[0] not in SETTINGS:
            self.discarded += 1
            return
        self.handle(cmd, now)

    def handle(self, cmd: tuple, now: float) -> None:
        self._now = now
        name, *args = cmd
        if name == "reset":
            self._reset(now)
            return
        if name == "speed":
            self.speed = float(np.clip(args[0], 0.05, 1.0))
            return
        if name == "drag_mode":
            self.admittance.set_mode(args[0])
            return
        if name == "tool_load":
            self.tool_load = args[0]
            return
        if name == "fixture":               # (point, direction, axial range) in base, or None
            self._set_fixture(args[0] if args else None)
            return
        if name == "deadman":
            self._deadman_until = now + self.timing.deadman_s
            return
        if name == "release":               # jog button released: brake now
            if self.mode in (JOG_JOINT, JOG_TASK):
                self.mode = IDLE
            return
        if name == "admittance" and not args[0]:   # letting go moves nothing: never refused
            if self.mode == ADMITTANCE:
                self.mode = IDLE
            return
        if name == "follow_hold" and not args[0]:  # dead-man released: never refused
            self._release_path("released: hold the dead-man to go on")
            return
        if name == "follow_cancel":                # moves nothing: never refused
            if self._path is not None and not self._path.aborted:
                self._end_path("cancelled")
            return
        if self.mode in (STOPPED, FAULT, RESETTING):
            if name == "follow":            # the client waits on a typed answer
                self.events.append(("follow_refused", {"kind": PathRefusal.BUSY.value, "message":
                                    f"path refused: the robot is {self.mode}; press Reset first"}))
            self._refuse_while_stopped(name)
            return                          # motion refused until reset
        if self.q is None:
            self.events.append(("refused", "the robot state has not been read yet: try again"))
            return
        if name == "follow":
            self._load_path(*args)
            return
        if name == "follow_hold":
            self._hold_path(now, args[1] if len(args) > 1 else None)
            return
        if name in ("jog_joint", "jog_task", "step_task", "move_pose", "step_joint", "identify_tool",
                    "return_to_identify_start") or (name == "admittance" and args[0]):
            self._approach_end = None             # another motion: the approach no longer holds
            if self._path is not None and not self._path.aborted and not self._path.arrived:
                self._end_path(f"cancelled by {name.replace('_', ' ')}")
        if name == "jog_joint":
            self._start(JOG_JOINT, now)
            self._jog = np.asarray(args[0], float) * self.speed * self.kin.joint_limits.velocity
        elif name == "jog_task":
            self._start(JOG_TASK, now)
            self._jog = self._task_from_frame(np.asarray(args[0], float), args[1])
        elif name in ("step_task", "move_pose", "step_joint"):
            self._start_move(name, np.asarray(args[0], float), args[1] if len(args) > 1 else "base")
        elif name == "admittance":
            if args[0] and self.tool_load is None:
                self.events.append(("refused", "identify the tool load first (Tool load tab): "
                                    "without it the tool's weight would move the robot"))
            elif args[0] and self.fixture is not None and not self._near_fixture():
                self.events.append(("refused", self._fixture_far))
            elif args[0]:
                self.admittance.reset()
                if self.fixture is not None:
                    self.fixture.reset()
                self.mode = ADMITTANCE
                self._deadman_until = now + self.timing.deadman_s
            elif self.mode == ADMITTANCE:
                self.mode = IDLE
        elif name == "identify_tool":
            self._start_identify(args[0])
        elif name == "return_to_identify_start":
            if self.identify_start is None:
                self.events.append(("refused", "no interrupted identification to return from"))
            else:
                self._start_move("move_pose", self.identify_start, "base")
        elif name == "rezero":
            self._rezero()
        else:
            self.events.append(("refused", f"unknown robot command {name!r}"))

    # -- the virtual fixture (hand guiding along the planned line) ------------------------
    def _set_fixture(self, spec) -> None:
        from core.robot.virtual_fixture import LineFixture, VirtualFixtureError
        if spec is None:
            self.fixture = None
            return
        try:
            point, direction, axial = spec
            self.fixture = LineFixture(point, direction, axial_range_mm=axial)
        except (VirtualFixtureError, ValueError, TypeError) as e:
            self.fixture = None
            self.events.append(("refused", f"hand guiding along the line refused: {e}"))
            return
        if self.mode == ADMITTANCE and not self._near_fixture():
            self.mode = IDLE                       # a line far from the tool never pulls it there
            self.events.append(("refused", self._fixture_far))

    def _near_fixture(self) -> bool:
        """The tool within ``FIXTURE_ENGAGE_*`` of the line: the fixture's spring (tens of N/mm)
        would otherwise drag it there at the speed limit."""
        from core.robot.virtual_fixture import tool_axis
        if self.X is None:
            return False
        X = self.X
        s, lateral, rot = self.fixture.offsets(np.asarray(X[:3], float), tool_axis(float(X[3]), float(X[4])))
        d, a = float(np.linalg.norm(lateral)), math.degrees(float(np.linalg.norm(rot)))
        self._fixture_far = (f"hand guiding along the line refused: the tool is {d:.1f} mm and {a:.1f}° off the "
                             f"line (within {FIXTURE_ENGAGE_MM:.0f} mm and {FIXTURE_ENGAGE_DEG:.0f}°): hold Move "
                             "to bring it there first")
        return d <= FIXTURE_ENGAGE_MM and a <= FIXTURE_ENGAGE_DEG

    # -- paths ----------------------------------------------------------------------
    def _refuse_path(self, e: PathError) -> None:
        self.events.append(("refused", str(e)))
        self.events.append(("follow_refused", {"kind": e.kind.value, "message": str(e)}))

    def _load_path(self, kind, q_samples, dt, path_id=None) -> None:
        """A new path (replacing one in progress, which stops first: it arrives paused);
        ``path_id``, the sender's number for it, comes back in the state's report."""
        try:
            Q, dt = check_path(self.kin, kind, q_samples, dt, self.q, self.limiter.box())
            if kind == "insert":
                tol = np.where(self.kin.revolute, 5e-4, 0.05)
                if self._approach_end is None or np.any(np.abs(self.q - self._approach_end) > tol):
                    raise PathError(PathRefusal.NOT_ARRIVED, "insertion refused: the approach has not "
                                    "arrived at the stand-off (or the robot moved since): follow the "
                                    "approach first")
                if np.any(np.abs(Q[0] - self._approach_end) > tol):
                    raise PathError(PathRefusal.START_AWAY, "insertion refused: it does not start where "
                                    "the approach arrived: plan the insertion from the aligned pose")
        except PathError as e:
            self._refuse_path(e)
            return
        D = np.diff(Q, axis=0)
        vmax = np.max(np.abs(D), axis=0) / dt
        jl = self.kin.joint_limits
        moving = vmax > 1e-12
        rate_accel = float(np.min(0.5 * jl.acceleration[moving] / vmax[moving])) if moving.any() else 1e3
        if kind == "approach":
            self._approach_end = None
        self._path = _Path(kind, Q, dt, rate_accel, path_id=path_id, stale_hold=self._last_hold_id, D=D)
        self._path.reason = ("hold the dead-man to insert" if kind == "insert"
                             else "hold the dead-man to approach")
        self.mode = FOLLOW

    def _hold_path(self, now, hold_id=None) -> None:
        """The dead-man pressed (``hold_id`` numbers the press; the client repeats it while the
        button is held, so a lapse from a stalled GUI resumes on the next repeat). A press
        that began before the path was sent does not start it: the insertion needs its own."""
        p = self._path
        if hold_id is not None:
            self._last_hold_id = max(self._last_hold_id, int(hold_id))
        if p is None or p.aborted or p.arrived:
            if p is None or not p.told:
                self.events.append(("refused", "no path to follow: send the approach first" if p is None
                                    or p.aborted else f"the {p.kind} has arrived: " +
                                    ("send the insertion" if p.kind == "approach" else "nothing left to follow")))
            if p is not None:
                p.told = True
            return
        if hold_id is not None and int(hold_id) <= p.stale_hold:
            if not p.told:
                p.told = True
                self.events.append(("refused", f"the dead-man was pressed before the {p.kind} was sent: "
                                    "release it and press again"))
            return
        self._deadman_until = now + self.timing.deadman_s
        if not p.held:
            p.held, p.reason, p.t_end = True, "", None
        self.mode = FOLLOW

    def _release_path(self, why: str) -> None:
        p = self._path
        if p is not None and p.held:
            p.held, p.rate, p.reason = False, 0.0, why

    def _end_path(self, why: str) -> None:
        """The path is over without arriving (STOP, fault, cancel, another motion)."""
        p = self._path
        p.held, p.rate, p.aborted, p.reason = False, 0.0, True, why
        if self.mode == FOLLOW:
            self.mode = IDLE

    def follow_state(self) -> dict | None:
        """``{"kind", "progress" (0-1), "arrived", "paused", "reason"}``, None without a path."""
        return None if self._path is None else self._path.report()

    def _follow_path(self, now, dt) -> np.ndarray:
        """The wanted joint velocity on the path: the path's velocity (time-scaled by ``rate``)
        plus a P term towards the path's point; zero at once when not held."""
        p = self._path
        if p.held and now > self._deadman_until:
            self._release_path("the dead-man's heartbeat was lost: hold it again to go on")
        if not p.held:
            if self.qd_cmd.any():
                self._resync(p)
            return np.zeros(self.kin.n_joints)
        T = p.duration
        if p.tau < T:
            p.rate = min(1.0, p.rate + dt * p.rate_accel)
            p.tau = min(T, p.tau + p.rate * dt)
        q_d, v_d = p.at(p.tau)
        if p.tau < T:
            return p.rate * v_d + self.timing.follow_gain * (q_d - self.q)
        # at the end: settle on the goal, judged on the encoders averaged over ARRIVE_FILTER_S
        e = q_d - self.q
        if p.t_end is None:
            p.t_end, p.err = now, e
        else:
            p.err = p.err + min(dt / ARRIVE_FILTER_S, 1.0) * (e - p.err)
        J = self.kin.pose_jacobian(self.q)
        tip = J @ p.err
        if (now - p.t_end >= ARRIVE_FILTER_S and np.linalg.norm(tip[:3]) < ARRIVE_MM
                and np.linalg.norm(tip[3:]) < ARRIVE_RAD):
            p.arrived, p.held, p.rate, p.reason = True, False, 0.0, "arrived"
            if p.kind == "approach":
                self._approach_end = p.Q[-1].copy()
            self.mode = IDLE
            self.events.append(("follow_arrived", p.kind))
            return np.zeros(self.kin.n_joints)
        if now - p.t_end > SETTLE_TIMEOUT_S:
            why = ", ".join(dict.fromkeys(self.reasons)) or "the servo"
            self._release_path(f"did not settle on the end within {SETTLE_TIMEOUT_S:.0f} s "
                               f"({1e3 * np.linalg.norm(tip[:3]):.0f} um away; held back by {why}): "
                               "hold the dead-man again, or plan again")
            return np.zeros(self.kin.n_joints)
        return self.timing.follow_gain * e

    def _resync(self, p: _Path) -> None:
        """Braking carries the robot past the point where it was released: move ``tau`` (forward
        only) to the path's point nearest the measured joints, so that re-holding resumes
        from where the robot stopped (rad weighted as 100 mm of tool length)."""
        jl = self.kin.joint_limits
        brake_s = float(np.max(np.abs(self.qd_cmd) / jl.acceleration))
        i0 = int(p.tau / p.dt)
        seg = p.Q[i0:i0 + int(math.ceil(brake_s / p.dt)) + 3]
        if len(seg) < 2:
            return
        w = np.where(self.kin.revolute, 100.0, 1.0)
        a, d = (self.q - seg[:-1]) * w, np.diff(seg, axis=0) * w
        f = np.clip(np.sum(a * d, axis=1) / np.maximum(np.sum(d * d, axis=1), 1e-18), 0.0, 1.0)
        k = int(np.argmin(np.linalg.norm(a - f[:, None] * d, axis=1)))
        p.tau = max(p.tau, min((i0 + k + f[k]) * p.dt, p.duration))

    def _refuse_while_stopped(self, name) -> None:
        """One line per STOP or fault, not one per repeated jog command."""
        if self._told:
            return
        self._told = True
        if self.mode == STOPPED:
            line = f"STOPPED: {name.replace('_', ' ')} refused; press Reset before moving the robot"
        elif self.mode == RESETTING:
            line = f"{name.replace('_', ' ')} refused: Reset is still waiting for the devices"
        else:
            line = (f"{name.replace('_', ' ')} refused: the robot is in fault ({self.fault}); "
                    "press Reset first")
        self.events.append(("refused", line))

    def _start(self, mode, now):
        self.mode = mode
        self._expires = now + self.timing.jog_hold_s

    def _task_from_frame(self, rates, frame):
        """Jog rates (fractions of the tool speed limits) in base or tool frame -> task rates."""
        c = self.limiter.cart
        lin = rates[:3] * c.linear_speed * self.speed
        ang = rates[3:] * c.angular_speed * self.speed
        if frame == "tool":
            R = self.kin.forward(self.q)[:3, :3]
            lin = R @ lin
            w = R @ np.r_[ang, 0.0]
            tx = self.X[3]
            E = np.array([[1, 0], [0, math.cos(tx)], [0, math.sin(tx)]])
            ang = np.linalg.lstsq(E, w, rcond=None)[0]
        return np.r_[lin, ang]

    def _start_move(self, name, value, frame):
        try:
            if name == "step_joint":
                target = self.q + value
                self.kin.joint_limits.check(target, self.kin.joint_names)
                target = self.kin.pose(target)
            elif name == "move_pose":
                target = value
            else:
                d = value.copy()
                if frame == "tool":
                    d[:3] = self.kin.forward(self.q)[:3, :3] @ d[:3]
                target = self.X + d
            self._check_target(target)
        except KinematicsError as e:
            self.events.append(("refused", str(e)))
            return
        self._set_target(target)
        self.mode = MOVE

    def _check_target(self, target) -> None:
        """Reachable, inside the joint limits and inside the workspace box, or raise."""
        self.kin.joints_for_pose(target)
        lower, upper = self.limiter.box()
        if np.any(target < lower - 1e-9) or np.any(target > upper + 1e-9):
            raise KinematicsError("that move leaves the allowed workspace: move the other way "
                                  "or nearer the middle of the workspace")

    def _set_target(self, target) -> None:
        """Track ``target``; give up (and say so) if it is not reached in 3x the nominal time."""
        c = self.limiter.cart
        err = np.abs(target - self.X)
        nominal = max(np.linalg.norm(err[:3]) / (c.linear_speed * self.speed),
                      np.linalg.norm(err[3:]) / (c.angular_speed * self.speed))
        self._target = target
        self._deadline = self._now + 3 * nominal + 2.0

    def _start_identify(self, angles_deg):
        X = self.X.copy()
        targets = [np.r_[X[:3], math.radians(a), math.radians(b)] for a, b in angles_deg]
        try:
            for t in targets:
                self._check_target(t)
        except KinematicsError as e:
            self.events.append(("refused", f"the identification poses do not fit here ({e})"))
            return
        self._ident = _Identify(targets, X)
        self.identify_start = X
        self._set_target(targets[0])
        self.mode = IDENTIFY

    def _rezero(self):
        if self.tool_load is None:
            self.events.append(("refused", "identify the tool load before zeroing"))
            return
        self.tool_load = rezero(self.tool_load, self._R_base_sensor(), self.wrench)
        self.events.append(("tool_load", self.tool_load))

    def stop(self, now: float, epoch: int | None = None) -> None:
        """STOP: zero command now, drop whatever was queued, latch until reset."""
        self.epoch = self.epoch + 1 if epoch is None else max(int(epoch), self.epoch)
        self.qd_cmd[:] = 0
        self.robot.stop()
        if self.mode != FAULT:
            self.mode = STOPPED
        self._told = False
        self._interrupt_identification("STOP")
        self._target = None
        self._approach_end = None
        if self._path is not None and not self._path.aborted and not self._path.arrived:
            self._end_path("aborted by STOP: after Reset, send the path again")

    def _interrupt_identification(self, why: str) -> None:
        if self._ident is None:
            return
        k, n = self._ident.index, len(self._ident.targets)
        X = self._ident.start
        self._ident = None
        self.events.append(("refused", f"tool-load identification interrupted by {why} at pose "
                            f"{k + 1} of {n}: after Reset, 'Return to start' brings the tool back "
                            f"to x {X[0]:.1f}, y {X[1]:.1f}, z {X[2]:.1f} mm, "
                            f"θx {math.degrees(X[3]):.1f}°, θy {math.degrees(X[4]):.1f}°"))

    def _fault(self, message: str, kind: FaultKind = FaultKind.INTERNAL) -> None:
        self.qd_cmd[:] = 0
        try:
            self.robot.stop()
        except DeviceError:
            pass
        if self.mode != FAULT:
            self.events.append(("fault", message))
            self._told = False
            self.fault, self.fault_kind = message, kind
        self.mode = FAULT
        self._interrupt_identification("a fault")
        self._target = None
        self._approach_end = None
        if self._path is not None and not self._path.aborted and not self._path.arrived:
            self._end_path("aborted by a fault: after Reset, send the path again")

    def _reset(self, now):
        """Reset: clear the devices' faults, reconnect a failed sensor, re-enable; the reset
        completes (and is acknowledged) once robot and sensor data are fresh again."""
        kind = self.fault_kind
        self.robot.reset_fault()
        if kind is not None and kind.device == "force_sensor":
            try:
                self.sensor.reset()
            except DeviceError as e:
                self._fault(str(e), e.kind or FaultKind.SENSOR_UNREACHABLE)
                return
        self.fault = self.fault_kind = None
        self.mode = RESETTING
        self._told = False
        self.qd_cmd[:] = 0
        self.q_ref = None
        self._reset_deadline = now + self.timing.reset_timeout_s
        try:
            self.robot.enable()
        except DeviceError as e:
            self._fault(str(e), e.kind or FaultKind.ROBOT_DEVICE)

    # -- one cycle ------------------------------------------------------------------
    def _R_base_sensor(self):
        return self.kin.flange(self.q)[:3, :3] @ self.R_flange_sensor

    def _sense(self, now) -> bool:
        """Read robot and sensor; the watchdog faults on anything stale (while resetting,
        the devices get ``reset_timeout_s`` to come back)."""
        wd = self.timing.watchdog_s
        try:
            st = self.robot.state()
            if now - st.t > wd:
                raise DeviceError(f"robot state is {1000 * (now - st.t):.0f} ms old (watchdog "
                                  f"{1000 * wd:.0f} ms): check the robot controller link, then "
                                  "reset", FaultKind.ROBOT_STALE)
            if st.fault:
                raise DeviceError(st.fault, st.fault_kind or FaultKind.ROBOT_DEVICE)
            self.q, self.qd_meas = st.q, np.asarray(st.qd, float)
            if hasattr(self.kin, "pose_and_rotation"):    # one pass through the chain
                X, R_flange = self.kin.pose_and_rotation(self.q)
                self.X, R = np.array(X), R_flange @ self.R_flange_sensor
            else:
                self.X = self.kin.pose(self.q)
                R = self._R_base_sensor()
            if isinstance(self.sensor, Simulator):
                self.sensor.advance(now, R)
            s = self.sensor.read()
            if now - s.t > wd:
                raise DeviceError(f"force sensor data is {1000 * (now - s.t):.0f} ms old "
                                  f"(watchdog {1000 * wd:.0f} ms): check the sensor cable and "
                                  "power, then reset", FaultKind.SENSOR_STALE)
        except DeviceError as e:
            if self.mode == RESETTING and now <= self._reset_deadline:
                return False                      # not back yet: wait
            if e.kind is FaultKind.SENSOR_NOT_READY:
                self.qd_cmd[:] = 0                # just connected: the driver's own timeout
                self.robot.stop()                 # turns a silence into a stale fault
                return False
            if self.mode == RESETTING:
                self._fault(f"Reset did not bring the devices back within "
                            f"{self.timing.reset_timeout_s:.1f} s: {e}", FaultKind.RESET_TIMEOUT)
            else:
                self._fault(str(e), e.kind or FaultKind.INTERNAL)
            return False
        self.wrench = s.wrench
        self.hand = (hand_wrench(self.tool_load, R, s.wrench) if self.tool_load is not None
                     else np.zeros(6))
        return True

    def cycle(self, now: float) -> None:
        dt = self.timing.period_s if self._last_t is None else max(now - self._last_t, 1e-6)
        self._last_t = self._now = now
        self.longest_cycle_s = max(self.longest_cycle_s, dt)
        if dt > 2 * self.timing.period_s:
            self.late_cycles += 1
        if isinstance(self.robot, Simulator):
            self.robot.advance(now)
        moving = bool(self.qd_cmd.any())
        if moving and dt > self.timing.late_cycle_s and self.mode != FAULT:
            self._fault(f"the control cycle ran {1000 * dt:.0f} ms after the previous one "
                        f"(bound {1000 * self.timing.late_cycle_s:.0f} ms) while the robot moved: "
                        "it is stopped; close other programs on this computer, then reset",
                        FaultKind.LATE_CYCLE)
        if self.mode == FAULT:                    # keep showing where the robot is
            try:
                st = self.robot.state()
                self.q, self.qd_meas = st.q, np.asarray(st.qd, float)
                self.X = self.kin.pose(self.q)
            except (DeviceError, KinematicsError):
                pass
            return
        if not self._sense(now):
            return
        if self.mode == STOPPED:
            return
        if self.mode == RESETTING:
            self.mode = IDLE                      # both devices answer again: acknowledged
            self.reset_epoch = self.epoch
            self.events.append(("reset_done", self.epoch))
        if not self._follow(dt):
            return
        want = self.want = self._wanted(now, dt)
        qd, self.reasons = self.limiter.limit(self.q_ref, self.qd_cmd, want,
                                              dt=min(dt, self.limiter.horizon), q_meas=self.q,
                                              X_meas=self.X.tolist())
        self._qd_before = self.qd_cmd.copy()
        self.qd_cmd = qd
        self.robot.command_joint_velocity(qd)
        # a process preempted between reading the clock and sending held the previous command
        # that much longer; without this, its reference ran ahead of the robot (a false fault)
        self._sent_after = 0.0 if self.clock is None else max(self.clock() - now, 0.0)

    def _follow(self, dt) -> bool:
        """The commanded reference ``q_ref``: the integral of the commands over the true
        elapsed time (a late cycle held the last command all along), re-synchronised to the
        measurement when the robot is commanded and measured at rest. The limits act on it
        and on the measurement together. A robot whose *measured* position falls too far
        behind its reference is blocked or overloaded: a fault."""
        at_rest = not self.qd_cmd.any() and bool((np.abs(self.qd_meas) <= self._rest_tol).all())
        if self.q_ref is None or at_rest:
            self.q_ref = self.q.copy()
            return True
        held = min(self._sent_after, dt)          # the command before the last one held this long
        self.q_ref = self.q_ref + self._qd_before * held + self.qd_cmd * (dt - held)
        err = self.q_ref - self.q
        key = (self.timing.following_rad, self.timing.following_mm)
        if key != self._following_key:            # LoopTiming may be changed at run time
            self._following_key = key
            self._following_tol = np.where(self.kin.revolute, *key)
        tol = self._following_tol
        over = np.abs(err) > tol
        if over.any():
            i = int(np.flatnonzero(over)[0])
            rot = bool(self.kin.revolute[i])
            k = math.degrees(1.0) if rot else 1.0
            unit = "°" if rot else " mm"
            side = "behind" if err[i] * self.qd_cmd[i] >= 0 else "ahead of"
            self._fault(f"joint {self.kin.joint_names[i]} is {k * abs(err[i]):.2f}{unit} {side} "
                        f"its command (limit {k * tol[i]:.2f}{unit}): the robot is blocked or "
                        "overloaded; clear the obstruction, then reset", FaultKind.FOLLOWING)
            return False
        return True

    def _wanted(self, now, dt) -> np.ndarray:
        """The joint velocity the current mode asks for (before limits)."""
        kin = self.kin
        if self.mode in (JOG_JOINT, JOG_TASK) and now > self._expires:
            self.mode = IDLE                      # hold-to-run: released
        if self.mode == ADMITTANCE and now > self._deadman_until:
            self.mode = IDLE                      # dead-man released
            self.admittance.reset()
        if self.mode == JOG_JOINT:
            return self._jog
        if self.mode == JOG_TASK:
            return kin.inverse_pose_jacobian(self.q) @ self._jog
        if self.mode == ADMITTANCE and self.fixture is not None:
            # free along the planned line, stiff off it (virtual fixture); the limiter still bounds it
            X = self.X
            Xd = self.fixture.step(self.hand, np.asarray(X[:3], float), float(X[3]), float(X[4]),
                                   min(dt, self.limiter.horizon))
            return kin.inverse_pose_jacobian(self.q) @ Xd
        if self.mode == ADMITTANCE:
            Xd = self.admittance.step(self.hand, self.X[3], min(dt, self.limiter.horizon))
            if self.admittance.mode == ORIENTATION:
                # the paper drags orientation in joint coordinates: joints 4 and 5 only,
                # pivoting about the flange (theta_x = ... + theta4, theta_y = -theta5, eq. 10)
                qd = np.zeros(kin.n_joints)
                qd[3], qd[4] = Xd[3], -Xd[4]
                return qd
            return kin.inverse_pose_jacobian(self.q) @ Xd
        if self.mode in (MOVE, IDENTIFY):
            return self._track(now)
        if self.mode == FOLLOW and self._path is not None:
            return self._follow_path(now, min(dt, self.limiter.horizon))
        return np.zeros(kin.n_joints)

    def _track(self, now) -> np.ndarray:
        err = self._target - self.X
        done = np.all(np.abs(err[:3]) < 0.05) and np.all(np.abs(err[3:]) < 5e-4)
        if self.mode == IDENTIFY and done:
            self._identify_step(now)
        elif done:
            self.mode = IDLE
            self.events.append(("arrived", self.X.copy()))
        if self.mode not in (MOVE, IDENTIFY):
            return np.zeros(self.kin.n_joints)
        if now > self._deadline:
            if self.mode == IDENTIFY:
                self._identify_failed("a pose was not reached in time (a limit held it back)")
                return np.zeros(self.kin.n_joints)
            self.events.append(("refused", "the move did not arrive in time (a limit held it "
                                "back): jog to a freer pose and try again"))
            self.mode, self._target = IDLE, None
            return np.zeros(self.kin.n_joints)
        Xd = self.timing.move_gain * err
        c = self.limiter.cart
        s = max(np.linalg.norm(Xd[:3]) / (c.linear_speed * self.speed),
                np.linalg.norm(Xd[3:]) / (c.angular_speed * self.speed), 1.0)
        return self.kin.inverse_pose_jacobian(self.q) @ (Xd / s)

    def _identify_failed(self, why: str) -> None:
        """The routine failed without a fault: go back to the pose it started from."""
        start = self._ident.start
        self._ident = None
        self.events.append(("refused", f"tool-load identification failed ({why}): the tool "
                            "returns to the pose it started from"))
        self._set_target(start)
        self.mode = MOVE

    def _identify_step(self, now):
        """At a pose: wait ``settle_s`` with the robot measured at rest, then average the
        readings over ``average_s`` (at least ``average_min_samples`` of them, whatever
        the cycle timing); motion in the window starts the dwell again."""
        idf, t = self._ident, self.timing
        if not np.all(np.abs(self.qd_meas) <= 20 * self._rest_tol):
            idf.t_arrived, idf.acc = None, []     # still moving (or pushed): dwell again
            return
        if idf.t_arrived is None:
            idf.t_arrived = now
        elapsed = now - idf.t_arrived
        if elapsed < t.settle_s:
            return
        idf.acc.append(self.wrench.copy())
        if elapsed < t.settle_s + t.average_s or len(idf.acc) < t.average_min_samples:
            return
        idf.R.append(self._R_base_sensor())
        idf.W.append(np.mean(idf.acc, axis=0))
        idf.acc, idf.t_arrived = [], None
        idf.index += 1
        self.events.append(("identify_progress", (idf.index, len(idf.targets))))
        if idf.index < len(idf.targets):
            self._set_target(idf.targets[idf.index])
            return
        try:
            load = identify_tool_load(np.array(idf.R), np.array(idf.W))
        except WeightCompensationError as e:
            self._identify_failed(str(e))
            return
        self.tool_load = load
        self.events.append(("tool_load", self.tool_load))
        self._set_target(idf.start)               # done: back to where it started
        self.mode, self._ident, self.identify_start = MOVE, None, None

    @property
    def identify_progress(self):
        return None if self._ident is None else (self._ident.index, len(self._ident.targets))

    def simulate(self, what: str, value) -> bool:
        """A simulation-only command, for whichever simulated device takes it."""
        return any(isinstance(d, Simulator) and d.inject(what, value)
                   for d in (self.robot, self.sensor))
