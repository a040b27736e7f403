"""The workdir lock: a second run refuses at once, a dead holder's lock is replaced."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from sassid_jax.io.workdir_lock import LOCK_NAME, WorkdirLockedError, acquire, workdir_lock

HOLD = (
    "import sys, time; from sassid_jax.io.workdir_lock import acquire; acquire(sys.argv[1]); "
    "print('held', flush=True); time.sleep(60)"
)


def test_second_holder_refused_while_first_lives(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(WorkdirLockedError, match=rf"pid {proc.pid}.*{LOCK_NAME}"):
            acquire(tmp_path)
        assert time.perf_counter() - start < 1.0
    finally:
        proc.kill()
        proc.wait()
    # The holder is dead now (killed, no clean-up): its lock is stale and is replaced.
    with workdir_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["host"] == socket.gethostname()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_is_kept(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(WorkdirLockedError, match="host elsewhere"):
        acquire(tmp_path)
    assert (tmp_path / LOCK_NAME).exists()


def test_damaged_lock_is_replaced_and_disabled_lock_is_free(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")
    with workdir_lock(tmp_path):
        pass
    with workdir_lock(tmp_path, enabled=False):
        assert not (tmp_path / LOCK_NAME).exists()
