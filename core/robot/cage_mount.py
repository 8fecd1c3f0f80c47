"""The cage's measured mount on the flange, stored with the robot's configuration.

``fluoronav handeye --write`` (``core.navigation.hand_eye``) measures ``T_flange_cage`` and
stores it, as a ``fluoronav.hand_eye/1`` record, in the site's configuration:
``$XDG_CONFIG_HOME/fluoronav/robots/<robot file stem>.hand_eye.json`` (``~/.config`` when unset),
beside the user's ``config.toml``. The robot file (the design, shipped read-only) keeps its
nominal ``T_flange_cage``; ``load_hybrid5`` uses the measured one when it is there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core.geometry.rigid import is_rigid
from core.robot.kinematics.base import KinematicsError

__all__ = ["FORMAT", "cage_mount_path", "read_cage_mount", "describe_mount"]

FORMAT = "fluoronav.hand_eye/1"
_AGAIN = "measure the mount again (fluoronav handeye ... --write) or delete the file to use the nominal one"


def cage_mount_path(robot_file) -> Path:
    """Where the measured mount of the robot described by ``robot_file`` is kept."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "fluoronav" / "robots" / f"{Path(robot_file).stem}.hand_eye.json"


def read_cage_mount(path) -> dict:
    """The stored record as a dict, its ``T_flange_cage`` checked (format, a finite rigid 4x4);
    KinematicsError (one line naming the file and what to do) otherwise."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise KinematicsError(f"{p}: cannot read the measured cage mount: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise KinematicsError(f"{p}: not a JSON file ({str(e).splitlines()[0]}): {_AGAIN}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise KinematicsError(f"{p}: hand-eye record: format is {got!r}, expected {FORMAT!r}: {_AGAIN}")
    try:
        T = np.asarray(doc["T_flange_cage"], float)
    except (KeyError, TypeError, ValueError) as e:
        raise KinematicsError(f"{p}: hand-eye record: missing or malformed T_flange_cage ({e}): {_AGAIN}") from None
    if T.shape != (4, 4) or not is_rigid(T, 1e-6):
        raise KinematicsError(f"{p}: hand-eye record: T_flange_cage is not a finite rigid 4x4 transform: {_AGAIN}")
    return {**doc, "T_flange_cage": T}


def describe_mount(doc, path) -> str:
    """One line: when, how, from how many poses and how well the mount was measured, and where."""
    method = doc.get("method", "an unknown method")
    r = (doc.get("residuals") or {}).get(method) or {}
    try:
        res = f"residual {float(r['translation_mm']):.3f} mm, {float(r['rotation_deg']):.3f} deg"
    except (KeyError, TypeError, ValueError):
        res = "no residual recorded"
    return (f"measured {doc.get('measured_at', 'at an unknown date')} by {method} from "
            f"{doc.get('n_poses', '?')} poses ({res}), {path}")
