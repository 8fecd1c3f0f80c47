"""The command line's basic contract: --version, --help, unknown commands."""
import subprocess
import sys

import pytest

from app import __version__
from app.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_name_and_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fluoronav {__version__}"


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("gui", "bench"):
        assert cmd in out.stdout


def test_unknown_subcommand_fails_with_usage():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
