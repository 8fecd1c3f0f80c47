"""The technician's calibration, step by step, as logic a wizard, a script or a test calls alike.

cage file -> distortion plate shot per view (or none: flat panel) -> AP and LAT
shots with the cage -> detection, labelling and both models per view
(``core.calibration.calibrate_view``) -> manual fixes (``core.calibration.manual``)
-> accept (saved into the session folder with its time; the workflow moves on to
planning) or reject (nothing changes).

``CalibrationWorkflow`` is the calibration's state (cage, plates, shots, labels, fits,
errors, busy step) as a Qt-free evented object (psygnal): the wizard subscribes to its
signals and calls its methods; a script drives it the same way. Long steps go to its
``runner``: inline by default (a script, a test: the call returns when the step is
done), or ``app.qt_worker.QtThreadRunner`` in the GUI, which runs them on a worker
thread and hands progress and results back to the GUI thread by queued signals.
Failures arrive as one line (``failed``), never a traceback.
``install_calibration_wizard(window, session, ...)`` puts the wizard behind the
workflow bar's Calibrate step.
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from psygnal import Signal

import resources
from core.calibration.beads import BeadDetectionError, detect_beads, whole_ball_field
from core.calibration.cage import CageFileError, load_cage
from core.calibration import DEFAULT_METHOD, CageCalibration, CalibrationError, calibrate_view
from core.calibration import manual
from core.calibration.manual import ManualEditError, ViewLabels
from core.geometry.pixels import in_image, mask_at
from core.calibration.models import ModelError, apply_h, fit_homography, project_p
from core.calibration.distortion import DistortionError, NoDistortion
from core.imaging.fluoro_image import FluoroImage, ImageReadError
from core.imaging.images import read_image
from core.calibration.labelling import LabellingError
from core.calibration.plate import CENTRAL_FRACTION, PlateError, label_plate, load_plate, plate_distortion

__all__ = ["CalibrationWorkflow", "InlineRunner", "PlateResult", "ShotResult", "plate_step", "calibrate_shot",
           "refit_shot", "residual_vectors_px", "install_calibration_wizard", "EXPECTED_ERRORS"]

log = logging.getLogger(__name__)

VIEWS = ("ap", "lat")
EXPECTED_ERRORS = (CalibrationError, ManualEditError, PlateError, BeadDetectionError, CageFileError,
                   DistortionError, LabellingError, ModelError, ImageReadError)


# -- the steps, pure (no Qt): what the worker thread runs --------------------------------
@dataclass
class PlateResult:
    """One view's distortion from its plate shot: the correction, its figures (held-out
    RMS px per model, the model used), the plate balls found (raw px), where the
    central-region homography puts them (ideal px) and the corrected residual (px)."""
    image: FluoroImage
    distortion: object
    figures: dict
    raw_px: np.ndarray
    ideal_px: np.ndarray
    residual_px: np.ndarray


def plate_step(plate, image: FluoroImage) -> PlateResult:
    """Fit a view's distortion from its plate shot (``core.calibration.plate.plate_distortion``), and the
    grid for display: the balls found, their ideal positions as core.calibration.plate defines them (the
    homography of the central region, robot paper II.C.2) and the residual of the correction."""
    pixels = image.display()
    dist, figs = plate_distortion(plate, pixels, 1)
    beads = detect_beads(pixels, 1)
    det, ball = label_plate(plate, beads.centres_px)
    raw, xy = beads.centres_px[det], plate.balls_mm[ball]
    r = np.linalg.norm(raw - raw.mean(0), axis=1)
    central = r <= CENTRAL_FRACTION * r.max()
    ideal = apply_h(fit_homography(xy[central], raw[central]), xy)
    resid = np.linalg.norm(dist.raw_to_ideal(raw) - ideal, axis=1)
    return PlateResult(image, dist, figs, raw, ideal, resid)


@dataclass
class ShotResult:
    """One view after detection, labelling and fitting: the labels (detections and the
    cage ball of each), the fitted view or None, and the one-line reason when it failed."""
    image: FluoroImage
    labels: ViewLabels
    fit: object = None
    error: str = ""


def calibrate_shot(cage, view: str, image: FluoroImage, distortion=None) -> ShotResult:
    """Detect, label and fit one view automatically; a failure is kept as its message."""
    pixels = image.display()
    try:
        beads = detect_beads(pixels, 1)
    except BeadDetectionError as e:
        return ShotResult(image, ViewLabels(view, np.zeros((0, 2)), (), np.zeros(0, int)),
                          None, f"{view.upper()} shot: {e}")
    radius = float(np.median(beads.radius_px))
    fit, error = None, ""
    try:
        fit = calibrate_view(cage, view, pixels, distortion, 1)
    except CalibrationError as e:
        error = str(e)
    labels = manual.labels_from_view(view, beads.centres_px, fit, beads.polarity, radius)
    return ShotResult(image, labels, fit, error)


def refit_shot(cage, shot: ShotResult, labels: ViewLabels, distortion=None) -> ShotResult:
    """Refit a view from technician-edited labels."""
    try:
        fit = manual.fit_view(cage, labels, shot.image.display(), distortion)
    except CalibrationError as e:
        return ShotResult(shot.image, labels, None, str(e))
    return ShotResult(shot.image, labels, fit, "")


def residual_vectors_px(cage, shot: ShotResult, method: str, distortion=None) -> np.ndarray:
    """(N, 2) raw-pixel offset from each detection to where the fitted model puts its
    ball (NaN for unlabelled detections). Without a fit (a gate failed): the offset from
    a robust per-plane homography (``manual.diagnose``), which points at a wrong label."""
    out = np.full((len(shot.labels), 2), np.nan)
    vc = shot.fit
    if vc is None:
        return manual.diagnose(shot.labels, cage, distortion)
    for pf in vc.planes:
        _, di = shot.labels.matched(pf.plane_id)
        X = cage.plane(pf.plane_id).balls_mm[shot.labels.ball_idx[di]]
        if method == "2d2d":
            ideal = apply_h(pf.H_img_plane, (X - pf.origin_mm) @ pf.axes.T)
        else:
            ideal = project_p(vc.P, X)
        out[di] = vc.distortion.ideal_to_raw(ideal) - shot.labels.centres_px[di]
    return out


def _in_field(image: FluoroImage, uv, radius_px) -> np.ndarray:
    """Which raw pixels (N, 2) have a whole ball's disc inside the exposed field."""
    return mask_at(whole_ball_field(image.display(), 1, radius_px), uv)


# -- the workflow: state, signals, where long steps run ------------------------------------
class InlineRunner:
    """Runs a step's job in the caller's thread: ``run`` returns when the step is done."""

    def run(self, name: str, job, done, progress) -> None:
        done(job(progress))


class _Failed:
    """What a job hands back when its step failed: the one line to show."""

    def __init__(self, message: str):
        self.message = message


class CalibrationWorkflow:
    """State of one calibration in progress. Signals (in the thread that calls its methods,
    the GUI thread in the GUI): ``busy_changed(bool, str)``, ``progress(int, str)``,
    ``failed(step, message)``, ``changed(what)`` with what in {"cage", "plate", "shots",
    "result"}, ``finished(step)`` after each long step, ``accepted(path)``, ``rejected()``.
    ``runner``: where long steps run (``InlineRunner`` by default, see the module)."""

    busy_changed = Signal(bool, str)
    progress = Signal(int, str)
    failed = Signal(str, str)
    changed = Signal(str)
    finished = Signal(str)
    accepted = Signal(object)
    rejected = Signal()

    def __init__(self, session=None, plate_source: Callable[[str], FluoroImage] | None = None,
                 acquire: Callable[[str], object] | None = None, method: str = DEFAULT_METHOD, runner=None):
        self.session = session
        self.runner = runner if runner is not None else InlineRunner()
        self.plate_source = plate_source
        self.acquire_fn = acquire
        self.method = method
        self.cage = None
        self.plate = None
        self.use_plate = True
        self.plates: dict[str, PlateResult] = {}
        self.images: dict[str, FluoroImage] = {}
        self.shots: dict[str, ShotResult] = {}
        self.calibration: CageCalibration | None = None
        self.calibration_error = ""
        self.capture_session_images = False
        self.outcome = ""          # "accepted" or "rejected" once the technician has decided
        self._busy = ""
        if session is not None:
            session.image_changed.connect(self._on_session_image)

    # -- worker ------------------------------------------------------------------------
    @property
    def busy(self) -> str:
        """What the worker is doing ("" when idle)."""
        return self._busy

    def _start(self, step: str, what: str, fn, handler) -> bool:
        if self._busy:
            self.failed.emit(step, f"wait: {self._busy} is still running")
            return False
        self._busy = what
        self.busy_changed.emit(True, what)
        self.progress.emit(0, what)

        def job(report):
            try:
                return fn(report)
            except EXPECTED_ERRORS as e:
                return _Failed(str(e))
            except Exception as e:  # noqa: BLE001 - a bug must reach the technician as one line
                log.exception("calibration step %s failed", step)
                return _Failed(f"internal error ({type(e).__name__}: {e}): save the log and report it")

        def done(result):
            if isinstance(result, BaseException):   # escaped the job (the runner logged it)
                result = _Failed(f"internal error ({type(result).__name__}: {result}): save the log and report it")
            if isinstance(result, _Failed):
                self._on_failed(step, result.message)
            else:
                self._on_done((step, handler), result)
        self.runner.run(f"calibration-{step}", job, done, lambda pct, msg: self.progress.emit(int(pct), msg))
        return True

    def _end(self, step: str) -> None:
        self._busy = ""
        self.busy_changed.emit(False, "")
        self.progress.emit(100, "")
        self.finished.emit(step)

    def _on_done(self, token, result) -> None:
        step, handler = token
        try:
            handler(result)
        finally:
            self._end(step)

    def _on_failed(self, step: str, message: str) -> None:
        log.error("calibration: %s", message)
        self._busy = ""
        self.busy_changed.emit(False, "")
        self.failed.emit(step, message)
        self.finished.emit(step)

    def _fail(self, step: str, message: str) -> bool:
        log.error("calibration: %s", message)
        self.failed.emit(step, message)
        return False

    # -- cage ----------------------------------------------------------------------------
    @staticmethod
    def default_cage_path() -> Path:
        return Path(resources.path("cages", "default.json"))

    def set_cage(self, path=None) -> bool:
        """Load the cage file (default ``resources/cages/default.json``)."""
        try:
            cage = load_cage(path or self.default_cage_path())
        except CageFileError as e:
            return self._fail("cage", str(e))
        self.cage = cage
        self._invalidate_shots()
        self.changed.emit("cage")
        return True

    def cage_layouts(self) -> list[tuple[str, str, np.ndarray]]:
        """(plane id, view, in-plane ball positions (N, 2) mm) per plane: the drawing whose
        numbers the technician assigns."""
        return [(p.id, p.view, p.balls_2d) for p in (self.cage.planes if self.cage else ())]

    def cage_summary(self) -> list[tuple[str, str, int]]:
        """(plane id, view, ball count) of the cage."""
        return [(p.id, p.view, p.n_balls) for p in (self.cage.planes if self.cage else ())]

    # -- distortion ----------------------------------------------------------------------------
    def keep_distortion_from(self, other: "CalibrationWorkflow") -> bool:
        """Start from the plate file, plate shots and distortion fits of ``other``, a rejected
        attempt (the C-arm's distortion did not change; the technician need not shoot the
        plate again). True when something was taken over."""
        if other is None or other.outcome != "rejected" or (not other.plates and other.use_plate):
            return False
        self.plate, self.use_plate, self.plates = other.plate, other.use_plate, dict(other.plates)
        self._invalidate_shots()
        self.changed.emit("plate")
        return True

    def set_plate_file(self, path=None) -> bool:
        try:
            self.plate = load_plate(path or resources.path("plates", "default.json"))
        except PlateError as e:
            return self._fail("plate", str(e))
        self.plates.clear()
        self.changed.emit("plate")
        return True

    def set_use_plate(self, use: bool) -> None:
        """False: a flat panel, no distortion correction (the plate step is skipped)."""
        self.use_plate = bool(use)
        self._invalidate_shots()
        self.changed.emit("plate")

    def distortion(self, view: str):
        if not self.use_plate or view not in self.plates:
            return NoDistortion()
        return self.plates[view].distortion

    def residual_vectors_px(self, view: str) -> np.ndarray:
        """The ``view`` shot's residual per detection (raw px), for the balls page."""
        return residual_vectors_px(self.cage, self.shots[view], self.method, self.distortion(view))

    def distortion_done(self) -> bool:
        return (not self.use_plate) or all(v in self.plates for v in VIEWS)

    def load_plate_shot(self, view: str, image_or_path) -> bool:
        """Fit ``view``'s distortion from a plate shot (FluoroImage or file), on the worker."""
        if self.plate is None and not self.set_plate_file():
            return False
        image = self._image(image_or_path, f"{view.upper()} plate")
        if image is None:
            return False
        plate = self.plate
        return self._start("plate", f"fitting the {view.upper()} distortion",
                           lambda report: plate_step(plate, image),
                           lambda res: self._plate_done(view, res))

    def acquire_plate_shot(self, view: str) -> bool:
        """Shoot the plate with the C-arm (``plate_source``) and fit it, on the worker."""
        if self.plate_source is None:
            return self._fail("plate", "this C-arm cannot shoot the plate from fluoronav: load the plate shot "
                                       "from a file")
        if self.plate is None and not self.set_plate_file():
            return False
        plate, source = self.plate, self.plate_source

        def work(report):
            report(10, f"acquiring the {view.upper()} plate shot")
            image = source(view)
            report(50, f"fitting the {view.upper()} distortion")
            return plate_step(plate, image)
        return self._start("plate", f"plate shot {view.upper()}", work, lambda res: self._plate_done(view, res))

    def _plate_done(self, view: str, res: PlateResult) -> None:
        self.plates[view] = res
        self._invalidate_shots()
        self.changed.emit("plate")

    # -- cage shots ---------------------------------------------------------------------------
    def _image(self, image_or_path, what):
        if isinstance(image_or_path, FluoroImage):
            return image_or_path
        try:
            return read_image(image_or_path)
        except (ImageReadError, ValueError, OSError) as e:
            self._fail("shots", f"{what} image: {e}")
            return None

    def set_shot(self, view: str, image_or_path) -> bool:
        """Use this AP/LAT shot with the cage (FluoroImage or a file)."""
        if view not in VIEWS:
            return self._fail("shots", f"unknown view {view!r}: use 'ap' or 'lat'")
        image = self._image(image_or_path, view.upper())
        if image is None:
            return False
        self.images[view] = image
        self._invalidate_shots()
        self.changed.emit("shots")
        return True

    def acquire_shot(self, view: str) -> bool:
        """Ask the C-arm for a shot (the image comes back through the session)."""
        if self.acquire_fn is None:
            return self._fail("shots", "no C-arm is connected: load the shot from a file")
        self.capture_session_images = True
        if self.acquire_fn(view) is None:
            return self._fail("shots", f"the C-arm cannot take the {view.upper()} shot now: check its status "
                                       "in the status bar, or load the shot from a file")
        return True

    def follow_session_images(self, follow: bool = True) -> None:
        """While True, each new session image (acquired, dropped, opened) becomes this
        calibration's shot of its view (the shots page is open)."""
        self.capture_session_images = bool(follow)

    def report(self, step: str, message: str) -> None:
        """A failure found elsewhere (e.g. the C-arm's), shown like the workflow's own."""
        self._fail(step, message)

    def _on_session_image(self, view, image) -> None:
        if self.capture_session_images:
            self.set_shot(view, image)

    def _invalidate_shots(self) -> None:
        self.shots.clear()
        self.calibration, self.calibration_error = None, ""

    def run_calibration(self) -> bool:
        """Detection, labelling and both models of each view, then the two-view figures."""
        if self.cage is None and not self.set_cage():
            return False
        missing = [v.upper() for v in VIEWS if v not in self.images]
        if missing:
            return self._fail("calibrate", f"no {' and '.join(missing)} shot yet: acquire or load it")
        cage, images = self.cage, dict(self.images)
        dist = {v: self.distortion(v) for v in VIEWS}

        def work(report):
            out = {}
            for k, v in enumerate(VIEWS):
                report(5 + 45 * k, f"finding and identifying the balls in the {v.upper()} shot")
                out[v] = calibrate_shot(cage, v, images[v], dist[v])
            report(95, "two-view figures")
            return out
        return self._start("calibrate", "calibrating", work, self._shots_done)

    def _shots_done(self, shots: dict) -> None:
        self.shots.update(shots)
        self._combine()
        self.changed.emit("result")

    def _combine(self) -> None:
        self.calibration, self.calibration_error = None, ""
        errors = [s.error for s in self.shots.values() if s.error]
        if errors:
            self.calibration_error = errors[0]
            return
        if set(self.shots) != set(VIEWS):
            return
        try:
            self.calibration = manual.assemble(self.cage, {v: s.fit for v, s in self.shots.items()}, self.method)
        except CalibrationError as e:
            self.calibration_error = str(e)

    # -- manual fixes ----------------------------------------------------------------------------
    def nearest_detection(self, view: str, uv, max_px: float = 8.0) -> int | None:
        shot = self.shots.get(view)
        if shot is None or len(shot.labels) == 0:
            return None
        d = np.linalg.norm(shot.labels.centres_px - np.asarray(uv, float), axis=1)
        i = int(np.argmin(d))
        return i if d[i] <= max_px else None

    def predicted_balls(self, view: str) -> tuple[list, np.ndarray]:
        """Where the fitted view puts every ball of its planes: ([(plane id, ball)], raw px (N, 2)),
        only those inside the image; empty without a fit."""
        shot = self.shots.get(view)
        if shot is None or shot.fit is None:
            return [], np.zeros((0, 2))
        keys = [(p.id, b) for p in self.cage.planes_for(view) for b in range(p.n_balls)]
        uv = shot.fit.project(self.cage.balls_for(view), self.method)
        ok = in_image(uv, shot.image.shape, 0.5)
        return [k for k, o in zip(keys, ok) if o], uv[ok]

    def missing_balls_px(self, view: str) -> np.ndarray:
        """Predicted raw px of the balls inside the image that no detection is labelled as."""
        keys, uv = self.predicted_balls(view)
        if not keys:
            return uv
        shot = self.shots[view]
        have = set(zip(shot.labels.plane_ids, shot.labels.ball_idx.tolist()))
        uv = uv[[k not in have for k in keys]]
        return uv[_in_field(shot.image, uv, shot.labels.radius_px)]

    def suggest_label(self, view: str, index: int, max_px: float = 3.0):
        """The cage ball whose predicted position is nearest detection ``index``: (plane id, ball,
        distance px), or None when none is within ``max_px`` or there is no fit."""
        keys, uv = self.predicted_balls(view)
        if not keys or not (0 <= index < len(self.shots[view].labels)):
            return None
        d = np.linalg.norm(uv - self.shots[view].labels.centres_px[index], axis=1)
        k = int(np.argmin(d))
        return (keys[k][0], keys[k][1], float(d[k])) if d[k] <= max_px else None

    def add_ball(self, view: str, uv) -> bool:
        """Add a ball at a click (centre refined); it is labelled from its plane's fit."""
        def edit(labels, shot):
            new, i = manual.add_ball(labels, uv, shot.image.display())
            return manual.complete_labels(new, self.cage, self.distortion(view), only={i})
        return self._edit(view, edit)

    def remove_detection(self, view: str, index: int) -> bool:
        return self._edit(view, lambda labels, shot: manual.remove_detection(labels, index))

    def assign(self, view: str, index: int, plane_id: str, ball: int) -> bool:
        return self._edit(view, lambda labels, shot: manual.assign(labels, index, self.cage, plane_id, ball))

    def unassign(self, view: str, index: int) -> bool:
        return self._edit(view, lambda labels, shot: manual.unassign(labels, index))

    def complete(self, view: str) -> bool:
        """Label every detection that sits on a ball predicted from the assigned ones."""
        return self._edit(view, lambda labels, shot: manual.complete_labels(labels, self.cage,
                                                                            self.distortion(view)))

    def _edit(self, view: str, edit) -> bool:
        shot = self.shots.get(view)
        if shot is None:
            return self._fail("fix", f"calibrate first: the {view.upper()} shot has no detections yet")
        if self._busy:
            return self._fail("fix", f"wait: {self._busy} is still running")
        try:
            labels = edit(shot.labels, shot)
        except ManualEditError as e:
            return self._fail("fix", f"{view.upper()} shot: {e}")
        cage, dist = self.cage, self.distortion(view)
        return self._start("fix", f"recalibrating {view.upper()}",
                           lambda report: refit_shot(cage, shot, labels, dist),
                           lambda res: self._refit_done(view, res))

    def _refit_done(self, view: str, res: ShotResult) -> None:
        self.shots[view] = res
        self._combine()
        self.changed.emit("result")

    # -- figures, accept, reject -------------------------------------------------------------------
    def figures(self) -> dict:
        """What the technician judges: per view and plane, balls found/matched and RMS px
        of the model used; leave-one-out; angle between the views; the model."""
        m = self.method
        out = {"method": m, "views": {}, "view_angle_deg": None, "error": self.calibration_error}
        for v, s in self.shots.items():
            d = {"balls_detected": len(s.labels), "error": s.error, "planes": {}}
            if s.fit is not None:
                f = s.fit.figures
                d["loo_rms_px"] = f[f"loo_rms_px_{m}"]
                d["distortion"] = self.plates[v].figures["model"] if v in self.plates and self.use_plate else "none"
                for pid, pf in f["planes"].items():
                    d["planes"][pid] = {"matched": pf["matched"], "expected": pf["expected_in_view"],
                                        "rms_px": pf[f"rms_px_{m}"], "rms_mm": pf[f"rms_mm_{m}"]}
            out["views"][v] = d
        if self.calibration is not None:
            out["view_angle_deg"] = self.calibration.figures["view_angle_deg"]
        return out

    def accept(self, path=None) -> Path | None:
        """Save the calibration (into the session folder unless ``path``), hand it to the
        session and move the workflow on to planning. Returns the file."""
        if self.calibration is None:
            self._fail("accept", self.calibration_error or "nothing to accept yet: calibrate first")
            return None
        cal = self.calibration
        now = _dt.datetime.now(_dt.timezone.utc)
        cal.figures["accepted_utc"] = now.isoformat(timespec="seconds")
        cal.figures["distortion"] = {v: self.plates[v].figures for v in self.plates} if self.use_plate else {}
        if path is None:
            if self.session is None:
                self._fail("accept", "no session: give a file to save the calibration to")
                return None
            path = self.session.folder / f"calibration-{now.strftime('%Y%m%d-%H%M%S')}.json"
        try:
            saved = cal.save(path)
        except OSError as e:
            self._fail("accept", f"cannot write {path}: {e.strerror or e}: check the disk")
            return None
        if self.session is not None:
            self.session.set_calibration(cal, file=saved, why=f"accepted, saved to {Path(saved).name}")
            try:
                self.session.go_to_step("plan")
            except ValueError as e:
                log.warning("%s", e)
        log.info("calibration accepted, saved to %s", saved)
        self.capture_session_images = False
        self.outcome = "accepted"
        self.accepted.emit(saved)
        return saved

    def detach(self) -> None:
        """Stop following the session's images (the wizard is closed for good)."""
        self.capture_session_images = False
        if self.session is not None:
            try:
                self.session.image_changed.disconnect(self._on_session_image)
            except ValueError:
                pass

    def reject(self, reason: str = "") -> None:
        """Drop this calibration attempt; the session keeps what it had (the audit trail
        records the rejection with the figures that were judged), and the plate shots with their
        distortion stay (``keep_distortion_from`` hands them to the next attempt)."""
        if self.session is not None and (self.calibration is not None or self.shots):
            from app.audit import calibration_figures
            figures = calibration_figures(self.calibration) if self.calibration is not None else {}
            self.session.record("calibration rejected", "technician", reason=reason or "rejected by the technician",
                                error=self.calibration_error, **figures)
        self._invalidate_shots()
        self.capture_session_images = False
        self.outcome = "rejected"
        self.changed.emit("result")
        self.rejected.emit()


def plate_source_from(driver) -> Callable[[str], FluoroImage] | None:
    """A plate-shot function for a simulated C-arm driver (its scene can shoot the plate)."""
    scene = getattr(driver, "scene", None)
    if scene is None or not hasattr(scene, "plate_shot"):
        return None
    return lambda view: scene.plate_shot(view, getattr(driver, "primary_deg", 0.0),
                                         getattr(driver, "secondary_deg", 0.0)).image


def install_calibration_wizard(window, session, devices=None, acquire=None):
    """Open the calibration wizard from the workflow bar's Calibrate step. ``devices``
    (app.devices_controller.DevicesController) gives the C-arm for plate shots;
    ``acquire(view)`` asks for a cage shot (e.g. ``Workstation.acquire``). Returns a
    function that opens the wizard (and returns it)."""
    from app.qt_worker import QtThreadRunner
    from widgets.wizard.calibration_wizard import CalibrationWizard
    state = {}

    def plate_source(view):
        worker = getattr(devices, "workers", {}).get("carm")
        src = plate_source_from(getattr(worker, "driver", None))
        if src is None:
            raise PlateError("this C-arm cannot shoot the plate from fluoronav: load the plate shot from a file")
        return src(view)

    def open_wizard():
        wiz = state.get("wizard")
        if wiz is None or not wiz.isVisible():
            old = wiz
            if wiz is not None:
                wiz.workflow.detach()
                wiz.deleteLater()
            wf = CalibrationWorkflow(session, plate_source if devices is not None else None, acquire,
                                     runner=QtThreadRunner(window))
            if old is not None and wf.keep_distortion_from(old.workflow):
                log.info("calibration: the plate shots of the rejected attempt are kept")
            wiz = CalibrationWizard(wf, window)
            failed = getattr(devices, "acquisition_failed", None)
            if failed is not None:
                failed.connect(lambda view, msg, wf=wf: wf.report("shots", f"{view.upper()} shot: {msg}")
                               if wf.capture_session_images else None)
            for v in VIEWS:
                if session.image(v) is not None:
                    wf.set_shot(v, session.image(v))
            state["wizard"] = wiz
        wiz.show()
        wiz.raise_()
        return wiz

    window.workflow_bar.step_requested.connect(lambda step: open_wizard() if step == "calibrate" else None)
    return open_wizard
