"""Resume session in the workstation: plan two trajectories by clicks on
calibrated simulated shots (256², the real calibration pipeline), let the autosave write
plan.json, then a NEW workstation resumes the folder and shows the same case: the same
images, the same two trajectories (table, both viewers, 3D) and the shots strip."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.config import load_defaults
from app.main import Workstation
from core.geometry.rigid import apply, invert
from core.planning.two_view import trajectory_angles
from widgets.viewers.synthetic_input import click_pixel

pytestmark = pytest.mark.gui

CALIB_NAME = "calibration-20261121-024000.json"


@pytest.fixture(scope="module")
def simulated():
    import torch
    torch.set_num_threads(2)
    from core.calibration import calibrate
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=11, phantom=block_phantom(4.0, seed=2), shape=(256, 256), detector="flat_panel")
    shots = {"ap1": sim.acquire("ap"), "lat1": sim.acquire("lat"), "ap2": sim.acquire("ap")}
    cal = calibrate(sim.cage, {v: shots[f"{v}1"].image.pixels for v in ("ap", "lat")})
    T_cage_world = invert(sim.T_world_cage)
    # two trajectories near the isocentre, in the cage frame: (entry, target)
    plans = [(apply(T_cage_world, np.array(e, float)), apply(T_cage_world, np.array(t, float)))
             for e, t in (([-25.0, 30.0, 5.0], [-8.0, -10.0, 0.0]), ([25.0, 30.0, 5.0], [8.0, -10.0, 0.0]))]
    return sim, {k: s.image for k, s in shots.items()}, cal, plans


def make_station(qtbot, tmp_path, name):
    settings = QSettings(str(tmp_path / f"{name}.ini"), QSettings.Format.IniFormat)
    st = Workstation(load_defaults(), settings=settings)
    st.session._root = tmp_path / "sessions"
    st.planning.confirm = lambda text: True
    qtbot.addWidget(st.window)
    st.window.resize(1500, 950)
    st.window.show()
    qtbot.waitExposed(st.window)
    return st


def close(st):
    st.shutdown()
    st.window.close()


def plan_by_clicks(st, cal, entry, target, rng):
    """N, then entry and target clicked at their projections + 1 px noise; returns the id."""
    ctrl = st.planning
    tid = ctrl.new_trajectory()
    for point in (entry, target):
        uv = cal.project(point)
        for view in ("ap", "lat"):
            a = rng.uniform(0, 2 * np.pi)
            u, v = uv[view] + [np.cos(a), np.sin(a)]
            click_pixel(st.window.viewers[view], u, v)
    return tid


def table_rows(st):
    panel = st.planning.panel
    return [{k: panel._rows[tid][k] for k in ("name", "length", "medial", "cranial", "diameter")}
            for tid in st.planning.model.ids()]


def test_a_new_workstation_resumes_the_plan_images_and_strip(qtbot, tmp_path, simulated):
    sim, images, cal, plans = simulated
    first = make_station(qtbot, tmp_path, "first")
    try:
        for key in ("ap1", "lat1", "ap2"):
            assert first.load_image(key[:-1], images[key])
        cal.save(first.session.folder / CALIB_NAME)
        first.session.set_calibration(cal)
        assert first.go_to_step("plan")
        for v in first.window.viewers.values():
            v.reset_view()
        QApplication.processEvents()
        rng = np.random.default_rng(7)
        tids = [plan_by_clicks(first, cal, e, t, rng) for e, t in plans]
        model = first.planning.model
        assert len(model) == 2 and all(model.get(t).complete for t in tids)
        for tid, (e, t) in zip(tids, plans):   # the clicks found the planned points
            assert np.linalg.norm(np.subtract(model.get(tid).entry_mm, e)) < 1.5
        saved = first.session.folder / "plan.json"
        qtbot.waitUntil(lambda: saved.exists() and not first.planning.autosave_timer.isActive(), timeout=3000)
        folder = first.session.folder
        before = model.trajectories()
        rows_before = table_rows(first)
        pixels = {v: first.session.image(v).pixels.copy() for v in ("ap", "lat")}
    finally:
        close(first)
    plan_bytes = saved.read_bytes()

    # the workstation restarts: a new one resumes the folder
    second = make_station(qtbot, tmp_path, "second")
    try:
        r = second.resume_session(folder)
        assert r is not None and not r.problems
        assert r.summary == (f"resumed session {folder.name}: 2 AP shots, 1 LAT shot, calibration {CALIB_NAME}, "
                             "plan: 2 trajectories, step plan")
        assert second.window.statusBar().currentMessage() == "R" + r.summary[1:]
        model, ctrl = second.planning.model, second.planning
        # the same plan: ids, names, level/side, colours, diameters, clicks and 3D points
        assert model.ids() == tids
        after = model.trajectories()
        for a, b in zip(after, before):
            assert (a.name, a.level, a.side, a.colour, a.diameter_mm) == (b.name, b.level, b.side, b.colour,
                                                                             b.diameter_mm)
            assert a.to_dict()["clicks"] == b.to_dict()["clicks"]
            assert np.abs(np.subtract(a.entry_mm, b.entry_mm)).max() < 1e-9
            assert np.abs(np.subtract(a.target_mm, b.target_mm)).max() < 1e-9
        assert second.session.plans.trajectories() == after
        assert after == before      # the records themselves: the same floats, bit for bit
        # the table: the same lengths and angles
        rows_after = table_rows(second)
        assert [r_["name"] for r_ in rows_after] == [r_["name"] for r_ in rows_before]
        for ra, rb in zip(rows_after, rows_before):
            for key in ("length", "medial", "cranial", "diameter"):
                assert ra[key] == pytest.approx(rb[key], abs=1e-6)
        for tid, ra in zip(tids, rows_after):
            t = model.get(tid)
            angles = trajectory_angles(t.entry_mm, t.target_mm, t.side, ctrl.patient_axes)
            assert ra["length"] == pytest.approx(angles.length_mm, abs=1e-9)
            assert ra["medial"] == pytest.approx(math.degrees(angles.medial_rad), abs=1e-9)
        assert ctrl.panel.table.rowCount() == 2
        # drawn in both viewers and in 3D
        for view in ("ap", "lat"):
            overlays = ctrl._overlays[view]
            assert set(overlays) == set(tids)
            assert all(o.band.isVisible() and o.handles["entry"].isVisible() for o in overlays.values())
        assert sorted(ctrl.scene.ids()) == sorted(tids)
        from widgets.scene.trajectories import actor_name
        tubes = [second.window.scene_view.actor(actor_name(t)) for t in tids]
        assert not any(a.GetVisibility() for a in tubes)   # until the simulated room has placed the cage
        # the same images on screen, the workflow on planning
        for view in ("ap", "lat"):
            np.testing.assert_array_equal(second.window.viewers[view]._raw, pixels[view])
        assert second.session.step == "plan" and second.window.workflow_bar.current == "plan"
        # the strip lists the saved shots, the one on screen highlighted
        strip = second.viewer_tools.strip
        assert (strip.count("ap"), strip.count("lat")) == (2, 1)
        assert [strip.label("ap", i) for i in range(2)] == ["1. ap-001.dcm", "2. ap-002.dcm"]
        assert (strip.current("ap"), strip.current("lat")) == (1, 0)
        # a click on the first AP brings it back from its file, without writing a copy
        assert second.viewer_tools.bring_back("ap", 0)
        np.testing.assert_array_equal(second.session.image("ap").pixels, images["ap1"].pixels)
        assert sorted(p.name for p in folder.glob("*.dcm")) == ["ap-001.dcm", "ap-002.dcm", "lat-001.dcm"]
        # loading the plan does not write it again
        qtbot.wait(800)
        assert saved.read_bytes() == plan_bytes
        # the simulated room, still being built at resume, frames the whole patient once ready:
        # the 3D view then comes back to the plan (once), as the planning screen showed it
        # and the resumed calibration holds at the cage's pose then (a robot move keeps it: the C-arm stayed)
        focused = []
        ctrl.scene.focus = lambda *a: focused.append(a)
        room = second.room
        assert room is not None and room.scene is None and room.T_world_cage_calibrated is None
        room.T_world_cage = sim.T_world_cage.copy()      # as the room does before it says so
        for _ in range(2):
            room.scene_ready.emit({"mesh": None, "cage": sim.cage, "T_world_cage": sim.T_world_cage})
        assert focused == [()] and "cage" in second.window.scene_view.actor_names()
        assert all(a.GetVisibility() for a in tubes)
        np.testing.assert_array_equal(room.T_world_cage_calibrated, sim.T_world_cage)
        moved = sim.T_world_cage.copy()
        moved[:3, 3] += [5.0, 0.0, 0.0]
        room.T_world_cage = moved                        # the robot moved it (set_cage_pose without a C-arm)
        room.robot_state({"q": list(room.home_q) if room.home_q is not None else [0.0] * 5})
        assert second.session.calibration is not None    # as for a calibration made in this session
        np.testing.assert_array_equal(room.T_world_cage_calibrated, sim.T_world_cage)   # still the shots' pose
        # a second resume in the same workstation is refused with one line
        assert second.resume_session(folder) is None
        assert second.window.statusBar().currentMessage().startswith("Resume refused: this session already has")
    finally:
        close(second)


def test_resume_refuses_while_acquiring_and_says_a_bad_folder_in_one_line(qtbot, tmp_path):
    st = make_station(qtbot, tmp_path, "third")
    try:
        assert st.resume_session(tmp_path / "nowhere") is None
        msg = st.window.statusBar().currentMessage()
        assert msg.startswith("Resume refused: ") and "is not a folder" in msg and "\n" not in msg
        st.devices._pending[99] = "ap"          # an AP shot on its way
        assert st.resume_session(tmp_path) is None
        assert st.window.statusBar().currentMessage() == ("Resume refused: an image is being acquired; "
                                                           "resume once it is in")
        del st.devices._pending[99]
        act = st.window.findChild(type(st.resume_action), "action_resume_session")
        file_menu = next(a.menu() for a in st.window.menuBar().actions() if a.text().replace("&", "") == "File")
        assert act is st.resume_action and act in file_menu.actions() and act.text() == "Resume session…"
    finally:
        close(st)
