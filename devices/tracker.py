"""The optical tracker interface: every driver (NDI Combined API, the simulated tracker)
delivers ``core.navigation.tracking.TrackerFrame``s, one per measurement.

A driver runs its own reading thread; ``latest()`` returns the newest frame without
blocking, and the consumer applies ``tracking.usable`` (age <= 50 ms, every tool OK)
before it uses a pose. A driver that cannot be loaded is an error that says so.
"""
from __future__ import annotations

import abc

from core.navigation.tracking import TrackerFrame
from devices.base import DeviceError, DeviceStatus

__all__ = ["Tracker", "TrackerError"]


class TrackerError(DeviceError):
    """The tracker failed or stopped answering; the message says what to check."""


class Tracker(abc.ABC):
    """What the app and the tracked closed loop use of a tracker."""

    #: names of the tools this tracker reports (e.g. "robot_ref", "patient_ref")
    tools: tuple[str, ...] = ()

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link, load the tools, start tracking; raises ``TrackerError``."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop tracking and close the link; never raises."""

    @abc.abstractmethod
    def status(self) -> DeviceStatus:
        """For the status bar."""

    @abc.abstractmethod
    def latest(self) -> TrackerFrame | None:
        """The newest frame received (None before the first); never blocks."""
