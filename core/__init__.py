"""Pure geometry, imaging, calibration, registration, planning, kinematics, control, simulation. No Qt, no VTK."""
