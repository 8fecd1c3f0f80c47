"""FluoroViewer: raw pixel coordinates of clicks (also with a display flip), window/level,
the "no image" state, overlays and file drops."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from core.imaging.fluoro_image import FluoroImage
from core.imaging.images import write_png16
from widgets.viewers.fluoro_viewer import PRESETS, FluoroViewer
from widgets.viewers.synthetic_input import click_scene

pytestmark = pytest.mark.gui

ROWS, COLS = 60, 80


def ramp_image() -> FluoroImage:
    """16-bit shot: values 1000 + 10*col + 1000*row, distinct everywhere."""
    v, u = np.mgrid[0:ROWS, 0:COLS]
    return FluoroImage((1000 + 10 * u + 1000 * v).astype(np.uint16), view="ap")


@pytest.fixture
def viewer(qtbot):
    w = FluoroViewer("ap")
    qtbot.addWidget(w)
    w.resize(640, 560)
    w.show()
    qtbot.waitExposed(w)
    return w


def pixel_centre_in_scene(viewer, u, v) -> QPointF:
    """Where pyqtgraph draws the centre of stored pixel (u, v): the image item puts
    the corner of data[row, col] at item coordinates (col, row)."""
    return viewer.image_item.mapToScene(QPointF(u + 0.5, v + 0.5))


def clicks(viewer):
    got = []
    viewer.pixel_clicked.connect(lambda u, v, m: got.append((u, v, m)))
    return got


def test_no_image_state_says_what_to_do(viewer):
    assert not viewer.has_image()
    assert viewer.empty_label.isVisible()
    assert "No AP image" in viewer.empty_label.text()
    assert "Acquire AP (F5)" in viewer.empty_label.text() and "drop" in viewer.empty_label.text()


def test_set_image_leaves_the_no_image_state_and_clear_returns(viewer):
    viewer.set_image(ramp_image())
    assert viewer.has_image() and not viewer.empty_label.isVisible()
    assert viewer.image_shape == (ROWS, COLS)
    viewer.clear_image()
    assert not viewer.has_image() and viewer.empty_label.isVisible()


@pytest.mark.parametrize("u, v", [(0.0, 0.0), (37.0, 21.0), (12.25, 44.75), (79.0, 59.0)])
def test_click_gives_raw_pixel_coordinates(viewer, u, v):
    viewer.set_image(ramp_image())
    got = clicks(viewer)
    click_scene(viewer, pixel_centre_in_scene(viewer, u, v), Qt.KeyboardModifier.ShiftModifier)
    assert len(got) == 1
    assert got[0][0] == pytest.approx(u, abs=0.01) and got[0][1] == pytest.approx(v, abs=0.01)
    assert got[0][2] & Qt.KeyboardModifier.ShiftModifier


@pytest.mark.parametrize("flip_h, flip_v, rotate", [(True, False, 0), (False, True, 0), (True, True, 90)])
def test_display_transform_moves_the_picture_not_the_coordinates(viewer, flip_h, flip_v, rotate):
    viewer.set_image(ramp_image())
    before = pixel_centre_in_scene(viewer, 10.0, 5.0)
    mid_before = pixel_centre_in_scene(viewer, (COLS - 1) / 2, (ROWS - 1) / 2)
    viewer.set_display_transform(flip_h=flip_h, flip_v=flip_v, rotate_deg=rotate)
    after = pixel_centre_in_scene(viewer, 10.0, 5.0)
    mid_after = pixel_centre_in_scene(viewer, (COLS - 1) / 2, (ROWS - 1) / 2)
    # the pixel moved on screen, relative to the image centre (it is mirrored/rotated)
    d0, d1 = before - mid_before, after - mid_after
    assert abs(d1.x() - d0.x()) + abs(d1.y() - d0.y()) > 1.0
    got = clicks(viewer)
    click_scene(viewer, after)
    assert got[0][0] == pytest.approx(10.0, abs=0.01) and got[0][1] == pytest.approx(5.0, abs=0.01)


def test_flip_h_mirrors_about_the_image_centre(viewer):
    viewer.set_image(ramp_image())
    viewer.set_display_transform(flip_h=True)
    # column 0 is now drawn where column COLS-1 is in display (content parent) coordinates
    p = viewer.content.mapToParent(QPointF(0.0, 7.0))
    assert (p.x(), p.y()) == pytest.approx((COLS - 1, 7.0), abs=1e-9)


def test_overlay_children_use_raw_pixels_under_a_flip(viewer):
    import pyqtgraph as pg
    viewer.set_image(ramp_image())
    marker = pg.ScatterPlotItem([30.0], [12.0])
    marker.setParentItem(viewer.overlay("balls"))
    viewer.set_display_transform(flip_v=True)
    scene = marker.mapToScene(QPointF(30.0, 12.0))
    assert viewer.scene_to_pixel(scene) == pytest.approx((30.0, 12.0), abs=1e-6)
    assert scene == pixel_centre_in_scene(viewer, 30.0, 12.0)
    viewer.set_overlay_visible("balls", False)
    assert not viewer.overlay("balls").isVisible() and viewer.overlay_names() == ["balls"]


def test_click_outside_the_image_emits_nothing(viewer):
    viewer.set_image(ramp_image())
    got = clicks(viewer)
    click_scene(viewer, pixel_centre_in_scene(viewer, COLS + 3.0, 10.0))
    assert got == []


def test_click_without_image_emits_nothing(viewer):
    got = clicks(viewer)
    click_scene(viewer, QPointF(5.0, 5.0))
    assert got == []


def test_presets_are_the_stated_percentiles(viewer):
    img = ramp_image()
    viewer.set_image(img)
    data = img.pixels.astype(float)
    inner = data[(data > data.min()) & (data < data.max())]
    for name, (_, lo_p, hi_p) in PRESETS.items():
        viewer.set_preset(name)
        lo, hi = np.percentile(data if name == "full" else inner, [lo_p, hi_p])
        w, l = viewer.window_level
        assert (w, l) == pytest.approx((hi - lo, (hi + lo) / 2), rel=1e-9)
        assert tuple(viewer.image_item.levels) == pytest.approx((lo, hi))
    viewer.set_preset("full")
    assert viewer.window_level == pytest.approx((data.max() - data.min(), (data.max() + data.min()) / 2))


def test_auto_ignores_collimator_shadow_and_saturation(viewer):
    rng = np.random.default_rng(3)
    px = rng.integers(1000, 3001, size=(100, 100)).astype(np.uint16)
    px[:, :30] = 0        # collimator shadow: 30 % of the image
    px[:, -10:] = 4095    # saturated: 10 %
    viewer.set_image(px)
    lo, hi = viewer.window_level[1] - viewer.window_level[0] / 2, viewer.window_level[1] + viewer.window_level[0] / 2
    assert lo == pytest.approx(1020, abs=10) and hi == pytest.approx(2980, abs=10)  # p1..p99 of U(1000, 3000)


def test_a_new_image_keeps_the_chosen_preset(viewer):
    viewer.set_image(ramp_image())
    viewer.set_preset("bone")
    img = FluoroImage((ramp_image().pixels // 2).astype(np.uint16))
    viewer.set_image(img)
    data = img.pixels.astype(float)
    inner = data[(data > data.min()) & (data < data.max())]
    lo, hi = np.percentile(inner, [PRESETS["bone"][1], PRESETS["bone"][2]])
    assert viewer.window_level == pytest.approx((hi - lo, (hi + lo) / 2))


def test_monochrome1_is_shown_inverted(viewer):
    px = np.array([[0, 4095], [100, 200]], np.uint16)
    viewer.set_image(FluoroImage(px, photometric="MONOCHROME1", bits_stored=12))
    viewer.set_preset("full")
    assert viewer.window_level == pytest.approx((4095.0, 4095.0 / 2))
    np.testing.assert_allclose(viewer.image_item.image, 4095.0 - px)


def test_window_level_setter_and_bad_values(viewer):
    viewer.set_image(ramp_image())
    viewer.window_level = (2000, 30000)
    assert tuple(viewer.image_item.levels) == pytest.approx((29000, 31000))
    with pytest.raises(ValueError, match="window must be a positive"):
        viewer.window_level = (0, 100)
    with pytest.raises(ValueError, match="window must be a positive"):
        viewer.window_level = (100, float("nan"))


def test_unknown_preset(viewer):
    with pytest.raises(ValueError, match="unknown window/level preset"):
        viewer.set_preset("lung")


def test_bad_image_array(viewer):
    with pytest.raises(ValueError, match="2-D numeric array"):
        viewer.set_image(np.zeros((3, 4, 5)))


def test_right_drag_changes_window_and_level(viewer, qtbot):
    viewer.set_image(ramp_image())
    w0, l0 = viewer.window_level
    vp = viewer.graphics.viewport()
    start = vp.rect().center()
    qtbot.mousePress(vp, Qt.MouseButton.RightButton, pos=start)
    for i in range(1, 11):
        qtbot.mouseMove(vp, start + QPoint(8 * i, -5 * i))
    qtbot.mouseRelease(vp, Qt.MouseButton.RightButton, pos=start + QPoint(80, -50))
    w1, l1 = viewer.window_level
    assert w1 > w0 and l1 > l0  # right widens the window, up raises the level


def test_hover_reads_out_the_raw_value(viewer):
    viewer.set_image(ramp_image())
    seen = []
    viewer.pixel_hovered.connect(lambda u, v: seen.append((u, v)))
    viewer.graphics.scene().sigMouseMoved.emit(pixel_centre_in_scene(viewer, 7.0, 3.0))
    assert seen[-1] == pytest.approx((7.0, 3.0), abs=0.01)
    assert "value 4070" in viewer.readout.text()  # 1000 + 10*7 + 1000*3


def test_dropping_a_png_reads_it(viewer, tmp_path):
    path = write_png16(ramp_image(), tmp_path / "shot.png")
    got = []
    viewer.image_dropped.connect(got.append)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    viewer.dropEvent(ev)
    assert len(got) == 1
    np.testing.assert_array_equal(got[0].pixels, ramp_image().pixels)


def test_dropping_a_bad_file_logs_and_emits_nothing(viewer, tmp_path, caplog):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    got = []
    viewer.image_dropped.connect(got.append)
    assert viewer.load_file(str(bad)) is None
    assert got == [] and "not a DICOM, PNG or TIFF" in caplog.text


def drag(qtbot, widget, button, start, delta, steps=10):
    qtbot.mousePress(widget, button, pos=start)
    for i in range(1, steps + 1):
        qtbot.mouseMove(widget, start + QPoint(delta.x() * i // steps, delta.y() * i // steps))
    qtbot.mouseRelease(widget, button, pos=start + delta)


def test_left_drag_pans_unless_a_tool_is_active(viewer, qtbot):
    viewer.set_image(ramp_image())
    vp = viewer.graphics.viewport()
    x0 = viewer.view_box.viewRange()[0][0]
    drag(qtbot, vp, Qt.MouseButton.LeftButton, vp.rect().center(), QPoint(-120, 0))
    x1 = viewer.view_box.viewRange()[0][0]
    assert x1 - x0 > 5.0  # dragging the picture left shows more of its right side
    viewer.tool_active = True
    drag(qtbot, vp, Qt.MouseButton.LeftButton, vp.rect().center(), QPoint(-120, 0))
    assert viewer.view_box.viewRange()[0][0] == pytest.approx(x1)


def test_wheel_zooms_and_fit_restores(viewer, qtbot):
    viewer.set_image(ramp_image())
    before = np.ptp(viewer.view_box.viewRange()[0])
    vp = viewer.graphics.viewport()
    from PySide6.QtGui import QWheelEvent
    centre = QPointF(vp.rect().center())
    ev = QWheelEvent(centre, QPointF(vp.mapToGlobal(vp.rect().center())), QPoint(0, 0), QPoint(0, 240),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    zoomed = np.ptp(viewer.view_box.viewRange()[0])
    assert zoomed < 0.8 * before
    viewer.reset_view()
    assert np.ptp(viewer.view_box.viewRange()[0]) == pytest.approx(before, rel=0.01)


# --- distortion-corrected display, measuring tools, layers, mm readout -------------------------
class _ViewCalib:
    """A view calibration reduced to what the viewer reads: a distortion, no planes."""

    def __init__(self, distortion):
        self.distortion, self.planes, self.P = distortion, [], None


def _ii_distortion(rows=ROWS, cols=COLS):
    from core.simulation.distortion import IIDistortion
    # strong pincushion + S so that raw and ideal pixels differ by several pixels at the edge
    return IIDistortion(centre_px=((cols - 1) / 2, (rows - 1) / 2), radius_px=0.5 * min(rows, cols),
                        k1=0.12, k2=0.02, s=0.05, shift_px=(1.5, -1.0))


def test_corrected_display_keeps_clicks_in_raw_pixels(viewer):
    viewer.set_image(ramp_image())
    d = _ii_distortion()
    viewer.set_calibration(_ViewCalib(d))
    assert viewer.undistort_button.isEnabled()
    viewer.set_corrected(True)
    assert viewer.corrected and viewer.undistort_button.isChecked()
    got = clicks(viewer)
    for u, v in [(5.0, 4.0), (40.0, 30.0), (77.5, 55.25)]:
        ideal = d.raw_to_ideal(np.array([[u, v]]))[0]
        # where the corrected image draws raw pixel (u, v): at its ideal position
        assert np.hypot(*(ideal - (u, v))) > 0.3 or (u, v) == (40.0, 30.0)
        click_scene(viewer, viewer.content.mapToScene(QPointF(*ideal)))
        assert got[-1][0] == pytest.approx(u, abs=0.05) and got[-1][1] == pytest.approx(v, abs=0.05)
    viewer.set_display_transform(flip_h=True, rotate_deg=90)
    click_scene(viewer, viewer.pixel_to_scene(12.0, 9.0))
    assert got[-1][:2] == pytest.approx((12.0, 9.0), abs=0.05)


def test_corrected_display_draws_overlays_at_their_ideal_position(viewer):
    import pyqtgraph as pg
    viewer.set_image(ramp_image())
    d = _ii_distortion()
    viewer.set_calibration(_ViewCalib(d))
    dot = pg.ScatterPlotItem()
    dot.setParentItem(viewer.overlay("balls"))
    dot.setData(pos=[(6.0, 5.0)], size=8)
    label = pg.TextItem("x")
    label.setParentItem(viewer.overlay("labels"))
    label.setPos(70.0, 50.0)
    viewer.set_corrected(True)
    ideal = d.raw_to_ideal(np.array([[6.0, 5.0], [70.0, 50.0]]))
    x, y = dot.getData()
    assert (x[0], y[0]) == pytest.approx(tuple(ideal[0]), abs=1e-6)
    assert (label.pos().x(), label.pos().y()) == pytest.approx((70.0, 50.0))          # reads back raw
    drawn = QGraphicsItem_pos(label)
    assert drawn == pytest.approx(tuple(ideal[1]), abs=1e-6)
    viewer.set_corrected(False)                                   # back: drawn at raw again
    x, y = dot.getData()
    assert (x[0], y[0]) == pytest.approx((6.0, 5.0)) and QGraphicsItem_pos(label) == pytest.approx((70.0, 50.0))


def QGraphicsItem_pos(item):
    from PySide6.QtWidgets import QGraphicsItem
    p = QGraphicsItem.pos(item)
    return p.x(), p.y()


def test_corrected_display_needs_a_distortion(viewer):
    viewer.set_image(ramp_image())
    assert not viewer.undistort_button.isEnabled()
    with pytest.raises(ValueError, match="calibrate first"):
        viewer.set_corrected(True)


def test_ruler_measures_px_and_detector_mm(viewer):
    img = FluoroImage(ramp_image().pixels, view="ap", pixel_spacing_mm=(0.3, 0.3))
    viewer.set_image(img)
    viewer.tool_buttons["ruler"].click()
    assert viewer.measure.active == "ruler" and viewer.tool_active
    got = clicks(viewer)
    click_scene(viewer, pixel_centre_in_scene(viewer, 10.0, 10.0))
    click_scene(viewer, pixel_centre_in_scene(viewer, 40.0, 50.0))
    assert got == []                                              # a tool click is not a planning click
    m = viewer.measure.measurements[0]
    f = m.figures()
    assert f["px"] == pytest.approx(50.0, abs=0.1) and f["detector_mm"] == pytest.approx(15.0, abs=0.03)
    assert "50.0 px" in m.text() and "15.0 mm det" in m.text()
    from PySide6.QtTest import QTest
    QTest.keyClick(viewer.graphics, Qt.Key.Key_Escape)            # Esc ends the tool, keeps the ruler
    assert viewer.measure.active is None and not viewer.tool_active and len(viewer.measure.measurements) == 1
    assert not viewer.tool_buttons["ruler"].isChecked()


def test_ruler_handle_drag_and_flip_keep_raw_points(viewer):
    viewer.set_image(ramp_image())
    viewer.set_display_transform(flip_h=True)
    viewer.measure.start("ruler")
    for u, v in ((10.0, 10.0), (10.0, 40.0)):
        click_scene(viewer, pixel_centre_in_scene(viewer, u, v))
    m = viewer.measure.measurements[0]
    assert m.points == [pytest.approx((10.0, 10.0), abs=0.01), pytest.approx((10.0, 40.0), abs=0.01)]
    m._moved(m.handles[1], 34.0, 42.0)                            # what a drag of the handle does
    assert m.figures()["px"] == pytest.approx(40.0, abs=0.1)      # 24, 32 -> 40


def test_angle_tool_and_right_click_finishes(viewer):
    viewer.set_image(ramp_image())
    viewer.measure.start("angle")
    for u, v in ((40.0, 10.0), (10.0, 10.0), (40.0, 40.0)):       # 45 degrees at (10, 10)
        click_scene(viewer, pixel_centre_in_scene(viewer, u, v))
    assert viewer.measure.measurements[0].figures()["deg"] == pytest.approx(45.0, abs=0.05)
    viewer.measure.click(5.0, 5.0)                               # a second, unfinished angle
    viewer.view_box.mouseClickEvent(_RightClick())
    assert viewer.measure.active is None and len(viewer.measure.measurements) == 1


def test_measure_bad_input(viewer):
    from widgets.viewers.measure_tools import angle_figures, ruler_figures
    with pytest.raises(ValueError, match="unknown measuring tool"):
        viewer.measure.start("protractor")
    with pytest.raises(ValueError, match="no measuring tool is active"):
        viewer.measure.click(1.0, 1.0)
    with pytest.raises(ValueError, match="needs 2 finite"):
        ruler_figures([(0, 0), (1, np.nan)])
    with pytest.raises(ValueError, match="needs 3 finite"):
        angle_figures([(0, 0), (1, 1)])
    assert np.isnan(angle_figures([(0, 0), (0, 0), (1, 1)])["deg"])   # a zero-length arm has no angle


def test_layers_menu_toggles_each_overlay(viewer):
    viewer.set_image(ramp_image())
    for name in ("balls", "trajectories", "epipolar"):
        viewer.overlay(name)
    viewer._fill_layers_menu()
    acts = {a.text(): a for a in viewer.layers_menu.actions() if a.isCheckable()}
    assert set(acts) == {"Balls", "Trajectories", "Epipolar"}
    acts["Epipolar"].toggle()
    assert not viewer.overlay("epipolar").isVisible() and viewer.overlay("balls").isVisible()


def test_readout_in_detector_mm(viewer):
    viewer.set_image(FluoroImage(ramp_image().pixels, view="ap", pixel_spacing_mm=(0.5, 0.25)))
    viewer.graphics.scene().sigMouseMoved.emit(pixel_centre_in_scene(viewer, 49.5, 39.5))
    # from the image centre (39.5, 29.5): 10 px * 0.5 mm, 10 px * 0.25 mm
    assert "detector (5.0, 2.5) mm" in viewer.readout.text()


class _RightClick:
    def button(self):
        return Qt.MouseButton.RightButton

    def accept(self):
        pass


class _Drag:
    """The parts of a pyqtgraph drag event a handle reads (positions in the item's coordinates)."""

    def __init__(self, down, pos, start, finish):
        self._down, self._pos, self._start, self._finish = down, pos, start, finish

    def button(self):
        return Qt.MouseButton.LeftButton

    def accept(self):
        pass

    def isStart(self):
        return self._start

    def isFinish(self):
        return self._finish

    def buttonDownPos(self):
        return self._down

    def pos(self):
        return self._pos


def test_corrected_display_handle_drag_reports_raw_and_toggling_is_no_drag(viewer):
    from widgets.viewers.trajectory_overlays import _Handle
    viewer.set_image(ramp_image())
    d = _ii_distortion()
    viewer.set_calibration(_ViewCalib(d))
    h = _Handle(pos=(0, 0), size=20, symbol="o", movable=True)
    h.setParentItem(viewer.overlay("trajectories"))
    h.setPos(QPointF(10.0, 8.0))
    moved = []
    h.sigPositionChanged.connect(lambda item: moved.append((item.pos().x(), item.pos().y())))
    viewer.set_corrected(True)                      # a redraw, not a drag
    assert moved == []
    grab = np.array([1.5, -1.0])                    # grabbed off the handle's centre (display px)
    d0 = d.raw_to_ideal(np.array([[10.0, 8.0]]))[0]
    for target, start, finish in (((30.0, 20.0), True, False), ((55.0, 35.0), False, True)):
        down = h.mapFromParent(QPointF(*(d0 + grab)))
        cursor = h.mapFromParent(QPointF(*(np.array(target) + grab)))
        h.mouseDragEvent(_Drag(down, cursor, start, finish))
        raw = d.ideal_to_raw(np.array([target]))[0]
        assert moved[-1] == pytest.approx(tuple(raw), abs=0.05)


def test_paint_now_paints_where_the_overlays_are_and_were(viewer):
    """A click's feedback: ``paint_now`` paints at once, and only the viewport part that its
    overlays cover now and covered at the last call (a moved handle's old place is repainted)."""
    import pyqtgraph as pg
    from PySide6.QtCore import QEvent, QObject
    viewer.set_image(FluoroImage(np.zeros((400, 400), np.uint16), view="ap"))
    viewer.reset_view()
    QApplication.processEvents()
    regions = []

    class Spy(QObject):
        def eventFilter(self, obj, ev):
            if ev.type() == QEvent.Type.Paint:
                regions.append(ev.region().boundingRect())
            return False
    spy = Spy()
    vp = viewer.graphics.viewport()
    vp.installEventFilter(spy)
    dot = pg.ScatterPlotItem([50.0], [60.0], size=10)
    viewer.overlay("marks").addItem(dot)

    def at(u, v):
        return viewer.graphics.mapFromScene(viewer.image_item.mapToScene(QPointF(u + 0.5, v + 0.5)))
    viewer.paint_now()
    assert len(regions) == 1
    first = regions[-1]
    assert first.contains(at(50, 60)) and first.width() < vp.width() / 2 and first.height() < vp.height() / 2
    dot.setData([300.0], [320.0])
    viewer.paint_now()
    assert len(regions) == 2
    assert regions[-1].contains(at(300, 320)) and regions[-1].contains(at(50, 60))   # new place and old
    vp.removeEventFilter(spy)
