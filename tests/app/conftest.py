"""Fixtures shared by the session tests under tests/app."""
import pytest

CALIBRATION_SHAPE = (256, 256)   # the shots' size the shared calibration was made for


@pytest.fixture(scope="session")
def flat_panel_calibration():
    """A real calibration of simulated 256² flat-panel AP and LAT shots (a block phantom),
    made once per run: the session persistence tests save and resume it."""
    import torch
    torch.set_num_threads(1)
    from core.calibration import calibrate
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), shape=CALIBRATION_SHAPE, detector="flat_panel")
    shots = {v: sim.acquire(v) for v in ("ap", "lat")}
    return calibrate(sim.cage, {v: shots[v].image.pixels for v in shots}, {v: shots[v].distortion for v in shots})
