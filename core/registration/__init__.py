"""2D/3D registration: a 3D model (CT volume, shape model) fitted to the calibrated AP and
LAT shots by rendering and comparing (room for it; nothing here yet).

May import: ``core.geometry``, ``core.imaging``, ``core.calibration``, ``core.simulation.drr``.
"""
