"""CT-free pedicle planning: a per-level lumbar statistical shape model fitted to two calibrated shots.

``model.shape_model(level)`` builds the model from phantom vertebrae of its family
(``samples``); ``fit.autoplan(model, calibration, clicks, images)`` fits it to six clicks and
then to both shots' edges and returns the vertebra mesh and its two pedicle trajectories in
the cage frame (to be proposed to the surgeon, never used unreviewed), or ``AutoPlanError``.
``cases`` and ``evaluate`` are the honest evaluation (held-out vertebrae, ``bench autoplan``).
"""
