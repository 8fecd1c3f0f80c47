"""Pedicle trajectories: ``two_view`` (clicks in the AP and LAT shots -> 3D entry and
target, epipolar curves, angles, the plan file), ``grading`` (Gertzbein-Robbins grade of
a screw against the phantom's pedicle truth).

May import: ``core.geometry``, ``core.formats``, ``core.simulation.phantom`` (the truth
types that grading reads). A new planning method (CT-free, automatic) goes here.
"""
