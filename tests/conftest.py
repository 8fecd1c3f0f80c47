"""Shared fixtures: keep the tests away from the user's real config, data and settings."""
from __future__ import annotations

import gc
import os

import pytest


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """XDG config/data homes in a temporary folder, so no test reads or writes ``~``."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home


@pytest.fixture(scope="session", autouse=True)
def isolated_qsettings(tmp_path_factory):
    """QSettings of every test (window layout, ...) under a temporary folder, never ``~``."""
    from PySide6.QtCore import QSettings
    folder = str(tmp_path_factory.mktemp("qsettings"))
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, folder)
    return folder


@pytest.fixture
def qsettings_path(tmp_path):
    """A folder for a test's own QSettings files (``QSettings(str(path / "x.ini"), IniFormat)``)."""
    from PySide6.QtCore import QSettings
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))
    yield tmp_path


@pytest.fixture(autouse=True)
def gui_garbage_collected_on_the_gui_thread(request):
    """After a GUI test, collect its cyclic garbage here, on the GUI thread: left to the
    collector, a Qt widget or VTK window in a reference cycle would be finalised by whichever
    thread next allocates (a device worker, a control loop), which can hang or crash."""
    yield
    if "gui" in request.keywords:
        gc.collect()


@pytest.fixture(scope="module")
def module_scene_view(qapp):
    """One shown 3D view (480x360) per test module: each new OpenGL context costs time.
    Tests that add props remove them (or use a fixture of their module that does)."""
    from widgets.scene.view import SceneView
    v = SceneView()
    v.resize(480, 360)
    v.show()
    qapp.processEvents()
    yield v
    v.shutdown()
    v.close()
    v.deleteLater()


def pytest_collection_modifyitems(config, items):
    """GUI tests need a real X server: skip them, saying why, when none is set."""
    if os.environ.get("DISPLAY"):
        return
    skip = pytest.mark.skip(reason="needs a real X server: set DISPLAY (scripts/run-tests.sh starts Xvfb)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)
