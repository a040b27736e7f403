"""Read PyTorch `.pth` state_dicts (zip format) into numpy without PyTorch and without pickle code.

A `torch.save` zip archive holds `<prefix>/data.pkl` (a pickle describing the tensors) and
`<prefix>/data/<key>` (the raw little-endian bytes of each storage). The pickle is read with an
Unpickler that resolves ONLY the handful of names a state_dict of plain tensors needs
(OrderedDict, tensor/parameter rebuild functions, storage types); anything else (arbitrary
callables, i.e. code execution) is refused with an error naming the file and the global.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no numpy dtype; rejected with a clear message
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFormatError(ValueError):
    """A file that is not a readable weights-only PyTorch state_dict."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(tensor, *unused):
    return tensor


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that only knows tensors, storages and ordered dicts."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFormatError(
            f"{self._path}: refusing to load global '{module}.{name}': only weights "
            "(tensors in an OrderedDict) are read, never pickled code"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchFormatError(f"{self._path}: unexpected storage reference {pid!r}")
        _, storage_type, key, _location, numel = pid
        return ("storage", storage_type.name, str(key), int(numel))


def _materialize(
    entry: Any, archive: zipfile.ZipFile, prefix: str, path: str, name: str
) -> np.ndarray:
    if not (isinstance(entry, tuple) and entry and entry[0] == "tensor"):
        raise TorchFormatError(f"{path}: entry '{name}' is not a tensor ({type(entry).__name__})")
    _, (_, type_name, key, numel), offset, size, stride = entry
    dtype = STORAGE_DTYPES[type_name]
    if dtype is None:
        raise TorchFormatError(f"{path}: entry '{name}' has unsupported dtype {type_name}")
    raw = archive.read(f"{prefix}/data/{key}")
    storage = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False
    )
    return np.array(view, dtype=dtype)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return {key: numpy array} from a zip-format `.pth` state_dict, no code executed.

    Raises TorchFormatError (a ValueError) naming the file for: a missing file, a legacy
    (non-zip) or corrupt archive, a big-endian archive, or a pickle that holds anything other
    than tensors.
    """
    path = str(path)
    if not Path(path).is_file():
        raise TorchFormatError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise TorchFormatError(
            f"{path}: not a zip-format PyTorch checkpoint (legacy torch.save format or not a "
            "checkpoint at all); re-save it with torch.save(state_dict, path) from torch >= 1.6"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchFormatError(f"{path}: expected one '<name>/data.pkl', found {pickles}")
        prefix = pickles[0][: -len("/data.pkl")]
        byteorder_name = f"{prefix}/byteorder"
        names = archive.namelist()
        if byteorder_name in names and archive.read(byteorder_name).strip() != b"little":
            raise TorchFormatError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            try:
                state = _WeightsUnpickler(f, path).load()
            except (pickle.UnpicklingError, EOFError) as e:
                raise TorchFormatError(f"{path}: corrupt pickle in {pickles[0]}: {e}") from e
        if isinstance(state, dict) and "state_dict" in state and len(state) <= 4:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise TorchFormatError(f"{path}: expected a state_dict, got {type(state).__name__}")
        return {k: _materialize(v, archive, prefix, path, k) for k, v in state.items()}
