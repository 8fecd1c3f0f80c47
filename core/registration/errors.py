"""The two ways a registration ends without a result: bad input, or no trustworthy fit."""
from __future__ import annotations

__all__ = ["RegistrationError", "RegistrationRefused"]


class RegistrationError(ValueError):
    """The registration cannot start: an input (image, geometry, volume, start pose) is wrong."""


class RegistrationRefused(RegistrationError):
    """The optimiser ran but its answer is not to be used: similarity below its bound, or
    restarts that disagree. ``result`` holds the best attempt and its figures, for the log."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
