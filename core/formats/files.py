"""Writing the project's files so that nothing is lost (DESIGN.md: written atomically).

A crash or a full disk mid-write leaves the previous file intact: the data goes to a
temporary file in the same folder, is flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj, indent: int | None = 2) -> Path:
    """``obj`` as JSON (numpy scalars as floats), written atomically."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=float).encode("utf-8"))
