"""One renderer for the app: the OpenCV shear-warp on the CPU, the torch Joseph twin on a GPU."""
from __future__ import annotations

import numpy as np

from core.geometry.cone_beam import ConeBeamGeometry
from core.simulation.drr.shear_warp import ShearWarpRenderer
from core.simulation.drr.volume_grid import DrrError, MuGrid


def _pick(device: str) -> str:
    if device == "auto":
        try:
            import torch
            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # torch is a dependency; stay usable without it
            return "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DrrError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


class DrrRenderer:
    """``render(geometry)`` -> (rows, cols) float32 line integrals, on the chosen device.

    ``device="auto"``: a CUDA GPU when torch sees one, else the CPU. Both paths
    sample as Joseph (bilinear in slices across the main axis); they agree to
    NCC ≥ 0.999 (tests/core/simulation/test_drr.py). ``render(geometry, level)``
    passes a pyramid level to the CPU renderer (``ShearWarpRenderer``: None = the
    level the detector's ray pitch calls for, 0 = the full grid, 1-2 = faster and
    coarser); the GPU path always renders the full grid. ``render_many`` renders
    several geometries (e.g. the AP and LAT shots of one registration pose).
    """

    def __init__(self, grid: MuGrid, device: str = "auto", air_mu: float = 0.0):
        self.grid, self.device = grid, _pick(device)
        self._cpu = ShearWarpRenderer(grid, air_mu=air_mu) if self.device == "cpu" else None
        self._gpu = None

    def render_many(self, geometries, level: int | None = None) -> list:
        return [self.render(g, level) for g in geometries]

    def render(self, geometry: ConeBeamGeometry, level: int | None = None) -> np.ndarray:
        if self._cpu is not None:
            return self._cpu.render(geometry, level)
        import torch
        from core.simulation.drr.joseph_torch import joseph_drr_torch
        if self._gpu is None:
            self._gpu = (torch.from_numpy(self.grid.mu).to(self.device),
                         torch.from_numpy(self.grid.T_world_voxel).to(self.device))
        with torch.no_grad():
            return joseph_drr_torch(*self._gpu, geometry, slice_chunk=64).float().cpu().numpy()
