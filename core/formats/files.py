"""Writing the project's files so that nothing is lost (DESIGN.md: written atomically).

A crash or a full disk mid-write leaves the previous file intact: the data goes to a
temporary file in the same folder, is flushed to disk, then renamed over the target.
JSON has no NaN or infinity: a non-finite number is written as null, so that every file
written here is standard JSON and passes ``core.formats.schema``'s finite-number check.
"""
from __future__ import annotations

import json
import math
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


def _finite_or_null(x):
    """``x`` with every non-finite float (numpy scalars and arrays included) replaced by None."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):      # numpy array or scalar
        return _finite_or_null(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json_atomic(path, obj, indent: int | None = 2) -> Path:
    """``obj`` as JSON (numpy scalars as numbers, NaN and infinity as null), written atomically."""
    try:
        text = json.dumps(obj, indent=indent, default=float, allow_nan=False)
    except ValueError:          # a non-finite number somewhere: the slower, complete walk
        text = json.dumps(_finite_or_null(obj), indent=indent, default=float, allow_nan=False)
    return write_atomic(path, text.encode("utf-8"))
