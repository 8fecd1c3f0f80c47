"""Robot kinematics behind one interface (``base.Kinematics``): the paper's hybrid
robot (``hybrid5``) and a generic DH serial arm (``serial_dh``)."""
from core.robot.kinematics.base import (JointLimitError, JointLimits, Kinematics, KinematicsError,
                                  ReachabilityError, SingularityError)
from core.robot.kinematics.hybrid5 import Hybrid5, Hybrid5Parameters, load_hybrid5
from core.robot.kinematics.serial_dh import SerialDH, load_serial_dh

__all__ = ["JointLimitError", "JointLimits", "Kinematics", "KinematicsError",
           "ReachabilityError", "SingularityError", "Hybrid5", "Hybrid5Parameters",
           "load_hybrid5", "SerialDH", "load_serial_dh"]
