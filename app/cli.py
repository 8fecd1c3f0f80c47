"""The ``fluoronav`` command line (DESIGN.md: a contract that external checks run).

Subcommands live one per module in ``app/commands/``; each module defines
``register(subparsers)`` that adds its parser and sets ``func=callable(args) -> int``.
Benchmarks live in ``app/bench/`` (see ``app/commands/bench.py``).
With no subcommand, the GUI starts (``gui`` is the default).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from app import __version__


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluoronav",
        description="Robot-assisted spine surgery navigated by 2D fluoroscopy. "
                    "Without a subcommand, starts the workstation GUI.")
    parser.add_argument("--version", action="version", version=f"fluoronav {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import app.commands as commands
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"app.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["gui", *argv])
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        print(f"fluoronav {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # run through the imported module: under ``python -m app.cli`` this file is ``__main__``, and
    # its CommandError would not be the class the subcommands raise (app.cli.CommandError)
    from app.cli import main as _main
    sys.exit(_main())
