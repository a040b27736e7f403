"""Paths that may be local or bucket URLs (gs://...): every file access goes through etils.epath.

`is_local` tells the two apart (object stores have no O_EXCL, rename or fsync), `absolute`
makes a local path absolute without mangling a URL, `check_url` refuses URLs other than
gs://BUCKET/... by name and `check_writable_folder` an output folder that cannot be written.
Details: docs/io.md#buckets.
"""

from __future__ import annotations

import os

from etils import epath

from sassid_jax.errors import ConfigError

URL_SCHEMES = ("gs",)  # the bucket URLs every reader and writer here supports

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


def check_url(path: PathLike, name: str) -> None:
    """Refuse a URL this project cannot use: only local paths and gs://BUCKET/... are.

    Args:
      path: the path or URL given.
      name: the flag or config field named in the message.
    Raises:
      ConfigError: another scheme (s3://, file://, http://), or gs:// without a bucket.
    """
    text = os.fspath(path)
    if "://" not in text:
        return
    scheme, rest = text.split("://", 1)
    if scheme not in URL_SCHEMES:
        raise ConfigError(
            f"{name} {text}: {scheme}:// URLs are not supported; give a local path or "
            "gs://BUCKET/PATH"
        )
    if not rest.split("/", 1)[0]:
        raise ConfigError(f"{name} {text}: no bucket name; give gs://BUCKET/PATH")


def check_writable_folder(path: PathLike, name: str) -> None:
    """Refuse, before any work, an output folder that cannot be created or written.

    A local path is checked at its nearest existing ancestor (access(2): a read-only file
    system is refused even for root); a URL is checked by `check_url` only.

    Args:
      path: the folder (it may not exist yet).
      name: the flag or config field named in the message.
    Raises:
      ConfigError: naming `name`, the path and why.
    """
    check_url(path, name)
    if not is_local(path):
        return
    folder = os.path.abspath(os.fspath(path))
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"{name} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
        except OSError:
            read_only = False
        why = "a read-only file system" if read_only else "no write permission"
        raise ConfigError(f"{name} {path}: cannot write in {folder} ({why})")
