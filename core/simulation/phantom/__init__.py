"""Procedural lumbar spine phantom CT (T12-S1) with per-level ground truth.

``make_spine_phantom(...)`` returns a ``SpinePhantom``: ``.volume`` (HU, world =
patient LPS: x left, y posterior, z superior; origin at the centre of L3's
body) and ``.levels[name]`` = ``VertebraTruth`` with both ``PedicleTruth``.
Anatomy is built from smooth signed-distance primitives (anti-aliased edges)
sized after published lumbar morphometry (``resources/phantom/``); the pedicles
drawn are the pedicles graded (``core.planning.grading``).
"""
from core.simulation.phantom.anatomy import CANONICAL_LEVELS, LevelParams, PhantomError
from core.simulation.phantom.build import SpinePhantom, make_spine_phantom
from core.simulation.phantom.truth import SIDES, PedicleTruth, VertebraTruth

__all__ = ["make_spine_phantom", "SpinePhantom", "VertebraTruth", "PedicleTruth", "PhantomError",
           "CANONICAL_LEVELS", "SIDES", "LevelParams"]
