"""The 3D view (VTK) and what it draws: anatomy and cage, the robot, each shot's beam and
image, trajectories. A new 3D prop goes here."""
