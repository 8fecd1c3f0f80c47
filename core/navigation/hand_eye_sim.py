"""The hand-eye procedure in the simulated room, against the simulator's truth.

The controller knows the nominal robot (``load_hybrid5(hand_eye=None)``); the simulator moves a
``TrueRobot`` (seeded link, zero, backlash and compliance errors, and a cage mount a few mm and
about half a degree off the nominal one). The robot holds the cage at home for the first AP and
LAT; that pose's calibration gives the isocentre, which the next poses tilt the cage about
(``hand_eye_poses``), so the cage stays in both fields. The C-arm and the table never move.
Every pose is shot (AP and LAT, image intensifier corrected by one plate shot per view),
calibrated, and AX = XB solved by every method; the figures compare each method's mount and the
nominal one with the truth. The pick among methods is by residual only, never by the truth.
"""
from __future__ import annotations

import math

import numpy as np

from core.geometry.rigid import invert, rotation_angle
from core.navigation.hand_eye import HandEyeError, check_pose_plan, hand_eye_poses
from core.navigation.hand_eye_shots import Measurement, PoseShots, ShotsFolder, measure

__all__ = ["HOME_POSE", "mount_error", "simulate_hand_eye"]

HOME_POSE = (625.0, 475.0, -135.0, 0.0, 0.0)    # resources/robots/hybrid5.json home_pose (mm, rad)


def mount_error(T_est, T_true) -> tuple[float, float]:
    """(mm, deg) between two cage mounts: ``inv(T_true) @ T_est``'s translation and angle."""
    d = invert(T_true) @ np.asarray(T_est, float)
    return float(np.linalg.norm(d[:3, 3])), math.degrees(rotation_angle(d))


def simulate_hand_eye(seed: int = 0, n_poses: int = 5, tilt_deg: float = 20.0, shape=(256, 256),
                      kinematics=None, robot_errors=None, save_dir=None, progress=None) -> dict:
    """Run the procedure on the simulated room of ``seed`` (its robot: ``sample_robot_errors(seed)``,
    the same robot the GUI's simulated room moves for that seed). Returns ``measurement``
    (``Measurement``), ``truth`` (true ``T_flange_cage``), ``nominal``, ``errors`` (method ->
    (mm, deg) against the truth), ``nominal_error``, ``joints``. ``save_dir``: also write the
    shots as a ``--shots`` folder. ``progress(text)`` is told each step."""
    import torch
    from core.calibration.plate import PlateError, load_plate, plate_distortion
    from core.navigation.hand_eye_shots import calibrate_poses, write_shots_folder
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from core.simulation.block_phantom import block_phantom
    from core.simulation.robot_truth import TrueRobot, sample_robot_errors
    from core.simulation.scene import SimulatedOR
    from resources import path as resource_path
    check_pose_plan(n_poses, tilt_deg)                          # before minutes of rendering
    say = progress or (lambda _t: None)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    kin = kinematics or load_hybrid5(hand_eye=None)
    truth = TrueRobot(kin, robot_errors if robot_errors is not None else sample_robot_errors(seed, nominal=kin))
    say("building the simulated room")
    sim = SimulatedOR(seed=seed, phantom=block_phantom(4.0, seed=seed), shape=tuple(shape), render_device="cpu")
    q0 = kin.joints_for_pose(HOME_POSE)
    truth.move(q0)
    T_world_base = sim.T_world_cage @ invert(truth.cage(q0))      # where the room holds the cage at home
    plate_file = resource_path("plates", "default.json")
    plate = load_plate(plate_file)
    dist, plate_imgs = {}, {}
    for i, v in enumerate(("ap", "lat")):
        ps = sim.plate_shot(v, seed=seed * 131 + 97 + i)
        plate_imgs[v] = ps.image
        try:
            dist[v], _ = plate_distortion(plate, ps.image.pixels)
        except PlateError as e:
            raise HandEyeError(f"{v.upper()} plate: {e}") from None
    n_shot = 0

    def shoot(q) -> dict:
        nonlocal n_shot
        truth.move(q)
        sim.T_world_cage = T_world_base @ truth.cage(q)          # the cage rides on the flange
        out = {}
        for v in ("ap", "lat"):
            n_shot += 1
            out[v] = sim.acquire(v, seed=seed * 131 + n_shot).image
        return out

    say("pose 1: shots at the start pose")
    first = shoot(q0)
    cal0 = calibrate_poses(sim.cage, [PoseShots(q0, {v: im.pixels for v, im in first.items()})], dist)[0]
    centre = {v: np.array([(vc.image_shape[1] - 1) / 2, (vc.image_shape[0] - 1) / 2]) for v, vc in cal0.views.items()}
    iso_cage, _ = cal0.locate(centre["ap"], centre["lat"])
    pivot_base = (kin.cage(q0) @ np.append(iso_cage, 1.0))[:3]   # the controller's view: nominal mount
    Q = hand_eye_poses(kin, q0, pivot_base, n_poses, tilt_deg)
    images = [first]
    for k, q in enumerate(Q[1:], start=2):
        say(f"pose {k}: shots")
        images.append(shoot(q))
    if save_dir is not None:
        write_shots_folder(save_dir, list(zip(Q, images)), plate_imgs, resource_path("cages", "default.json"),
                           plate_file)
    say("calibrating each pose and solving AX = XB")
    folder = ShotsFolder(sim.cage, [PoseShots(q, {v: im.pixels for v, im in imgs.items()})
                                    for q, imgs in zip(Q, images)], dist)
    m: Measurement = measure(kin, folder)
    T_true = truth.T_flange_cage
    return {"measurement": m, "truth": T_true, "nominal": kin.T_flange_cage_nominal.copy(),
            "errors": {k: mount_error(X, T_true) for k, X in m.result.estimates.items()},
            "nominal_error": mount_error(kin.T_flange_cage_nominal, T_true), "joints": [q.tolist() for q in Q]}
