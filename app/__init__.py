"""fluoronav application layer: the Qt application, main window, workflow and CLI."""

__version__ = "0.1.0"
