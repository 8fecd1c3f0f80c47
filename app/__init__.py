"""fluoronav application layer: the Qt application, main window, workflow and CLI."""

__version__ = "0.1.0"

# The workstation's interpreter hands the GIL to a waiting thread after 1 ms, not Python's
# default 5 ms: the device threads (the OpenIGTLink pose feed, the DICOM reader, the device
# workers) then run within a millisecond of waking even while the GUI thread runs Python.
# `fluoronav bench igtl`'s loaded case measured 52-58 Hz at 5 ms and 88-94 Hz at 1 ms (100 Hz asked).
GUI_SWITCH_INTERVAL_S = 0.001
