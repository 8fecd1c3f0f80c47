"""Device I/O off the GUI thread: one QThread and worker per device, queued signals.

Each configured device gets a ``DeviceWorker`` living in its own thread. The
worker builds the Qt-free driver (``devices/``), connects it, polls its status
and runs blocking requests (a C-arm acquisition). The GUI only sees queued
signals; ``DevicesController`` turns them into session updates
(``Session.set_device_status`` / ``Session.set_image``).

Driver interface used: ``connect()``, ``status() -> DeviceStatus`` (or a ``status`` attribute), optional
``disconnect()``/``close()``, optional ``last_message``/``message`` (str), and
for the C-arm ``acquire(view) -> FluoroImage``.
"""
from __future__ import annotations

import importlib
import inspect
import itertools
import logging
import time
from typing import Any, Callable

from psygnal import EmitLoopError
from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from app.config import Config
from app.session import DEVICES, Session, listener_failure
from devices.base import DeviceError, DeviceStatus

__all__ = ["DevicesController", "DeviceWorker", "DRIVERS", "DriverMissing", "driver_factory"]

log = logging.getLogger(__name__)

# (device, configured kind) -> (module, class, {driver kwarg: config key})
DRIVERS = {
    ("carm", "simulated"): ("devices.carm", "SimulatedCArm", {"seed": "seed"}),
    ("carm", "dicom_folder"): ("devices.carm", "DicomFolderCArm", {"folder": "dicom_folder",
                                                                   "timeout_s": "acquire_timeout_s"}),
    ("tracker", "simulated"): ("devices.sim_tracker", "SimulatedTracker", {}),
    ("tracker", "ndi"): ("devices.ndi", "NdiTracker", {
        "host": "host", "port": "port", "serial_port": "serial_port", "baud": "serial_baud",
        "tools": "tool_names", "tool_roms": "tool_roms", "reply": "reply_format", "rate_hz": "rate_hz"}),
}


class DriverMissing(DeviceError):
    """The configured driver cannot be loaded: a broken install, never a silent "disconnected"."""


ROBOT_PROCESS_DEVICES = ("robot", "force_sensor")   # driven by the robot's control process


def driver_factory(device: str, config: Config) -> tuple[Callable[[], Any] | None, str]:
    """(factory building the configured driver, or None; why not). A configured driver that
    cannot be imported raises ``DriverMissing``."""
    kind = config[device]["kind"]
    if kind == "none":
        return None, f"not configured ({device}.kind = \"none\")"
    if device in ROBOT_PROCESS_DEVICES:
        # the robot's control loop owns both, in its own process (app.robot_controller_client)
        return None, f"{kind} {device.replace('_', ' ')}: started with the robot panel"
    module_name, class_name, keys = DRIVERS[(device, kind)]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise DriverMissing(f"the {kind} {device.replace('_', ' ')} driver ({module_name}.{class_name}) is "
                            f"missing from this installation ({type(e).__name__}: {e}): reinstall "
                            f"fluoronav, or set {device}.kind to another driver") from None
    accepted = inspect.signature(cls).parameters
    kwargs = {arg: config[device][key] for arg, key in keys.items() if arg in accepted}
    return (lambda: cls(**kwargs)), ""


def _message(driver) -> str:
    for name in ("last_message", "message"):
        m = getattr(driver, name, None)
        if isinstance(m, str):
            return m
    return ""


class DeviceWorker(QObject):
    """Owns one driver in its thread. Slots run there; results leave by queued signals."""

    status_changed = Signal(str, object, str)       # device, DeviceStatus, message
    image_ready = Signal(int, str, object, float, object)  # request id, view, FluoroImage, seconds, truth
    request_failed = Signal(int, str, str)          # request id, view, message
    call_done = Signal(int, object, str)            # call id, result, error message ("" when none)

    def __init__(self, device: str, factory: Callable[[], Any], poll_s: float):
        super().__init__()
        self.device = device
        self._factory = factory
        self._poll_s = poll_s
        self.driver = None
        self._timer: QTimer | None = None
        self._last: tuple | None = None

    def _report(self, status: DeviceStatus, message: str) -> None:
        if (status, message) != self._last:
            self._last = (status, message)
            self.status_changed.emit(self.device, status, message)

    @Slot()
    def start(self) -> None:
        try:
            self.driver = self._factory()
            self.driver.connect()
        except Exception as e:  # any driver failure is a fault the technician must see
            self._report(DeviceStatus.FAULT, f"could not connect: {e}")
            return
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._timer.start(int(self._poll_s * 1000))
        self.poll()

    @Slot()
    def poll(self) -> None:
        if self.driver is None:
            return
        try:
            status = self.driver.status  # a method or an attribute, depending on the driver
            status = status() if callable(status) else status
        except Exception as e:
            self._report(DeviceStatus.FAULT, f"status query failed: {e}")
            return
        if not isinstance(status, DeviceStatus):
            self._report(DeviceStatus.FAULT, f"driver returned status {status!r}")
            return
        self._report(status, _message(self.driver))

    @Slot(int, str)
    def acquire(self, request_id: int, view: str) -> None:
        if self.driver is None:
            self.request_failed.emit(request_id, view, f"{self.device} is not connected")
            return
        t0 = time.monotonic()
        try:
            image = self.driver.acquire(view)
        except (DeviceError, ValueError, RuntimeError, OSError) as e:
            self.request_failed.emit(request_id, view, str(e))
        else:
            self.image_ready.emit(request_id, view, image, time.monotonic() - t0, self._truth(view))
        self.poll()

    @Slot(str, int, object)
    def call(self, device: str, call_id: int, fn) -> None:
        """Run ``fn(driver)`` here, in the device's thread, in order with its acquisitions."""
        if device != self.device:
            return
        if self.driver is None:
            self.call_done.emit(call_id, None, f"{self.device} is not connected")
            return
        try:
            result = fn(self.driver)
        except Exception as e:  # the caller gets the driver's one line
            self.call_done.emit(call_id, None, str(e) or type(e).__name__)
        else:
            self.call_done.emit(call_id, result, "")
        self.poll()

    def _truth(self, view: str):
        """A simulator's ground truth of the shot just taken (None for a real device)."""
        shot = getattr(self.driver, "last_shots", {}).get(view)
        if shot is None:
            return None
        return {"shot": shot, "cage": getattr(getattr(self.driver, "scene", None), "cage", None)}

    @Slot()
    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        for name in ("disconnect", "close"):
            fn = getattr(self.driver, name, None)
            if callable(fn):
                try:
                    fn()
                except Exception as e:
                    log.warning("%s: %s failed: %s", self.device, name, e)
                break
        QThread.currentThread().quit()


class DevicesController(QObject):
    """Starts the configured devices and carries their news into the session.

    ``acquire(view)`` asks the C-arm for a shot; ``busy_changed(view, busy)``
    brackets it; the image lands in ``session.set_image(view, image)``.
    """

    busy_changed = Signal(str, bool)
    device_status_changed = Signal(str, object, str)  # every device, also ones added by others
    acquisition_failed = Signal(str, str)           # view, message
    simulated_shot = Signal(str, object)            # view, {"shot": SimulatedShot, "cage": Cage}
    _acquire_request = Signal(int, str)
    _call_request = Signal(str, int, object)
    _stop_request = Signal()

    def __init__(self, config: Config, session: Session, parent=None):
        super().__init__(parent)
        self.config = config
        self.session = session
        from app.device_state import device_state
        self.state = device_state(session)   # the one path statuses take into the session
        self.state.connect_devices(self)
        self.workers: dict[str, DeviceWorker] = {}
        self.threads: dict[str, QThread] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}
        self._calls: dict[int, Callable | None] = {}

    def start(self) -> None:
        for device in DEVICES:
            try:
                factory, why = driver_factory(device, self.config)
            except DriverMissing as e:
                log.error("%s: %s", device, e)
                self.state.status(device, DeviceStatus.FAULT, str(e))
                continue
            if factory is None:
                log.info("%s: %s", device, why)
                reported = self.session.device_status(device) != (DeviceStatus.DISCONNECTED, "not started")
                if not (device in ROBOT_PROCESS_DEVICES and self.config[device]["kind"] != "none" and reported):
                    # (the robot process may have said how it is before the devices start)
                    self.state.status(device, DeviceStatus.DISCONNECTED, why)
                continue
            self.add_device(device, factory)

    def add_device(self, device: str, factory: Callable[[], Any]) -> DeviceWorker:
        """Run the driver built by ``factory`` in its own thread (also for other parts' devices)."""
        if device in self.workers:
            raise ValueError(f"device {device!r} is already running")
        worker = DeviceWorker(device, factory, self.config.devices.status_poll_s)
        thread = QThread(self)
        thread.setObjectName(f"fluoronav-{device}")
        worker.moveToThread(thread)
        thread.started.connect(worker.start)
        worker.status_changed.connect(self._on_status)
        worker.image_ready.connect(self._on_image)
        worker.request_failed.connect(self._on_failed)
        self._stop_request.connect(worker.stop)
        self._call_request.connect(worker.call)
        worker.call_done.connect(self._on_call_done)
        if device == "carm":
            self._acquire_request.connect(worker.acquire)
        self.state.status(device, DeviceStatus.DISCONNECTED, "connecting…")
        self.workers[device], self.threads[device] = worker, thread
        thread.start()
        return worker

    # -- any device: a call in its thread ------------------------------------------------
    def call(self, device: str, fn: Callable[[Any], Any],
             done: Callable[[Any, str], None] | None = None) -> int:
        """Run ``fn(driver)`` in ``device``'s worker thread, after the requests already sent
        to it; ``done(result, error)`` is then called on this (the GUI) thread."""
        if device not in self.workers:
            raise DeviceError(f"{device.replace('_', ' ')} is not running")
        call_id = next(self._ids)
        self._calls[call_id] = done
        self._call_request.emit(device, call_id, fn)
        return call_id

    def _on_call_done(self, call_id: int, result, error: str) -> None:
        done = self._calls.pop(call_id, None)
        if done is not None:
            done(result, error)
        elif error:
            log.error("device request failed: %s", error)

    # -- C-arm ------------------------------------------------------------------------
    def set_carm_pose(self, primary_deg: float, secondary_deg: float,
                      done: Callable[[Any, str], None] | None = None) -> int:
        """Orbit the C-arm (LAO+/RAO-, cranial+/caudal-, degrees) in its thread."""
        return self.call("carm", lambda d: d.set_pose(float(primary_deg), float(secondary_deg)), done)

    @property
    def busy(self) -> bool:
        """A C-arm request is in progress."""
        return bool(self._pending)

    def can_acquire(self) -> bool:
        return "carm" in self.workers and self.session.device_ready("carm") and not self._pending

    def acquire(self, view: str) -> int:
        """Ask the C-arm for a ``view`` shot; returns the request id."""
        if view not in ("ap", "lat"):
            raise ValueError(f"unknown view {view!r}: use 'ap' or 'lat'")
        if "carm" not in self.workers:
            raise DeviceError("no C-arm is configured: set [carm] kind in the configuration")
        status, message = self.session.device_status("carm")
        if not self.session.device_ready("carm"):
            raise DeviceError(f"the C-arm is {status.value}" + (f": {message}" if message else ""))
        if self._pending:
            raise DeviceError("the C-arm is still acquiring: wait for the image")
        request_id = next(self._ids)
        self._pending[request_id] = view
        self.busy_changed.emit(view, True)
        # the driver has the same time-out; the margin lets its own message arrive first
        timeout_ms = int((self.config.carm.acquire_timeout_s + 5.0) * 1000)
        QTimer.singleShot(timeout_ms, self, lambda: self._on_timeout(request_id))
        log.info("acquiring %s…", view.upper())
        self._acquire_request.emit(request_id, view)
        return request_id

    def _finish(self, request_id: int) -> str | None:
        view = self._pending.pop(request_id, None)
        if view is not None:
            self.busy_changed.emit(view, False)
        return view

    def _on_image(self, request_id: int, view: str, image, seconds: float, truth=None) -> None:
        if self._finish(request_id) is None:
            log.warning("a late %s image arrived after its time-out; it was not shown", view.upper())
            return
        try:
            path = self.session.set_image(view, image)
        except EmitLoopError as e:   # kept and saved; a view of it failed
            listener_failure(e, f"showing the new {view.upper()} image")
            path = None
        except (ValueError, OSError) as e:
            self.acquisition_failed.emit(view, str(e))
            log.error("%s image not kept: %s", view.upper(), e)
            return
        log.info("%s image %dx%d in %.2f s%s", view.upper(), image.shape[1], image.shape[0], seconds,
                 f", saved to {path}" if path else "")
        if truth is not None:
            self.simulated_shot.emit(view, truth)

    def _on_failed(self, request_id: int, view: str, message: str) -> None:
        self._finish(request_id)
        log.error("acquire %s failed: %s", view.upper(), message)
        self.acquisition_failed.emit(view, message)

    def _on_timeout(self, request_id: int) -> None:
        view = self._finish(request_id)
        if view is not None:
            msg = (f"no {view.upper()} image after {self.config.carm.acquire_timeout_s + 5:g} s: "
                   "check the C-arm and its connection")
            log.error(msg)
            self.acquisition_failed.emit(view, msg)

    def _on_status(self, device: str, status, message: str) -> None:
        self.device_status_changed.emit(device, status, message)   # into the session: app.device_state
        log.log(logging.WARNING if status == DeviceStatus.FAULT else logging.INFO,
                "%s: %s%s", device, status.value, f" ({message})" if message else "")

    def shutdown(self, patience_s: float = 60.0) -> None:
        """Stop every worker and its thread. A request in progress (a C-arm still
        building its scene, an acquisition) is waited for, up to ``patience_s``."""
        self._stop_request.emit()  # each worker stops its driver, then its thread
        for device, thread in self.threads.items():
            if thread.wait(2000):
                continue
            log.warning("waiting for %s to finish its request before quitting…", device)
            if not thread.wait(int(patience_s * 1000)):
                log.error("%s did not stop within %.0f s; stopping its thread by force", device, patience_s)
                thread.terminate()
                thread.wait(2000)
        self.workers.clear()
        self.threads.clear()
