"""Start-up order (the goal: start-up <= 3 s): the window paints first, the devices start after.

The simulated C-arm builds its phantom in a thread as soon as the devices start; before
the first paint that thread would hold the GIL through the first frame.
"""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from app.config import load_defaults
from app.main import Workstation

pytestmark = pytest.mark.gui


@pytest.fixture
def station(qtbot, tmp_path):
    st = Workstation(load_defaults(), settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     panels=False)
    qtbot.addWidget(st.window)
    yield st
    st.shutdown()
    st.window.close()


def test_first_painted_once_after_the_window_shows(station, qtbot):
    seen = []
    station.window.first_painted.connect(lambda: seen.append(station.window.isVisible()))
    with qtbot.waitSignal(station.window.first_painted, timeout=5000):
        station.window.show()
    assert seen == [True]
    station.window.resize(station.window.width() + 40, station.window.height())
    station.window.repaint()
    qtbot.wait(50)
    assert seen == [True], "first_painted is emitted once, not on every paint"


def test_devices_start_once_however_often_start_is_called(station, qtbot, monkeypatch):
    calls = []
    monkeypatch.setattr(station.devices, "start", lambda: calls.append(1))
    station.window.first_painted.connect(station.start)
    with qtbot.waitSignal(station.window.first_painted, timeout=5000):
        station.window.show()
    qtbot.wait(20)
    station.start()   # the fallback timer of run_gui
    assert calls == [1]


def test_cyclic_garbage_is_collected_on_the_gui_thread(qtbot):
    """A cycle that becomes garbage while a worker thread allocates is finalised by the
    GUI thread's timer, never by the worker."""
    import gc
    import threading

    from app.main import collect_garbage_on_the_gui_thread

    finalised_in = []

    class Node:
        def __del__(self):
            finalised_in.append(threading.current_thread().name)

    collector = collect_garbage_on_the_gui_thread(interval_s=0.05)
    try:
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b

        kept = []

        def allocate():   # containers kept alive: the generation-0 count passes its threshold
            kept.extend([i] for i in range(5 * gc.get_threshold()[0]))
        worker = threading.Thread(target=allocate, name="device-worker")
        worker.start()
        worker.join()
        assert finalised_in == [] and gc.get_count()[0] > gc.get_threshold()[0]
        qtbot.waitUntil(lambda: len(finalised_in) == 2, timeout=3000)
        assert set(finalised_in) == {threading.main_thread().name}
    finally:
        collector.timer.stop()
        gc.enable()
