"""``fluoronav bench ui``: how fast the surgeon's screen answers.

- ``click_to_2d_overlay_ms`` {p50, p95}: the same clicks until both 2D viewers have been
  repainted with the new overlays (the 3D view's render not included).
- ``click_to_overlay_ms`` {p50, p95}: a synthetic left click sent to a viewer's scene
  at the projection of a point, until the planning controller has handled it and both
  viewers and the 3D view have been repainted (2D viewports repainted synchronously,
  then the event loop run until the 3D view's coalesced VTK render is done). Planning
  on two simulated shots (II distortion) of the spine phantom with their true
  calibration, built like ``tests/widgets/test_planning_gui.py``; the 3D view holds
  what the running app shows (the bone surface, the cage's balls, the robot, each
  shot's beam and image on its detector).
  Baseline: the planning math alone for the same clicks (two rays, epipolar line,
  tool bands in both views). Also ``render_3d_ms``: one full-detail frame of that
  scene, and one interactive frame (the coarse bone that edits draw first).
- ``image_fps``: a 1024² 16-bit image replaced in a ``FluoroViewer`` (preset levels,
  repaint) repeatedly. Baseline: a plain ``pyqtgraph.ImageItem`` with the same levels, fixed.
- ``startup_s``: ``python -c`` running ``app.main.run_gui`` in a subprocess until the
  main window first paints (parent clock before the spawn to the child's clock at
  that paint; ``startup_show_called_s``: to ``window.show()``, the difference being
  what the GUI thread does before it first paints). Baseline: a bare PySide6 QMainWindow.

Goals: click-to-overlay p95 <= 30 ms, >= 30 fps, start-up <= 3 s. Needs a display.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

DESCRIPTION = "GUI responsiveness: click-to-overlay latency, image fps, start-up time (needs DISPLAY)"
GOALS = {"click_to_overlay_p95_ms": 30.0, "image_fps": 30.0, "startup_s": 3.0}


def add_arguments(parser) -> None:
    parser.add_argument("--short", action="store_true", help="few repetitions (a smoke test)")
    parser.add_argument("--trajectories", type=int, default=6, help="trajectories planned by clicks")
    parser.add_argument("--frames", type=int, default=120, help="images replaced for image_fps")
    parser.add_argument("--startup-runs", type=int, default=3, help="start-ups measured (median)")
    parser.add_argument("--size", type=int, default=512, help="simulated shot size for the clicks (px)")
    parser.add_argument("--phantom", choices=("spine", "block"), default=None,
                        help="anatomy of the click scene (default: spine; block with --short)")


def _percentiles(ms) -> dict:
    a = np.asarray(ms, float)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "n": int(a.size)}


# --- click to overlay ----------------------------------------------------------------
def _scene(size: int, phantom: str = "spine"):
    from core.geometry.rigid import apply, invert
    from core.simulation.block_phantom import block_phantom
    from core.simulation.scene import SimulatedOR
    sim = SimulatedOR(seed=3, phantom=block_phantom(spacing_mm=4.0) if phantom == "block" else None,
                      shape=(size, size), field_diameter_mm=230.0)
    shots = {v: sim.acquire(v) for v in ("ap", "lat")}
    T_cage_world = invert(sim.T_world_cage)
    rng = np.random.default_rng(7)
    pairs = [(apply(T_cage_world, rng.uniform(-25, 25, 3) + [s * 20, 0, 0]),
              apply(T_cage_world, rng.uniform(-25, 25, 3) + [0, -45, 0])) for s in (-1, 1) * 50]
    return sim, shots, pairs


def _settled(app, window, ctrl, t0: float | None = None, two_d: list | None = None) -> None:
    """Both viewports painted and the 3D view's pending render done; with ``t0``, the time
    to the 2D repaint (before the 3D view's render) is appended to ``two_d`` in ms."""
    for v in window.viewers.values():
        v.graphics.viewport().repaint()
    if t0 is not None:
        two_d.append(1e3 * (time.perf_counter() - t0))
    app.processEvents()   # runs the 3D view's coalesced render (a zero-time timer)
    scene = getattr(ctrl, "scene", None)
    while scene is not None and getattr(scene, "_render_pending", False):
        app.processEvents()


def _room_in_3d(window, sim, shots) -> None:
    """The 3D view as the running app fills it: bone (with its interactive twin), cage, robot,
    and each shot's beam with its image on the detector."""
    from app.simulated_room import T_world_base_holding
    from core.robot.kinematics.hybrid5 import load_hybrid5
    from widgets.scene.anatomy import CageActors, bone_surface, frame_patient, show_bone
    from widgets.scene.robot import RobotSceneActors, load_cage_balls
    sv = window.scene_view
    mesh = bone_surface(sim.volume)
    show_bone(sv, mesh)
    cage = CageActors(sim.cage)
    cage.set_transform(sim.T_world_cage)
    sv.set_actor("cage", cage.assembly, render=False)
    kin = load_hybrid5()
    q = kin.joints_for_pose([625, 475, -135, 0, 0])
    robot = RobotSceneActors(kin, load_cage_balls())
    robot.update(q)
    robot.set_transform(T_world_base_holding(kin, q, sim.T_world_cage))
    robot.cage_actor.VisibilityOff()
    sv.set_actor("robot", robot.assembly, render=False)
    from app.scene_shots import BEAM_COLOURS, actor_name, grid_n
    from core.calibration.frustum import frustum_from_geometry
    from widgets.scene.shots import ShotActor, texture_array
    keep = [cage, robot]
    for view, shot in shots.items():
        actor = ShotActor(BEAM_COLOURS[view])
        actor.set_frustum(frustum_from_geometry(shot.geometry_world, shot.distortion, n=grid_n(shot.image.shape)))
        actor.set_image(texture_array(shot.image))
        sv.set_actor(actor_name(view), actor.assembly, render=False)
        keep.append(actor)
    frame_patient(sv, mesh.vertices)
    window._bench_keep = keep


def _render_ms(scene_view, interactive: bool, n: int = 10) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        scene_view.render(interactive=interactive)
        ts.append(1e3 * (time.perf_counter() - t0))
    scene_view.render()
    return round(float(np.median(ts)), 2)


def _click_bench(n_traj: int, size: int, phantom: str = "spine") -> tuple[list, list, dict]:
    from PySide6.QtCore import QSettings
    from core.simulation.truth_calibration import TruthCalibration
    from widgets.viewers.synthetic_input import click_pixel
    from app.main import create_application
    from app.planning import PALETTE, PlanBook, PlanningController
    from core.planning.two_view import epipolar_line, tool_band
    from widgets.main_window import MainWindow
    from widgets.panels.planning_panel import PlanningPanel

    app = create_application()
    sim, shots, pairs = _scene(size, phantom)
    calib = TruthCalibration(shots)
    settings = QSettings(os.path.join(tempfile.mkdtemp(prefix="fluoronav-bench-"), "ui.ini"),
                         QSettings.Format.IniFormat)
    window = MainWindow(settings)
    for v, s in shots.items():
        window.viewers[v].set_image(s.image)
    model = PlanBook(calib)
    panel = PlanningPanel(colours=PALETTE)
    if "Planning" not in window.docks:
        window.add_dock("Planning", panel, "right")
    ctrl = PlanningController(model, window.viewers, panel, window.scene_view, confirm=lambda _t: True,
                              T_scene_cage=sim.T_world_cage, parent=window)
    window.resize(1600, 960)
    window.show()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    _room_in_3d(window, sim, shots)
    render = {"full_detail": _render_ms(window.scene_view, False),
              "interactive": _render_ms(window.scene_view, True),
              "software_opengl": bool(window.scene_view.software_gl)}
    gui_ms, math_ms, two_d_ms = [], [], []
    for entry, target in pairs[:n_traj]:
        ctrl.new_trajectory()
        _settled(app, window, ctrl)
        uv_e, uv_t = calib.project(entry), calib.project(target)
        for uv in (uv_e, uv_t):
            for view in ("ap", "lat"):
                t0 = time.perf_counter()
                click_pixel(window.viewers[view], *uv[view][0])
                _settled(app, window, ctrl, t0, two_d_ms)
                gui_ms.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()          # the baseline: the same work without any drawing
        for uv in (uv_e, uv_t):
            epipolar_line(calib, "ap", uv["ap"][0], "lat", shape=shots["lat"].image.shape)
            calib.locate(uv["ap"][0], uv["lat"][0])
        e, _ = calib.locate(uv_e["ap"][0], uv_e["lat"][0])
        t, _ = calib.locate(uv_t["ap"][0], uv_t["lat"][0])
        for view in ("ap", "lat"):
            tool_band(calib, view, e, t, 4.5)
        math_ms.extend([1e3 * (time.perf_counter() - t0) / 4] * 4)
    window.close()
    window.deleteLater()
    app.processEvents()
    render["two_d_ms"] = two_d_ms
    return gui_ms, math_ms, render


# --- image fps -----------------------------------------------------------------------
def _frames(n: int = 8, size: int = 1024) -> list:
    from core.imaging.fluoro_image import FluoroImage
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    base = 20000 + 15000 * np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 3) ** 2))
    return [FluoroImage((base + rng.normal(0, 800, base.shape)).clip(0, 65535).astype(np.uint16))
            for _ in range(n)]


def _fps(show, repaint, frames, n: int) -> float:
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    show(frames[0])
    repaint()
    app.processEvents()
    t0 = time.perf_counter()
    for i in range(n):
        show(frames[i % len(frames)])
        repaint()
        app.processEvents()
    return n / (time.perf_counter() - t0)


def _fps_bench(n: int) -> tuple[float, float]:
    import pyqtgraph as pg
    from app.main import create_application
    from widgets.viewers.fluoro_viewer import FluoroViewer
    create_application()
    frames = _frames()
    viewer = FluoroViewer("ap")
    viewer.resize(900, 900)
    viewer.show()
    fps = _fps(viewer.set_image, viewer.graphics.viewport().repaint, frames, n)
    viewer.close()
    plain = pg.GraphicsView()
    vb = pg.ViewBox(lockAspect=True, invertY=True)
    plain.setCentralItem(vb)
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(item)
    plain.resize(900, 900)
    plain.show()
    from widgets.viewers.fluoro_viewer import preset_levels
    levels = preset_levels(frames[0].pixels, "auto")   # the same windowing work as the viewer's
    base = _fps(lambda f: item.setImage(f.pixels, autoLevels=False, levels=levels),
                plain.viewport().repaint, frames, n)
    plain.close()
    return fps, base


# --- start-up ------------------------------------------------------------------------
_PAINT_HOOK = """
import os, sys, time
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication
class _FirstPaint(QObject):
    def eventFilter(self, obj, ev):
        if ev.type() == QEvent.Type.Paint and obj.isWidgetType() and obj.window().isVisible():
            print("FLUORONAV_SHOWN", repr(time.time()), flush=True)
            os._exit(0)
        return False
_hook = _FirstPaint()
def _install():
    QApplication.instance().installEventFilter(_hook)
"""

_CHILD_APP = _PAINT_HOOK + """
import widgets.main_window as mw
_show = mw.MainWindow.show
def _shown(self):
    print("FLUORONAV_SHOW_CALLED", repr(time.time()), flush=True)
    _install()
    _show(self)
mw.MainWindow.show = _shown
from app.main import run_gui
sys.exit(run_gui(None))
"""

_CHILD_BARE = _PAINT_HOOK + """
from PySide6.QtWidgets import QMainWindow
app = QApplication(sys.argv[:1])
w = QMainWindow()
w.resize(1600, 960)
_install()
w.show()
sys.exit(app.exec())
"""


def _startup(code: str, timeout_s: float = 150.0) -> tuple[float, float | None]:
    """(seconds to the first paint, seconds to ``show()``; None for a child that does not say).

    The child runs in its own session, its output goes to a file that is polled (a
    process the workstation starts, e.g. the robot's control process, keeps a pipe
    open), and the whole group is killed once the child has said it painted."""
    home = tempfile.mkdtemp(prefix="fluoronav-bench-home-")
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(home, "config"), XDG_DATA_HOME=os.path.join(home, "data"),
               HOME=home)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.DEVNULL, env=env,
                                cwd=root, start_new_session=True)
        try:
            text = ""
            while time.time() - t0 < timeout_s and "FLUORONAV_SHOWN" not in text:
                if proc.poll() is not None:
                    time.sleep(0.1)
                out.seek(0)
                text = out.read()
                if proc.poll() is not None and "FLUORONAV_SHOWN" not in text:
                    break
                time.sleep(0.05)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # the child's own group: it and what it started
            except ProcessLookupError:
                pass
            proc.wait()
    times = {line.split()[0]: float(line.split()[1]) - t0 for line in text.splitlines()
             if line.startswith("FLUORONAV_") and len(line.split()) == 2}
    if "FLUORONAV_SHOWN" in times:
        return times["FLUORONAV_SHOWN"], times.get("FLUORONAV_SHOW_CALLED")
    when = "after show()" if "FLUORONAV_SHOW_CALLED" in times else "before show()"
    if proc.returncode not in (None, -signal.SIGKILL):
        raise RuntimeError(f"the start-up run exited with code {proc.returncode} {when} without painting")
    raise RuntimeError(f"the window did not paint within {timeout_s:.0f} s ({when})")


# --- the benchmark -------------------------------------------------------------------
def run(args) -> dict:
    if not os.environ.get("DISPLAY"):
        from app.cli import CommandError
        raise CommandError("bench ui needs a display: set DISPLAY (e.g. start Xvfb :96 -screen 0 "
                           "1920x1080x24 +extension GLX & and export DISPLAY=:96)")
    short = getattr(args, "short", False)
    n_traj = 1 if short else max(1, args.trajectories)
    frames = 10 if short else max(5, args.frames)
    runs = 1 if short else max(1, args.startup_runs)
    phantom = getattr(args, "phantom", None) or ("block" if short else "spine")
    gui_ms, math_ms, render = _click_bench(n_traj, min(args.size, 256) if short else args.size, phantom)
    fps, fps_base = _fps_bench(frames)
    errors = []
    try:
        app_runs = [_startup(_CHILD_APP, 60.0 if short else 150.0) for _ in range(runs)]
    except RuntimeError as e:      # the other figures still count; the error is reported
        app_runs, errors = [(float("nan"), float("nan"))], [f"startup: {e}"]
    startup = [r[0] for r in app_runs]
    bare = [_startup(_CHILD_BARE)[0] for _ in range(runs)]
    click = _percentiles(gui_ms)
    out = {
        "click_to_2d_overlay_ms": _percentiles(render.pop("two_d_ms")),
        "click_to_overlay_ms": click,
        "click_baseline_math_ms": _percentiles(math_ms),
        "render_3d_ms": render,
        "click_phantom": phantom,
        "image_fps": round(fps, 1),
        "image_fps_baseline_plain_imageitem": round(fps_base, 1),
        "startup_s": round(statistics.median(startup), 2),
        "startup_show_called_s": round(statistics.median(float("nan") if r[1] is None else r[1]
                                                         for r in app_runs), 2),
        "startup_baseline_bare_qt_s": round(statistics.median(bare), 2),
        "goals": GOALS,
        "goals_met": {"click_to_overlay_p95_ms": click["p95"] <= GOALS["click_to_overlay_p95_ms"],
                      "image_fps": fps >= GOALS["image_fps"],
                      "startup_s": statistics.median(startup) <= GOALS["startup_s"]},
        "load": {"cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2)},
        "errors": errors,
    }
    if errors:
        out["startup_s"] = out["startup_show_called_s"] = None
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse
    p = argparse.ArgumentParser()
    add_arguments(p)
    print(json.dumps(run(p.parse_args())))
