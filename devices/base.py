"""What every device driver shares: its connection status and its errors."""
from __future__ import annotations

import enum


class DeviceStatus(enum.Enum):
    """Shown in the status bar for each device."""
    DISCONNECTED = "disconnected"
    SIMULATED = "simulated"
    CONNECTED = "connected"
    FAULT = "fault"


class DeviceError(RuntimeError):
    """A device failed or stopped answering; the message says what to check."""
