"""Reading and writing the MATLAB files of the SIDD and DND benchmarks.

MATLAB v5 files are read with scipy.io, v7.3 (HDF5) files with h5py, transposed back to
MATLAB's axis order; local files and bucket URLs alike. Errors are one line naming the file;
writes are atomic. Details: docs/io.md#matlab-files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import h5py
import numpy as np
import scipy.io
from etils import epath

from sassid_jax.errors import UserInputError
from sassid_jax.io.atomic_files import atomic_write
from sassid_jax.io.paths import is_local

__all__ = ["MatFileError", "is_hdf5", "read_array", "write_atomic_mat"]


class MatFileError(UserInputError, ValueError):
    """A missing or malformed .mat file; str() names the file."""


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@contextlib.contextmanager
def _opened(path: epath.Path) -> Iterator[str | IO[bytes]]:
    """What scipy.io and h5py read: a local file's name, or an epath file object."""
    if is_local(path):
        yield os.fspath(path)
    else:
        with path.open("rb") as f:
            yield f


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    """True for a MATLAB v7.3 (HDF5) file (local or a bucket URL), False for v5 or anything
    else."""
    path = epath.Path(path)
    if is_local(path):
        return h5py.is_hdf5(os.fspath(path))
    with path.open("rb") as f:
        head = f.read(512 + len(HDF5_SIGNATURE))
    return HDF5_SIGNATURE in (head[: len(HDF5_SIGNATURE)], head[512:])


def _read_variable(path: epath.Path, key: str) -> np.ndarray | None:
    """The variable `key` in MATLAB's axis order, or None when the file has no such name."""
    hdf5 = is_hdf5(path)
    with _opened(path) as source:
        if hdf5:
            with h5py.File(source, "r") as f:
                return np.asarray(f[key][()]).transpose() if key in f else None
        return scipy.io.loadmat(source, variable_names=[key]).get(key)


def _variable_names(path: epath.Path) -> list[str]:
    hdf5 = is_hdf5(path)
    with _opened(path) as source:
        if hdf5:
            with h5py.File(source, "r") as f:
                return sorted(f.keys())
        return [name for name, *_ in scipy.io.whosmat(source)]


def _unless_broken(path: epath.Path, read: Callable[[], Any]) -> Any:
    """read(), with any failure of the readers (a truncated or foreign file makes scipy and
    h5py raise OSError, ValueError, IndexError, struct.error, ...) as one-line MatFileError."""
    try:
        return read()
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise MatFileError(f"{path}: not a readable .mat file ({reason})") from e


def read_array(
    path: str | os.PathLike[str],
    key: str,
    *,
    shape: Sequence[int | None] | None = None,
    dtype: Any = None,
) -> np.ndarray:
    """The array stored under `key` in a .mat file (v5 or v7.3), in MATLAB's axis order.

    Args:
      path: the .mat file.
      key: the variable name.
      shape: expected shape; None entries match any size.
      dtype: expected numpy dtype (checked, not converted).
    Returns:
      the array as stored (not converted).
    Raises:
      MatFileError: file missing or unreadable, key absent, or wrong shape or dtype.
    """
    path = epath.Path(path)
    if not path.is_file():
        raise MatFileError(f"{path}: file not found")
    array = _unless_broken(path, lambda: _read_variable(path, key))
    if array is None:
        names = _unless_broken(path, lambda: _variable_names(path))
        raise MatFileError(f"{path}: no variable {key!r} (has {names})")
    if shape is not None and (
        array.ndim != len(shape)
        or any(s is not None and s != a for s, a in zip(shape, array.shape, strict=True))
    ):
        want = tuple("*" if s is None else s for s in shape)
        raise MatFileError(f"{path}: {key!r} has shape {array.shape}, expected {want}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise MatFileError(f"{path}: {key!r} has dtype {array.dtype}, expected {np.dtype(dtype)}")
    return array


def write_atomic_mat(path: str | os.PathLike[str], variables: dict[str, Any]) -> None:
    """scipy.io.savemat (MATLAB v5, uncompressed) through `atomic_files.atomic_write`.

    Args:
      path: the .mat file, local or a bucket URL (parent folders created).
      variables: {MATLAB name: value}, values as scipy.io.savemat takes them (arrays, str,
        bool, object arrays for cells).
    """
    atomic_write(path, lambda f: scipy.io.savemat(f, variables, do_compression=False))
