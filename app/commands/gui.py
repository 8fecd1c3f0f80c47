"""``fluoronav gui`` (the default): the workstation window.

``--resume FOLDER`` reopens an interrupted session (``--resume last``: the newest one
under the configured sessions folder); a folder that is not a resumable session is one
line on stderr and exit code 2, before any window opens."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("gui", help="start the workstation GUI (default)")
    p.add_argument("--config", help="user configuration file (TOML); default: the user config path")
    p.add_argument("--resume", metavar="FOLDER",
                   help="reopen an interrupted session: its folder, or 'last' for the newest session")
    p.set_defaults(func=_run)


def resume_folder(spec, config_path=None):
    """The session folder ``--resume`` names, checked (CommandError: one line, exit 2)."""
    from app.cli import CommandError
    from app.config import ConfigError, load_config, load_defaults
    from app.session import SessionError, find_session
    try:
        config = load_config(config_path)
    except ConfigError:
        config = load_defaults()   # the GUI reports the configuration's problems itself
    try:
        return find_session(spec, config.session.data_dir or None)
    except SessionError as e:
        raise CommandError(f"cannot resume: {e}") from None


def _run(args) -> int:
    folder = resume_folder(args.resume, args.config) if args.resume else None
    from app.main import run_gui  # Qt imported only when the GUI is wanted
    return run_gui(config_path=args.config, resume=folder)
