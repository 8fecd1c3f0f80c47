"""Docked panels and bars: C-arm, planning, robot (jog, hand guiding, STOP), log, device
status bar, workflow bar. A new device's panel goes here."""
