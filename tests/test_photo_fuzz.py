"""A seeded mutation fuzz of the photo readers, as test_torch_format_fuzz does for `.pth` files.

PNG, JPEG and TIFF files (8 and 16 bit, grey and RGB, strips and tiles, progressive JPEG)
get flipped bytes, edited header fields (sizes, bit depths, colour types, page counts, chunk
and strip lengths) and truncations. Every case must decode to a photo no larger than the
pixel limit or fail with our one-line PhotoError; a hang, a crash or any other exception
fails the test, and so does memory beyond a bound derived from that limit.
"""

from __future__ import annotations

import faulthandler
import io
import resource
import struct
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from sassid_jax.io.photos import Photo, PhotoError, encode_photo, read_photo

SEED = 20261203
CASES_PER_FILE = 40  # x 9 seed files: 360 cases
MAX_PIXELS = 64 * 64 * 4  # the reader's limit here: 4x the seed images' pixels
CASE_SECONDS = 5.0  # one read taking longer fails the test (a real hang: the watchdog)
WATCHDOG_SECONDS = 240.0  # the whole fuzz; faulthandler kills a hung process with a traceback
MEMORY_BOUND = 400 * 2**20  # bytes of peak memory growth the fuzz may cause


def _seed_files() -> dict[str, bytes]:
    """Valid files of every layout the readers take, small enough for hundreds of cases."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (40, 56, 1), dtype=np.uint16)
    files = {
        "rgb.png": encode_photo(Photo(rgb), ".png"),
        "grey16.png": encode_photo(Photo(grey16), ".png"),
        "rgba.png": encode_photo(Photo(np.concatenate([rgb, rgb[:, :, :1]], axis=2)), ".png"),
        "rgb.jpg": encode_photo(Photo(rgb), ".jpg"),
        "rgb16.tif": encode_photo(Photo(grey16.repeat(3, axis=2)), ".tif"),
    }
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=80, progressive=True)
    files["progressive.jpg"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(rgb[:, :, 0]).save(buffer, "JPEG", quality=90, subsampling=2)
    files["grey.jpg"] = buffer.getvalue()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb, photometric="rgb", tile=(16, 16), compression="lzw")
    files["tiled_lzw.tif"] = buffer.getvalue()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb[:, :, 0], photometric="minisblack", rowsperstrip=8)
    files["strips_raw.tif"] = buffer.getvalue()
    return files


def _png_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width in bytes) of the PNG header fields worth editing: IHDR's size, depth
    and colour type, and every chunk's length."""
    fields = [(16, 4), (20, 4), (24, 1), (25, 1), (28, 1)]
    i = 8
    while i + 8 <= len(data):
        fields.append((i, 4))
        i += 12 + struct.unpack(">I", data[i : i + 4])[0]
    return fields


def _jpeg_fields(data: bytes) -> list[tuple[int, int]]:
    """Segment lengths, the frame header's size and sampling, the scan header's fields."""
    fields, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        fields.append((i + 2, 2))
        if marker in (0xC0, 0xC2):
            fields += [(i + 4, 1), (i + 5, 2), (i + 7, 2), (i + 9, 1), (i + 11, 1)]
        if marker == 0xDA:
            fields += [(i + 4, 1), (i + 2 + length - 3, 1), (i + 2 + length - 1, 1)]
            break
        i += 2 + length
    return fields


def _tiff_fields(data: bytes) -> list[tuple[int, int]]:
    """Every value of the first IFD's entries (sizes, bits, counts, offsets) and the IFD's
    next-IFD offset (a page count)."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        fields = [(tag.offset + 8, 4) for tag in page.tags.values()]  # classic TIFF, LE
        fields += [(tag.offset + 2, 2) for tag in page.tags.values()]  # the field types
        count = len(page.tags)
        fields.append((page.offset + 2 + 12 * count, 4))
    return fields


FIELDS: dict[str, Callable[[bytes], list[tuple[int, int]]]] = {
    "png": _png_fields,
    "jpg": _jpeg_fields,
    "tif": _tiff_fields,
}


def _mutate(data: bytes, fields: list[tuple[int, int]], rng: np.random.Generator) -> bytes:
    """One mutation: flipped bits, an edited header field, a truncation, or two of them."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.integers(4)
        if kind == 0:  # flip bytes anywhere
            for i in rng.integers(0, len(out), int(rng.integers(1, 9))):
                out[i] ^= int(rng.integers(1, 256))
        elif kind == 1 and fields:  # a header field: 0, 1, huge, or a few times bigger
            offset, width = fields[int(rng.integers(len(fields)))]
            if offset + width > len(out):
                continue
            old = int.from_bytes(out[offset : offset + width], "big")
            top = 2 ** (8 * width) - 1
            new = int(rng.choice([0, 1, top, min(top, old * int(rng.integers(2, 9)) + 1)]))
            out[offset : offset + width] = new.to_bytes(width, "big")
        elif kind == 2:  # truncation
            del out[int(rng.integers(8, max(9, len(out)))) :]
        else:  # a block of bytes duplicated (an extra chunk, scan or strip)
            start = int(rng.integers(0, len(out)))
            out[start:start] = out[start : start + int(rng.integers(1, 200))]
    return bytes(out)


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def test_mutated_photos_decode_or_fail_with_one_line(tmp_path):
    rng = np.random.default_rng(SEED)
    outcomes = {"decoded": 0, "refused": 0}
    peak = _peak_bytes()
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    try:
        for name, data in _seed_files().items():
            fields = FIELDS[name.rsplit(".", 1)[1]](data)
            path = tmp_path / name
            for case in range(CASES_PER_FILE):
                mutated = _mutate(data, fields, rng)
                if name == "rgb.png" and case % 9 == 0:  # valid CRCs: past libpng's check
                    mutated = _fix_png_crcs(mutated)
                path.write_bytes(mutated)
                start = time.perf_counter()
                try:
                    photo = read_photo(path, max_pixels=MAX_PIXELS)
                except PhotoError as e:
                    message = str(e)
                    assert message.startswith(str(path)) and "\n" not in message, message
                    outcomes["refused"] += 1
                else:
                    h, w, c = photo.pixels.shape
                    assert h * w <= MAX_PIXELS and c in (1, 2, 3, 4)
                    outcomes["decoded"] += 1
                seconds = time.perf_counter() - start
                assert seconds < CASE_SECONDS, f"{name} case {case}: {seconds:.1f} s"
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert _peak_bytes() - peak < MEMORY_BOUND
    assert outcomes["decoded"] and outcomes["refused"]  # both kinds of case were reached


def _fix_png_crcs(data: bytes) -> bytes:
    """The PNG with every chunk's CRC recomputed (so a mutation reaches the decoders)."""
    out, i = bytearray(data), 8
    while i + 12 <= len(out):
        length = struct.unpack(">I", out[i : i + 4])[0]
        end = i + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(out[i + 4 : end]) & 0xFFFFFFFF)
        i = end + 4
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("rgb.jpg", "sof 512x512", "512x512 pixels its header declares"),
        ("rgb.png", "ihdr 4000x4000", "cannot hold the 4000x4000 pixels"),
        ("strips_raw.tif", "truncate", "does not lie in the"),
    ],
)
def test_headers_larger_than_their_data_are_refused(tmp_path, name, edit, message):
    """A header that claims more pixels than its data codes is refused by name, before any
    decoding (no grey fill, no work sized by the header)."""
    data = bytearray(_seed_files()[name])
    if edit == "sof 512x512":
        i = data.index(b"\xff\xc0")
        data[i + 5 : i + 9] = struct.pack(">HH", 512, 512)
    elif edit == "ihdr 4000x4000":
        data[16:24] = struct.pack(">II", 4000, 4000)
        data = bytearray(_fix_png_crcs(bytes(data)))
    else:
        del data[len(data) // 2 :]
    path = tmp_path / name
    path.write_bytes(bytes(data))
    with pytest.raises(PhotoError, match=message):
        read_photo(path, max_pixels=2**26)
