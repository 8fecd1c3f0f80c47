"""The robot as mathematics: ``kinematics`` (the paper's hybrid 5-DoF robot, a DH arm),
``limits`` (the motion limits the control loop enforces), ``admittance`` (fuzzy variable
admittance for hand guiding), ``weight_compensation`` (tool-weight identification).

May import: numpy, scipy, ``core.geometry``, ``core.formats``. Drivers and the control
process that use these live in ``devices/``.
"""
