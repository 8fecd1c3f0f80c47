"""Slicer in the workstation: the status pill through disabled / waiting / connected / fault, and
File → Export / Import trajectories (the functions the actions call)."""
from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from app.config import Config, load_defaults
from app.main import Workstation
from app.slicer_gui import export_trajectories, import_trajectories
from core.planning.markups import MarkupsError
from devices.base import DeviceStatus


def _config(**igtl):
    values = load_defaults().as_dict()
    values["igtl"].update(igtl)
    return Config(values)


@pytest.fixture
def make_station(qtbot, tmp_path):
    made = []

    def make(config):
        values = config.as_dict()
        values["session"]["data_dir"] = str(tmp_path / "sessions")
        st = Workstation(Config(values), settings=QSettings(str(tmp_path / "f.ini"), QSettings.Format.IniFormat),
                         panels=False)
        qtbot.addWidget(st.window)
        made.append(st)
        return st
    yield make
    for st in made:
        st.shutdown()
        st.window.close()


def test_pill_disabled_by_default_and_menu_actions_exist(make_station):
    st = make_station(load_defaults())
    bar = st.window.status_bar
    assert bar.status("slicer")[0] is DeviceStatus.DISCONNECTED
    assert "Slicer: disabled" in bar.pill("slicer").text()
    assert "enabled = true" in bar.pill("slicer").toolTip()
    names = {a.objectName() for a in st.window.findChildren(type(st.resume_action))}
    assert {"action_export_slicer", "action_import_slicer"} <= names


def test_pill_waits_connects_and_waits_again(make_station, qtbot):
    st = make_station(_config(enabled=True, port=0, heartbeat_s=0.2))
    st.slicer.start()
    pill = st.window.status_bar.pill("slicer")
    assert "Slicer: waiting" in pill.text()
    peer = socket.create_connection(("127.0.0.1", st.slicer.link.bound_port), timeout=2)
    qtbot.waitUntil(lambda: "Slicer: connected" in pill.text(), timeout=5000)
    assert st.window.status_bar.status("slicer")[0] is DeviceStatus.CONNECTED
    peer.close()
    qtbot.waitUntil(lambda: "Slicer: waiting" in pill.text(), timeout=5000)
    assert "waiting for Slicer on port" in pill.toolTip()


def test_pill_fault_when_the_port_is_taken(make_station):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        st = make_station(_config(enabled=True, port=taken.getsockname()[1]))
        st.slicer.start()
        assert st.window.status_bar.status("slicer")[0] is DeviceStatus.FAULT
        assert "cannot listen" in st.window.status_bar.pill("slicer").toolTip()
    finally:
        taken.close()


def _put(session, name, e, t):
    level, side = name.split()
    tid = session.plans.add(level, side, name=name)
    session.plans._put(tid, dataclasses.replace(session.plans.get(tid), entry_mm=e, target_mm=t))
    return tid


def test_export_then_import_into_an_empty_plan(make_station, tmp_path):
    st = make_station(load_defaults())
    s = st.session
    _put(s, "L4 left", (10.0, -20.0, 30.5), (14.0, 5.25, -10.0))
    _put(s, "L4 right", (-11.0, -19.0, 31.0), (-15.0, 6.0, -9.5))
    s.plans.add("L5", "left")                                       # no 3D: left out, said so
    path = tmp_path / "plan.mrk.json"
    said = export_trajectories(s, path)
    assert "exported 2 trajectories" in said and "L5 left" in said
    before = s.plans.trajectories()[:2]
    for tid in s.plans.ids():
        s.plans.remove(tid)
    said = import_trajectories(s, path)
    assert "imported 2 trajectories" in said
    after = s.plans.trajectories()
    assert [t.name for t in after] == ["L4 left", "L4 right"]
    for a, b in zip(before, after):
        assert np.allclose(a.entry_mm, b.entry_mm, atol=1e-9) and np.allclose(a.target_mm, b.target_mm, atol=1e-9)
    s.plans.history.undo()
    assert [t.name for t in s.plans.trajectories()] == ["L4 left"]   # each import one undo step
    import_trajectories(s, path)                                      # same names: replaced, not doubled
    assert len(s.plans) == 2


def test_bad_file_and_empty_plan_are_one_line(make_station, tmp_path):
    st = make_station(load_defaults())
    bad = tmp_path / "bad.mrk.json"
    bad.write_text("{not json")
    with pytest.raises(MarkupsError) as e:
        import_trajectories(st.session, bad)
    assert str(e.value).startswith("Import from Slicer refused:") and "\n" not in str(e.value)
    assert len(st.session.plans) == 0
    with pytest.raises(MarkupsError, match="Export to Slicer refused"):
        export_trajectories(st.session, tmp_path / "out.mrk.json")
    _put(st.session, "L4 left", (0.0, 0.0, 0.0), (0.0, 40.0, 0.0))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(MarkupsError, match="cannot write"):
        export_trajectories(st.session, tmp_path / "a_file" / "x.mrk.json")


class _ControlProcess:
    """The control process's shared memory as ``RobotController.latest`` reads it: a new cycle per read."""

    def __init__(self, kin):
        self.kin, self.cycles = kin, 0

    def latest(self):
        self.cycles += 1
        q = self.kin.joints_for_pose([625.0 + 0.01 * self.cycles, 475.0, -135.0, 0.0, 0.0])
        return {"cycles": 10 + self.cycles, "heartbeat": float(self.cycles), "q": q}


def test_tool_pose_streams_from_the_control_process_not_the_gui_thread(make_station, qtbot):
    """Started with a robot, the link's feed thread reads the joints itself: poses keep coming while
    the GUI thread is blocked (no Qt event is processed during the wait below)."""
    import time
    from types import SimpleNamespace
    import pyigtl
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from waiting import until
    kin = load_hybrid5()
    st = make_station(_config(enabled=True, port=0, pose_rate_hz=200.0))
    st.robot = SimpleNamespace(controller=_ControlProcess(kin), kinematics=kin, shutdown=lambda: None)
    T_cage0_base = np.eye(4)
    T_cage0_base[:3, 3] = [-600.0, -450.0, 100.0]
    st.navigation = SimpleNamespace(frames=SimpleNamespace(T_cage0_base=T_cage0_base))
    st.slicer.start()
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=st.slicer.link.bound_port)
    try:
        assert until(lambda: st.slicer.link.connected)
        sent0 = st.slicer.stream.poses_sent
        time.sleep(0.3)                              # the GUI thread busy: no event loop runs
        assert st.slicer.stream.poses_sent >= sent0 + 5
        assert until(lambda: client.wait_for_message("FluoronavTool", timeout=0.1) is not None)
        msg = client.wait_for_message("FluoronavTool", timeout=1.0)
        # the pose is the guide in patient RAS through the base-frame calibration, at the joints
        # of one of the control cycles read
        def expected(k):
            q = kin.joints_for_pose([625.0 + 0.01 * k, 475.0, -135.0, 0.0, 0.0])
            return st.slicer.stream.T_ras_cage @ T_cage0_base @ kin.forward(q)
        err = min(np.abs(msg.matrix - expected(k)).max() for k in range(1, st.robot.controller.cycles + 1))
        assert err < 1e-3
    finally:
        client.stop()
        st.slicer.shutdown()
    n = st.slicer.stream.poses_sent
    time.sleep(0.1)
    assert st.slicer.stream.poses_sent == n          # shutdown ends the feed
