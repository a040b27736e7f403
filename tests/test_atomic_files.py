"""The atomic writer: whole file or nothing, mode from the umask, temp file cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sassid_jax.io.atomic_files import atomic_write, write_bytes, write_json


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


def test_temp_files_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    """A writer killed mid-write (SIGKILL: no cleanup) leaves its `.partial`; the next write
    of that file removes it, but never the temp file of a live writer."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    stale = tmp_path / f".a.png.{int(dead.stdout)}.x1y2.partial"
    live = tmp_path / f".a.png.{os.getppid()}.z3.partial"  # our parent: alive
    other = tmp_path / f".b.png.{int(dead.stdout)}.q4.partial"  # another file's: not ours
    for path in (stale, live, other):
        path.write_bytes(b"half")
    write_bytes(tmp_path / "a.png", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", live.name, other.name])
