"""A scripted case for the audit trail and the case report (tests/app/test_audit_report.py).

Through the session and the app's own functions, no Qt: simulated shots of the spine
phantom on a flat panel, the calibration run by the Qt-free workflow (rejected once,
then accepted), the L4 left pedicle planned from its true axis with a rename, an undo and
a redo, robot commands through the audit-wrapped client, an alignment, a STOP with its
Reset, a robot fault, a verification from two shots of a K-wire 1 mm off the plan, graded
against the phantom's pedicle. Run as ``python -m tests.app.audit_case FOLDER``: prints JSON.
"""
from __future__ import annotations

import json
import sys

import numpy as np

SHAPE = (384, 384)
TILT_DEG = 20.0                      # cranio-caudal tilt of both shots
WIRE_OFFSET_MM = (1.0, 0.0, 0.0)     # the wire's tip and entry off the plan (cage frame)


class ScriptedClient:
    """The robot client's command surface; what reached it, in order (after the audit)."""

    def __init__(self):
        self.sent = []

    def __getattr__(self, name):
        from app.audit import ROBOT_COMMANDS
        if name not in ROBOT_COMMANDS:
            raise AttributeError(name)
        return lambda *a, **k: self.sent.append(name)


def drive(folder: str) -> dict:
    from app.audit import watch_robot_client
    from app.calibration_workflow import CalibrationWorkflow
    from app.navigation import verification_from_shots
    from app.session import Session
    from core.geometry.rigid import apply, invert
    from core.simulation.instruments import KWire
    from core.simulation.phantom import make_spine_phantom
    from core.simulation.scene import SimulatedOR, default_T_world_cage
    from devices.base import DeviceStatus

    phantom = make_spine_phantom(seed=3, spacing_mm=2.0)
    ped = phantom.pedicle("L4", "left")
    # the C-arm centred on the pedicle, the cage over it, the AP tilted as for pedicles (as
    # ``sim run`` sets a case up): the wire in both fields, its axis not along the AP beam
    sim = SimulatedOR(seed=3, phantom=phantom, shape=SHAPE, detector="flat_panel", isocentre_mm=ped.isthmus_mm)
    T_wc = default_T_world_cage(sim.volume, sim.cage)
    T_wc[2, 3] += ped.isthmus_mm[2]
    sim.T_world_cage = T_wc
    session = Session(folder)
    session.set_device_status("carm", DeviceStatus.SIMULATED, "simulated C-arm")
    session.go_to_step("calibrate")
    shots = {v: sim.acquire(v, 0.0, TILT_DEG, seed=10 + i) for i, v in enumerate(("ap", "lat"))}
    for v, s in shots.items():
        session.set_image(v, s.image)
    wf = CalibrationWorkflow(session)
    wf.set_cage()
    wf.set_use_plate(False)
    for v, s in shots.items():
        wf.set_shot(v, s.image)
    wf.run_calibration()
    wf.reject("the technician wants a second look")
    for v, s in shots.items():
        wf.set_shot(v, s.image)
    wf.run_calibration()
    saved = wf.accept()
    cal = session.calibration

    T_cage_world = invert(sim.T_world_cage)
    entry, target = (apply(T_cage_world, np.asarray(p, float)) for p in (ped.entry_mm, ped.target_mm))
    book = session.plans
    tid = book.add("L4", "left")
    for kind, p in (("entry", entry), ("target", target)):
        for v in ("ap", "lat"):
            book.set_click(tid, kind, v, shots[v].project_raw(p[None])[0])
    book.set_fields(tid, name="L4 left screw")
    book.history.undo()
    book.history.redo()
    session.save_plan()
    traj = book.get(tid)

    session.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")
    client = ScriptedClient()
    watch_robot_client(session, client)
    client.hold_jog_task([0.1, 0, 0, 0, 0])
    client.release()
    client.identify_tool()
    client.follow_path("approach", np.zeros((3, 5)), 0.01)
    client.hold_path(True)
    session.set_alignment({"trajectory": tid, "tip_error_mm": 0.04, "angle_error_deg": 0.02, "inserted": False})
    client.stop()
    client.reset()
    session.set_device_status("robot", DeviceStatus.FAULT, "joint 3 following error 2.10 mm (limit 1.50 mm)")
    session.set_device_status("robot", DeviceStatus.SIMULATED, "simulated robot")

    # the wire in place, 1 mm off the plan; two verification shots, as Verify takes them
    off = np.asarray(WIRE_OFFSET_MM)
    wire_c = KWire(np.asarray(traj.entry_mm) + off, np.asarray(traj.target_mm) + off, 2.0, 100.0, "sharp")
    wire_w = KWire(apply(sim.T_world_cage, wire_c.entry_mm), apply(sim.T_world_cage, wire_c.tip_mm), 2.0, 100.0,
                   "sharp")
    images = {}
    for i, v in enumerate(("ap", "lat")):
        images[v] = sim.acquire(v, 0.0, TILT_DEG, instruments=[wire_w], seed=20 + i).image
        session.set_image(v, images[v])
    result = verification_from_shots(cal, images, traj, tid, pedicle=ped, T_pedicle_cage=sim.T_world_cage,
                                     truth_wire=wire_c)
    session.set_verification(result)
    record = result.to_dict()
    record["shots"] = {v: session.current_file(v) for v in ("ap", "lat")}
    session.save_record("verification", record)
    session.set_calibration(None, why="the C-arm was moved")
    return {"folder": str(session.folder), "calibration_file": saved.name, "sent": client.sent,
            "trajectory": {"name": traj.name, "entry_mm": list(traj.entry_mm), "target_mm": list(traj.target_mm)},
            "verification": {"entry_mm": result.record.entry_deviation_mm, "tip_mm": result.record.tip_deviation_mm,
                             "angle_deg": result.record.angle_deg, "grade": result.grade},
            "events": [(e["event"], e["role"]) for e in session.audit.events]}


if __name__ == "__main__":
    print(json.dumps(drive(sys.argv[1])))
