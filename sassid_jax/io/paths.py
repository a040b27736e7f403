"""Paths that may be local or bucket URLs (gs://...): every file access goes through etils.epath.

`epath.Path` reads, writes and lists local paths with `os` and bucket URLs with gcsfs (or
tf.io.gfile when TensorFlow is installed and EPATH_USE_TF is not false), so a workdir, data
folder, checkpoint or photo may be either. Two things differ on a bucket and are handled here:
`absolute` (pathlib's absolute()/resolve() would turn gs://b/x into <cwd>/gs:/b/x) and
`is_local` (object stores have no O_EXCL, rename or fsync; see atomic_files, workdir_lock).
On a bucket, folders exist only through the objects under them: mkdir is a no-op and
`is_dir()` is False until something is written inside.
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
    """True when `a` and `b` name the same file or folder (local: also through links)."""
    if is_local(a) and is_local(b) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return absolute(a) == absolute(b)
