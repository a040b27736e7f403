"""The one atomic writer: a whole file at the target path, or nothing.

Local paths: a hidden temp file beside the target, fsync, then rename. A crash, a full disk
or Ctrl-C never leaves a half-written file at the target path, and the target's mode follows
the umask like any newly created file (tempfile.mkstemp alone would make it 0600).
Bucket URLs (gs://...; `paths.is_local` False): the bytes are built in memory, then written
as one object. An object write is atomic by itself (the object appears only once its upload
is complete; a failed write leaves the old object), and an object store has no cheap rename
(gcsfs copies, and the local GCS emulator answers its move API with 501 and a long retry).
JSON, panels, .mat files and photos all go through `atomic_write`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, Any

from etils import epath

from sassid_jax.io.paths import PathLike, is_local


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> epath.Path:
    """Call write(f) on a temp file beside `path`, fsync it, then rename it onto `path`
    (a bucket URL: write(f) on a memory buffer, then one object write; module docstring).

    Parent folders are created. On any exception (KeyboardInterrupt included) the temp file
    is removed, `path` is left as it was and the exception propagates. Returns `path`.
    """
    if not is_local(path):
        buffer = io.BytesIO()
        write(buffer)
        target = epath.Path(path)
        target.write_bytes(buffer.getvalue())
        return target
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def write_bytes(path: PathLike, data: bytes) -> epath.Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def write_json(path: PathLike, payload: Mapping[str, Any]) -> epath.Path:
    """Write `payload` as indented JSON to `path` atomically."""
    return write_bytes(path, json.dumps(payload, indent=2).encode())
