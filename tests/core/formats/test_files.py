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
