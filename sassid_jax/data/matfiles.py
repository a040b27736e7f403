"""Reading and writing the MATLAB files of the SIDD and DND benchmarks.

MATLAB v5 files (the SIDD blocks) are read with scipy.io; v7.3 files are HDF5 (DND's
info.mat and images) and are read with h5py, where MATLAB's column-major arrays appear with
their axes reversed: `read_array` transposes them back, so callers always see MATLAB's own
axis order. Every error is one line naming the file and what is wrong; writes are atomic
(`atomic_files`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from sassid_jax.atomic_files import atomic_write
from sassid_jax.errors import UserInputError

__all__ = ["MatFileError", "is_hdf5", "read_array", "write_atomic_mat"]


class MatFileError(UserInputError, ValueError):
    """A missing or malformed .mat file; str() names the file."""


def is_hdf5(path: Path) -> bool:
    """True for a MATLAB v7.3 (HDF5) file."""
    return h5py.is_hdf5(str(path))


def _read_variable(path: Path, key: str) -> np.ndarray | None:
    """The variable `key` in MATLAB's axis order, or None when the file has no such name."""
    if is_hdf5(path):
        with h5py.File(path, "r") as f:
            return np.asarray(f[key][()]).transpose() if key in f else None
    return scipy.io.loadmat(path, variable_names=[key]).get(key)


def _variable_names(path: Path) -> list[str]:
    if is_hdf5(path):
        with h5py.File(path, "r") as f:
            return sorted(f.keys())
    return [name for name, *_ in scipy.io.whosmat(path)]


def _unless_broken(path: Path, read: Callable[[], Any]) -> Any:
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
    Raises:
      MatFileError: file missing or unreadable, key absent, or wrong shape or dtype.
    """
    path = Path(path)
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
    """scipy.io.savemat (MATLAB v5, uncompressed) through `atomic_files.atomic_write`: a crash
    never leaves a half-written file at `path`; the mode follows the umask."""
    atomic_write(path, lambda f: scipy.io.savemat(f, variables, do_compression=False))
