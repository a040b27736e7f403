"""Structure checks of photo files before decoding: only work the file's own bytes justify.

A header can claim far more pixels than its compressed data could code (a 630-byte JPEG
saying 9000x9000), and decoders then fill the rest with grey and say nothing. These checks
read the container alone (PNG chunks, JPEG markers and scan lengths, TIFF strip sizes), so
decoding starts only when the data can plausibly fill the header, and a file with several
frames or pages is refused by name instead of being read as its first. They raise
`photo_codecs.FormatError`-compatible `StructureError`s (no path; `photos` adds it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Largest decoded / compressed size ratio of each compression: deflate (zlib) tops out near
# 1032:1, LZW (12-bit codes, strings grow by one byte per code) near 2730:1, PackBits at 64:1.
DEFLATE_RATIO = 1032
TIFF_RATIOS = {1: 1, 5: 2731, 8: DEFLATE_RATIO, 32946: DEFLATE_RATIO, 32773: 64}
# Huffman-coded JPEG: a baseline block takes >= 2 bits (a DC code and an end-of-block code,
# each >= 1 bit); a progressive DC-first scan >= 1 bit per block.
BASELINE_BITS, PROGRESSIVE_DC_BITS = 2, 1
HUFFMAN_SOFS = (0xC0, 0xC1, 0xC2)  # baseline, extended, progressive; arithmetic ones unchecked
SOF_MARKERS = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
STANDALONE = (0x01, *range(0xD0, 0xD8))  # TEM and RST0-7: no length field
PAD = bytes([0x5A, 0xA5]) * 64  # bits a decoder short of scan data reads (no 0xFF: no marker)
PNG_SLACK = 1024  # bytes of zlib framing and small-image overhead allowed beyond the ratio


class StructureError(ValueError):
    """A file whose structure is refused; str() says why (no path)."""


# ------------------------------------------------------------------------------------ PNG


@dataclass(frozen=True)
class PngLayout:
    """What a PNG's chunks declare: size, bits per sample, samples per pixel, frames, and
    the bytes of its image data (IDAT)."""

    width: int
    height: int
    bits: int
    samples: int
    frames: int
    idat_bytes: int


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each PNG chunk after the signature, up to IEND or the data's end."""
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        yield kind, data[i + 8 : i + 8 + length]
        if kind == b"IEND":
            return
        i += 12 + length


def png_layout(data: bytes) -> PngLayout:
    """The layout of a PNG file.

    Args:
      data: the whole file.
    Returns:
      the PngLayout (frames: acTL's frame count, 1 without acTL).
    Raises:
      StructureError: no IHDR first.
    """
    chunks = _png_chunks(data)
    kind, body = next(chunks, (b"", b""))
    if kind != b"IHDR" or len(body) < 13:
        raise StructureError("no IHDR chunk at the start of the PNG")
    width, height, bits, colour = struct.unpack(">IIBB", body[:10])
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    frames, idat = 1, 0
    for kind, body in chunks:
        if kind == b"acTL" and len(body) >= 4:
            frames = struct.unpack(">I", body[:4])[0]
        elif kind == b"IDAT":
            idat += len(body)
    return PngLayout(width, height, bits, samples, frames, idat)


def check_png(data: bytes) -> None:
    """StructureError for an animated PNG, or one whose image data cannot hold its header's
    pixels (more than DEFLATE_RATIO times its IDAT bytes).

    Args:
      data: the whole file.
    """
    layout = png_layout(data)
    if layout.frames > 1:
        raise StructureError(
            f"animated PNG with {layout.frames} frames: only still images are read (save the "
            "frame you want as a PNG of its own)"
        )
    row = 1 + math.ceil(layout.width * layout.samples * layout.bits / 8)
    needed = layout.height * row
    if needed > DEFLATE_RATIO * layout.idat_bytes + PNG_SLACK:
        raise StructureError(
            f"its {layout.idat_bytes} bytes of image data cannot hold the {layout.width}x"
            f"{layout.height} pixels its header declares (truncated or damaged)"
        )


# ----------------------------------------------------------------------------------- JPEG


@dataclass(frozen=True)
class JpegScan:
    """One JPEG scan: its component ids, spectral start, successive-approximation high bit,
    the bytes of its entropy-coded data and the file offset where that data ends."""

    components: tuple[int, ...]
    spectral_start: int
    approx_high: int
    data_bytes: int
    data_end: int


def _entropy_end(data: bytes, start: int) -> int:
    """Index of the first marker after entropy-coded data starting at `start` (0xFF followed
    by anything but a stuffed 0x00 or a restart marker); len(data) when none."""
    i = start
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= len(data):
            return len(data)
        following = data[i + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            i += 1 if following == 0xFF else 2
            continue
        return i


def jpeg_structure(
    data: bytes,
) -> tuple[int, int, int, dict[int, tuple[int, int]], list[JpegScan]]:
    """(SOF marker, width, height, {component id: (h, v) sampling}, scans) of a JPEG.

    Args:
      data: the whole file.
    Raises:
      StructureError: no frame header (SOF) before the first scan.
    """
    i, sof, size, sampling, scans = 2, 0, (0, 0), {}, []
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1  # garbage between segments: libjpeg skips it too (with a warning)
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        body = data[i + 4 : i + 2 + length]
        end = i + 2 + length
        if marker in SOF_MARKERS and len(body) >= 6:
            height, width, count = struct.unpack(">HHB", body[1:6])
            sof, size = marker, (width, height)
            for k in range(count):
                item = body[6 + 3 * k : 9 + 3 * k]
                if len(item) == 3:
                    sampling[item[0]] = (max(1, item[1] >> 4), max(1, item[1] & 15))
        elif marker == 0xDA and len(body) >= 1:
            if not sof:
                raise StructureError("a JPEG scan before any frame header (SOF)")
            count = body[0]
            ids = tuple(body[1 + 2 * k] for k in range(count) if 1 + 2 * k < len(body))
            tail = body[1 + 2 * count : 4 + 2 * count]
            spectral, high = (tail[0], tail[2] >> 4) if len(tail) == 3 else (0, 0)
            stop = _entropy_end(data, end)
            scans.append(JpegScan(ids, spectral, high, stop - end, stop))
            end = stop
        i = end
    return sof, size[0], size[1], sampling, scans


def _blocks(width: int, height: int, h: int, v: int, h_max: int, v_max: int) -> int:
    """8x8 blocks of one component of sampling (h, v) in a width x height frame."""
    return math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(
        math.ceil(height * v / v_max) / 8
    )


def check_jpeg(data: bytes) -> None:
    """StructureError for a Huffman-coded JPEG whose scans cannot code the blocks its frame
    header declares: a component no scan codes, or fewer bits of data than the blocks need
    (BASELINE_BITS per block, PROGRESSIVE_DC_BITS per block of a DC-first scan).

    Arithmetic-coded JPEGs are not checked (their blocks have no lower bound in bits).

    Args:
      data: the whole file.
    """
    sof, width, height, sampling, scans = jpeg_structure(data)
    if sof not in HUFFMAN_SOFS or not sampling or not width or not height:
        return
    h_max = max(h for h, _ in sampling.values())
    v_max = max(v for _, v in sampling.values())
    blocks = {c: _blocks(width, height, h, v, h_max, v_max) for c, (h, v) in sampling.items()}
    progressive = sof == 0xC2
    coded: set[int] = set()
    for scan in scans:
        if progressive and (scan.spectral_start or scan.approx_high):
            continue  # AC or refinement scans: no lower bound (end-of-band runs)
        bits = PROGRESSIVE_DC_BITS if progressive else BASELINE_BITS
        needed = sum(blocks.get(c, 0) for c in scan.components) * bits
        if scan.data_bytes * 8 < needed:
            raise StructureError(
                f"its scan data ({scan.data_bytes} bytes) cannot code the {width}x{height} "
                f"pixels its header declares (at least {math.ceil(needed / 8)} bytes): "
                "truncated or damaged"
            )
        coded.update(scan.components)
    missing = sorted(set(sampling) - coded)
    if missing:
        raise StructureError(
            f"no scan codes colour component {missing[0]} of its {len(sampling)} (truncated or "
            "damaged)"
        )


def jpeg_padded(data: bytes) -> bytes:
    """The JPEG with PAD bytes after each scan's entropy-coded data.

    A decoder that runs out of a scan's data fills the rest with zero bits (libjpeg warns,
    Pillow says nothing); with the padding it reads PAD instead, so its pixels change. A
    complete scan never reads past its data (the padding is skipped as bytes before the next
    marker), so its pixels stay the same: decoding both and comparing tells the two apart.

    Args:
      data: the whole file.
    Returns:
      the padded file.
    """
    out, last = [], 0
    for scan in jpeg_structure(data)[4]:
        out += [data[last : scan.data_end], PAD]
        last = scan.data_end
    return b"".join([*out, data[last:]])


# ----------------------------------------------------------------------------------- TIFF


def check_tiff_data(
    offsets: Sequence[int],
    counts: Sequence[int],
    compression: int,
    decoded_bytes: int,
    file_bytes: int,
) -> None:
    """StructureError when a TIFF page's strips or tiles lie outside the file, or hold fewer
    bytes than its compression needs to code `decoded_bytes` (TIFF_RATIOS; compressions
    not listed there are not bounded).

    Args:
      offsets, counts: the page's strip or tile offsets and byte counts.
      compression: the TIFF compression tag's value.
      decoded_bytes: the page's size once decoded, from its header.
      file_bytes: the file's size.
    """
    if len(offsets) != len(counts) or not counts:
        raise StructureError("its strip offsets and byte counts do not match")
    for offset, count in zip(offsets, counts, strict=True):
        if not count or offset + count > file_bytes:
            raise StructureError(
                f"a strip of {count} bytes at offset {offset} does not lie in the "
                f"{file_bytes}-byte file (truncated or damaged)"
            )
    ratio = TIFF_RATIOS.get(compression)
    if ratio is not None and sum(counts) * ratio < decoded_bytes:
        raise StructureError(
            f"its {sum(counts)} bytes of image data cannot hold the {decoded_bytes} bytes its "
            "header declares (truncated or damaged)"
        )
