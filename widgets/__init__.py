"""Qt views. Thin: no geometry, no math."""
