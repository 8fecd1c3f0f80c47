"""The simulated operating room, the ground truth of every test and benchmark: ``phantom``
(procedural spine CT), ``drr`` (fast and exact radiograph renderers), ``fluoro`` (image
formation: Beer-Lambert, noise, balls, wires), ``distortion`` and ``plate`` (image-intensifier
law and plate shots), ``objects``, ``scene`` (C-arm + cage + robot + patient), ``truth_calibration``.

May import: every other room of ``core`` (it builds what the algorithms must recover); nothing
in ``core`` outside ``simulation`` imports it except ``planning.grading`` (pedicle truth) and
``registration`` (the renderer).
"""
