"""Fuzz the weights-only `.pth` reader with a few hundred mutations of small valid files.

Each case must either load correctly (every value equal to what `torch.load(weights_only=True)`
gives for the same file, or, where torch refuses it, equal to an independent reference / to
values present in the file) or raise `TorchFormatError` with one line naming the file; any other
exception, a crash or a value from outside the file fails. The crash class of inputs (huge or
negative strides, deeply nested pickles) also runs in a subprocess to prove there is no segfault.
"""

from __future__ import annotations

import collections
import itertools
import math
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from sassid_jax.errors import UserInputError
from sassid_jax.io.torch_format import STORAGE_LAYOUTS, TorchFormatError, read_state_dict

torch = pytest.importorskip("torch")

N = 24  # elements of the structured cases' storage


# ---- writing files --------------------------------------------------------------------------


class G(NamedTuple):  # a GLOBAL opcode
    module: str
    name: str


class R(NamedTuple):  # REDUCE: func(*args)
    func: Any
    args: tuple


class P(NamedTuple):  # BINPERSID
    pid: tuple


class OD(NamedTuple):  # OrderedDict() then SETITEMS
    items: list


def _emit(obj: Any, out: bytearray) -> None:
    """Append a protocol-2 pickle of `obj` (our own writer, so any field can be malformed)."""
    if isinstance(obj, G):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, R):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, P):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, OD):
        _emit(R(G("collections", "OrderedDict"), ()), out)
        out += b"("
        for k, v in obj.items:
            _emit(k, out)
            _emit(v, out)
        out += b"u"
    elif obj is None or isinstance(obj, bool):
        out += {None: b"N", True: b"\x88", False: b"\x89"}[obj]
    elif isinstance(obj, int):
        data = pickle.encode_long(obj)
        out += b"\x8a" + bytes([len(data)]) + data
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        data = obj.encode()
        out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(obj, (tuple, list)):
        out += b"(" if isinstance(obj, tuple) else b"]("
        for item in obj:
            _emit(item, out)
        out += b"t" if isinstance(obj, tuple) else b"e"
    else:
        raise TypeError(obj)


def _pickle(obj: Any) -> bytes:
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _tensor(storage_type, key, numel, offset, size, stride) -> R:
    pid = P(("storage", G("torch", storage_type), key, "cpu", numel))
    return R(G("torch._utils", "_rebuild_tensor_v2"), (pid, offset, size, stride, False, OD([])))


def _zip(path: Path, entries: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are a deliberate mutation
        with zipfile.ZipFile(path, "w", compression=compression) as z:
            for name, data in entries:
                z.writestr(name, data)
    return path


def _entries(pkl: bytes, storages: dict[str, bytes]) -> list[tuple[str, bytes]]:
    data = [(f"archive/data/{k}", v) for k, v in storages.items()]
    return [
        ("archive/data.pkl", pkl),
        ("archive/byteorder", b"little"),
        *data,
        ("archive/version", b"3\n"),
    ]


# ---- the oracle -----------------------------------------------------------------------------


def _to_numpy(t) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    if t.dtype == torch.bool:
        return t.view(torch.uint8).numpy() != 0
    return t.numpy()


def _torch_load(path: Path) -> dict[str, np.ndarray] | None:
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return None
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        return None
    return {k: _to_numpy(v) for k, v in loaded.items()}


def _same(ours: dict, expected: dict) -> bool:
    return ours.keys() == expected.keys() and all(
        ours[k].dtype == expected[k].dtype
        and ours[k].shape == expected[k].shape
        and np.array_equal(ours[k], expected[k], equal_nan=ours[k].dtype.kind == "f")
        for k in ours
    )


def _inside(ours: dict, file_bytes: bytes) -> bool:
    """Every element's little-endian bytes occur in the file (no value from elsewhere)."""
    for array in ours.values():
        if array.dtype == bool:
            continue
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        for start in range(0, len(raw), array.itemsize):
            value = raw[start : start + array.itemsize]
            bf16 = array.dtype == np.float32 and value[2:] in file_bytes
            if value not in file_bytes and not bf16:
                return False
    return True


def _run(path: Path, expected: dict | None = None, use_torch: bool = True) -> str:
    """'refused' or 'loaded', asserting the load is right; any other exception propagates."""
    try:
        ours = read_state_dict(path)
    except TorchFormatError as e:
        message = str(e)
        assert isinstance(e, UserInputError)
        assert len(message.splitlines()) == 1 and message.startswith(str(path)), message
        return "refused"
    theirs = _torch_load(path) if use_torch else None
    if theirs is not None:
        assert _same(ours, theirs), f"{path.name}: differs from torch.load"
    elif expected is not None:
        assert _same(ours, expected), f"{path.name}: differs from the expected values"
    else:
        assert _inside(ours, path.read_bytes()), f"{path.name}: a value from outside the file"
    return "loaded"


# ---- the cases ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny torch.save file: views sharing a storage, an offset, several dtypes, a Parameter."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = collections.OrderedDict(
        weight=torch.nn.Parameter(torch.randn(3, 2, 2, 2, generator=g)),
        transposed=base.t(),
        sliced=base[1:3, 2:5],
        half=torch.randn(5, generator=g).half(),
        bf16=torch.randn(3, generator=g).bfloat16(),
        long=torch.arange(7) - 3,
        flag=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5, dtype=torch.float64),
        empty=torch.zeros(0, 3),
    )
    path = tmp_path_factory.mktemp("valid") / "valid.pth"
    torch.save(state, path)
    expected = {k: _to_numpy(v) for k, v in state.items()}
    assert _same(read_state_dict(path), expected)
    return path, expected


def _byte_mutations(data: bytes, rng: np.random.Generator, count: int):
    for i in range(count):
        mutated = bytearray(data)
        kind = i % 4
        if kind == 3:
            yield bytes(mutated[: int(rng.integers(0, len(data)))])
        else:
            for _ in range(kind + 1):
                pos = int(rng.integers(0, len(data)))
                mutated[pos] = int(rng.integers(0, 256)) if kind else mutated[pos] ^ 0xFF
            yield bytes(mutated)


def test_random_byte_mutations(valid, tmp_path):
    path, expected = valid
    data, rng, outcomes = path.read_bytes(), np.random.default_rng(1), collections.Counter()
    for i, mutated in enumerate(_byte_mutations(data, rng, 160)):
        case = tmp_path / f"bytes{i}.pth"
        case.write_bytes(mutated)
        outcomes[_run(case, expected)] += 1
    assert outcomes["refused"] > 100, outcomes


def _zip_cases(path: Path):
    """(name, entries, compression) mutations of the archive's entries."""
    with zipfile.ZipFile(path) as z:
        entries = [(n, z.read(n)) for n in z.namelist()]
    names = [n for n, _ in entries]
    data0 = names.index("valid/data/0")
    for i in range(len(entries)):
        yield f"drop{i}", entries[:i] + entries[i + 1 :], zipfile.ZIP_STORED
    name, blob = entries[data0]
    for cut in (0, 1, len(blob) // 2, len(blob) - 1, len(blob) + 4):
        changed = blob[:cut] + bytes(max(0, cut - len(blob)))
        yield f"size{cut}", [*entries[:data0], (name, changed), *entries[data0 + 1 :]], 0
    yield "duplicate", [*entries, (name, bytes(len(blob)))], zipfile.ZIP_STORED
    yield "deflated", entries, zipfile.ZIP_DEFLATED
    yield "bzip2", entries, zipfile.ZIP_BZIP2
    big = [(n, b"big" if n.endswith("byteorder") else d) for n, d in entries]
    yield "bigendian", big, zipfile.ZIP_STORED
    yield "two_pickles", [*entries, ("other/data.pkl", entries[0][1])], zipfile.ZIP_STORED
    yield "empty_zip", [], zipfile.ZIP_STORED


def test_zip_entry_mutations(valid, tmp_path):
    path, expected = valid
    outcomes = collections.Counter()
    for name, entries, compression in _zip_cases(path):
        case = _zip(tmp_path / f"{name}.pth", entries, compression)
        outcomes[_run(case, expected)] += 1
    assert outcomes["loaded"] >= 2 and outcomes["refused"] >= 12, outcomes
    # A bad CRC in a stored entry, an encrypted flag, and files that are no zip at all.
    with zipfile.ZipFile(path) as z:
        central = path.read_bytes().index(b"valid/data/0", z.start_dir) - 46  # its header
    bad_crc, encrypted = bytearray(path.read_bytes()), bytearray(path.read_bytes())
    bad_crc[central + 16] ^= 1
    encrypted[central + 8] |= 1
    for name, blob in {"crc": bad_crc, "encrypted": encrypted, "text": b"hi", "nil": b""}.items():
        case = tmp_path / f"{name}.pth"
        case.write_bytes(bytes(blob))
        assert _run(case) == "refused", name


def _pickle_mutations(pkl: bytes, rng: np.random.Generator, count: int):
    for i in range(count):
        mutated = bytearray(pkl)
        pos = int(rng.integers(0, len(pkl)))
        kind = i % 4
        if kind == 0:
            mutated[pos] = int(rng.integers(0, 256))
        elif kind == 1:
            mutated.insert(pos, int(rng.integers(0, 256)))
        elif kind == 2:
            del mutated[pos]
        else:
            mutated = mutated[:pos]
        yield bytes(mutated)


def test_pickle_byte_mutations(valid, tmp_path):
    path, expected = valid
    with zipfile.ZipFile(path) as z:
        entries = [(n, z.read(n)) for n in z.namelist()]
    rng, outcomes = np.random.default_rng(2), collections.Counter()
    for i, pkl in enumerate(_pickle_mutations(entries[0][1], rng, 120)):
        case = _zip(tmp_path / f"pkl{i}.pth", [(entries[0][0], pkl), *entries[1:]])
        outcomes[_run(case)] += 1
    assert outcomes["refused"] > 40, outcomes


class View(NamedTuple):
    storage_type: Any
    numel: Any
    offset: Any
    size: Any
    stride: Any
    data_len: int  # bytes in the zip entry


def _reference(view: View, data: bytes) -> np.ndarray | None:
    """The tensor by an independent element-by-element walk, or None if it is not valid."""
    layout = STORAGE_LAYOUTS.get(view.storage_type) if isinstance(view.storage_type, str) else None
    fields = (view.numel, view.offset, *view.size, *view.stride)
    if layout is None or not all(type(v) is int for v in fields):
        return None
    if len(view.size) != len(view.stride) or view.numel < 0 or view.offset < 0:
        return None
    if min(view.size + view.stride, default=0) < 0 or view.numel * np.dtype(layout).itemsize != len(
        data
    ):
        return None
    too_big = math.prod(max(n, 1) for n in view.size) > max(view.numel, 1 << 24)
    if too_big or view.offset > view.numel:
        return None
    if math.prod(view.size) == 0:
        return _decode_like_torch(np.zeros(view.size, dtype=layout), view.storage_type)
    flat = np.frombuffer(data, dtype=layout)
    values = []
    for index in itertools.product(*(range(n) for n in view.size)):
        element = view.offset + sum(i * s for i, s in zip(index, view.stride, strict=True))
        if element >= view.numel:
            return None
        values.append(flat[element])
    return _decode_like_torch(np.array(values, dtype=layout).reshape(view.size), view.storage_type)


def _decode_like_torch(array: np.ndarray, storage_type: str) -> np.ndarray:
    if storage_type == "BFloat16Storage":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array != 0 if storage_type == "BoolStorage" else array.astype(array.dtype.str[1:])


HUGE = [2**31, 2**40, 2**62, 2**63, 2**64]


def _random_view(rng: np.random.Generator) -> View:
    def pick(common, rare, p_rare=0.15):
        pool = rare if rng.random() < p_rare else common
        return pool[int(rng.integers(0, len(pool)))]

    types = ["FloatStorage"] * 6 + [*STORAGE_LAYOUTS, "ComplexFloatStorage", "QInt8Storage"]
    storage_type = pick(types, [7, "torch"])
    ndim = int(rng.integers(0, 4))
    size = tuple(pick([1, 2, 3, 4], [0, -1, *HUGE, 2.0, None]) for _ in range(ndim))
    dense = None
    if all(type(n) is int for n in size) and rng.random() < 0.5:
        dense = tuple(math.prod(size[k + 1 :]) for k in range(ndim))
    stride = dense or tuple(pick([0, 1, 2, 3, 6], [-1, -6, *HUGE, -(2**40), 1.5]) for _ in size)
    if rng.random() < 0.05:
        stride = stride[:-1]
    itemsize = np.dtype(STORAGE_LAYOUTS.get(storage_type, "f4")).itemsize
    numel = pick([N], [0, N - 1, N + 1, 2**40, -1, str(N), None])
    data_len = N * itemsize if rng.random() > 0.1 else int(rng.integers(0, N * itemsize + 9))
    offset = pick([0, 1, 2, 5], [N - 1, N, N + 1, -1, -(2**40), *HUGE, "0", 1.0])
    return View(storage_type, numel, offset, size, stride, data_len)


def _view_state(view: View, rng: np.random.Generator) -> list[tuple[str, str]]:
    """[(tensor name, storage type)]: "w" is `view`, "b" (sometimes) a second view of it."""
    state = [("w", view.storage_type)]
    if rng.random() < 0.3:  # sometimes of another type: refused (torch would reuse the first)
        state.append(("b", view.storage_type if rng.random() < 0.7 else "IntStorage"))
    return state


def _view_file(path: Path, view: View, state: list, data: bytes) -> Path:
    tensors = [("w", _tensor(view.storage_type, "0", view.numel, *view[2:5]))]
    tensors += [("b", _tensor(kind, "0", view.numel, 0, (2,), (1,))) for _, kind in state[1:]]
    return _zip(path, _entries(_pickle(OD(tensors)), {"0": data}))


def _view_case(path: Path, view: View, state: list, data: bytes) -> str:
    """Run one structured case against `_reference` (and torch.load where the file is valid)."""
    _view_file(path, view, state, data)
    expected = {"w": _reference(view, data)}
    if len(state) == 2:  # the second view must share the type and fit the storage
        b_view = View(state[1][1], view.numel, 0, (2,), (1,), view.data_len)
        expected["b"] = _reference(b_view, data) if b_view[0] == view.storage_type else None
    if any(v is None for v in expected.values()):  # invalid: refused (torch may crash on it)
        assert _run(path, use_torch=False) == "refused", view
        return "refused"
    ours = read_state_dict(path)
    assert _same(ours, expected), view
    theirs = _torch_load(path)
    assert theirs is None or _same(ours, theirs), view
    return "loaded, torch agrees" if theirs is not None else "loaded"


EDGE_VIEWS = [  # (offset, size, stride): empty views with absurd strides or sizes, 0-d, overlap
    (0, (0, 3), (2**64, 2**64)),
    (N, (0,), (1,)),
    (N + 1, (0,), (1,)),
    (0, (0, 2**62), (1, 1)),
    (0, (0, 2**24, 2**24), (1, 1, 1)),
    (N - 1, (), ()),
    (0, (5, 4), (0, 1)),
    (3, (2, 1, 3), (4, 2**70, 1)),
]


def test_structured_view_mutations(tmp_path):
    """Offsets, sizes, strides, storage types and numels, valid or hostile, vs a reference."""
    rng, outcomes = np.random.default_rng(3), collections.Counter()
    data = rng.bytes(4 * N)
    for i, (offset, size, stride) in enumerate(EDGE_VIEWS):
        view = View("FloatStorage", N, offset, size, stride, 4 * N)
        outcomes[_view_case(tmp_path / f"edge{i}.pth", view, [("w", "FloatStorage")], data)] += 1
    for i in range(250):
        view = _random_view(rng)
        data, state = rng.bytes(view.data_len), _view_state(view, rng)
        outcomes[_view_case(tmp_path / f"view{i}.pth", view, state, data)] += 1
    assert outcomes["loaded, torch agrees"] >= 40 and outcomes["refused"] >= 80, outcomes


def _deep_tuple_key(depth: int) -> bytes:
    return b"\x80\x02}K\x00" + b"\x85" * depth + b"K\x01s."


def _hostile_pickles() -> dict[str, bytes]:
    good = _tensor("FloatStorage", "0", N, 0, (2,), (1,))
    return {
        "deep_key": _deep_tuple_key(200_000),
        "system": _pickle(R(G("os", "system"), ("echo pwned",))),
        "eval": _pickle(R(G("builtins", "eval"), ("1+1",))),
        "huge_string": b"\x80\x02X\xff\xff\xff\x7f" + b"a" * 10 + b".",
        "inst_opcode": b"\x80\x02(ios\nsystem\nX\x02\x00\x00\x00hi.",
        "fake_tensor": _pickle(OD([("w", ("tensor", ("storage", "FloatStorage", "0", N), 0))])),
        "int_key": _pickle(OD([(0, good)])),
        "not_a_dict": _pickle([good]),
        "bad_pid": _pickle(OD([("w", R(G("torch._utils", "_rebuild_tensor_v2"), (P((1,)),)))])),
        "no_stop": _pickle(OD([("w", good)]))[:-1],
        "build_on_tensor": _pickle(good)[:-1] + b"}b.",
    }


def test_hostile_pickles(tmp_path, capfd):
    data = np.arange(N, dtype="<f4").tobytes()
    for name, pkl in _hostile_pickles().items():
        path = _zip(tmp_path / f"{name}.pth", _entries(pkl, {"0": data}))
        assert _run(path) == "refused", name
    assert "pwned" not in capfd.readouterr().out


CRASH_SCRIPT = """
import sys
from sassid_jax.io.torch_format import TorchFormatError, read_state_dict
for path in sys.argv[1:]:
    try:
        read_state_dict(path)
        print("loaded", path)
    except TorchFormatError:
        print("refused", path)
"""


def test_crash_class_cases_in_a_subprocess(tmp_path):
    """Inputs that crashed the old reader (as_strided / hashing) exit cleanly, all refused."""
    data = np.arange(N, dtype="<f4").tobytes()
    views = {
        "stride_2e40": (0, (2, 2), (2**40, 1)),
        "stride_neg": (N - 1, (4,), (-1,)),
        "stride_neg_huge": (0, (2,), (-(2**40),)),
        "offset_past_end": (N + 5, (2,), (1,)),
        "reaches_past_end": (20, (3, 3), (3, 1)),
        "numel_overflow": (0, (2**31, 2**31, 4), (0, 0, 1)),
    }
    views["valid_control"] = (2, (2, 3), (1, 4))  # last: a good file loads in the subprocess
    paths = [tmp_path / "deep_key.pth"]
    _zip(paths[0], _entries(_deep_tuple_key(200_000), {}))
    for name, (offset, size, stride) in views.items():
        pkl = _pickle(OD([("w", _tensor("FloatStorage", "0", N, offset, size, stride))]))
        paths.append(_zip(tmp_path / f"{name}.pth", _entries(pkl, {"0": data})))
    root = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, *map(str, paths)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    lines = result.stdout.splitlines()
    assert lines == [f"refused {p}" for p in paths[:-1]] + [f"loaded {paths[-1]}"], lines
    assert time.perf_counter() - started < 60
