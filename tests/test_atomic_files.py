"""The atomic writer: whole file or nothing, mode from the umask, temp file cleaned up."""

from __future__ import annotations

import json
import os

import pytest

from sassid_jax.io.atomic_files import atomic_write, write_json


def test_write_json_round_trip_and_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    finally:
        os.umask(old)
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
