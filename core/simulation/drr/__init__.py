"""Digitally reconstructed radiographs: cone-beam line integrals of attenuation.

- ``shear_warp``: the fast CPU renderer (Joseph's method as warped slices, OpenCV).
- ``joseph_torch``: the same sampling in torch, differentiable w.r.t. pose, for GPUs.
- ``siddon``: the exact, slow reference (voxels as constant boxes).
- ``DrrRenderer``: picks the shear-warp on the CPU or the torch twin on a GPU.
Every renderer returns ``∫ μ dl`` (dimensionless) per detector pixel, float32 (rows, cols).
"""
from core.simulation.drr.volume_grid import DrrError, MuGrid
from core.simulation.drr.shear_warp import ShearWarpRenderer, render_drr
from core.simulation.drr.siddon import siddon_drr
from core.simulation.drr.joseph_torch import joseph_drr_torch, pose_matrix_torch
from core.simulation.drr.renderer import DrrRenderer

__all__ = ["DrrError", "MuGrid", "ShearWarpRenderer", "render_drr", "siddon_drr",
           "joseph_drr_torch", "pose_matrix_torch", "DrrRenderer"]
