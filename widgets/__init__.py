"""Qt views, thin: no geometry, no math, no session state of their own. They render what
``app`` hands them and call one ``app`` or ``core`` function per action; they never import
``app`` (checked by ``tests/test_architecture.py``).

``viewers`` (2D shots), ``scene`` (3D), ``panels`` (docks and bars), ``wizard`` (calibration),
``main_window`` (the window that holds them).
"""
