"""Frames and rays (DESIGN.md conventions): ``rigid`` (4x4 ``T_a_b``, rotations, rays,
planes, closest points), ``cone_beam`` (a point source and a flat detector: the C-arm's
ideal camera), ``pixels`` (where a raw pixel lies in its image).

May import: numpy, scipy, ``core.formats``. A new camera model or frame helper goes here.
"""
