"""The paper's 5-DoF hybrid spine robot (robot paper, section II.A, eq. 1-15).

Joints ``q = [l11, l14, l3, theta4, theta5]`` (mm, mm, mm, rad, rad): the two
sliders of the PRRRP planar parallel mechanism (B(-l11, 0) along O-y and
D(0, -l14) along O-z), the x slider l3, then the rotations about O3-x and O4-y.
The task pose is ``X = [x, y, z, theta_x, theta_y]`` of the tool tip with
``R_base_O5 = Rx(theta_x) Ry(theta_y)`` (eq. 10). The flange frame is O5; the
tool frame sits at the tip ``[d, 0, -L2]`` of O5 (eq. 8) with +z along -z of
O5 (the insertion direction). The insertion joint (6th) is not modelled here,
as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.robot.kinematics.base import (JointLimits, Kinematics, KinematicsError,
                                  ReachabilityError)

__all__ = ["Hybrid5Parameters", "Hybrid5", "load_hybrid5"]

_RX_PI = np.diag([1.0, -1.0, -1.0, 1.0])  # T_O5_tool rotation: tool +z = -z of O5


@dataclass(frozen=True)
class Hybrid5Parameters:
    """Structure parameters of table 2 (mm, rad) and the mechanism's assembly mode."""
    l12: float          # link BC
    l13: float          # link DC
    L1: float           # C to O3 along the extended link, at angle gamma to DC
    gamma: float        # angle between DC and C-O3 (eq. 3)
    theta: float        # constant offset of the O3 frame angle (eq. 4)
    L2: float           # O5 to tool tip along -z of O5 (eq. 8)
    d: float            # O5 to tool tip along x of O5 (eq. 8)
    assembly: int       # +1/-1: which of the two circle intersections C is (eq. 1)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


class Hybrid5(Kinematics):
    """Forward (eq. 10), closed-form inverse (eq. 11) and Jacobians (eq. 14-15)."""

    joint_names = ("l11", "l14", "l3", "theta4", "theta5")
    revolute = np.array([False, False, False, True, True])

    def __init__(self, params: Hybrid5Parameters, limits: JointLimits,
                 T_flange_cage=None, workspace_mm=None):
        self.p = params
        self.joint_limits = limits
        self.T_flange_cage = np.eye(4) if T_flange_cage is None else np.asarray(T_flange_cage, float)
        self.T_flange_cage_nominal = self.T_flange_cage.copy()   # the design's mount (robot file)
        self.cage_mount = "nominal"        # which mount ``T_flange_cage`` is: see ``use_cage_mount``
        self.workspace_mm = None if workspace_mm is None else np.asarray(workspace_mm, float)
        g = params.gamma
        # O3 - D = A * u(theta13 + phi): the two links DC and C-O3 seen as one (eq. 3)
        ay, az = params.l13 + params.L1 * math.cos(g), params.L1 * math.sin(g)
        self._A, self._phi = math.hypot(ay, az), math.atan2(az, ay)

    def use_cage_mount(self, T_flange_cage, description: str) -> None:
        """Use a measured cage mount (hand-eye calibration) instead of the nominal one; the
        nominal stays in ``T_flange_cage_nominal``. ``description`` says where it came from."""
        from core.geometry.rigid import is_rigid
        T = np.asarray(T_flange_cage, float)
        if T.shape != (4, 4) or not is_rigid(T, 1e-6):
            raise KinematicsError("a cage mount T_flange_cage must be a finite rigid 4x4 transform")
        self.T_flange_cage = T.copy()
        self.cage_mount = str(description)

    # -- the closed chain of the parallel part (eq. 1-3) ----------------------
    def _closure_f(self, l11, l14):
        """(C_y, C_z, theta13) in plain floats: intersection of two circles (eq. 1). The
        control loop calls this several times a cycle: no numpy on 2-vectors here."""
        p = self.p
        ey, ez = l11, -l14                       # e = D - B, B = (-l11, 0), D = (0, -l14)
        dist = math.hypot(ey, ez)
        a = (p.l12 * p.l12 - p.l13 * p.l13 + dist * dist) / (2 * dist)
        h2 = p.l12 * p.l12 - a * a
        if h2 < 0:
            raise ReachabilityError(
                f"links BC and DC cannot close with sliders at l11={l11:.1f} mm, l14={l14:.1f} mm: "
                "bring the joints back inside their limits")
        ey, ez = ey / dist, ez / dist
        h = p.assembly * math.sqrt(h2)
        cy, cz = -l11 + a * ey - h * ez, a * ez + h * ey
        return cy, cz, math.atan2(cz + l14, cy)

    def _closure(self, l11, l14):
        """C and theta13 from the slider positions: intersection of two circles (eq. 1)."""
        cy, cz, t13 = self._closure_f(float(l11), float(l14))
        return np.array([cy, cz]), t13

    def _o3_f(self, l11, l14):
        """(y, z, theta3, theta13) of O3 in floats (eq. 3-4)."""
        p = self.p
        cy, cz, t13 = self._closure_f(l11, l14)
        return (cy + p.L1 * math.cos(t13 + p.gamma), cz + p.L1 * math.sin(t13 + p.gamma),
                t13 + p.gamma + p.theta, t13)

    def o3_and_theta3(self, l11, l14):
        """Position (y, z) of O3 and the angle theta3 of the O3 frame (eq. 3-4)."""
        p = self.p
        C, t13 = self._closure(l11, l14)
        y = C[0] + p.L1 * math.cos(t13 + p.gamma)
        z = C[1] + p.L1 * math.sin(t13 + p.gamma)
        return y, z, t13 + p.gamma + p.theta, C, t13

    def _qf(self, q) -> list:
        """The 5 joint values as checked plain floats (``_q``'s checks, cheaper)."""
        if type(q) is np.ndarray and q.shape == (5,):
            v = q.tolist()
        elif type(q) is list and len(q) == 5:
            v = [float(x) for x in q]
        else:
            v = self._q(q).tolist()
        for x in v:
            if not math.isfinite(x):
                raise KinematicsError("joint values must be finite")
        return v

    # -- task pose <-> joints (eq. 10, 11) ---------------------------------------
    def _tip_offset(self, th5):
        """x and w of the tip in O4 after joint 5: [d, 0, -L2] rotated by Ry(-theta5) (eq. 7-8)."""
        p = self.p
        c, s = math.cos(th5), math.sin(th5)
        return p.d * c + p.L2 * s, p.d * s - p.L2 * c

    def pose(self, q) -> np.ndarray:
        """Task pose ``[x, y, z, theta_x, theta_y]`` (eq. 10)."""
        return np.array(self.pose_f(q))

    def pose_f(self, q) -> tuple:
        """``pose`` as a tuple of floats (the control loop's hot path)."""
        l11, l14, l3, th4, th5 = self._qf(q)
        yo, zo, th3, _ = self._o3_f(l11, l14)
        tx = th3 + th4
        xo, w = self._tip_offset(th5)
        return (l3 + xo, -w * math.sin(tx) + yo, w * math.cos(tx) + zo, tx, -th5)

    def joints_for_pose(self, pose, check_limits: bool = True) -> np.ndarray:
        """Closed-form inverse (eq. 11) from ``[x, y, z, theta_x, theta_y]``."""
        X = np.asarray(pose, float)
        if X.shape != (5,) or not np.all(np.isfinite(X)):
            raise KinematicsError("a hybrid-robot pose is 5 finite numbers [x, y, z, theta_x, theta_y]")
        p = self.p
        x, y, z, tx, ty = X
        th5 = -ty
        xo, w = self._tip_offset(th5)
        l3 = x - xo
        yo, zo = y + w * math.sin(tx), z - w * math.cos(tx)
        ratio = yo / self._A
        if abs(ratio) > 1:
            raise ReachabilityError(
                f"the tool tip at y={y:.1f} mm is out of reach of the parallel mechanism: "
                "move the target towards the robot")
        t13 = math.acos(ratio) - self._phi
        l14 = p.l13 * math.sin(t13) + p.L1 * math.sin(t13 + p.gamma) - zo
        yc, zc = p.l13 * math.cos(t13), p.l13 * math.sin(t13) - l14
        if abs(zc) > p.l12:
            raise ReachabilityError(
                f"the tool tip at z={z:.1f} mm is out of reach of link BC: move the target nearer "
                "the robot's mid-height")
        l11 = -yc + math.sqrt(p.l12 ** 2 - zc ** 2)
        q = np.array([l11, l14, l3, tx - t13 - p.gamma - p.theta, th5])
        if check_limits:
            self.joint_limits.check(q, self.joint_names)
        return q

    def _pose_from(self, v, closure) -> tuple:
        """``pose_f`` from the checked joints ``v`` and their ``_closure_f``."""
        p = self.p
        l3, th4, th5 = v[2], v[3], v[4]
        cy, cz, t13 = closure
        yo, zo = cy + p.L1 * math.cos(t13 + p.gamma), cz + p.L1 * math.sin(t13 + p.gamma)
        tx = t13 + p.gamma + p.theta + th4
        xo, w = self._tip_offset(th5)
        return (l3 + xo, -w * math.sin(tx) + yo, w * math.cos(tx) + zo, tx, -th5)

    def pose_and_jacobian_terms(self, q) -> tuple[tuple, tuple]:
        """(``pose_f(q)``, ``_jacobian_terms(q)``) solving the closed chain once."""
        v = self._qf(q)
        closure = self._closure_f(v[0], v[1])
        return self._pose_from(v, closure), self._jacobian_terms(v, closure)

    def pose_and_margin(self, q) -> tuple[tuple, float]:
        """(``pose_f(q)``, ``singularity_margin(q)``) solving the closed chain once."""
        v = self._qf(q)
        closure = self._closure_f(v[0], v[1])
        return self._pose_from(v, closure), self._margin_from(v, closure)

    def pose_and_rotation(self, q) -> tuple[tuple, np.ndarray]:
        """(``pose_f(q)``, the flange rotation ``flange(q)[:3, :3]``) from one pass through the
        chain: what the control loop needs each cycle."""
        l11, l14, l3, th4, th5 = self._qf(q)
        yo, zo, th3, _ = self._o3_f(l11, l14)
        tx = th3 + th4
        xo, w = self._tip_offset(th5)
        cx, sx = math.cos(tx), math.sin(tx)
        cy, sy = math.cos(th5), -math.sin(th5)
        R = np.array([[cy, 0.0, sy], [sx * sy, cx, -sx * cy], [-cx * sy, sx, cx * cy]])
        return (l3 + xo, -w * sx + yo, w * cx + zo, tx, -th5), R

    # -- 4x4 frames ---------------------------------------------------------------
    def flange(self, q) -> np.ndarray:
        """``T_base_flange``: the O5 frame, where the force sensor and cage mount."""
        l11, l14, l3, th4, th5 = self._qf(q)
        yo, zo, th3, _ = self._o3_f(l11, l14)
        # Rx(th3 + th4) @ Ry(-th5), written out
        cx, sx = math.cos(th3 + th4), math.sin(th3 + th4)
        cy, sy = math.cos(th5), -math.sin(th5)
        return np.array([[cy, 0.0, sy, l3], [sx * sy, cx, -sx * cy, yo],
                         [-cx * sy, sx, cx * cy, zo], [0.0, 0.0, 0.0, 1.0]])

    @property
    def T_flange_tool(self) -> np.ndarray:
        T = _RX_PI.copy()
        T[:3, 3] = (self.p.d, 0.0, -self.p.L2)
        return T

    def forward(self, q) -> np.ndarray:
        return self.flange(q) @ self.T_flange_tool

    def cage(self, q) -> np.ndarray:
        """``T_base_cage = T_base_flange @ T_flange_cage`` (the calibration cage on the flange)."""
        return self.flange(q) @ self.T_flange_cage

    def inverse(self, T_base_tool, q_seed=None, ignore_spin: bool = False) -> np.ndarray:
        """Joints for a tool pose, given as ``T_base_tool`` (4x4; its spin about the tool axis
        must be zero, 5 DoF, unless ``ignore_spin``) or as the task pose
        ``[x, y, z, theta_x, theta_y]``. ``q_seed`` is unused: the solution is closed-form."""
        T = np.asarray(T_base_tool, float)
        if T.shape == (5,):
            return self.joints_for_pose(T)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise KinematicsError("T_base_tool must be a finite 4x4 transform")
        R = T[:3, :3] @ _RX_PI[:3, :3]
        ty = math.asin(max(-1.0, min(1.0, R[0, 2])))
        tx = math.atan2(-R[1, 2], R[2, 2])
        spin = math.atan2(-R[0, 1], R[0, 0])
        if not ignore_spin and abs(spin) > 1e-6:
            raise ReachabilityError(
                f"the pose turns the tool {math.degrees(spin):.2f} deg about its own axis, which this "
                "5-axis robot cannot do: give the tool axis only (pose_for_axis)")
        return self.joints_for_pose([*T[:3, 3], tx, ty])

    @staticmethod
    def pose_for_axis(tip_mm, direction) -> np.ndarray:
        """Task pose putting the tool tip at ``tip_mm`` with its +z along ``direction``."""
        a = np.asarray(direction, float)
        n = np.linalg.norm(a)
        if a.shape != (3,) or not np.isfinite(n) or n < 1e-9:
            raise KinematicsError("the tool direction must be a non-zero 3-vector")
        a = a / n
        # tool +z = -z of O5 = -(sin ty, -sin tx cos ty, cos tx cos ty)
        return np.array([*np.asarray(tip_mm, float), math.atan2(a[1], -a[2]), math.asin(-a[0])])

    # -- velocities (eq. 14-15) ------------------------------------------------------
    def _chain_rates(self, l11, l14, closure=None):
        """d theta13 / d l11 and d theta13 / d l14 from differentiating eq. 1 (``closure``: the
        ``_closure_f`` of these sliders when the caller has it)."""
        p = self.p
        cy, cz, t13 = self._closure_f(l11, l14) if closure is None else closure
        bc_y, zc = cy + l11, cz
        f_a = 2 * (-bc_y * p.l13 * math.sin(t13) + zc * p.l13 * math.cos(t13))
        if abs(f_a) < 1e-9:
            raise KinematicsError("the parallel mechanism is at a singular configuration")
        return -2 * bc_y / f_a, 2 * zc / f_a, t13, bc_y, zc, f_a

    def _lever(self, t13: float) -> tuple[float, float]:
        """(S, C): how O3 moves with theta13 (d yo = -S d theta13, d zo = C d theta13)."""
        p = self.p
        return (p.l13 * math.sin(t13) + p.L1 * math.sin(t13 + p.gamma),
                p.l13 * math.cos(t13) + p.L1 * math.cos(t13 + p.gamma))

    def _jacobian_terms(self, q, closure=None) -> tuple:
        """What eq. 14 and eq. 15 share: the chain's rates (a11, a14, theta13, BC_y, z_C, f_a),
        the tool angle tx, the tip offset w and its rates dw, dx5 per theta5, and the lever (S, C)."""
        l11, l14, l3, th4, th5 = self._qf(q)
        p = self.p
        a11, a14, t13, bc_y, zc, f_a = self._chain_rates(l11, l14, closure)
        _, w = self._tip_offset(th5)
        c5, s5 = math.cos(th5), math.sin(th5)
        dw = p.d * c5 + p.L2 * s5
        dx5 = -p.d * s5 + p.L2 * c5
        return (a11, a14, t13, bc_y, zc, f_a, t13 + p.gamma + p.theta + th4, w, dw, dx5, *self._lever(t13))

    def pose_jacobian(self, q) -> np.ndarray:
        """The 5x5 ``dX/dq`` of eq. 14."""
        return np.array(self._pose_jacobian_rows(self._jacobian_terms(q)))

    @staticmethod
    def _pose_jacobian_rows(terms) -> list:
        a11, a14, _, _, _, _, tx, w, dw, dx5, S, Cc = terms
        ctx, stx = math.cos(tx), math.sin(tx)
        dy_da, dz_da = -w * ctx - S, -w * stx + Cc
        return [[0.0, 0.0, 1.0, 0.0, dx5],
                [dy_da * a11, dy_da * a14, 0.0, -w * ctx, -dw * stx],
                [dz_da * a11, dz_da * a14 - 1, 0.0, -w * stx, dw * ctx],
                [a11, a14, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, -1.0]]

    def inverse_pose_jacobian(self, q) -> np.ndarray:
        """``J^-1`` built from its definition, row by row (eq. 15), not by inversion."""
        return np.array(self._inverse_pose_jacobian_rows(self._jacobian_terms(q)))

    @staticmethod
    def _inverse_pose_jacobian_rows(terms) -> list:
        _, _, _, bc_y, zc, f_a, tx, w, dw, dx5, S, Cc = terms
        if abs(S) < 1e-9 or abs(bc_y) < 1e-9:
            raise KinematicsError("the parallel mechanism is at a singular configuration")
        ctx, stx = math.cos(tx), math.sin(tx)
        # rates of O3 (y, z) per task rate: yo = y + w sin tx, zo = z - w cos tx, w = w(theta5)
        dyo = (0.0, 1.0, 0.0, w * ctx, -dw * stx)        # d th5 = -d ty
        dzo = (0.0, 0.0, 1.0, w * stx, dw * ctx)
        da = [-v / S for v in dyo]                         # d yo = -S d theta13
        dl14 = [Cc * a - z for a, z in zip(da, dzo)]       # zo = ... - l14
        dl11 = [(-f_a * a + 2 * zc * b) / (2 * bc_y) for a, b in zip(da, dl14)]   # eq. 1 differentiated
        return [dl11, dl14, [1.0, 0.0, 0.0, 0.0, dx5],
                [-da[0], -da[1], -da[2], 1.0 - da[3], -da[4]], [0.0, 0.0, 0.0, 0.0, -1.0]]

    def jacobians(self, q) -> tuple[np.ndarray, np.ndarray]:
        """(``pose_jacobian``, ``inverse_pose_jacobian``) at ``q``, sharing their terms."""
        t = self._jacobian_terms(q)
        return np.array(self._pose_jacobian_rows(t)), np.array(self._inverse_pose_jacobian_rows(t))

    def jacobian(self, q) -> np.ndarray:
        """Geometric (6, 5): omega = theta_x' e_x + theta_y' Rx(theta_x) e_y."""
        Jp = self.pose_jacobian(q)
        tx = self.pose(q)[3]
        E = np.array([[1, 0], [0, math.cos(tx)], [0, math.sin(tx)]])
        return np.vstack([Jp[:3], E @ Jp[3:]])

    def singularity_margin(self, q) -> float:
        """Smallest normalised distance to the mechanism's three singular conditions (1 = far,
        0 = singular): link BC vertical, O3 arm horizontal, links BC and DC aligned."""
        return self._margin_from(self._qf(q), None)

    def _margin_from(self, v, closure) -> float:
        _, _, t13, bc_y, zc, f_a = self._chain_rates(v[0], v[1], closure)
        p = self.p
        S, _ = self._lever(t13)
        return min(abs(bc_y) / p.l12, abs(S) / self._A, abs(f_a) / (2 * p.l12 * p.l13))

    def is_singular(self, q, tol: float = 0.05) -> bool:
        try:
            return self.singularity_margin(q) < tol
        except KinematicsError:
            return True


def load_hybrid5(path=None, hand_eye="auto") -> Hybrid5:
    """The robot described by ``resources/robots/hybrid5.json`` (or ``path``).

    ``hand_eye``: the cage mount in use. ``"auto"`` (default): the measured one when the
    site has stored it (``core.robot.cage_mount.cage_mount_path``, written by
    ``fluoronav handeye --write``), else the robot file's nominal ``T_flange_cage``; a path:
    that measured mount (it must exist); ``None``: the nominal one. A stored mount that cannot
    be read is a KinematicsError (one line naming the file), never a silent fallback. One log
    line (INFO) says which mount is in use."""
    from resources import path as resource_path
    robot_file = path or resource_path("robots", "hybrid5.json")
    doc = load_robot_file(robot_file, "hybrid5")
    s = doc["structure"]
    params = Hybrid5Parameters(
        l12=s["l12_mm"], l13=s["l13_mm"], L1=s["L1_mm"], gamma=math.radians(s["gamma_deg"]),
        theta=math.radians(s["theta_deg"]), L2=s["L2_mm"], d=s["d_mm"], assembly=int(s["assembly"]))
    kin = Hybrid5(params, _limits_from_doc(doc), np.array(doc["T_flange_cage"], float),
                  np.array(doc["workspace_mm"], float))
    _apply_cage_mount(kin, robot_file, hand_eye)
    return kin


def _apply_cage_mount(kin: Hybrid5, robot_file, hand_eye) -> None:
    import logging
    from core.robot.cage_mount import cage_mount_path, describe_mount, read_cage_mount
    log = logging.getLogger(__name__)
    if hand_eye is None:
        log.info("cage mount: nominal (%s)", Path(robot_file).name)
        return
    mount = cage_mount_path(robot_file) if str(hand_eye) == "auto" else Path(hand_eye)
    if str(hand_eye) == "auto" and not mount.is_file():
        log.info("cage mount: nominal (%s; no measured mount at %s)", Path(robot_file).name, mount)
        return
    doc = read_cage_mount(mount)
    what = describe_mount(doc, mount)
    kin.use_cage_mount(doc["T_flange_cage"], what)
    log.info("cage mount: %s", what)


def load_robot_file(path, kind: str) -> dict:
    """A ``fluoronav.robot/1`` file of ``kind``, validated by its schema; KinematicsError
    (one line naming the file and JSON path) otherwise."""
    from core.formats.schema import load_json
    doc, _ = load_json(path, "robot", error=KinematicsError)
    if doc["kind"] != kind:
        raise KinematicsError(f"{Path(path).name}: $.kind: is {doc['kind']!r}, expected {kind!r}")
    return doc


def _limits_from_doc(doc) -> JointLimits:
    """Joint limits from a robot file: linear joints in mm, rotary ones in degrees."""
    js = doc["joints"]
    conv = [math.radians(1) if j["type"] == "revolute" else 1.0 for j in js]
    get = lambda key: np.array([j[key] * c for j, c in zip(js, conv)])
    return JointLimits(get("lower"), get("upper"), get("velocity"), get("acceleration"))
