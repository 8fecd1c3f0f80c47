"""The interface every robot's kinematics shares, and its typed errors.

Millimetres and radians. ``forward(q)`` gives ``T_base_tool``; the tool frame
has its tip at the origin and its axis along +z (DESIGN.md), pointing the way
the tool goes into the patient.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

__all__ = ["KinematicsError", "ReachabilityError", "JointLimitError",
           "SingularityError", "JointLimits", "Kinematics"]


class KinematicsError(ValueError):
    """Bad input to a kinematics function (shape, non-finite values)."""


class ReachabilityError(KinematicsError):
    """The pose is outside what the mechanism can reach."""


class JointLimitError(KinematicsError):
    """The solution exists but needs a joint outside its limits."""


class SingularityError(KinematicsError):
    """The configuration is (close to) singular: velocities are not defined there."""


@dataclass(frozen=True)
class JointLimits:
    """Per joint: position range (mm or rad), speed and acceleration bounds (per second)."""
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    def __post_init__(self):
        arrs = [np.asarray(a, float).copy() for a in
                (self.lower, self.upper, self.velocity, self.acceleration)]
        n = arrs[0].shape
        if any(a.shape != n or a.ndim != 1 for a in arrs):
            raise KinematicsError("joint limits must be four vectors of the same length")
        if np.any(arrs[0] >= arrs[1]) or np.any(arrs[2] <= 0) or np.any(arrs[3] <= 0):
            raise KinematicsError("joint limits need lower < upper and positive speed/acceleration")
        for name, a in zip(("lower", "upper", "velocity", "acceleration"), arrs):
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    def violated(self, q, tol: float = 0.0) -> np.ndarray:
        """Indices of joints outside [lower - tol, upper + tol]."""
        q = np.asarray(q, float)
        return np.flatnonzero((q < self.lower - tol) | (q > self.upper + tol))

    def check(self, q, names=None, tol: float = 1e-9) -> None:
        """Raise ``JointLimitError`` naming the first joint out of its range."""
        bad = self.violated(q, tol)
        if bad.size:
            i = int(bad[0])
            label = names[i] if names else f"joint {i + 1}"
            raise JointLimitError(
                f"{label} would be at {q[i]:.4g}, outside [{self.lower[i]:.4g}, "
                f"{self.upper[i]:.4g}]: choose a pose closer to the middle of the workspace")


class Kinematics(abc.ABC):
    """``forward``, ``inverse``, ``jacobian`` and limits of one robot arm."""

    joint_names: tuple[str, ...]
    joint_limits: JointLimits
    revolute: np.ndarray          # per joint: True for a rotary joint (rad), False for linear (mm)

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def _q(self, q) -> np.ndarray:
        a = np.asarray(q, dtype=float)
        if a.shape != (self.n_joints,):
            raise KinematicsError(f"expected {self.n_joints} joint values, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise KinematicsError("joint values must be finite")
        return a

    @abc.abstractmethod
    def forward(self, q) -> np.ndarray:
        """``T_base_tool`` (4x4) for joint values ``q``."""

    @abc.abstractmethod
    def inverse(self, T_base_tool, q_seed=None) -> np.ndarray:
        """Joint values reaching ``T_base_tool``; raises ``ReachabilityError``/``JointLimitError``."""

    @abc.abstractmethod
    def jacobian(self, q) -> np.ndarray:
        """Geometric Jacobian (6, n): rows are tool-tip linear (mm/s) then angular (rad/s)
        velocity in the base frame, per unit joint velocity."""

    def is_singular(self, q, tol: float = 1e-3) -> bool:
        J = self.jacobian(q)
        s = np.linalg.svd(J, compute_uv=False)[: min(J.shape)]
        return bool(s[-1] / s[0] < tol)

    def within_limits(self, q, tol: float = 1e-9) -> bool:
        return self.joint_limits.violated(self._q(q), tol).size == 0
