"""The one atomic writer: a hidden temp file beside the target, fsync, then rename.

A crash, a full disk or Ctrl-C never leaves a half-written file at the target path, and the
target's mode follows the umask like any newly created file (tempfile.mkstemp alone would
make it 0600). JSON, panels, .mat files and photos all go through `atomic_write`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call write(f) on a temp file beside `path`, fsync it, then rename it onto `path`.

    Parent folders are created. On any exception (KeyboardInterrupt included) the temp file
    is removed, `path` is left as it was and the exception propagates. Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write `payload` as indented JSON to `path` atomically."""
    return write_bytes(path, json.dumps(payload, indent=2).encode())
