"""fluoronav's pure library: no Qt, no VTK, never ``app``, ``widgets`` or ``devices``.

Rooms, by what they mean in the operating room (lower rooms never import upper ones;
``tests/test_architecture.py`` runs the import-linter contracts that say so):

- ``formats``      the project's files: atomic writing, JSON Schemas of each format.
- ``geometry``     rigid transforms, rays, the cone-beam camera, where a shot lies in 3D.
- ``imaging``      images as they came (DICOM, PNG/TIFF), CT series and volumes, the shot store.
- ``calibration``  beads, cage and plate files, labelling, distortion, the two-view models.
- ``planning``     trajectories from clicks in two views, Gertzbein-Robbins grading.
- ``robot``        kinematics, motion limits, admittance, tool-weight compensation.
- ``registration`` 2D/3D registration of a model to calibrated shots (room for it).
- ``navigation``   plan -> robot pose, closed-loop correction, verification (room for it).
- ``simulation``   the simulated operating room: phantom CT, DRR, image formation, scene.
"""
