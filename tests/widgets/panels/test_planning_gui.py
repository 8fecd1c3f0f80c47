"""Planning in the main window by real mouse clicks on simulated AP and LAT shots.

Ground truth: the simulated operating room's C-arm geometry and image-intensifier
distortion give the true raw pixels of each pedicle's entry and target (the
phantom's ``PedicleTruth``); the clicks land there plus 1 px of seeded noise.
The calibration used is the simulator's true one (rays through the distortion),
so the test measures the planning, not the cage calibration.
"""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QGraphicsSceneMouseEvent

from app.planning import PALETTE, PlanBook, PlanningController
from core.geometry.rigid import apply, invert
from core.planning.two_view import PatientAxes
from core.simulation.truth_calibration import TruthCalibration
from widgets.main_window import MainWindow
from widgets.panels.planning_panel import PlanningPanel
from widgets.viewers.synthetic_input import click_pixel

pytestmark = pytest.mark.gui

SHAPE = (512, 512)  # the simulator default: 0.45 mm pixels at the detector, 0.28 mm at the spine


def _truth(sim):
    """The phantom's L4 pedicles: (entry, target) in the cage frame, level, side."""
    T_cage_world = invert(sim.T_world_cage)
    return [(apply(T_cage_world, np.asarray(p.entry_mm, float)), apply(T_cage_world, np.asarray(p.target_mm, float)),
             p.level, p.side) for p in sim.phantom_truth]


@pytest.fixture(scope="module")
def simulated():
    from core.simulation.phantom import make_spine_phantom
    from core.simulation.scene import SimulatedOR
    phantom = make_spine_phantom(seed=3, spacing_mm=2.0)  # coarse voxels: the shots are only a backdrop here
    sim = SimulatedOR(seed=3, phantom=phantom, shape=SHAPE, field_diameter_mm=230.0)
    sim.phantom_truth = [phantom.pedicle("L4", side) for side in ("left", "right")]
    shots = {v: sim.acquire(v) for v in ("ap", "lat")}
    return sim, shots


@pytest.fixture
def planning(qtbot, simulated):
    sim, shots = simulated
    window = MainWindow()
    qtbot.addWidget(window)
    for v, s in shots.items():
        window.viewers[v].set_image(s.image)
    calib = TruthCalibration(shots)
    model = PlanBook(calib)
    panel = PlanningPanel(colours=PALETTE)
    window.add_dock("Planning", panel, "right")
    answers = []
    ctrl = PlanningController(model, window.viewers, panel, window.scene_view,
                              confirm=lambda text: answers.pop(0) if answers else False,
                              T_scene_cage=sim.T_world_cage,
                              patient_axes=PatientAxes.from_rotation(sim.T_world_cage[:3, :3].T),
                              shortcut_parent=window, parent=window)
    window.resize(1500, 900)
    window.show()
    qtbot.waitExposed(window)
    for v in window.viewers.values():
        v.reset_view()
    QApplication.processEvents()
    return window, model, ctrl, calib, answers, sim


def plan_by_clicks(window, ctrl, calib, entry, target, rng, order=("ap", "lat")):
    """N, then entry and target clicked at their true pixels + 1 px noise; returns the id."""
    tid = ctrl.new_trajectory()
    for point in (entry, target):
        uv = calib.project(point)
        for view in order:
            a = rng.uniform(0, 2 * np.pi)
            u, v = uv[view][0] + [np.cos(a), np.sin(a)]
            click_pixel(window.viewers[view], u, v)
    QApplication.processEvents()   # the 3D view and the table follow a click from the event loop
    return tid


def test_plan_two_trajectories_by_clicking(planning):
    window, model, ctrl, calib, answers, sim = planning
    rng = np.random.default_rng(5)
    truth = _truth(sim)
    tids = []
    for i, (entry, target, level, side) in enumerate(truth):
        tids.append(plan_by_clicks(window, ctrl, calib, entry, target, rng, order=("ap", "lat") if i == 0
                                   else ("lat", "ap")))
        model.set_fields(tids[-1], level=level, side=side)
    for tid, (entry, target, _, _) in zip(tids, truth):
        t = model.get(tid)
        assert t.complete
        e_err = np.linalg.norm(np.subtract(t.entry_mm, entry))
        t_err = np.linalg.norm(np.subtract(t.target_mm, target))
        assert e_err < 0.5 and t_err < 0.5, f"{t.name}: entry {e_err:.2f} mm, target {t_err:.2f} mm off"
        assert t.entry_gap_mm < 0.05 and t.target_gap_mm < 0.05  # the second click snapped to the line
    assert ctrl.placing is None

    # drawn in both views, in 3D and in the table
    for view in ("ap", "lat"):
        overlays = ctrl._overlays[view]
        assert set(overlays) == set(tids)
        assert all(o.band.isVisible() and o.handles["target"].isVisible() for o in overlays.values())
    assert sorted(ctrl.scene.ids()) == sorted(tids)
    table = ctrl.panel.table
    assert table.rowCount() == 2 and table.item(0, 3).text() != "—"
    assert not table.item(0, 0).text().startswith("⚠")  # the phantom's true pedicles look right
    tip = table.item(0, 4).toolTip()  # angles relative to the image axes, as drawn
    from core.planning.two_view import image_angles
    expected = image_angles(calib, *truth[0][:2])
    import re
    shown = {v.lower(): float(a) for v, a in re.findall(r"(AP|LAT) image: drawn at (-?[\d.]+)°", tip)}
    for view in ("ap", "lat"):  # clicks carry 1 px of noise: the drawn angle within a degree
        assert shown[view] == pytest.approx(np.degrees(expected[view][0]), abs=1.0)
    length = float(table.item(0, 3).text())
    assert length == pytest.approx(np.linalg.norm(truth[0][1] - truth[0][0]), abs=0.7)

    # undo every edit back to nothing, then redo to the same state
    final = model.trajectories()
    stack = model.history
    n = stack.count()
    for _ in range(n):
        ctrl.undo()
    assert len(model) == 0 and not ctrl.scene.ids() and table.rowCount() == 0
    assert all(not o for o in ctrl._overlays.values())
    for _ in range(n):
        ctrl.redo()
    assert model.trajectories() == final and table.rowCount() == 2

    # save, reload into a fresh model, compare
    import tempfile, os
    path = os.path.join(tempfile.mkdtemp(), "plan.json")
    ctrl.save(path)
    other = PlanBook(calib)
    other.load(path)
    assert other.trajectories() == final and other.ids() == model.ids()


def test_epipolar_line_appears_in_the_other_view(planning):
    window, model, ctrl, calib, answers, sim = planning
    entry, target, _, _ = _truth(sim)[0]
    ctrl.new_trajectory()
    uv = calib.project(entry)
    assert not ctrl._epipolar["lat"].visible
    click_pixel(window.viewers["ap"], *uv["ap"][0])
    line = ctrl._epipolar["lat"]
    assert line.visible and not ctrl._epipolar["ap"].visible
    from core.planning.two_view import snap_to_epipolar
    assert snap_to_epipolar(uv["lat"][0], line.polyline)[1] < 0.1  # the true LAT pixel lies on it
    click_pixel(window.viewers["lat"], *uv["lat"][0])
    assert not line.visible and ctrl.placing[1] == "target"


def test_unsnapped_wrong_click_is_flagged(planning):
    window, model, ctrl, calib, answers, sim = planning
    entry, _, _, _ = _truth(sim)[0]
    messages = []
    ctrl.message.connect(lambda text, warn: messages.append((text, warn)))
    tid = ctrl.new_trajectory()
    uv = calib.project(entry)
    click_pixel(window.viewers["ap"], *uv["ap"][0])
    line = ctrl._epipolar["lat"].polyline
    d = line[-1] - line[0]
    off = uv["lat"][0] + 25 * np.array([-d[1], d[0]]) / np.linalg.norm(d)
    click_pixel(window.viewers["lat"], *off, modifiers=Qt.KeyboardModifier.ShiftModifier)  # Shift: no snap
    assert model.gap_too_large(tid) == ["entry"]
    assert messages[-1][1] and "do not show the same point" in messages[-1][0]
    QApplication.processEvents()   # the table follows the click from the event loop
    name_item = ctrl.panel.table.item(0, 0)
    assert name_item.text().startswith("⚠") and "apart" in name_item.toolTip()
    assert ctrl._overlays["ap"][tid].handles["entry"].pen.color().name() == "#ff3030"


def test_handle_drag_moves_live_and_undoes_in_one_step(planning, qtbot):
    window, model, ctrl, calib, answers, sim = planning
    entry, target, _, _ = _truth(sim)[0]
    rng = np.random.default_rng(1)
    tid = plan_by_clicks(window, ctrl, calib, entry, target, rng)
    before = model.get(tid)
    n = model.history.count()
    handle = ctrl._overlays["lat"][tid].handles["target"]
    start = handle.pos()
    for i in range(1, 8):  # what pyqtgraph's drag does on each mouse move
        handle.setPos(QPointF(start.x() + i, start.y() + 0.5 * i))
    handle.sigPositionChangeFinished.emit(handle)
    after = model.get(tid)
    assert model.history.count() == n + 1
    assert after.click("target", "lat") == pytest.approx((start.x() + 7, start.y() + 3.5))
    assert not np.allclose(after.target_mm, before.target_mm)
    # the AP view at once, the 3D view once the event loop ran
    ap_axis = ctrl._overlays["ap"][tid].axis.getData()
    expected = calib.project(np.array(after.target_mm))["ap"][0]
    assert np.hypot(ap_axis[0][-1] - expected[0], ap_axis[1][-1] - expected[1]) < 1e-6
    QApplication.processEvents()
    tube = ctrl.scene._actors[tid].line.GetPoint2()
    assert np.allclose(tube, after.target_mm)
    ctrl.undo()
    assert model.get(tid) == before


def test_keyboard_shortcuts_and_delete_confirmation(planning, qtbot):
    window, model, ctrl, calib, answers, sim = planning
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_N)
    assert len(model) == 1 and ctrl.placing is not None
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert ctrl.placing is None
    # planning's shortcuts leave the robot's STOP key (F12) unambiguous
    from PySide6.QtGui import QKeySequence, QShortcut
    stops = []
    stop = QShortcut(QKeySequence(Qt.Key.Key_F12), window)
    stop.activated.connect(lambda: stops.append(1))
    stop.activatedAmbiguously.connect(lambda: stops.append("ambiguous"))
    ctrl.placing = (model.ids()[0], "entry")
    qtbot.keyClick(window, Qt.Key.Key_F12)
    assert stops == [1] and ctrl.placing is not None   # STOP is not cancel
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert stops == [1] and ctrl.placing is None        # cancel is not STOP
    stop.setEnabled(False)
    answers.append(False)
    qtbot.keyClick(window, Qt.Key.Key_Delete)
    assert len(model) == 1  # "No" keeps it
    answers.append(True)
    qtbot.keyClick(window, Qt.Key.Key_Delete)
    assert len(model) == 0
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(model) == 1
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(model) == 0


def test_panel_edits_are_undoable(planning, qtbot):
    window, model, ctrl, calib, answers, sim = planning
    tid = ctrl.new_trajectory()
    panel = ctrl.panel
    panel.level_box.setCurrentText("S1")
    panel.level_box.activated.emit(panel.level_box.currentIndex())  # what a user's choice emits
    panel.diameter_spin.setValue(7.5)
    panel.name_edit.setText("S1 left screw")
    panel.name_edit.editingFinished.emit()
    before_colour = model.get(tid).colour
    panel.colour_button.click()
    assert model.get(tid).colour == PALETTE[(PALETTE.index(before_colour) + 1) % len(PALETTE)]
    ctrl.undo()
    t = model.get(tid)
    assert (t.level, t.diameter_mm, t.name) == ("S1", 7.5, "S1 left screw")
    assert panel.table.item(0, 0).text() == "S1 left screw" and panel.table.item(0, 6).text() == "7.5"
    for _ in range(3):
        ctrl.undo()
    t = model.get(tid)
    assert (t.level, t.diameter_mm, t.name) == ("L4", 6.5, "L4 left")
    assert panel.level_box.currentText() == "L4" and panel.diameter_spin.value() == 6.5
    model.select("")
    assert not panel.level_box.isEnabled()


def test_click_without_trajectory_says_what_to_do(planning):
    window, model, ctrl, calib, answers, sim = planning
    messages = []
    ctrl.message.connect(lambda text, warn: messages.append(text))
    click_pixel(window.viewers["ap"], 100, 100)
    assert len(model) == 0 and "press N" in messages[-1]


def test_install_planning_in_the_workstation(qtbot, simulated, qsettings_path):
    """The planning dock on the real workstation: follows the session's calibration and hands plans back."""
    from PySide6.QtCore import QSettings

    from app.config import load_defaults
    from app.main import Workstation
    from app.planning import install_planning

    sim, shots = simulated
    settings = QSettings(str(qsettings_path / "fluoronav.ini"), QSettings.Format.IniFormat)
    station = Workstation(load_defaults(), settings=settings, panels=False)  # installs planning itself below
    qtbot.addWidget(station.window)
    try:
        ctrl = install_planning(station.window, station.session, T_scene_cage=sim.T_world_cage)
        station.window.show()
        qtbot.waitExposed(station.window)
        assert "Planning" in station.window.docks
        for v, s in shots.items():
            station.session.set_image(v, s.image)
        calib = TruthCalibration(shots)
        station.session.set_calibration(calib)
        assert ctrl.model.calibration is calib
        entry, target, _, _ = _truth(sim)[0]
        tid = plan_by_clicks(station.window, ctrl, calib, entry, target, np.random.default_rng(2))
        assert station.session.plans is ctrl.model   # one plan book: the session's
        assert np.linalg.norm(np.subtract(station.session.plans.trajectories()[0].entry_mm, entry)) < 0.5
        saved = station.session.folder / "plan.json"
        qtbot.waitUntil(lambda: saved.exists() and not ctrl.autosave_timer.isActive(), timeout=3000)
        reloaded = PlanBook(calib)
        reloaded.load(saved)
        assert reloaded.trajectories() == ctrl.model.trajectories()
        ctrl.confirm = lambda text: True
        ctrl.delete_selected()
        assert station.session.plans.trajectories() == [] and tid not in ctrl.model
    finally:
        station.shutdown()
        station.window.close()


def test_picking_a_trajectory_in_3d_selects_it(planning):
    window, model, ctrl, calib, answers, sim = planning
    rng = np.random.default_rng(4)
    tids = [plan_by_clicks(window, ctrl, calib, e, t, rng) for e, t, _, _ in _truth(sim)]
    window.scene_view.camera_preset("ap")
    ctrl.scene.focus()
    QApplication.processEvents()
    for tid in tids:
        x, y = ctrl.scene.display_position(tid)
        assert ctrl.scene.pick_at(x, y) == tid
        ctrl._picked_in_3d(tid)
        assert model.selected == tid
        assert ctrl.panel.table.selectedItems()[0].row() == model.ids().index(tid)
    assert ctrl.scene.pick_at(2, 2) is None  # the corner shows no trajectory


def drag_pixel(viewer, start_uv, end_uv, steps=6):
    """A real left-button drag in the viewer's scene from raw pixel start to end."""
    scene = viewer.graphics.scene()
    points = [viewer.pixel_to_scene(*(np.asarray(start_uv) + f * (np.subtract(end_uv, start_uv))))
              for f in np.linspace(0, 1, steps + 1)]
    def send(kind, pos, buttons):
        ev = QGraphicsSceneMouseEvent(kind)
        ev.setScenePos(pos)
        ev.setScreenPos(viewer.graphics.viewport().mapToGlobal(viewer.graphics.mapFromScene(pos)))
        ev.setButton(Qt.MouseButton.LeftButton)
        ev.setButtons(buttons)
        ev.setButtonDownScenePos(Qt.MouseButton.LeftButton, points[0])
        ev.setButtonDownScreenPos(Qt.MouseButton.LeftButton,
                                  viewer.graphics.viewport().mapToGlobal(viewer.graphics.mapFromScene(points[0])))
        QApplication.sendEvent(scene, ev)
    send(QEvent.Type.GraphicsSceneMousePress, points[0], Qt.MouseButton.LeftButton)
    for p in points[1:]:
        QTest.qWait(25)  # pyqtgraph drops mouse moves that come faster than its rate limit
        send(QEvent.Type.GraphicsSceneMouseMove, p, Qt.MouseButton.LeftButton)
    send(QEvent.Type.GraphicsSceneMouseRelease, points[-1], Qt.MouseButton.NoButton)


@pytest.mark.parametrize("flip_h", [False, True])
def test_mouse_drag_of_a_handle_in_a_flipped_view(planning, flip_h):
    """Dragging a handle by mouse moves the raw click where the mouse goes, display flip or not."""
    window, model, ctrl, calib, answers, sim = planning
    entry, target, _, _ = _truth(sim)[0]
    tid = plan_by_clicks(window, ctrl, calib, entry, target, np.random.default_rng(3))
    viewer = window.viewers["ap"]
    viewer.set_display_transform(flip_h=flip_h)
    QApplication.processEvents()
    n = model.history.count()
    start = model.get(tid).click("entry", "ap")
    end = (start[0] + 12.0, start[1] - 7.0)
    drag_pixel(viewer, start, end)
    moved = model.get(tid).click("entry", "ap")
    assert np.allclose(moved, end, atol=0.05), f"handle went to {moved}, not {end}"
    assert model.history.count() == n + 1
    assert model.get(tid).entry_gap_mm > 1.0  # moved off the LAT click's ray: flagged
    ctrl.undo()
    assert model.get(tid).click("entry", "ap") == start


def test_without_calibration_clicks_are_kept_and_located_later(planning):
    window, model, ctrl, calib, answers, sim = planning
    messages = []
    ctrl.message.connect(lambda text, warn: messages.append((text, warn)))
    ctrl.set_calibration(None)
    entry, target, _, _ = _truth(sim)[0]
    tid = plan_by_clicks(window, ctrl, calib, entry, target, np.random.default_rng(8))
    assert model.get(tid).entry_mm is None and messages[-1][1] and "no calibration" in messages[-1][0]
    assert not ctrl._epipolar["lat"].visible and tid not in ctrl.scene.ids()
    ctrl.set_calibration(calib)  # the calibration of these very shots arrives
    t = model.get(tid)
    assert np.linalg.norm(np.subtract(t.entry_mm, entry)) < 0.6 and tid in ctrl.scene.ids()


def test_view_along_the_selected_trajectory(planning):
    window, model, ctrl, calib, answers, sim = planning
    entry, target, _, _ = _truth(sim)[0]
    tid = plan_by_clicks(window, ctrl, calib, entry, target, np.random.default_rng(6))
    ctrl.view_along()
    cam = window.scene_view.renderer.GetActiveCamera()
    t = model.get(tid)
    e_world, t_world = (apply(sim.T_world_cage, np.array(p)) for p in (t.entry_mm, t.target_mm))
    axis = (t_world - e_world) / np.linalg.norm(t_world - e_world)
    look = np.array(cam.GetDirectionOfProjection())
    assert np.degrees(np.arccos(np.clip(look @ axis, -1, 1))) < 0.01
    assert np.allclose(cam.GetFocalPoint(), t_world, atol=1e-6)
    x, y = ctrl.scene.display_position(tid)  # the trajectory is in the middle of the view
    w, h = window.scene_view.render_window.GetSize()
    assert abs(x - w / 2) < 0.1 * w and abs(y - h / 2) < 0.1 * h


def test_a_click_paints_both_viewers_before_the_3d_frame(planning):
    """The click that completes a trajectory: both viewers have painted its tool band when
    the click returns, and the 3D view's frame comes after, from the event loop."""
    from PySide6.QtCore import QEvent, QObject
    window, model, ctrl, calib, answers, sim = planning
    order = []

    class Paints(QObject):
        def eventFilter(self, obj, ev):
            if ev.type() == QEvent.Type.Paint:
                order.append(next(v for v, w in window.viewers.items() if w.graphics.viewport() is obj))
            return False
    spy = Paints()
    for w in window.viewers.values():
        w.graphics.viewport().installEventFilter(spy)
    tag = window.scene_view.render_window.AddObserver("EndEvent", lambda *_: order.append("3d"))
    entry, target, _, _ = _truth(sim)[0]
    ctrl.new_trajectory()
    QApplication.processEvents()
    uv_e, uv_t = calib.project(entry), calib.project(target)
    for view in ("ap", "lat"):
        click_pixel(window.viewers[view], *uv_e[view][0])
    click_pixel(window.viewers["ap"], *uv_t["ap"][0])
    QApplication.processEvents()
    order.clear()
    tid = model.selected
    assert ctrl.panel.table.item(0, 3).text() == "—"
    click_pixel(window.viewers["lat"], *uv_t["lat"][0])      # completes it: a tube in 3D
    assert model.get(tid).complete
    # 2D painted; the 3D tube and the table's length come from the event loop, after the paint
    assert set(order) == {"ap", "lat"} and tid not in ctrl.scene.ids()
    assert ctrl.panel.table.item(0, 3).text() == "—"
    QApplication.processEvents()
    assert tid in ctrl.scene.ids() and ctrl.scene._render_pending or "3d" in order
    assert float(ctrl.panel.table.item(0, 3).text()) == pytest.approx(model.get(tid).length_mm, abs=0.05)
    for _ in range(50):
        if "3d" in order:
            break
        QApplication.processEvents()
    window.scene_view.render_window.RemoveObserver(tag)
    assert "3d" in order and not ctrl.scene._render_pending
    assert order.index("3d") > max(order.index("ap"), order.index("lat"))
