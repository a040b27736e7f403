"""The one atomic writer: a whole file at the target path, or nothing.

Local paths: a temp file beside the target (`.<name>.<pid>.<random>.partial`), fsync, rename
(mode from the umask); the temp files that killed writers of the same target left behind are
removed on the next write. Bucket URLs: the bytes built in memory, then one object write.
JSON, panels, .mat files and photos all go through `atomic_write`. Details:
docs/io.md#atomic-writes.
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
from sassid_jax.io.workdir_lock import process_alive


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_partials(target: PathLike) -> list[str]:
    """Remove the temp files of `target` (local) whose writer process is gone.

    Args:
      target: the file an `atomic_write` writes.
    Returns:
      the names removed.
    """
    target = epath.Path(target)
    prefix = f".{target.name}."
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(target.parent):
            pid = name[len(prefix) :].split(".", 1)[0]
            ours = name.startswith(prefix) and name.endswith(".partial") and pid.isdigit()
            if ours and int(pid) != os.getpid() and not process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(target.parent, name))
                    removed.append(name)
    return removed


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> epath.Path:
    """Call write(f) on a temp file beside `path`, fsync it, then rename it onto `path`
    (a bucket URL: write(f) on a memory buffer, then one object write).

    Parent folders are created, and temp files of `path` left by killed writers removed
    (`remove_stale_partials`). On any exception (KeyboardInterrupt included) the temp file
    is removed, `path` is left as it was and the exception propagates.

    Args:
      path: the target file, local or a bucket URL.
      write: writes the whole content to the binary file object it is given.
    Returns:
      `path` as an epath.Path.
    """
    if not is_local(path):
        buffer = io.BytesIO()
        write(buffer)
        target = epath.Path(path)
        target.write_bytes(buffer.getvalue())
        return target
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent
    )
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
    """Write `data` to `path` atomically (`atomic_write`).

    Args:
      path: the target file, local or a bucket URL.
      data: the file's whole content.
    Returns:
      `path` as an epath.Path.
    """
    return atomic_write(path, lambda f: f.write(data))


def write_json(path: PathLike, payload: Mapping[str, Any]) -> epath.Path:
    """Write `payload` as indented JSON to `path` atomically (`atomic_write`).

    Args:
      path: the target file, local or a bucket URL.
      payload: a JSON-serialisable mapping.
    Returns:
      `path` as an epath.Path.
    """
    return write_bytes(path, json.dumps(payload, indent=2).encode())
