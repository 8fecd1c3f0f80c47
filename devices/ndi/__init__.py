"""NDI Combined API trackers (Polaris, Vega, Aurora): the protocol, the link, the driver and
a fake system for tests. ``NdiTracker`` is what the configuration's ``tracker.kind = "ndi"`` builds."""
from devices.ndi.tracker import NDI_TCP_PORT, NdiTracker

__all__ = ["NdiTracker", "NDI_TCP_PORT"]
