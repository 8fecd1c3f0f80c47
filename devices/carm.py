"""C-arm image sources: one interface for the simulated C-arm and the real ones.

``acquire`` blocks until the image is there (the GUI calls it from a worker
thread) and returns a raw ``FluoroImage``; failures raise ``DeviceError`` with a
message a technician can act on. ``last_message`` says what the status bar shows.
"""
from __future__ import annotations

import abc
import os
import threading
import time
from pathlib import Path

import numpy as np

from core.imaging.fluoro_image import FluoroImage, ImageReadError
from core.imaging.images import read_image
from devices.base import DeviceError, DeviceStatus

__all__ = ["CArmSource", "SimulatedCArm", "DicomFolderSource", "DicomFolderCArm", "carm_preset"]

_PRESET_KEYS = {"detector", "sid_mm", "sod_mm", "field_diameter_mm", "shape"}


# The simulated room's brightness control aims the field's centre at 12 % of full scale (as
# ``sim run``): the headroom keeps the back's soft tissue in the LAT under saturation, so a wire
# docked on the entry for the closed-loop shots is seen there; at 35 % it burned out.
ROOM_SIGNAL_FRACTION = 0.12


def carm_preset(name: str) -> dict:
    """Scene arguments of a named C-arm (resources/carm/presets.json, validated by its schema)."""
    from core.formats.schema import load_json
    from resources import path
    d, _ = load_json(path("carm", "presets.json"), "carm_presets", error=DeviceError,
                     hint="fix resources/carm/presets.json")
    presets = d["presets"]
    if name not in presets:
        raise DeviceError(f"unknown C-arm preset {name!r}: choose one of {', '.join(sorted(presets))}")
    p = presets[name]
    return {k: (tuple(p[k]) if k == "shape" else p[k]) for k in _PRESET_KEYS}


class CArmSource(abc.ABC):
    """An image source: connect, ask for a shot of a view, read its status."""
    name: str = "C-arm"
    last_message: str = ""

    @abc.abstractmethod
    def status(self) -> DeviceStatus: ...

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def acquire(self, view: str, **pose) -> FluoroImage:
        """Blocking: the next shot of ``view`` ("ap" or "lat")."""

    def set_pose(self, primary_deg: float, secondary_deg: float) -> None:
        """Orbit the C-arm (where the source can be driven)."""
        raise DeviceError(f"{self.name} cannot be positioned from fluoronav: set the angles on the C-arm")


def _check_view(view):
    if view not in ("ap", "lat"):
        raise DeviceError(f"unknown view {view!r}: ask for 'ap' or 'lat'")


class SimulatedCArm(CArmSource):
    """The virtual C-arm of the simulated operating room (wraps ``core.simulation.SimulatedOR``).

    Orbit (primary = LAO+/RAO-, secondary = cranial+/caudal-, degrees), SID and
    detector type, or a named ``preset``; other keyword arguments go to the scene
    (phantom, cage, T_world_cage, pixel_spacing_mm, ...). ``last_shot`` /
    ``last_shots[view]`` keep the ground truth.
    ``latency_s``: the least time an acquisition takes, like a real exposure.

    ``connect`` starts building the scene (phantom CT, attenuation grid, renderer: seconds,
    more on a loaded machine) in a daemon thread of its own and returns at once, so that the
    device's worker stays free: until the scene is there ``status()`` is DISCONNECTED with
    "building the simulated room…", and ``acquire`` / ``wait_ready`` wait for it.
    ``disconnect`` abandons a build in progress (it stops at its next stage) and nothing waits
    for it: closing the application while the room is still being built is immediate.
    """
    name = "Simulated C-arm"
    BUILDING = "building the simulated room…"
    # what SimulatedOR builds after each of its ``cancelled`` checks, for the status pill
    BUILD_STAGES = ("phantom CT", "cage and attenuation grid", "X-ray renderer")

    def __init__(self, seed: int = 0, detector: str | None = None, sid_mm: float | None = None,
                 sod_mm: float | None = None, shape=None, latency_s: float = 0.15, scene=None,
                 preset: str | None = None, **scene_kwargs):
        self.seed, self.latency_s = int(seed), float(latency_s)
        # built-in defaults (the 9-inch II), then the named preset, then explicit arguments
        self._scene_args = dict(seed=int(seed), detector="image_intensifier", sid_mm=1000.0, sod_mm=625.0,
                                shape=(512, 512))
        if preset:
            self._scene_args.update(carm_preset(preset))
        given = dict(detector=detector, sid_mm=sid_mm, sod_mm=sod_mm, shape=None if shape is None else tuple(shape))
        self._scene_args.update({k: v for k, v in given.items() if v is not None}, **scene_kwargs)
        self.scene = scene
        self.primary_deg, self.secondary_deg = 0.0, 0.0
        self.last_shot = None
        self.last_shots: dict = {}
        self.instruments: tuple = ()          # in every later shot (a K-wire, a guide), world frame
        self._connected = False
        self._lock = threading.Lock()
        self._ready = threading.Event()      # the scene is built (or its build failed)
        self._cancel = threading.Event()
        self._build_error: str | None = None
        self._builder: threading.Thread | None = None
        self._stage: int | None = None           # the build's stage (index in BUILD_STAGES)
        self._build_since = time.monotonic()
        self.last_message = "not connected"
        if scene is not None:
            self._ready.set()

    def status(self) -> DeviceStatus:
        if not self._connected:
            return DeviceStatus.DISCONNECTED
        if not self._ready.is_set():
            return DeviceStatus.DISCONNECTED
        return DeviceStatus.FAULT if self._build_error else DeviceStatus.SIMULATED

    def connect(self) -> None:
        """Start building the scene the first time (see the class); a failed build is a FAULT
        whose message says why."""
        with self._lock:
            self._connected = True
            if self._ready.is_set():
                if self._build_error is None:
                    self.last_message = self._describe()
                return
            self._cancel.clear()         # a build abandoned but still running goes on
            self.last_message = self.BUILDING
            self._build_since = time.monotonic()
            if self._builder is None:
                self._builder = threading.Thread(target=self._build, name="simulated C-arm scene", daemon=True)
                self._builder.start()

    @property
    def last_message(self) -> str:
        """The status line; while the room is being built, its stage and the seconds so far
        (a build takes a minute on a loaded machine: the pill shows it is under way)."""
        msg = self._last_message
        if self._stage is not None and msg.startswith("building") and self._connected:
            k, n = self._stage + 1, len(self.BUILD_STAGES)
            return (f"building the simulated room: {self.BUILD_STAGES[self._stage]} ({k} of {n}), "
                    f"{time.monotonic() - self._build_since:.0f} s…")
        return msg

    @last_message.setter
    def last_message(self, text: str) -> None:
        self._last_message = text

    def _build(self) -> None:
        from core.simulation.scene import SceneCancelled, SimulatedOR
        checks = [0]

        def cancelled() -> bool:                 # asked before each stage: that stage begins
            self._stage = min(checks[0], len(self.BUILD_STAGES) - 1)
            checks[0] += 1
            return self._cancel.is_set()
        while True:
            checks[0] = 0
            try:
                args = dict(self._scene_args)
                if args.get("detector_model") is None:
                    from core.simulation.fluoro import DetectorModel
                    args["detector_model"] = DetectorModel(kind=args.get("detector", "image_intensifier"),
                                                           signal_fraction=ROOM_SIGNAL_FRACTION)
                scene = SimulatedOR(**args, cancelled=cancelled)
                break
            except SceneCancelled:
                with self._lock:
                    if self._cancel.is_set():        # still abandoned: the next connect starts again
                        self._builder = None
                        return
            except (ValueError, ImportError) as e:
                self._stage = None
                self._build_error = f"simulation could not start: {e}"
                self.last_message = self._build_error
                self._ready.set()
                return
        self._stage = None
        with self._lock:
            if self._scene_args.get("T_world_cage") is not None:   # set while it was being built
                scene.T_world_cage = np.asarray(self._scene_args["T_world_cage"], float)
            self.scene = scene
            if self._connected:
                self.last_message = self._describe()
            self._ready.set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until the scene is built (True) or its build failed (False); False at the timeout."""
        return self._ready.wait(timeout_s) and self._build_error is None

    def disconnect(self) -> None:
        with self._lock:
            self._connected = False
            if not self._ready.is_set():
                self._cancel.set()
            self.last_message = "disconnected"

    def _describe(self) -> str:
        kind = "II" if self.scene.detector.kind == "image_intensifier" else "flat panel"
        return f"{kind}, SID {self.scene.sid_mm:.0f} mm, {self.primary_deg:+.0f}°/{self.secondary_deg:+.0f}°"

    def set_pose(self, primary_deg: float, secondary_deg: float) -> None:
        if not (abs(primary_deg) <= 120 and abs(secondary_deg) <= 60):
            raise DeviceError("C-arm angles out of range: primary within ±120°, secondary within ±60°")
        self.primary_deg, self.secondary_deg = float(primary_deg), float(secondary_deg)
        if self._connected:
            self.last_message = self._describe()

    def set_cage_pose(self, T_world_cage) -> None:
        """Where the robot holds the cage (world frame); until the robot exists, from configuration."""
        T = np.asarray(T_world_cage, float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise DeviceError("cage pose must be a finite 4x4 transform")
        with self._lock:
            if self.scene is None:       # not built yet: the build takes it when it ends
                self._scene_args["T_world_cage"] = T
            else:
                self.scene.T_world_cage = T

    def set_instruments(self, objects) -> None:
        """Put instruments (``core.simulation.instruments`` objects or attenuators, world frame) in
        the room: every later ``acquire`` shows them, until the next call (``()`` takes them out)."""
        objects = tuple(objects or ())
        for o in objects:
            if not (hasattr(o, "attenuators") or hasattr(o, "chords")):
                raise DeviceError(f"an instrument must be an attenuator (chords) or carry attenuators, got "
                                  f"{type(o).__name__}")
        with self._lock:
            self.instruments = objects

    def acquire(self, view: str, primary_deg: float | None = None, secondary_deg: float | None = None,
                with_cage: bool = True, instruments=None) -> FluoroImage:
        _check_view(view)
        if not self._connected:
            raise DeviceError("the simulated C-arm is not connected: connect it first")
        while not self._ready.wait(0.1):
            if not self._connected:
                raise DeviceError("the simulated C-arm was disconnected while its room was being built")
        if self._build_error:
            raise DeviceError(self._build_error)
        p = self.primary_deg if primary_deg is None else float(primary_deg)
        s = self.secondary_deg if secondary_deg is None else float(secondary_deg)
        t0 = time.monotonic()
        with self._lock:
            if instruments is None:
                instruments = [a for o in self.instruments
                               for a in (o.attenuators() if hasattr(o, "attenuators") else [o])]
            try:
                shot = self.scene.acquire(view, p, s, with_cage=with_cage, instruments=instruments)
            except ValueError as e:
                raise DeviceError(f"simulated acquisition failed: {e}") from e
            self.last_shot = shot
            self.last_shots[view] = shot
        time.sleep(max(0.0, self.latency_s - (time.monotonic() - t0)))
        return shot.image


class DicomFolderSource(CArmSource):
    """Takes each new image file (DICOM, or 16-bit PNG/TIFF) that appears in a folder.

    The C-arm (or its DICOM node) writes there; files present at ``connect`` are
    ignored. A file counts once its size has been stable for ``settle_s``.
    """
    name = "DICOM folder"

    def __init__(self, folder, timeout_s: float = 30.0, poll_s: float = 0.2, settle_s: float = 0.3):
        if not (timeout_s > 0 and poll_s > 0 and settle_s >= 0):
            raise DeviceError("timeout_s and poll_s must be positive, settle_s non-negative")
        self.folder = Path(folder).expanduser()
        self.timeout_s, self.poll_s, self.settle_s = float(timeout_s), float(poll_s), float(settle_s)
        self._seen: set[str] = set()
        self._connected = False
        self.last_message = "not connected"

    def status(self) -> DeviceStatus:
        if not self._connected:
            return DeviceStatus.DISCONNECTED
        if not self.folder.is_dir():
            self.last_message = f"folder {self.folder} is gone: check the network share or the disk"
            return DeviceStatus.FAULT
        return DeviceStatus.CONNECTED

    def connect(self) -> None:
        if not self.folder.is_dir():
            self.last_message = f"folder {self.folder} does not exist: create it or set carm.dicom_folder"
            raise DeviceError(self.last_message)
        self._seen = set(self._listing())
        self._connected = True
        self.last_message = f"watching {self.folder}"

    def disconnect(self) -> None:
        self._connected = False
        self.last_message = "disconnected"

    def _listing(self) -> dict:
        out = {}
        with os.scandir(self.folder) as it:
            for e in it:
                if e.is_file() and not e.name.startswith("."):
                    out[e.path] = e.stat().st_size
        return out

    def acquire(self, view: str, **pose) -> FluoroImage:
        _check_view(view)
        if not self._connected:
            raise DeviceError("the DICOM folder source is not connected: connect it first")
        deadline = time.monotonic() + self.timeout_s
        sizes: dict = {}
        while True:
            try:
                listing = self._listing()
            except OSError as e:
                raise DeviceError(f"cannot read folder {self.folder}: {e.strerror or e}") from e
            now = time.monotonic()
            for path in sorted(set(listing) - self._seen, key=lambda p: (os.path.getmtime(p), p)):
                size, since = sizes.get(path, (None, now))
                if size != listing[path]:
                    sizes[path] = (listing[path], now)
                    continue
                if now - since >= self.settle_s:
                    self._seen.add(path)
                    return self._read(path, view)
            if now > deadline:
                raise DeviceError(f"no new image in {self.folder} after {self.timeout_s:g} s: "
                                  "check that the C-arm sends its images to this folder")
            time.sleep(self.poll_s)

    def _read(self, path, view) -> FluoroImage:
        try:
            img = read_image(path)
        except ImageReadError as e:
            self.last_message = str(e)
            raise DeviceError(f"new file could not be read: {e}") from e
        self.last_message = f"last image {Path(path).name}"
        return img if img.view else img.with_view(view)


DicomFolderCArm = DicomFolderSource  # the name app/devices_controller.py looks up
