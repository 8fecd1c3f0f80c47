"""``fluoronav gui`` (the default): the workstation window."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("gui", help="start the workstation GUI (default)")
    p.add_argument("--config", help="user configuration file (TOML); default: the user config path")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from app.main import run_gui  # Qt imported only when the GUI is wanted
    return run_gui(config_path=args.config)
