"""Data files shipped with fluoronav: cages, plates, robot parameters, style."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def path(*parts: str) -> Path:
    """Absolute path of a resource file, e.g. ``path("cages", "default.json")``."""
    return ROOT.joinpath(*parts)
