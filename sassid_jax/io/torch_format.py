"""Read PyTorch `.pth` state_dicts (zip format) into numpy without PyTorch and without pickle code.

The file is untrusted: the pickle is read with only the opcodes and names a state_dict of
tensors needs, every zip entry and storage size is checked, and every tensor view is checked
to lie inside its storage before any element is read. A malformed file raises
`TorchFormatError`, one line naming the file and the tensor or zip entry at fault. Details:
docs/io.md#the-weights-only-pth-reader.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import reprlib
import stat
import zipfile
from typing import Any, NamedTuple, NoReturn

import numpy as np
from etils import epath

from sassid_jax.errors import UserInputError

# torch storage type -> the little-endian layout of its elements in the zip entry.
STORAGE_LAYOUTS = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # decoded to float32
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "u1",  # decoded to bool (any nonzero byte is True)
}
MAX_DIMS = 32
# Overlapping views (stride 0) may hold more elements than their storage, up to this many.
MAX_OVERLAPPING_ELEMENTS = 1 << 24
# Largest plausible ratio of an entry's declared size to its compressed size (deflate: ~1032).
MAX_COMPRESSION_RATIO = 1100
# The pickle opcodes a torch.save state_dict uses (protocols 2 to 4), nothing else.
_OPCODE_NAMES = (
    "PROTO FRAME STOP MARK POP POP_MARK DUP EMPTY_DICT DICT EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 "
    "TUPLE3 EMPTY_LIST LIST APPEND APPENDS SETITEM SETITEMS BININT BININT1 BININT2 LONG1 NONE "
    "NEWTRUE NEWFALSE BINFLOAT BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINPUT LONG_BINPUT "
    "BINGET LONG_BINGET MEMOIZE GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID"
)
ALLOWED_OPCODES = frozenset(_OPCODE_NAMES.split())
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60
_short = _REPR.repr


class TorchFormatError(UserInputError, ValueError):
    """A file that is not a readable weights-only PyTorch state_dict; str() is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class _StorageType(NamedTuple):  # pickle cannot forge these: it builds no NamedTuples
    name: str


class _StorageRef(NamedTuple):
    type_name: str
    key: str
    numel: int


class _TensorRef(NamedTuple):
    """The raw (unchecked) arguments of a pickled tensor; validated in `_Reader.tensor`."""

    storage: Any
    offset: Any
    size: Any
    stride: Any


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(tensor, *unused):
    return tensor


def _ordered_dict():
    return collections.OrderedDict()


def _check_keys(keys: list) -> None:
    bad = next((k for k in keys if type(k) not in (str, int)), None)
    if bad is not None:
        raise pickle.UnpicklingError(f"dict key {_short(bad)} is not a string or int")


class _OpcodeTable(dict):
    def __missing__(self, opcode: int) -> Any:
        raise pickle.UnpicklingError(f"pickle opcode {bytes([opcode])!r} is not allowed")


def _guarded_dispatch() -> dict:
    """The pure-Python Unpickler's opcode table, cut to ALLOWED_OPCODES, keys checked first
    (after MARK, `self.stack` holds exactly the items a DICT/SETITEMS consumes)."""
    base = pickle._Unpickler.dispatch
    table = _OpcodeTable(
        {getattr(pickle, op)[0]: base[getattr(pickle, op)[0]] for op in ALLOWED_OPCODES}
    )

    def setitem(self):
        _check_keys(self.stack[-2:-1])
        base[pickle.SETITEM[0]](self)

    def setitems(self, op=pickle.SETITEMS[0]):
        _check_keys(self.stack[0::2])
        base[op](self)

    def build(self):
        if len(self.stack) < 2 or type(self.stack[-2]) is not collections.OrderedDict:
            raise pickle.UnpicklingError("BUILD is only allowed on an OrderedDict")
        if not isinstance(self.stack[-1], dict):
            raise pickle.UnpicklingError("BUILD state must be a dict")
        _check_keys(list(self.stack[-1]))
        base[pickle.BUILD[0]](self)

    table[pickle.SETITEM[0]] = setitem
    table[pickle.SETITEMS[0]] = setitems
    table[pickle.DICT[0]] = lambda self: setitems(self, op=pickle.DICT[0])
    table[pickle.BUILD[0]] = build
    return table


class _WeightsUnpickler(pickle._Unpickler):
    """Unpickler that only knows tensors, storages and ordered dicts."""

    dispatch = _guarded_dispatch()

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self._where = where  # "<file>: '<entry>'": the start of every message

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_LAYOUTS:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise TorchFormatError(f"{self._where}: unsupported tensor type torch.{name}")
        raise TorchFormatError(
            f"{self._where}: refusing to load global '{module}.{name}': only weights "
            "(tensors in an OrderedDict) are read, never pickled code"
        )

    def persistent_load(self, pid: Any) -> Any:
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        ok = ok and isinstance(pid[1], _StorageType) and type(pid[2]) is str
        if ok and type(pid[4]) is int and pid[4] >= 0:
            return _StorageRef(pid[1].name, pid[2], pid[4])
        raise TorchFormatError(f"{self._where}: bad storage reference {_short(pid)}")


def view_problem(offset: Any, size: Any, stride: Any, numel: int) -> str | None:
    """Why (offset, size, stride) does not address a view inside `numel` elements, or None.

    Elements are at offset + sum(i_k * stride_k) for 0 <= i_k < size_k; all must be < numel.

    Args:
      offset, size, stride: a pickled tensor's raw storage offset, sizes and strides (any
        type: checked here).
      numel: the number of elements of its storage.
    Returns:
      a one-line reason, or None when the view is valid.
    """
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        return f"size {_short(size)} and stride {_short(stride)} are not tuples"
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        return f"{len(size)} sizes for {len(stride)} strides (at most {MAX_DIMS} dims)"
    if not all(type(v) is int for v in (offset, *size, *stride)):
        return f"non-integer offset {_short(offset)}, size {_short(size)} or stride"
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        return f"negative offset {offset}, size {tuple(size)} or stride {tuple(stride)}"
    count = math.prod(size)
    if math.prod(max(n, 1) for n in size) > max(numel, MAX_OVERLAPPING_ELEMENTS):  # empty too
        return f"sizes {tuple(size)} are too large for a storage of {numel} elements"
    last = (
        offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if count
        else offset - 1
    )
    if last >= numel:
        return (
            f"offset {offset}, size {tuple(size)} and stride {tuple(stride)} reach element "
            f"{last}, past the end of a storage of {numel} elements"
        )
    return None


def gather(flat: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """The view (offset, size, stride) of 1-D `flat` as a new C-ordered array.

    Call only when `view_problem(...)` is None; indexing is bounds-checked by numpy anyway.

    Args:
      flat: (numel,) storage elements, any dtype.
      offset, size, stride: the view, in elements.
    Returns:
      a new array of shape `size`, flat's dtype.
    """
    size, count = tuple(size), math.prod(size)
    dense = [math.prod(size[k + 1 :]) for k in range(len(size))]
    if count == 0 or all(s == d for n, s, d in zip(size, stride, dense, strict=True) if n > 1):
        return flat[offset : offset + count].reshape(size).copy()
    index = np.full((1,) * len(size), offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(size, stride, strict=True)):
        shape = [n if k == axis else 1 for k in range(len(size))]
        index = index + (np.arange(n, dtype=np.int64) * (s if n > 1 else 0)).reshape(shape)
    return flat[index]


def _decode(values: np.ndarray, type_name: str) -> np.ndarray:
    if type_name == "BFloat16Storage":
        return (values.astype(np.uint32) << 16).view(np.float32)
    if type_name == "BoolStorage":
        return values != 0
    return np.asarray(values, dtype=values.dtype.newbyteorder("="))


def unwrap_checkpoint(state: Any) -> Any:
    """The state_dict inside the checkpoint forms the authors save, else `state` itself.

    Args:
      state: the unpickled object: a state_dict; {'state_dict': sd, ...} (at most 4 entries);
        or AP-BSN's trainer checkpoint {'epoch', 'model_weight': {'denoiser': sd},
        'optimizer_weight'} (its one model, or the one named 'denoiser').
    Returns:
      the state_dict (not yet checked to be one).
    """
    if not isinstance(state, dict):
        return state
    if "state_dict" in state and len(state) <= 4:
        return state["state_dict"]
    models = state.get("model_weight")
    if isinstance(models, dict) and ("denoiser" in models or len(models) == 1):
        return models.get("denoiser", next(iter(models.values())))
    return state


class _Reader:
    """One open archive: bounded entry reads, storages cached by key, tensors validated."""

    def __init__(self, archive: zipfile.ZipFile, path: str, file_size: int) -> None:
        self.archive, self.path, self.file_size = archive, path, file_size
        self.storages: dict[str, tuple[_StorageRef, np.ndarray]] = {}
        counts = collections.Counter(names := archive.namelist())
        duplicate = next((n for n in names if counts[n] > 1), None)
        if duplicate is not None:
            self.fail(f"zip entry {duplicate!r} appears {counts[duplicate]} times")
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if not pickles and names and all(n.endswith(".npy") for n in names):
            self.fail(
                "a NumPy .npz archive, not a PyTorch .pth (give an authors' .pth or one of "
                "our run folders)"
            )
        if len(pickles) != 1:
            self.fail(f"expected one '<name>/data.pkl' zip entry, found {_short(pickles)}")
        self.pickle_name = pickles[0]
        self.prefix = pickles[0][: -len("/data.pkl")]

    def fail(self, message: str) -> NoReturn:
        raise TorchFormatError(f"{self.path}: {message}")

    def read(self, name: str, expected: int | None = None) -> bytes:
        """The bytes of zip entry `name` (CRC checked), refusing implausible declared sizes."""
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            self.fail(f"zip entry {name!r} is missing")
        if info.is_dir() or info.external_attr & 0x10 or stat.S_ISDIR(info.external_attr >> 16):
            self.fail(f"zip entry {name!r} is marked as a directory")  # torch reads it as empty
        if expected is not None and info.file_size != expected:
            self.fail(f"zip entry {name!r} holds {info.file_size} bytes, expected {expected}")
        ratio_ok = info.file_size <= MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
        if info.compress_size > self.file_size or not ratio_ok:
            self.fail(f"zip entry {name!r} declares an impossible size {info.file_size}")
        try:
            data = self.archive.read(info)
        except Exception as e:  # zipfile's errors on corrupt entries (CRC, EOF, zlib) vary
            self.fail(f"zip entry {name!r} is corrupt: {type(e).__name__}: {e}")
        if len(data) != info.file_size:
            self.fail(f"zip entry {name!r} is truncated ({len(data)} of {info.file_size} bytes)")
        return data

    def load_pickle(self) -> Any:
        byteorder = f"{self.prefix}/byteorder"
        if byteorder in self.archive.namelist():
            order = self.read(byteorder).strip()
            if order != b"little":
                self.fail(f"byte order {_short(order)} is not supported (only little-endian)")
        data = self.read(self.pickle_name)
        try:
            return _WeightsUnpickler(data, f"{self.path}: {self.pickle_name!r}").load()
        except TorchFormatError:
            raise
        except Exception as e:  # any failure of the pickle machinery on hostile bytes
            self.fail(f"corrupt pickle in {self.pickle_name!r}: {type(e).__name__}: {e}")

    def storage(self, ref: _StorageRef, tensor: str) -> np.ndarray:
        """The elements (raw little-endian dtype, 1-D, read-only) of a referenced storage."""
        cached = self.storages.get(ref.key)
        if cached is not None:
            first = cached[0]
            if (first.type_name, first.numel) != (ref.type_name, ref.numel):
                self.fail(
                    f"tensor {tensor!r}: storage {ref.key!r} is {ref.type_name}[{ref.numel}] "
                    f"here but {first.type_name}[{first.numel}] elsewhere"
                )
            return cached[1]
        dtype = np.dtype(STORAGE_LAYOUTS[ref.type_name])
        data = self.read(f"{self.prefix}/data/{ref.key}", expected=ref.numel * dtype.itemsize)
        values = np.frombuffer(data, dtype=dtype, count=ref.numel)
        self.storages[ref.key] = (ref, values)
        return values

    def tensor(self, name: str, value: Any) -> np.ndarray:
        if not isinstance(value, _TensorRef) or not isinstance(value.storage, _StorageRef):
            self.fail(f"entry {name!r} is not a tensor ({type(value).__name__})")
        ref = value.storage
        problem = view_problem(value.offset, value.size, value.stride, ref.numel)
        if problem is not None:
            self.fail(f"tensor {name!r}: {problem}")
        flat = self.storage(ref, name)
        return _decode(gather(flat, value.offset, value.size, value.stride), ref.type_name)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = unwrap_checkpoint(self.load_pickle())
        if not isinstance(state, dict):
            self.fail(f"expected a state_dict, got {type(state).__name__}")
        bad = next((k for k in state if type(k) is not str), None)
        if bad is not None:
            self.fail(f"state_dict key {_short(bad)} is not a string")
        return {k: self.tensor(k, v) for k, v in state.items()}


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Return {key: numpy array} from a zip-format `.pth` state_dict, no code executed.

    Args:
      path: the file, local or a bucket URL.
    Returns:
      {state_dict key: array}, each with the tensor's shape and dtype (native byte order;
      bfloat16 becomes float32, bool stays bool); of a wrapped checkpoint, its model's
      (`unwrap_checkpoint`).
    Raises:
      TorchFormatError: (a UserInputError and ValueError) naming the file and the tensor or
        zip entry, for a missing, legacy, corrupt (CRC, truncated, missing or duplicate
        entries) or big-endian file, a pickle holding anything but tensors, a storage entry
        whose size is not numel * itemsize, or a tensor whose offset, sizes or strides reach
        outside its storage.
    """
    path = epath.Path(path)  # local or a bucket URL (gs://): read through a file object
    if not path.is_file():
        raise TorchFormatError(f"{path}: no such checkpoint file")
    with path.open("rb") as f:
        size = f.seek(0, io.SEEK_END)
        try:
            archive = zipfile.ZipFile(f) if zipfile.is_zipfile(f) else None
        except Exception as e:  # zipfile's errors on a corrupt end record or directory vary
            raise TorchFormatError(f"{path}: corrupt zip archive: {type(e).__name__}: {e}") from e
        if archive is None:
            raise TorchFormatError(
                f"{path}: not a zip-format PyTorch checkpoint (legacy torch.save format or "
                "not a checkpoint at all); re-save it with torch.save(state_dict, path) from "
                "torch >= 1.6"
            )
        with archive:
            return _Reader(archive, str(path), size).state_dict()
