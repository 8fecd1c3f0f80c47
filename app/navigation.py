"""Align and Verify in the application: the controller between the selected trajectory, the
robot client, the C-arm and the session (issue 12). Qt-free (psygnal), like ``app.planning``'s
model: a script or a test drives it with fake devices the same way the GUI does.

Align. The calibration is taken at the robot joints of its shots (``q0``, the session's robot
state when the calibration is made) and re-expressed in the robot base frame
(``core.navigation.frames.BaseFrameCalibration``, robot paper eq. 23); the selected complete
trajectory becomes an ``AlignmentPlan`` (the guide on the planned line at a stand-off, its
joints and a limited motion, ``core.navigation.align``) that is published as a preview before
any motion; a refusal is one line. ``hold_to_move(True)`` sends the approach path once and
holds the dead-man; ``hold_to_move(False)`` lets it go (the control loop stops within one
period). The insertion to the planned depth is its own path on its own hold
(``hold_to_insert``). When the robot reports the approach arrived, the session's alignment is
recorded and written with the case.

Verify. New AP and LAT shots with the K-wire in place (in simulation the C-arm is given a
K-wire at the true tool pose, inserted to the planned depth); the wire is found in both images,
triangulated and compared with the plan (``core.navigation.verification.verify_shots``): entry
and tip deviation (mm), angle (deg), and in simulation the Gertzbein-Robbins grade against the
phantom's pedicle. The result goes to ``Session.set_verification`` and to the case folder.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal

from core.geometry.rigid import invert

__all__ = ["NavigationController", "NavigationError", "AlignmentPreview", "VerificationResult",
           "simulated_wire", "insertion_path", "verification_from_shots", "ALIGNMENT_FORMAT"]

log = logging.getLogger(__name__)

ALIGNMENT_FORMAT = "fluoronav.alignment/1"
PATH_DT_S = 0.01                 # the path's sampling period (the control loop interpolates between)
INSERT_SPEED_MM_S = 4.0          # the insertion axis's speed on its hold-to-run
INSERT_ACCEL_MM_S2 = 20.0
ARRIVED_MM, ARRIVED_RAD = 0.05, 5e-4   # without the loop's "follow" report: at the goal within these
# closed loop: until the cage mount is measured (hand-eye) the nominal one is off by a few mm, so
# a first correction of that size is expected; a larger one is a misdetection or a moved C-arm
CORRECTION_MAX_STEP_MM, CORRECTION_MAX_STEP_DEG = 8.0, 3.0
CORRECTION_TIP_GAP_MM = 2.5      # the two views' tips disagree more: the line only, its axial error stays
WIRE_DIAMETER_MM = 2.0           # the K-wire the closed-loop and verification shots look for (sharp tip)
CORRECTION_WIRE_MM = 10.0        # the wire's length ahead of the guide's back, beside what sticks out


class NavigationError(ValueError):
    """Align or Verify cannot go on; the message is one line saying why and what to do."""


@dataclass(frozen=True, eq=False)
class AlignmentPreview:
    """What the 3D view shows before any motion, base frame: the tool tip's way there, the guide's
    target pose, the insertion to depth; ``plan`` is the ``AlignmentPlan`` itself."""
    tid: str
    plan: object
    tip_path_mm: np.ndarray          # (n, 3) tool tip along the motion
    T_base_tool: np.ndarray          # the aligned pose
    insertion_start_mm: np.ndarray
    insertion_end_mm: np.ndarray

    @property
    def summary(self) -> str:
        p = self.plan
        return (f"{p.name}: guide {p.stand_off_mm:.0f} mm above the entry, {p.motion.duration_s:.1f} s there "
                f"({p.motion.limited_by}), insertion {p.insertion.length_mm:.1f} mm; clearance "
                + (f"{p.clearance_mm:.0f} mm" if math.isfinite(p.clearance_mm) else "not checked")
                + f", singularity margin {p.singularity_margin:.2f}")


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """A verification: the record (deviations, grade), each view's detected wire and the 3D pose;
    ``plan_uv`` the plan's entry and target in each view (raw px); ``truth`` in simulation."""
    tid: str
    record: object
    detections: dict
    pose: object
    plan_uv: dict
    truth: dict | None = None
    T_world_cage: np.ndarray | None = None     # the calibration's cage frame in the 3D scene

    @property
    def grade(self) -> str | None:
        g = self.record.grade
        return None if g is None else g.get("grade")

    def summary(self) -> str:
        r = self.record
        text = (f"{r.name}: entry {r.entry_deviation_mm:.2f} mm, tip {r.tip_deviation_mm:.2f} mm, "
                f"angle {r.angle_deg:.2f}°, depth {r.depth_error_mm:+.2f} mm")
        if r.grade is not None:
            g = r.grade
            text += (f", Gertzbein-Robbins {g['grade']}" if g.get("grade") else f", no grade ({g.get('reason')})")
        return text

    def to_dict(self) -> dict:
        d = self.record.to_dict()
        d.update({"trajectory": self.tid, "pose": self.pose.to_dict() if hasattr(self.pose, "to_dict") else None,
                  "detections": {v: det.to_dict() for v, det in self.detections.items()},
                  "truth": self.truth})
        return d


def simulated_wire(T_world_tool, remaining_mm: float, planned_length_mm: float, diameter_mm: float = 2.0,
                   tip: str = "sharp"):
    """The K-wire the simulated C-arm shows: through the guide (tool frame: tip at the origin, +z
    into the patient), its tip ``remaining_mm`` beyond the guide's tip (0 once the insertion has
    reached the planned depth), the planned length inside the patient."""
    from core.simulation.instruments import KWire   # simulation only
    T = np.asarray(T_world_tool, float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise NavigationError("the simulated tool pose is not a finite 4x4 transform")
    z = T[:3, 2] / np.linalg.norm(T[:3, 2])
    tip_mm = T[:3, 3] + max(0.0, float(remaining_mm)) * z
    return KWire(tip_mm - float(planned_length_mm) * z, tip_mm, diameter_mm, 100.0, tip)


def insertion_path(plan, kinematics, dt: float = PATH_DT_S, speed_mm_s: float = INSERT_SPEED_MM_S,
                   accel_mm_s2: float = INSERT_ACCEL_MM_S2, start_mm: float = 0.0, segment=None) -> np.ndarray:
    """Joint samples (N, 5) every ``dt`` s of the insertion: the tool tip from ``start_mm`` along the
    segment (the plan's, or ``segment``: the closed loop's corrected command line) to the planned
    depth on a trapezoid of ``speed_mm_s`` / ``accel_mm_s2``, the axis kept."""
    seg = plan.insertion if segment is None else segment
    L = float(seg.length_mm) - float(start_mm)
    if L <= 1e-6:
        return np.asarray(kinematics.joints_for_pose(kinematics.pose_for_axis(seg.end_mm, seg.direction)))[None]
    V, A = float(speed_mm_s), float(accel_mm_s2)
    ta = V / A
    if A * ta * ta > L:                      # a triangle: the top speed is never reached
        ta = math.sqrt(L / A)
        V = A * ta
    T = 2 * ta + (L - A * ta * ta) / V
    t = np.minimum(np.arange(int(math.ceil(T / dt)) + 1) * dt, T)
    s = np.where(t < ta, 0.5 * A * t ** 2,
                 np.where(t <= T - ta, 0.5 * A * ta ** 2 + V * (t - ta), L - 0.5 * A * (T - t) ** 2))
    tips = seg.start_mm + np.outer(np.clip(float(start_mm) + s, 0.0, seg.length_mm), seg.direction)
    return np.stack([kinematics.joints_for_pose(kinematics.pose_for_axis(p, seg.direction)) for p in tips])


def verification_from_shots(calibration, images: dict, trajectory, tid: str = "", pedicle=None,
                            T_pedicle_cage=None, tip: str = "sharp", tool_diameter_mm: float = 2.0,
                            truth_wire=None) -> VerificationResult:
    """Detect, triangulate and compare the wire in the two verification shots with ``trajectory``
    (cage frame of the calibration); a ``"sharp"`` wire's cone is 1.5 diameters long (as
    ``core.simulation.instruments.KWire``'s); ``truth_wire`` (a ``KWire`` in the cage frame, simulation)
    adds the true deviations beside the measured ones."""
    from core.navigation.tool_line import ToolLineError, plan_hint
    from core.navigation.verification import VerificationError, verify, verify_shots

    if not getattr(trajectory, "complete", False):
        raise NavigationError(f"{getattr(trajectory, 'name', 'the trajectory')} has no 3D entry and target")
    missing = [v.upper() for v in ("ap", "lat") if images.get(v) is None]
    if missing:
        raise NavigationError(f"no {' or '.join(missing)} verification shot: acquire it with the wire in place")
    e, t = np.asarray(trajectory.entry_mm, float), np.asarray(trajectory.target_mm, float)
    try:
        rec, det_ap, det_lat, pose = verify_shots(calibration, images["ap"], images["lat"], e, t, tip=tip,
                                                  cone_length_mm=1.5 * tool_diameter_mm if tip == "sharp" else 0.0,
                                                  tool_diameter_mm=tool_diameter_mm, pedicle=pedicle,
                                                  T_pedicle_cage=T_pedicle_cage, name=trajectory.name)
    except (ToolLineError, VerificationError) as err:
        raise NavigationError(f"verification: {err}") from None
    truth = None
    if truth_wire is not None:
        tr = verify(e, t, (truth_wire.tip_mm, truth_wire.axis), pedicle=pedicle, T_pedicle_cage=T_pedicle_cage)
        truth = {"entry_deviation_mm": tr.entry_deviation_mm, "tip_deviation_mm": tr.tip_deviation_mm,
                 "angle_deg": tr.angle_deg, "depth_error_mm": tr.depth_error_mm,
                 "grade": None if tr.grade is None else tr.grade.get("grade"),
                 "measured_minus_true_tip_mm": float(np.linalg.norm(rec.tip_mm - truth_wire.tip_mm))}
    return VerificationResult(tid, rec, {"ap": det_ap, "lat": det_lat}, pose,
                              {v: np.asarray(uv, float) for v, uv in plan_hint(calibration, e, t).items()}, truth)


class NavigationController:
    """Align and Verify for one session (module docstring).

    ``kinematics``: the robot's model (None: no robot, Align refused); ``client``: a
    ``RobotControllerClient`` (``follow_path``, ``set_deadman``, ``stopped``); ``devices``: a
    ``DevicesController`` (``call``, ``acquire``); ``room``: the ``SimulatedRoom`` in simulation
    (``true_tool_pose``, ``T_world_base``, ``T_world_cage_calibrated``), else None.
    Signals: ``message(text, warn)``, ``preview_changed(AlignmentPreview | None)``,
    ``progress_changed(kind, fraction)`` ("approach" | "insert"), ``phase_changed(phase)``.
    Phases: "idle", "approach", "aligned", "correcting" (closed-loop shots being taken and
    measured), "correction" (a correction motion ready: hold Move), "insert", "inserted",
    "verifying", "verified". ``correction_changed(summary)`` after each closed-loop shot pair
    (``ClosedLoopCorrection.summary()``; None when a new alignment drops it).
    """

    message = Signal(str, bool)
    preview_changed = Signal(object)
    progress_changed = Signal(str, float)
    phase_changed = Signal(str)
    correction_changed = Signal(object)
    calibration_invalidated = Signal(str)      # a new shot disagrees with it: why, what to do

    def __init__(self, session, kinematics=None, client=None, devices=None, room=None,
                 stand_off_mm: float = 20.0, envelope: str = "carm", dt: float = PATH_DT_S):
        self.session, self.kinematics, self.client = session, kinematics, client
        self.devices, self.room = devices, room
        self.stand_off_mm, self.envelope_kind, self.dt = float(stand_off_mm), envelope, float(dt)
        self.sid_mm = 1000.0              # the C-arm's source-to-detector distance, for its envelope
        self.frames = None
        self.T_world_cage0 = None
        self.preview: AlignmentPreview | None = None
        self.refusal: str = ""
        self.phase = "idle"
        self._sent: str | None = None            # kind of the path sent for the current preview
        self._inserted_mm = self._insert_start = 0.0
        self._verify_views: list = []
        self._verify_wire = None
        self._shots_for = "verify"               # what the queued shots are for: "verify" | "correct"
        self._last_reason = ""
        self.loop = None                         # the closed loop (ClosedLoopCorrection) of this alignment
        self._T_cmd = None                       # the command the robot was last sent to (base frame)
        self._correction_q = None                # joint samples of the pending correction motion
        self.loop_truth: list = []               # in simulation: the true residual after each shot pair
        session.calibration_changed.connect(self.calibration_changed)
        session.plans.selection_changed.connect(lambda *_: self.selection_changed())
        session.plans.trajectory_changed.connect(self._trajectory_changed)
        session.robot_state_changed.connect(self.robot_state)
        session.image_changed.connect(self._image_in)
        if session.calibration is not None:
            self.calibration_changed(session.calibration)

    # -- frames -------------------------------------------------------------------------
    def robot_q(self):
        q = (self.session.robot_state or {}).get("q")
        return None if q is None else np.asarray(q, float)

    def calibration_changed(self, calibration, q0=None) -> None:
        """A new calibration is taken at the robot's joints now (``q0``: where its shots were taken);
        None drops the base-frame calibration, Align then waits for the next one."""
        from core.navigation.frames import BaseFrameCalibration, FrameError
        if calibration is None:
            return   # the base frame keeps the last one: the robot moving the cage does not void it
        if self.kinematics is None:
            self.frames = None
            return
        # where the simulated cage was in the calibration's shots: the verification's truth frame
        self.T_world_cage0 = None if self.room is None else getattr(self.room, "T_world_cage_calibrated", None)
        q0 = self.robot_q() if q0 is None else np.asarray(q0, float)
        if q0 is None:
            log.warning("the calibration came before any robot state: Align waits for the robot's joints")
            self.frames = None
            return
        try:
            self.frames = BaseFrameCalibration(calibration, self.kinematics, q0)
        except (FrameError, ValueError) as e:
            self.frames = None
            self._say(f"the calibration cannot be carried into the robot frame: {e}", True)
            return
        log.info("calibration held in the robot base frame at q0 = %s", np.round(self.frames.q0, 3).tolist())
        self._drop_preview()

    # -- Align --------------------------------------------------------------------------
    def selected(self):
        """(id, Trajectory) Align works on: the selected one, or with none selected the first complete."""
        book = self.session.plans
        tid = book.selected
        if not tid or tid not in book:
            tid = next((i for i in book.ids() if book.get(i).complete), "")
        return (tid, book.get(tid)) if tid else (tid, None)

    def selection_changed(self) -> None:
        if self.phase in ("approach", "insert"):
            return       # a path is under way: it keeps its trajectory until released and re-planned
        self._drop_preview()
        if self.session.step == "align":
            self.plan_align()

    def _trajectory_changed(self, tid: str) -> None:
        if self.preview is not None and tid == self.preview.tid and self.phase not in ("approach", "insert"):
            self._drop_preview()

    def _drop_preview(self) -> None:
        if self.preview is not None or self.refusal:
            self.preview, self.refusal, self._sent = None, "", None
            self.preview_changed.emit(None)
        if self.loop is not None:
            self.loop, self._T_cmd, self._correction_q, self.loop_truth = None, None, None, []
            self.correction_changed.emit(None)
        if self.phase in ("approach", "aligned", "correction", "insert", "inserted"):
            self._set_phase("idle")

    def _envelope(self):
        """C-arm housings of both views, from the calibration's beam axes (base frame)."""
        from core.navigation.align import carm_envelope
        if self.envelope_kind != "carm" or self.frames is None:
            return []
        out = []
        for view in ("ap", "lat"):
            try:
                src, d = self.frames.beam_axis(view)
            except (ValueError, AttributeError, KeyError):
                continue
            out += carm_envelope(src, d, sid_mm=self.sid_mm, name=f"{view.upper()} C-arm")
        return out

    def plan_align(self) -> AlignmentPreview | None:
        """The preview for the selected trajectory from the robot's joints now, or None with the
        refusal in ``refusal`` (and ``message``)."""
        from core.navigation.align import AlignmentError, alignment_for_trajectory
        from core.navigation.frames import FrameError
        tid, traj = self.selected()
        why = None
        if self.kinematics is None:
            why = "no robot is configured: Align needs the robot"
        elif traj is None:
            why = "select a complete trajectory in the Planning table"
        elif self.frames is None:
            why = ("no calibration in the robot frame: calibrate with the robot connected (its joints at the "
                   "calibration shots are needed)")
        elif self.robot_q() is None:
            why = "no robot state yet: wait for the robot controller"
        if why is None:
            try:
                plan = alignment_for_trajectory(traj, self.frames, self.kinematics, stand_off_mm=self.stand_off_mm,
                                                envelope=self._envelope(), q_current=self.robot_q())
                poses = plan.preview_poses(32)
            except (AlignmentError, FrameError) as e:
                why = str(e)
            except ValueError as e:   # a kinematics or geometry check of the core: one line too
                why = f"{traj.name}: {e}"
        if why is not None:
            self.preview, self.refusal, self._sent = None, why, None
            self.preview_changed.emit(None)
            self._say(f"Align refused: {why}", True)
            return None
        self.preview = AlignmentPreview(tid, plan, poses["T_base_tool"][:, :3, 3].copy(), plan.T_base_tool,
                                        plan.insertion.start_mm, plan.insertion.end_mm)
        self.refusal, self._sent = "", None
        self.preview_changed.emit(self.preview)
        self._say(f"{self.preview.summary}. Hold Move (space bar) to go there; release to stop.")
        return self.preview

    def _client_ready(self, what: str) -> bool:
        if self.client is None:
            self._say(f"{what}: the robot is not connected", True)
            return False
        if getattr(self.client, "stopped", False):
            self._say(f"{what}: the robot is STOPPED; press Reset in the Robot panel when the area is clear", True)
            return False
        if not hasattr(self.client, "follow_path"):
            log.error("%s: this robot controller client cannot follow a path (follow_path missing)", what)
            self._say(f"{what}: the robot controller cannot follow a path in this build", True)
            return False
        return True

    def hold_to_move(self, held: bool) -> bool:
        """The approach's dead-man: pressed sends the approach path (once) and holds; released lets go."""
        if not held:
            if self.client is not None:
                self.client.set_deadman(False)
            return True
        if self.phase in ("aligned", "insert", "inserted"):
            self._say("the guide is on the line: hold Insert to advance to the planned depth, or Verify")
            return False
        if self.phase == "correcting":
            self._say("Move: the closed-loop shots are being taken and measured; wait for the correction", True)
            return False
        if not self._client_ready("Move"):
            return False
        if self.phase == "correction" or (self._sent == "approach" and self._correction_q is not None):
            # the closed loop's correction: a short motion of its own, on the same dead-man
            if self._sent != "approach" and not self._send_path("approach", "Move", self._correction_q):
                return False
            self.client.set_deadman(True)
            return True
        if self.preview is None or self._sent != "approach":
            if self.plan_align() is None:
                return False
            _, q, _ = self.preview.plan.motion.samples(self.dt)
            if not self._send_path("approach", "Move", q):
                return False
        self.client.set_deadman(True)
        return True

    def hold_to_guide(self, held: bool, push=None) -> bool:
        """Hand guiding along the planned line (the virtual fixture: free along it up to the
        stand-off, stiff off it) while held, the dead-man; ``push`` (simulation only): the hand's
        force on the tool, "in" / "out" along the line or "side" across it. The control loop
        engages the fixture only with the tool within 5 mm and 5° of the line. Released at the
        stand-off, the alignment is recorded as after Move; elsewhere the preview is re-planned
        from where the robot is."""
        c = self.client
        if not held:
            if c is not None:
                if push is not None and hasattr(c, "simulate_hand"):
                    c.simulate_hand(np.zeros(6))
                c.set_deadman(False)
                if hasattr(c, "set_fixture"):
                    c.set_fixture(None)
            if self.preview is not None and self.phase in ("idle", "approach", "aligned"):
                self._guided_to()
            return True
        if self.preview is None and self.plan_align() is None:
            return False
        if self.phase in ("insert", "inserted", "correcting", "verifying"):
            self._say(f"Guide: not during {self.phase}", True)
            return False
        if not self._client_ready("Guide"):
            return False
        if not hasattr(c, "set_fixture"):
            self._say("Guide: the robot controller has no virtual fixture in this build", True)
            return False
        point, direction = self._guide_line()
        if hasattr(c, "path_active") and c.path_active():
            c.cancel_path()                        # the hand takes over from the path (not a STOP)
        self._sent = None
        c.set_fixture(point, direction)
        if push is not None and hasattr(c, "simulate_hand"):
            F = {"in": 12.0 * np.asarray(direction, float), "out": -12.0 * np.asarray(direction, float),
                 "side": 10.0 * _across(direction)}.get(push)
            if F is None:
                self._say(f"Guide: unknown push {push!r} (in, out, side)", True)
                return False
            c.simulate_hand(np.r_[F, 0.0, 0.0, 0.0])
        c.set_deadman(True)
        return True

    def _guided_to(self) -> None:
        """After hand guiding: at the stand-off on the line -> aligned; else plan again from here."""
        q = self.robot_q()
        if q is None or self.kinematics is None:
            return
        T = np.asarray(self.kinematics.forward(q), float)
        goal, d = self._guide_line()
        angle = math.degrees(math.acos(min(1.0, abs(float(T[:3, 2] @ d)))))
        if float(np.linalg.norm(T[:3, 3] - goal)) <= GUIDED_AT_MM and angle <= GUIDED_AT_DEG:
            self._set_phase("approach")
            self._arrived({"q": q.tolist()})
        elif self.phase != "idle" or self._sent is not None:
            self._set_phase("idle")
            self.plan_align()

    def _send_path(self, kind: str, what: str, q) -> bool:
        """Send one path to the controller; a refusal becomes the panel's one line."""
        try:
            self.client.follow_path(kind, q, self.dt)
        except (ValueError, RuntimeError, OSError) as e:
            self._say(f"{what} refused: {e}", True)
            return False
        self._sent = kind
        self._set_phase(kind)
        return True

    def hold_to_insert(self, held: bool) -> bool:
        """The insertion's own hold-to-run: advances the guide along the line to the planned depth."""
        if not held:
            if self.client is not None:
                self.client.set_deadman(False)
            return True
        if self.phase not in ("aligned", "insert"):
            self._say("Insert: align first (hold Move until the guide is on the line)", True)
            return False
        if not self._client_ready("Insert"):
            return False
        if self._sent != "insert":
            try:
                q = insertion_path(self.preview.plan, self.kinematics, self.dt, start_mm=self._inserted_mm,
                                   segment=self._corrected_segment())
            except (ValueError, RuntimeError, OSError) as e:
                self._say(f"Insert refused: {e}", True)
                return False
            if not self._send_path("insert", "Insert", q):
                return False
            self._insert_start = self._inserted_mm
        self.client.set_deadman(True)
        return True

    def robot_state(self, state: dict) -> None:
        """The robot's newest state: the path's progress, its arrival, why it paused."""
        if self.phase not in ("approach", "insert") or self.preview is None:
            return
        follow = state.get("follow") if "follow" in state else self._follow_from_q(state)
        sent_id = getattr(self.client, "path_id", None)
        if follow and follow.get("id") is not None and isinstance(sent_id, int) and follow["id"] != sent_id:
            return      # the loop's state still tells of the path before the one just sent (an old arrival)
        if not follow or follow.get("kind") != ("approach" if self.phase == "approach" else "insert"):
            if "follow" in state and self._sent is not None and follow is None and getattr(self.client, "stopped", False):
                self._sent = None      # STOP ended the path: the next hold plans again from where it is
            return
        progress = float(follow.get("progress") or 0.0)
        self.progress_changed.emit(self.phase, progress)
        reason = str(follow.get("reason") or "")
        if reason and reason != self._last_reason and not follow.get("arrived") \
                and not reason.startswith("hold the dead-man"):      # the loop's prompt before a hold
            what = "Move" if self.phase == "approach" else "Insert"
            if reason.startswith(("aborted", "cancelled")):
                self._sent = None        # the path is gone: the next hold plans again from where the robot is
                self._say(f"{what} {reason}: hold again to plan from where the robot is", True)
            else:
                self._say(f"{what} paused: {reason}", True)
        self._last_reason = reason
        if self.phase == "insert":   # the path sent ran from _insert_start to the planned depth
            L = self.preview.plan.insertion.length_mm
            self._inserted_mm = L if follow.get("arrived") else self._insert_start + progress * (L - self._insert_start)
        if follow.get("arrived"):
            self._arrived(state)

    def _follow_from_q(self, state):
        """Arrival told by the joints alone (a controller that reports no path progress)."""
        q = state.get("q")
        if q is None:
            return None
        goal = None
        if self.phase == "approach":
            goal = self._correction_q[-1] if self._correction_q is not None else self.preview.plan.q_goal
        if goal is None:
            return None
        rev = np.asarray(self.kinematics.revolute, bool)
        d = np.abs(np.asarray(q, float) - goal)
        arrived = bool(np.all(np.where(rev, d < ARRIVED_RAD, d < ARRIVED_MM)))
        return {"kind": "approach", "progress": 1.0 if arrived else 0.0, "arrived": arrived, "paused": False,
                "reason": ""}

    def _arrived(self, state) -> None:
        if self.client is not None:
            self.client.set_deadman(False)
        plan, q = self.preview.plan, np.asarray(state.get("q", self.preview.plan.q_goal), float)
        inserted = self.phase == "insert"
        T = np.asarray(self.kinematics.forward(q), float)
        goal_tip = plan.insertion.end_mm if inserted else plan.insertion.start_mm
        angle = math.degrees(math.acos(min(1.0, abs(float(T[:3, 2] @ plan.direction)))))
        record = {"format": ALIGNMENT_FORMAT, "trajectory": self.preview.tid, "name": plan.name,
                  "inserted": inserted, "stand_off_mm": plan.stand_off_mm,
                  "entry_base_mm": plan.entry_mm.tolist(), "target_base_mm": plan.target_mm.tolist(),
                  "q0": self.frames.q0.tolist(), "q_goal": plan.q_goal.tolist(), "q": q.tolist(),
                  "T_base_tool": T.tolist(),
                  "tip_error_mm": float(np.linalg.norm(T[:3, 3] - goal_tip)), "angle_error_deg": angle,
                  "insertion_mm": plan.insertion.length_mm if inserted else 0.0,
                  "clearance_mm": plan.clearance_mm if math.isfinite(plan.clearance_mm) else None,
                  "singularity_margin": plan.singularity_margin}
        if self.loop is not None:
            record["closed_loop"] = self.loop.summary()
            if self.loop_truth:
                record["closed_loop"]["simulation_truth"] = list(self.loop_truth)
        self._sent = None
        corrected = not inserted and self._correction_q is not None
        self._correction_q = None
        self._set_phase("inserted" if inserted else "aligned")
        self.session.set_alignment(record)
        self._store("alignment", record)
        if corrected and self.loop is not None and not self.loop.done:
            self._say(f"{plan.name}: correction {len(self.loop.history)} applied; taking the next AP + LAT pair")
            self.correct()
            return
        self._say(f"{plan.name}: " + ("the guide is at the planned depth" if inserted else
                  "the guide is on the line; Correct from shots (closed loop), hold Insert to advance to the "
                  "planned depth, or Verify")
                  + f" (model tip error {record['tip_error_mm']:.2f} mm, {angle:.2f}°)")

    # -- closed loop (robot paper II.C.5, eq. 24) ------------------------------------------
    def _corrected(self) -> bool:
        """The closed loop has sent a correction: the command's line is no longer the plan's."""
        return self._T_cmd is not None and self.loop is not None and bool(self.loop.history)

    def _guide_line(self):
        """(guide tip at the stand-off, unit direction) in base: the closed loop's corrected
        command once it has corrected, else the plan's."""
        if self._corrected():
            return self._T_cmd[:3, 3].copy(), self._T_cmd[:3, 2] / np.linalg.norm(self._T_cmd[:3, 2])
        plan = self.preview.plan
        return plan.insertion.start_mm, plan.direction

    def _corrected_segment(self):
        """The insertion along the corrected command's line (None before any correction)."""
        from core.navigation.align import InsertionSegment
        if not self._corrected() or self.preview is None:
            return None
        seg = self.preview.plan.insertion
        tip, axis = self._guide_line()
        return InsertionSegment(tip, tip + seg.length_mm * axis, axis, seg.length_mm)

    def correct(self) -> bool:
        """One closed-loop iteration: AP + LAT with the wire in the guide (in simulation at the true
        tool pose), the tool found in both and carried into base, eq. 24's correction; the motion
        waits for the surgeon's Move hold. Repeats after each correction's arrival until the
        residual is under the thresholds (0.3 mm, 0.3°) or the loop's shot limit."""
        from core.navigation.closed_loop import ClosedLoopCorrection
        if self.phase != "aligned" or self.preview is None or self.session.alignment is None:
            self._say("Correct: align first (hold Move until the guide is on the line), before the insertion", True)
            return False
        if self.devices is None or self.frames is None:
            self._say("Correct: needs the C-arm and the calibration in the robot frame", True)
            return False
        q = self.robot_q()
        if q is None:
            self._say("Correct: no robot state yet", True)
            return False
        plan = self.preview.plan
        if self.loop is None or self.loop.done:
            # the nominal cage mount may be off by a few mm until it is measured (hand-eye): allow
            # steps of that size; a misdetection beyond them is still refused
            self.loop = ClosedLoopCorrection(plan.insertion.start_mm, plan.direction,
                                             max_step_mm=CORRECTION_MAX_STEP_MM, max_step_deg=CORRECTION_MAX_STEP_DEG)
            self.loop_truth = []
            self.correction_changed.emit(self.loop.summary())
        # the command that put the tool where it is: the model's pose at the encoders
        self._T_cmd = np.asarray(self.kinematics.forward(q), float)
        if self.room is not None:
            T = self._true_tool_pose()
            if T is None:
                self._say("Correct: the simulated tool's pose is not known yet", True)
                return False
            try:   # the wire through the guide, docked on the entry (it reaches the bone: seen in both views)
                wire = simulated_wire(T, plan.stand_off_mm, plan.stand_off_mm + CORRECTION_WIRE_MM)
            except (NavigationError, ValueError) as e:
                self._say(f"Correct: {e}", True)
                return False
            self.devices.call("carm", lambda d: d.set_instruments([wire]), self._instruments_set)
        self._shots_for = "correct"
        self._verify_views = ["ap", "lat"]
        self._set_phase("correcting")
        self._say(f"closed loop: shot pair {len(self.loop.history) + 1} of at most {self.loop.max_shots} "
                  f"(AP + LAT with the wire through the guide, docked on the entry {plan.stand_off_mm:.0f} mm "
                  "beyond the guide's tip)…")
        return self._next_shot()

    def _measure_correction(self) -> None:
        frames, plan = self.frames, self.preview.plan
        calibration = frames.calibration
        images = {v: self.session.image(v) for v in ("ap", "lat")}
        # the expected wire: from 60 mm behind the guide's tip to the entry it is docked on
        hint = frames.to_calibration_frame(np.array([plan.insertion.start_mm - 60.0 * plan.direction,
                                                     plan.entry_mm]))

        q = self.robot_q()

        def work(_driver):
            from core.navigation.verification import verify_shots
            check_cage(frames, images, q)
            _, _, _, pose = verify_shots(calibration, images["ap"], images["lat"], hint[0], hint[1], tip="sharp",
                                         cone_length_mm=1.5 * WIRE_DIAMETER_MM, tool_diameter_mm=WIRE_DIAMETER_MM)
            return pose

        self.devices.call("carm", work, self._correction_measured)

    def _correction_measured(self, pose, error: str) -> None:
        from core.navigation.closed_loop import ClosedLoopError, ToolLine
        if self.loop is None or self.phase != "correcting":
            return                       # dropped meanwhile (a new plan, a new calibration)
        if error or pose is None:
            self._set_phase("aligned")
            if self._carm_moved(error):
                return
            self._say(f"Correct: the tool was not measured in the shots: {error}", True)
            return
        frames = self.frames
        d_b = frames.T_base_cage0[:3, :3] @ pose.direction
        # the guide's tip: the docked wire's tip back by the stand-off it protrudes
        tip_b = np.asarray(frames.to_base(pose.tip_mm), float).reshape(3) - self.preview.plan.stand_off_mm * d_b
        measured = ToolLine(tip_b, d_b, tip_b if pose.tip_gap_mm <= CORRECTION_TIP_GAP_MM else None)
        true_T = self._true_tool_pose() if self.room is not None else None
        try:
            step = self.loop.update(measured, self._T_cmd)
        except ClosedLoopError as e:
            self.correction_changed.emit(self.loop.summary())
            self._set_phase("aligned")
            self._say(f"Correct: {e}", True)
            return
        finally:
            if true_T is not None and self.loop.history and len(self.loop_truth) < len(self.loop.history):
                self.loop_truth.append(self._true_residual(true_T))
        self.correction_changed.emit(self.loop.summary())
        r = step.residual
        fig = f"{r.distance_mm:.2f} mm, {r.angle_deg:.2f}°"
        if step.next_command is None:
            self._set_phase("aligned")
            self._say(f"closed loop {self.loop.stop_reason}", not self.loop.converged)
            record = dict(self.session.alignment or {})
            record["closed_loop"] = self.loop.summary()
            if self.loop_truth:
                record["closed_loop"]["simulation_truth"] = list(self.loop_truth)
            self.session.set_alignment(record)
            self._store("alignment", record)
            return
        T = step.next_command
        try:
            X = np.array([*T[:3, 3], *self.kinematics.pose_for_axis(T[:3, 3], T[:3, 2])[3:]])
            q1 = np.asarray(self.kinematics.joints_for_pose(X), float)
            from core.navigation.align import correction_motion
            _, qs, _ = correction_motion(self.kinematics, self.robot_q(), q1).samples(self.dt)
        except ValueError as e:
            self.loop.done, self.loop.stop_reason = True, f"the corrected pose cannot be reached: {e}"
            self._set_phase("aligned")
            self._say(f"Correct: {self.loop.stop_reason}", True)
            return
        self._T_cmd, self._correction_q, self._sent = T, qs, None
        self._set_phase("correction")
        self._say(f"shot pair {step.shot}: residual {fig}; correction {step.correction_mm:.2f} mm, "
                  f"{step.correction_deg:.2f}°: hold Move (space bar) to apply it")

    def _true_residual(self, T_world_tool) -> dict:
        """Simulation: the true tool against the plan (world frame of the room), mm and degrees."""
        T_wc = self.T_world_cage0 if self.T_world_cage0 is not None else getattr(self.room, "T_world_cage_calibrated",
                                                                                 None)
        if T_wc is None:
            return {}
        plan = self.preview.plan
        T_w_b = np.asarray(T_wc, float) @ self.frames.T_cage0_base
        tip_w = T_w_b[:3, :3] @ plan.insertion.start_mm + T_w_b[:3, 3]
        d_w = T_w_b[:3, :3] @ plan.direction
        z = T_world_tool[:3, 2] / np.linalg.norm(T_world_tool[:3, 2])
        return {"tip_mm": float(np.linalg.norm(T_world_tool[:3, 3] - tip_w)),
                "angle_deg": math.degrees(math.acos(min(1.0, abs(float(z @ d_w)))))}

    # -- Verify -------------------------------------------------------------------------
    def verify(self) -> bool:
        """Take the AP and LAT verification shots (in simulation with the K-wire at the true tool
        pose), then measure; the result arrives in the session (``verification_changed``)."""
        if self.session.alignment is None:
            self._say("Verify: align the robot first", True)
            return False
        if self.devices is None:
            self._say("Verify: no C-arm", True)
            return False
        tid, traj = self._aligned_trajectory()
        if traj is None:
            self._say("Verify: the aligned trajectory is no longer in the plan", True)
            return False
        self._verify_wire = None
        if self.room is not None:
            T = self._true_tool_pose()
            if T is None:
                self._say("Verify: the simulated tool's pose is not known yet", True)
                return False
            plan = self.preview.plan if self.preview is not None else None
            length = float(np.linalg.norm(np.subtract(traj.target_mm, traj.entry_mm)))
            total = plan.insertion.length_mm if plan is not None else length + self.stand_off_mm
            remaining = 0.0 if (self.session.alignment or {}).get("inserted") else total - self._inserted_mm
            try:
                wire = simulated_wire(T, remaining, length)
            except (NavigationError, ValueError) as e:
                self._say(f"Verify: {e}", True)
                return False
            self._verify_wire = wire
            self.devices.call("carm", lambda d: d.set_instruments([wire]), self._instruments_set)
        self._shots_for = "verify"
        self._verify_views = ["ap", "lat"]
        self._set_phase("verifying")
        self._say("verification: acquiring AP and LAT with the wire in place…")
        return self._next_shot()

    def _true_tool_pose(self):
        room = self.room
        fn = getattr(room, "true_tool_pose", None)
        if fn is not None:
            T = fn()
            if T is not None:
                return np.asarray(T, float)
        else:
            log.warning("the simulated room reports no true tool pose (true_tool_pose missing): the wire is "
                        "placed at the model's tool pose")
        q = self.robot_q()
        Tb = getattr(room, "T_world_base", None)
        if q is None or Tb is None or self.kinematics is None:
            return None
        return np.asarray(Tb, float) @ np.asarray(self.kinematics.forward(q), float)

    def _instruments_set(self, _result, error: str) -> None:
        if error:
            self._say(f"Verify: the simulated C-arm did not take the K-wire: {error}", True)

    def _aligned_trajectory(self):
        tid = (self.session.alignment or {}).get("trajectory") if isinstance(self.session.alignment, dict) else None
        tid = tid or self.session.plans.selected
        if tid and tid in self.session.plans:
            return tid, self.session.plans.get(tid)
        return tid, None

    def _next_shot(self) -> bool:
        if not self._verify_views:
            return True
        try:
            self.devices.acquire(self._verify_views[0])
        except (ValueError, RuntimeError, OSError) as e:
            self._verify_views = []
            self._set_phase("aligned")
            self._say(f"Verify: cannot acquire {e}", True)
            return False
        return True

    def _image_in(self, view: str, image) -> None:
        if not self._verify_views or view != self._verify_views[0] or image is None:
            return
        self._verify_views.pop(0)
        if self._verify_views:
            self._next_shot()
            return
        if self._shots_for == "correct":
            self._measure_correction()
        else:
            self._measure()

    def _measure(self) -> None:
        tid, traj = self._aligned_trajectory()
        calibration = self.frames.calibration if self.frames is not None else self.session.calibration
        images = {v: self.session.image(v) for v in ("ap", "lat")}
        room, wire = self.room, self._verify_wire
        T_world_cage = None if room is None else (self.T_world_cage0 if self.T_world_cage0 is not None
                                                  else getattr(room, "T_world_cage_calibrated", None))
        if T_world_cage is None and room is not None and getattr(room, "shot_cage", None):
            T_world_cage = next(iter(room.shot_cage.values()))

        frames, q = self.frames, self.robot_q()

        def work(driver):
            if frames is not None:
                check_cage(frames, images, q)
            pedicle = None
            if wire is not None and T_world_cage is not None:
                pedicle = _phantom_pedicle(driver, traj.level, traj.side)
            truth_wire = None if wire is None or T_world_cage is None else wire.in_frame(invert(T_world_cage))
            return verification_from_shots(calibration, images, traj, tid, pedicle=pedicle,
                                           T_pedicle_cage=T_world_cage, truth_wire=truth_wire)

        self.devices.call("carm", work, self._measured)

    def _measured(self, result, error: str) -> None:
        if error or result is None:
            self._set_phase("aligned")
            if self._carm_moved(error):
                return
            self._say(f"Verify failed: {error}", True)
            return
        if self.room is not None:
            T = self.T_world_cage0 if self.T_world_cage0 is not None else getattr(self.room, "T_world_cage_calibrated",
                                                                                  None)
            if T is not None:
                result = VerificationResult(result.tid, result.record, result.detections, result.pose,
                                            result.plan_uv, result.truth, np.asarray(T, float))
        self._set_phase("verified")
        self.session.set_verification(result)
        record = result.to_dict()
        record["shots"] = {v: self.session.current_file(v) for v in ("ap", "lat")}   # the report draws on them
        self._store("verification", record)
        self._say(f"verified {result.summary()}", result.grade not in (None, "A", "B"))

    # -- helpers ------------------------------------------------------------------------
    def _carm_moved(self, error: str) -> bool:
        """A shot's cage balls disagreed with the calibration: it and the plan's base frame no
        longer hold; the calibration is dropped and the GUI's banner says why and what to do."""
        if not str(error).startswith(CARM_MOVED):
            return False
        self.frames = None
        self._drop_preview()
        self.session.set_calibration(None, why=str(error))
        self._say(str(error), True)
        self.calibration_invalidated.emit(str(error))
        return True

    def _store(self, kind: str, record: dict) -> None:
        if not getattr(self.session, "save_images", True):
            return
        try:
            path = self.session.save_record(kind, record)
            log.info("%s stored with the case: %s", kind, path)
        except (OSError, ValueError, TypeError) as e:
            log.error("the %s could not be stored with the case: %s", kind, e)

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.phase_changed.emit(phase)

    def _say(self, text: str, warn: bool = False) -> None:
        (log.warning if warn else log.info)("%s", text)
        self.message.emit(text, warn)


CARM_MOVED = "the C-arm moved"
GUIDED_AT_MM, GUIDED_AT_DEG = 0.1, 0.1   # hand guiding released this near the stand-off: aligned


def _across(direction) -> np.ndarray:
    """A unit vector perpendicular to ``direction`` (a sideways push)."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    a = np.cross(d, [1.0, 0.0, 0.0])
    if np.linalg.norm(a) < 0.1:
        a = np.cross(d, [0.0, 1.0, 0.0])
    return a / np.linalg.norm(a)
ROBOT_CAGE_ERROR_MM = 2.0     # how far the robot may carry the cage from its model (nominal mount)


def check_cage(frames, images: dict, q) -> None:
    """Each new shot's cage balls against where the calibration puts them with the robot at ``q``
    (``BaseFrameCalibration.check_balls``): raises ``CArmMovedError`` ("the C-arm moved: ...")
    when a view disagrees. A view whose balls cannot be compared (none predicted in the field, no
    balls found, no cage file) is not contradicted; its angle tags are checked by the room."""
    from core.calibration.beads import BeadDetectionError, detect_beads
    from core.navigation.frames import CArmMovedError
    cage = _calibration_cage(frames.calibration)
    if cage is None or q is None:
        return
    for view in ("ap", "lat"):
        img = images.get(view)
        if img is None:
            continue
        try:
            beads = detect_beads(getattr(img, "pixels", img))
        except BeadDetectionError:
            continue
        balls = cage.balls_for(view)
        # the robot carries the cage with its own error (the nominal mount alone: mm; the
        # hand-eye figures): that much is not a C-arm move; a move of consequence is far more
        scale = frames.px_per_mm(view, q, balls)
        tol = ROBOT_CAGE_ERROR_MM * scale if np.isfinite(scale) else None
        chk = frames.check_balls(view, q, beads.centres_px, balls, matched=False, tolerance_px=tol,
                                 gate_px=None if tol is None else max(8.0 * frames.ball_tolerance_px, 3.0 * tol))
        if not chk.agrees:
            raise CArmMovedError(chk.reason)
        log.info("%s", chk.reason)


def _calibration_cage(calibration):
    """The cage geometry a calibration was made with (its file), or None when it is not known."""
    from core.calibration.cage import CageFileError, load_cage
    from pathlib import Path
    info = getattr(calibration, "cage", None) or {}
    f = info.get("file") if isinstance(info, dict) else None
    if not f:
        return None
    try:
        return load_cage(Path(f))
    except (CageFileError, OSError, ValueError) as e:
        log.warning("the calibration's cage file %s cannot be read (%s): the cage balls of new shots are "
                    "not checked", f, e)
        return None


def _phantom_pedicle(driver, level: str, side: str):
    """The pedicle truth of the simulated C-arm's phantom (None for a real C-arm or an unknown level)."""
    from core.simulation.phantom import make_spine_phantom
    if not hasattr(driver, "scene") or getattr(driver, "scene", None) is None or not hasattr(driver, "seed"):
        return None
    args = getattr(driver, "_scene_args", {}) or {}
    phantom = args.get("phantom") or make_spine_phantom(seed=driver.seed)   # cached: the scene's own
    try:
        return phantom.pedicle(level, side)
    except (ValueError, KeyError, AttributeError):
        return None
