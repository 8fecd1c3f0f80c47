"""Writing the project's files so that nothing is lost (DESIGN.md: written atomically).

A crash, a kill or a full disk mid-write leaves the previous file intact: the data goes to
a temporary file ``.NAME.tmp-PID`` in the same folder, is flushed to disk, then renamed
over the target and the folder flushed too. ``keep_previous`` first keeps the file being
replaced as ``NAME.prev`` (the previous good version, for when the new one turns out
damaged). A kill can leave a temporary file behind; ``remove_stale_temps`` clears those
of dead processes when the folder is next used.
JSON has no NaN or infinity: a non-finite number is written as null, so that every file
written here is standard JSON and passes ``core.formats.schema``'s finite-number check.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
from pathlib import Path

__all__ = ["write_atomic", "write_json_atomic", "remove_stale_temps", "sha256_file", "sha256_bytes",
           "previous_version", "is_temp_name"]

PREV_SUFFIX = ".prev"
# ".NAME.tmp-PID" (a counter after the PID when one process writes the same name twice at once);
# ".NAME.XXXXXXXX.tmp" is what earlier versions left (tempfile.mkstemp)
_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:-\d+)?$")
_OLD_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_STARTED = time.time()      # files of a temporary name older than this are no write of ours
_counter = itertools.count(1)
_lock = threading.Lock()


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temporary file names."""
    return bool(_TEMP.match(name) or _OLD_TEMP.match(name))


def previous_version(path) -> Path:
    """Where ``write_atomic(..., keep_previous=True)`` keeps the version it replaced."""
    path = Path(path)
    return path.with_name(path.name + PREV_SUFFIX)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """The sha256 of a file's content (hex), what a session record keeps to detect damage."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _temp_path(path: Path) -> Path:
    base = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with _lock:
        return base if not base.exists() else base.with_name(f"{base.name}-{next(_counter)}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return              # a system without directory handles: the rename is all we have
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data: bytes, keep_previous: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); returns the path.
    ``keep_previous``: the file it replaces stays as ``NAME.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    prev_tmp = None
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            # a second name for the current file, renamed over NAME.prev: at every moment
            # NAME is whole and NAME.prev is either the older or the current good version
            prev_tmp = _temp_path(previous_version(path))
            try:
                os.link(path, prev_tmp)
            except OSError:         # no hard links here: a copy does
                with open(path, "rb") as src, open(prev_tmp, "xb") as dst:
                    dst.write(src.read())
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(prev_tmp, previous_version(path))
            prev_tmp = None
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        for t in (tmp, prev_tmp):
            if t is not None and os.path.exists(t):
                os.unlink(t)
        raise
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process
        return True
    return True


def remove_stale_temps(folder) -> list[str]:
    """Remove the temporary files interrupted writes left in ``folder`` (only this module's
    names, of a process that is gone or from before this process started); returns their names."""
    folder = Path(folder)
    removed = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if m is None and not _OLD_TEMP.match(p.name):
            continue
        try:
            if not p.is_file():
                continue
            if m is not None:
                pid = int(m.group("pid"))
                if pid == os.getpid() or (_alive(pid) and p.stat().st_mtime >= _STARTED):
                    continue        # a write in progress
            elif p.stat().st_mtime >= _STARTED:
                continue
            p.unlink()
            removed.append(p.name)
        except OSError:
            continue
    return removed


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


def json_bytes(obj, indent: int | None = 2) -> bytes:
    """``obj`` as standard JSON bytes (numpy scalars as numbers, NaN and infinity as null)."""
    try:
        text = json.dumps(obj, indent=indent, default=float, allow_nan=False)
    except ValueError:          # a non-finite number somewhere: the slower, complete walk
        text = json.dumps(_finite_or_null(obj), indent=indent, default=float, allow_nan=False)
    return text.encode("utf-8")


def write_json_atomic(path, obj, indent: int | None = 2, keep_previous: bool = False) -> Path:
    """``obj`` as JSON (numpy scalars as numbers, NaN and infinity as null), written atomically."""
    return write_atomic(path, json_bytes(obj, indent), keep_previous=keep_previous)
