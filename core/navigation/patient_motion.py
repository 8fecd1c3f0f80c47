"""Patient motion: detected from the patient's marker, followed by re-aligning the guide with the
moved plan (ultrasound paper, eq. 5-11) while the surgeon holds the dead-man.

The plan lives in the patient marker's frame (``T_patient_path``), so it moves with the patient;
in that frame it is the guide that appears to move. Each control tick the guide's line, two
points ``m`` (the guide's tip) and ``n`` (50 mm up its axis) as the paper's eq. 7 carries them,
is compared with the planned line (target point ``t``, direction ``s``, eq. 6):

    l = (m - n) / |m - n|,                               the guide's direction
    C = R(s x l, acos <s, l>)                            eq. 8 (axis-angle; it turns s onto l)
    u = (m - t) - s <s, m - t>                           eq. 9 (the guide's offset across the line)
    H = [[C, u], [0, 1]]                                 eq. 10

and the guide is moved by the inverse of that misalignment: turned about ``m`` by ``C^T`` (l onto
s), then shifted by ``-u`` onto the line (eq. 11 applies H to the target pose; here the same
correction is applied to the guide, the frame the robot is commanded in). The paper leaves the
depth along the line to its force controller; a robot guide keeps its stand-off, so the offset
along the line from the planned guide tip is removed too (``keep_stand_off``). The motion is
commanded as eq. 24's tool-frame correction ``T_cmd . inv(T_guide) . G . T_guide``, a fraction
``gain`` of it per tick, bounded by the approach speeds, and only while the dead-man is held.

Detection (``MotionMonitor``): the plan's target point in the tracker frame against its
breathing centre (the mean over the last ``window_s``) and its speed: within ``bump_mm`` and
slower than a breath can be, it is breathing (or still); otherwise a bump. A bump whose net shift of the target (after it settles) exceeds
``reverify_mm``, or turns the patient by more than ``reverify_deg``, asks for new verification
shots: the marker may have slipped on the spine. Millimetres, seconds, radians inside.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from core.geometry.rigid import invert
from core.navigation.closed_loop import ClosedLoopError, _angle, tool_frame
from core.navigation.tracked_loop import NEEDED, pose_residual
from core.navigation.tracking import usable

__all__ = ["needle_guide_correction", "guide_motion", "MotionMonitor", "MotionState", "MotionFollower",
           "FollowStep", "GUIDE_POINT_MM"]

GUIDE_POINT_MM = 50.0      # n: the second guide point, this far up the guide's axis from its tip m


def needle_guide_correction(t, s, m, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C, u, H)`` of eq. 8-10 for the planned line (point ``t``, direction ``s``) and the guide
    points ``m``, ``n`` (all in one frame, mm)."""
    t, s, m, n = (np.asarray(x, float) for x in (t, s, m, n))
    if any(a.shape != (3,) or not np.all(np.isfinite(a)) for a in (t, s, m, n)):
        raise ClosedLoopError("the planned line and the guide points must be finite 3-vectors")
    if np.linalg.norm(s) < 1e-9 or np.linalg.norm(m - n) < 1e-9:
        raise ClosedLoopError("the planned direction and the guide's two points must not be degenerate")
    s = s / np.linalg.norm(s)
    l = (m - n) / np.linalg.norm(m - n)
    ax = np.cross(s, l)
    ang = _angle(s, l)
    C = Rotation.from_rotvec(ax / np.linalg.norm(ax) * ang).as_matrix() if np.linalg.norm(ax) > 1e-12 else np.eye(3)
    u = (m - t) - s * float(s @ (m - t))
    H = np.eye(4)
    H[:3, :3], H[:3, 3] = C, u
    return C, u, H


def guide_motion(t, s, m, n, guide_tip_goal=None) -> np.ndarray:
    """The rigid motion (4x4, same frame) that puts the guide on the planned line: turned about
    ``m`` by ``C^T``, shifted by ``-u`` (eq. 8-10); with ``guide_tip_goal`` (a point of the line)
    also along the line so that ``m`` lands on it."""
    C, u, _ = needle_guide_correction(t, s, m, n)
    m = np.asarray(m, float)
    G = np.eye(4)
    G[:3, :3] = C.T
    G[:3, 3] = m - C.T @ m - u
    if guide_tip_goal is not None:
        s = np.asarray(s, float) / np.linalg.norm(s)
        along = float(s @ (np.asarray(guide_tip_goal, float) - (m - u)))
        G[:3, 3] += along * s
    return G


@dataclass(frozen=True)
class MotionState:
    """What the monitor concludes at one time: ``kind`` is "still", "breathing" or "bump";
    ``excursion_mm`` the target's distance from its breathing centre; ``shift_mm`` and ``turn_deg``
    the net motion since the reference; ``reverify`` whether new verification shots are needed."""
    t: float
    kind: str
    excursion_mm: float
    shift_mm: float
    turn_deg: float
    reverify: bool
    message: str = ""


@dataclass
class MotionMonitor:
    """Fed the patient marker's pose per usable frame (``update``); the reference is the pose at
    the plan's registration. ``target_patient``: the plan's target in the patient marker's frame.

    Breathing centre: the mean target position over ``window_s`` (a breath or more) before the
    last half second. A target beyond ``bump_mm`` from it, or moving faster than
    ``bump_speed_mm_s`` (a breath of 3 mm at 0.3 Hz peaks at 5.7 mm/s; a 5 mm bump over 0.2 s at
    39 mm/s), starts a bump; ``settle_s`` later the new centre (the mean after the bump's first
    half second) against the old one is the bump's net shift."""
    T_tracker_patient_ref: np.ndarray
    target_patient: np.ndarray
    window_s: float = 6.0
    bump_mm: float = 4.0
    still_mm: float = 0.8
    reverify_mm: float = 3.0
    reverify_deg: float = 2.0
    settle_s: float = 2.0
    bump_speed_mm_s: float = 15.0
    _hist: deque = field(default_factory=deque)
    bumps: list = field(default_factory=list)
    shifts_mm: list = field(default_factory=list)
    reverify: bool = False

    def __post_init__(self):
        self.T_tracker_patient_ref = np.asarray(self.T_tracker_patient_ref, float)
        self.target_patient = np.asarray(self.target_patient, float)
        if not (self.bump_mm > self.still_mm > 0 and self.window_s > 0 and self.reverify_mm > 0
                and self.settle_s > 0.5):
            raise ClosedLoopError("motion thresholds: bump > still > 0, a positive window and re-verify shift, "
                                  "settling over 0.5 s")
        self._bump_t: float | None = None
        self._centre_before: np.ndarray | None = None

    def _x(self, T) -> np.ndarray:
        return T[:3, :3] @ self.target_patient + T[:3, 3]

    def _speed(self, t: float) -> float:
        """The target's speed (mm/s): a straight-line fit over the last 0.15 s (0 with fewer than
        8 points over at least 0.1 s: tracker noise would pass for speed)."""
        pts = [(ti, p) for ti, p in self._hist if ti >= t - 0.15]
        if len(pts) < 8 or pts[-1][0] - pts[0][0] < 0.1:
            return 0.0
        ts = np.array([ti for ti, _ in pts]) - t
        A = np.stack([np.ones_like(ts), ts], 1)
        return float(np.linalg.norm(np.linalg.lstsq(A, np.array([p for _, p in pts]), rcond=None)[0][1]))

    def update(self, t: float, T_tracker_patient) -> MotionState:
        T = np.asarray(T_tracker_patient, float)
        x = self._x(T)
        t = float(t)
        self._hist.append((t, x))
        while self._hist and self._hist[0][0] < t - self.window_s:
            self._hist.popleft()
        turn = math.degrees(_angle_of(T[:3, :3] @ self.T_tracker_patient_ref[:3, :3].T))
        shift = float(np.linalg.norm(x - self._x(self.T_tracker_patient_ref)))
        if self._bump_t is None:
            older = [p for (ti, p) in self._hist if ti <= t - 0.5] or [p for _, p in self._hist]
            centre = np.mean(older, 0)
            exc = float(np.linalg.norm(x - centre))
            # the centre means something once it spans a breath; a bump is also told by its speed
            ready = t - self._hist[0][0] >= 0.9 * self.window_s
            if (ready and exc > self.bump_mm) or self._speed(t) > self.bump_speed_mm_s:
                self._bump_t, self._centre_before = t, centre
                self.bumps.append(t)
                self._hist.clear()
                self._hist.append((t, x))
        else:
            exc = float(np.linalg.norm(x - self._centre_before))
            if t - self._bump_t >= self.settle_s:
                after = np.mean([p for (ti, p) in self._hist if ti >= self._bump_t + 0.5], 0)
                net = float(np.linalg.norm(after - self._centre_before))
                self.shifts_mm.append(net)
                if net > self.reverify_mm or turn > self.reverify_deg:
                    self.reverify = True
                self._bump_t = None
        if self._bump_t is not None:
            kind = "bump"
        else:
            recent = np.array([p for _, p in self._hist])
            span = float(np.max(np.linalg.norm(recent - recent.mean(0), axis=1)))
            kind = "still" if span < self.still_mm else "breathing"
        if self.reverify:
            msg = (f"the patient moved {self.shifts_mm[-1]:.1f} mm / {turn:.1f}° in a bump: take new "
                   "verification shots before inserting")
        elif kind == "bump":
            msg = f"patient motion: {exc:.1f} mm; the guide follows while the dead-man is held"
        else:
            msg = ""
        return MotionState(t, kind, exc, shift, turn, self.reverify, msg)


def _mean_pose(Ts) -> np.ndarray:
    """Mean of (N, 4, 4) nearby poses: the rotation nearest the mean matrix (chordal), mean shift."""
    U, _, Vt = np.linalg.svd(Ts[:, :3, :3].mean(0))
    out = np.eye(4)
    out[:3, :3] = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    out[:3, 3] = Ts[:, :3, 3].mean(0)
    return out


def _angle_of(R) -> float:
    return float(np.linalg.norm(Rotation.from_matrix(R).as_rotvec()))


@dataclass(frozen=True)
class FollowStep:
    """One tick: the next command (the same when holding), the measured residual of the guide
    against the plan (patient frame; None without a usable frame), and why it held, if it did."""
    command: np.ndarray
    residual: object
    moved: bool
    held_because: str = ""


@dataclass
class MotionFollower:
    """Keeps the guide on the plan as the patient moves (module docstring). ``step(frame, now,
    T_cmd, deadman)`` per control tick.

    Noise without lag: the tracker sees two things with different dynamics. The robot's guide
    relative to its own command, ``T_tracker_base = T_tracker_guide . inv(T_cmd)``, hardly changes
    (only with the robot's pose-dependent error), so it is averaged over the last ``filter_s``; the
    patient's marker moves by itself, so its pose is fitted by a straight line in time over the same
    window and evaluated ``lead_s`` ahead (the frame's and the robot's latency; a breath is smooth
    at that scale). The guide in the patient frame is then ``inv(T_tracker_patient) .
    T_tracker_base . T_cmd``. Extrapolating the guide itself would feed the loop's own motion
    back into its prediction."""
    T_patient_path: np.ndarray
    T_robotref_tool: np.ndarray
    gain: float = 0.5
    max_speed_mm_s: float = 40.0
    max_turn_deg_s: float = 20.0
    period_s: float = 1.0 / 60.0
    max_age_s: float = 0.050
    filter_s: float = 0.25
    lead_s: float = 2.0 / 60.0
    keep_stand_off: bool = True
    _recent: deque = field(default_factory=deque)

    def __post_init__(self):
        self.T_patient_path = np.asarray(self.T_patient_path, float)
        self.T_robotref_tool = np.asarray(self.T_robotref_tool, float)
        if not (0 < self.gain <= 1 and self.max_speed_mm_s > 0 and self.max_turn_deg_s > 0 and self.period_s > 0
                and self.filter_s >= 0 and self.lead_s >= 0):
            raise ClosedLoopError("follower: gain in (0, 1], positive speeds and period, filter and lead >= 0")

    def _estimate(self, frame, now, T_cmd) -> np.ndarray:
        """The guide's pose in the patient frame now (class docstring)."""
        P = frame.pose("patient_ref").T_tracker_tool
        T_tb = frame.pose("robot_ref").T_tracker_tool @ self.T_robotref_tool @ invert(T_cmd)
        self._recent.append((frame.timestamp, P, T_tb))
        while self._recent and self._recent[0][0] < frame.timestamp - self.filter_s:
            self._recent.popleft()
        if len(self._recent) < 4:
            return invert(P) @ T_tb @ T_cmd
        T_tb = _mean_pose(np.stack([x[2] for x in self._recent]))
        ts = np.array([x[0] for x in self._recent]) - frame.timestamp
        A = np.stack([np.ones_like(ts), ts], 1)
        at = np.array([1.0, (now - frame.timestamp) + self.lead_s])
        # the patient's motion relative to the newest frame: small turns (a breath, a tick of a bump)
        # as the skew part of the relative rotation, exact to 1e-5 of it below a degree
        Ps = np.stack([x[1] for x in self._recent])
        Rr = np.einsum("ji,njk->nik", P[:3, :3], Ps[:, :3, :3])
        rv = 0.5 * np.stack([Rr[:, 2, 1] - Rr[:, 1, 2], Rr[:, 0, 2] - Rr[:, 2, 0], Rr[:, 1, 0] - Rr[:, 0, 1]], 1)
        tr = (Ps[:, :3, 3] - P[:3, 3]) @ P[:3, :3]
        rv_at = at @ np.linalg.lstsq(A, rv, rcond=None)[0]
        tr_at = at @ np.linalg.lstsq(A, tr, rcond=None)[0]
        D = np.eye(4)
        D[:3, :3], D[:3, 3] = Rotation.from_rotvec(rv_at).as_matrix(), tr_at
        return invert(P @ D) @ T_tb @ T_cmd

    def step(self, frame, now: float, T_cmd, deadman: bool) -> FollowStep:
        T_cmd = np.asarray(T_cmd, float)
        if not usable(frame, NEEDED, now, self.max_age_s):
            self._recent.clear()               # a gap: the fit starts again from fresh frames
            return FollowStep(T_cmd, None, False, "the tracker does not see both markers (or its frame is late)")
        T_g = self._estimate(frame, now, T_cmd)
        r = pose_residual(T_g, self.T_patient_path)
        if not deadman:
            return FollowStep(T_cmd, r, False, "hold the dead-man to follow the patient")
        m = T_g[:3, 3]
        n = m - GUIDE_POINT_MM * T_g[:3, 2]
        t, s = self.T_patient_path[:3, 3], self.T_patient_path[:3, 2]
        G = guide_motion(t, s, m, n, t if self.keep_stand_off else None)
        D = invert(T_g) @ G @ T_g                     # the same motion in the guide's own frame (eq. 24)
        rv = Rotation.from_matrix(D[:3, :3]).as_rotvec() * self.gain
        dp = D[:3, 3] * self.gain
        # the approach speeds bound each tick's step (the guide frame's origin is its tip)
        k = min(1.0, self.max_speed_mm_s * self.period_s / max(np.linalg.norm(dp), 1e-12),
                math.radians(self.max_turn_deg_s) * self.period_s / max(np.linalg.norm(rv), 1e-12))
        Ds = np.eye(4)
        Ds[:3, :3] = Rotation.from_rotvec(rv * k).as_matrix()
        Ds[:3, 3] = dp * k
        T_new = T_cmd @ Ds
        return FollowStep(tool_frame(T_new[:3, 3], T_new[:3, 2]), r, True)

