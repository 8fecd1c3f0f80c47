"""core.formats.files: atomic writes keep the previous file when a write fails."""
import json

import numpy as np
import pytest

from core.formats.files import write_atomic, write_json_atomic


def test_write_creates_folder_and_replaces_content(tmp_path):
    p = tmp_path / "a" / "b" / "x.json"
    write_json_atomic(p, {"v": np.float64(1.5)})
    write_json_atomic(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]   # no temporary file left


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "plan.json"
    write_atomic(p, b"old")
    with pytest.raises(TypeError):
        write_json_atomic(p, {"bad": object()})      # fails while serialising
    with pytest.raises(TypeError):
        write_atomic(p, "not bytes")                 # fails while writing the temporary file
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["plan.json"]


def test_keep_previous_rotates_the_replaced_version_to_prev(tmp_path):
    from core.formats.files import previous_version
    p = tmp_path / "plan.json"
    write_atomic(p, b"one", keep_previous=True)
    assert not previous_version(p).exists()          # nothing replaced yet
    write_atomic(p, b"two", keep_previous=True)
    write_atomic(p, b"three", keep_previous=True)
    assert p.read_bytes() == b"three" and (tmp_path / "plan.json.prev").read_bytes() == b"two"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["plan.json", "plan.json.prev"]


def test_the_temporary_name_says_whose_write_it_is(tmp_path, monkeypatch):
    import os
    from core.formats import files
    seen = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b)))
    write_atomic(tmp_path / "x.json", b"{}")
    assert seen == [f".x.json.tmp-{os.getpid()}"] and files.is_temp_name(seen[0])
    assert not files.is_temp_name("x.json") and not files.is_temp_name("x.json.prev")


def test_sha256_file_matches_the_content(tmp_path):
    import hashlib
    from core.formats.files import sha256_file
    p = write_atomic(tmp_path / "a.bin", bytes(range(256)) * 10)
    assert sha256_file(p) == hashlib.sha256(bytes(range(256)) * 10).hexdigest()
