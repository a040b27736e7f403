"""One run per workdir: a lock file holding the owner's host, pid and start time.

`workdir_lock(workdir)` creates `workdir/.lock` with O_CREAT | O_EXCL, so a second run on the
same workdir refuses at once with `WorkdirLockedError` (exit code 2). Stale locks of dead
processes are replaced; on a bucket the lock is best effort. Details:
docs/io.md#the-workdir-lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from etils import epath

from sassid_jax.errors import UserInputError
from sassid_jax.io.paths import PathLike, is_local

LOCK_NAME = ".lock"


class WorkdirLockedError(UserInputError):
    """Another live run holds the workdir; str() names the lock file and its holder."""


def _process_start(pid: int) -> str | None:
    """The start time of `pid` (Linux /proc, in clock ticks since boot), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host is running (signal 0 reaches it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _process_start(pid),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "token": uuid.uuid4().hex,
    }


def _is_stale(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this host and is gone (its pid dead or reused)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not process_alive(pid):
        return True
    start = holder.get("pid_start")
    return start is not None and _process_start(pid) not in (None, start)


def _read_holder(path: epath.Path) -> dict[str, Any] | None:
    """The lock's holder; None when the file vanished. A damaged lock reads as {}."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(path: epath.Path, holder: dict[str, Any]) -> bool:
    """Create the lock file holding `holder`; False when a lock is already there.

    Local: O_CREAT | O_EXCL (atomic). Bucket: best effort, written when absent, then read
    back to check that `holder` (with its random token) is the one stored."""
    if is_local(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        return True
    if path.exists():
        return False
    path.write_text(json.dumps(holder))
    return _read_holder(path) == holder


def acquire(workdir: PathLike) -> epath.Path:
    """Create the lock of `workdir` (the folder is created if missing), replacing a stale one.

    Args:
      workdir: the run folder, local or a bucket URL.
    Returns:
      the lock file's path (give it to `release`).
    Raises:
      WorkdirLockedError: a live run holds it (or a run on another host).
    """
    path = epath.Path(workdir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        if _create(path, _holder()):
            return path
        holder = _read_holder(path)
        if holder is None:
            continue  # released between our two calls: try again
        if holder and not _is_stale(holder):
            raise WorkdirLockedError(
                f"{workdir} is in use by another run (host {holder.get('host')}, "
                f"pid {holder.get('pid')}, since {holder.get('since')}); wait for it or "
                f"use another --workdir. If that run is gone, delete {path}"
            ) from None
        logging.warning("removing the stale lock %s of a run that is gone: %s", path, holder)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise WorkdirLockedError(f"{path}: cannot take the workdir lock (it keeps changing)")


def release(path: epath.Path) -> None:
    """Remove the lock at `path` (from `acquire`) if this process holds it."""
    holder = _read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def workdir_lock(workdir: PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold the workdir's lock for the body of a `with` block.

    Args:
      workdir: the run folder, local or a bucket URL.
      enabled: False makes it a no-op (processes other than 0).
    Raises:
      WorkdirLockedError: on entry, when another live run holds the workdir.
    """
    if not enabled:
        yield
        return
    path = acquire(workdir)
    try:
        yield
    finally:
        release(path)
