"""Decoders and encoders of the photo formats, on library codecs (`photos` is the API).

PNG on imagecodecs' libpng, TIFF on tifffile and imagecodecs, JPEG on Pillow. Decoders take an
open seekable binary file, check width x height against the pixel limit before decoding, and
raise `FormatError` (no path; `photos` adds it). Details: docs/io.md#photo-codecs.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from sassid_jax.io import photo_checks

ORIENTATION_TAG = 0x0112
EXIF_SUB_IFDS = (0x8769, 0x8825)  # ExifIFD (exposure, lens, ...), GPSInfo
# EXIF main-IFD tags that describe the photo (not its pixel layout); TIFF outputs keep these.
DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class FormatError(ValueError):
    """A file in a known format that is refused; str() says why (no path)."""


@dataclass(frozen=True)
class Decoded:
    """A decoded image as stored: pixels (H, W, C) uint8/uint16 (not yet upright), its EXIF
    orientation (1..8), ICC profile and EXIF bytes (None when absent)."""

    pixels: np.ndarray
    orientation: int
    icc_profile: bytes | None
    exif: bytes | None


def sniff(head: bytes) -> str | None:
    """'png', 'jpeg', 'tiff' from a file's first bytes (8 are enough), None for anything
    else."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(TIFF_SIGNATURES):
        return "tiff"
    return None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """FormatError when width x height exceeds max_pixels (checked before decoding).

    Args:
      width, height: the image size from the file header, in pixels.
      max_pixels: the largest width x height accepted.
    """
    if width * height > max_pixels:
        raise FormatError(
            f"{width}x{height} image has {width * height} pixels, over the limit of "
            f"{max_pixels} (decompression-bomb guard; raise it with --max_pixels / max_pixels)"
        )


def _exif_object(exif: bytes | None) -> Image.Exif | None:
    if not exif:
        return None
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:  # malformed EXIF: treated as absent, like Pillow's own readers
        return None
    return parsed


def orientation_of(exif: bytes | None) -> int:
    """The EXIF orientation (1..8) in EXIF bytes; 1 when absent or malformed."""
    parsed = _exif_object(exif)
    value = parsed.get(ORIENTATION_TAG, 1) if parsed is not None else 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_exif(exif: bytes | None) -> bytes | None:
    """EXIF bytes with the orientation tag reset to 1 (pixels are stored upright)."""
    parsed = _exif_object(exif)
    if parsed is None:
        return None
    if ORIENTATION_TAG in parsed:
        parsed[ORIENTATION_TAG] = 1
    for ifd in EXIF_SUB_IFDS:
        parsed.get_ifd(ifd)  # loaded sub-IFDs are written back by tobytes()
    return parsed.tobytes()


def _channels_last(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


# ------------------------------------------------------------------------------------ PNG


def decode_png(f: IO[bytes], max_pixels: int) -> Decoded:
    """Decode a PNG (8/16 bit; grey, grey+alpha, RGB, RGBA, palette expanded; CRCs checked).

    Args:
      f: the open, seekable file (read from its start).
      max_pixels: the pixel limit, checked from the header first.
    Returns:
      the Decoded image: (H, W, C) uint8 or uint16, its EXIF orientation, iCCP profile and
      eXIf bytes.
    """
    f.seek(0)
    try:
        im = PngImagePlugin.PngImageFile(f)  # lazy: chunks up to the first IDAT only
    except ValueError as e:
        if "MAX_TEXT_CHUNK" not in str(e):
            raise
        limit = PngImagePlugin.MAX_TEXT_CHUNK / 2**20
        raise FormatError(
            f"its ICC profile or a text chunk decompresses to more than {limit:g} MiB, the "
            "limit for metadata (a zip-bomb guard): save it with a smaller profile"
        ) from e
    with im:
        check_pixels(*im.size, max_pixels)
        icc, exif = im.info.get("icc_profile"), im.info.get("exif")
    f.seek(0)
    data = f.read()
    photo_checks.check_png(data)  # one frame, and data that can fill the header
    pixels = _channels_last(imagecodecs.png_decode(data))
    return Decoded(pixels, orientation_of(exif), icc, exif)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_png(pixels: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Encode a PNG, with iCCP / eXIf chunks after IHDR when given.

    Args:
      pixels: (H, W, C) uint8 or uint16, C in 1..4.
      icc_profile: ICC profile bytes, or None.
      exif: EXIF bytes (Pillow's, b"Exif\\0\\0" + TIFF structure), or None.
    Returns:
      the file's bytes.
    """
    data = imagecodecs.png_encode(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    extra = b""
    if icc_profile:
        extra += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        extra += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    ihdr_end = len(PNG_SIGNATURE) + 25  # length, type, 13-byte body, CRC
    return data[:ihdr_end] + extra + data[ihdr_end:]


# ----------------------------------------------------------------------------------- JPEG


def _draft(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The JPEG decoded at 1/8 scale (libjpeg's DCT scaling: every coefficient is still
    entropy-decoded, 1/64 of the pixels come out)."""
    with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as im:
        im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        return np.asarray(im)


def _check_jpeg_complete(data: bytes, size: tuple[int, int]) -> None:
    """FormatError when a scan's data ends before the pixels the header declares: the draft
    decodes of the file and of `photo_checks.jpeg_padded` differ (the decoder read past the
    data, where it fills zeros and says nothing)."""
    try:
        padded = _draft(photo_checks.jpeg_padded(data), size)
    except Exception:  # the padded copy does not decode: the load of the file itself decides
        return
    if not np.array_equal(_draft(data, size), padded):
        raise FormatError(
            f"its scan data ends before the {size[0]}x{size[1]} pixels its header declares "
            "are coded (truncated or damaged)"
        )


def decode_jpeg(f: IO[bytes], max_pixels: int) -> Decoded:
    """Decode a JPEG (8 bit; grey or RGB, CMYK and YCCK converted to RGB).

    Args:
      f: the open, seekable file (read from its start).
      max_pixels: the pixel limit, checked from the header first.
    Returns:
      the Decoded image: (H, W, 1 or 3) uint8, its EXIF orientation, ICC profile and EXIF
      bytes.
    """
    f.seek(0)
    data = f.read()
    with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as im:  # lazy: markers until load()
        check_pixels(*im.size, max_pixels)
        photo_checks.check_jpeg(data)  # scans that can code the header's blocks
        _check_jpeg_complete(data, im.size)
        icc, exif = im.info.get("icc_profile"), im.info.get("exif")
        im.load()
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")  # CMYK, YCCK, ...
        pixels = _channels_last(np.asarray(im))
    return Decoded(pixels, orientation_of(exif), icc, exif)


def encode_jpeg(pixels: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Encode a JPEG (quality 95, no chroma subsampling), ICC and EXIF in APP segments.

    Args:
      pixels: (H, W, 1 or 3) uint8.
      icc_profile: ICC profile bytes, or None.
      exif: EXIF bytes, or None.
    Returns:
      the file's bytes.
    """
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, subsampling=0, icc_profile=icc_profile, exif=exif or b"")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------- TIFF


def _tiff_exif(f: IO[bytes]) -> bytes | None:
    """EXIF bytes from a TIFF's descriptive main-IFD tags and its EXIF / GPS sub-IFDs."""
    try:
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's tag warnings: metadata, not pixels
            with TiffImagePlugin.TiffImageFile(f) as im:  # lazy: tags only
                source, exif = im.getexif(), Image.Exif()
                for tag in (ORIENTATION_TAG, *DESCRIPTIVE_TAGS):
                    if tag in source:
                        exif[tag] = source[tag]
                for ifd in EXIF_SUB_IFDS:
                    exif.get_ifd(ifd).update(source.get_ifd(ifd))
    except Exception:  # metadata only: a TIFF Pillow cannot parse simply has no EXIF
        return None
    return exif.tobytes() if len(exif) or any(exif.get_ifd(i) for i in EXIF_SUB_IFDS) else None


@contextmanager
def _tiff_warnings_as_errors() -> Iterator[None]:
    """FormatError when tifffile logs a warning or error while decoding (it fills the pixels
    of a segment it could not decode and goes on)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = tifffile.logger()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if records:
        message = " ".join(records[0].getMessage().split())[:200]
        raise FormatError(f"corrupt TIFF data ({message})")


def _full_pages(tif: tifffile.TiffFile) -> int:
    """The pages of a TIFF that are images of their own (reduced-resolution previews, bit 0
    of NewSubfileType, do not count)."""
    return sum(1 for page in tif.pages if not getattr(page, "subfiletype", 0) & 1)


def decode_tiff(f: IO[bytes], max_pixels: int) -> Decoded:
    """Decode a single-page TIFF (8/16-bit unsigned; grey or RGB, with or without alpha).

    A multi-page TIFF is refused (FormatError naming the page count), and so is a page whose
    strips do not fit in the file or cannot hold its pixels (`photo_checks`).

    Args:
      f: the open, seekable file (read from its start).
      max_pixels: the pixel limit, checked from the header first.
    Returns:
      the Decoded image: (H, W, C) uint8 or uint16 (min-is-white inverted, planes
      interleaved), its orientation tag, ICC profile and EXIF bytes.
    """
    file_bytes = f.seek(0, io.SEEK_END)
    f.seek(0)
    with tifffile.TiffFile(f) as tif:
        page = tif.pages.first
        check_pixels(page.imagewidth, page.imagelength, max_pixels)
        pages = _full_pages(tif)
        if pages > 1:
            raise FormatError(
                f"multi-page TIFF with {pages} pages: only single images are read (save the "
                "page you want as a TIFF of its own)"
            )
        if page.dtype not in (np.uint8, np.uint16):
            raise FormatError(
                f"unsupported TIFF sample type {page.dtype} (8-bit or 16-bit unsigned only)"
            )
        if page.samplesperpixel > 4 or page.photometric not in (0, 1, 2, 6):
            raise FormatError(
                f"unsupported TIFF layout ({page.samplesperpixel} samples, photometric "
                f"{page.photometric!r}); grey or RGB, with or without alpha, only"
            )
        photo_checks.check_tiff_data(
            page.dataoffsets, page.databytecounts, int(page.compression), page.nbytes, file_bytes
        )
        with _tiff_warnings_as_errors():
            array = page.asarray()
        if array.ndim == 3 and page.planarconfig == 2:  # separate planes: (C, H, W)
            array = np.moveaxis(array, 0, -1)
        if page.photometric == 0:  # min-is-white
            array = np.iinfo(array.dtype).max - array
        tag = page.tags.get("Orientation")
        orientation = int(tag.value) if tag is not None else 1
        icc = page.iccprofile
    return Decoded(_channels_last(array), orientation, icc, _tiff_exif(f))


def encode_tiff(pixels: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Encode a TIFF (deflate with the horizontal predictor, lossless).

    Args:
      pixels: (H, W, C) uint8 or uint16, C in 1..4 (2 and 4: with alpha).
      icc_profile: ICC profile bytes, or None.
      exif: EXIF bytes, or None; only its descriptive main-IFD tags are kept.
    Returns:
      the file's bytes.
    """
    channels = pixels.shape[2]
    parsed = _exif_object(exif)
    tags = [
        (tag, "s", 0, str(parsed[tag]), True)
        for tag in DESCRIPTIVE_TAGS
        if parsed is not None and isinstance(parsed.get(tag), str)
    ]
    buffer = io.BytesIO()  # tifffile wants a named file or a seekable buffer
    tifffile.imwrite(
        buffer,
        pixels[:, :, 0] if channels == 1 else pixels,
        photometric="minisblack" if channels in (1, 2) else "rgb",
        extrasamples=["unassalpha"] if channels in (2, 4) else None,
        compression="zlib",
        predictor=True,
        iccprofile=icc_profile,
        extratags=tags,
        metadata=None,
        software=False,
    )
    return buffer.getvalue()
