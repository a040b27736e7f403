"""Paths that may be local or bucket URLs (gs://...): every file access goes through etils.epath.

`is_local` tells the two apart (object stores have no O_EXCL, rename or fsync) and `absolute`
makes a local path absolute without mangling a URL. Details: docs/io.md#buckets.
"""

from __future__ import annotations

import os

from etils import epath

PathLike = str | os.PathLike[str]


def is_local(path: PathLike) -> bool:
    """True for a path of the local file system, False for a URL (gs://, s3://, ...)."""
    return "://" not in os.fspath(path)


def absolute(path: PathLike) -> epath.Path:
    """`path` as an epath.Path: local paths made absolute (symlinks resolved), URLs as given."""
    return epath.Path(path).resolve() if is_local(path) else epath.Path(path)


def same_path(a: PathLike, b: PathLike) -> bool:
    """True when `a` and `b` name the same file or folder (local: also through links).

    Args:
      a, b: local paths or URLs; paths that do not exist are compared by name.
    """
    if is_local(a) and is_local(b) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return absolute(a) == absolute(b)
