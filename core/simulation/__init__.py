"""The simulated operating room: image formation, II distortion, analytic objects, the scene."""
