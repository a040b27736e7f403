"""The one photo reader and writer: training folders, SIDD preparation, evaluation, denoising.

PNG, JPEG and TIFF (`IMAGE_SUFFIXES`; 8/16 bit, EXIF orientation applied on reading, ICC and
EXIF kept on writing), found by content on reading and by suffix for folders and outputs. One
pixel limit is checked before decoding; writes are atomic; paths may be bucket URLs. Every
problem is a `PhotoError`, one line naming the file. Details: docs/io.md#photos.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import os
import stat
from collections.abc import Callable
from typing import IO

import numpy as np
from etils import epath
from PIL import Image

from sassid_jax.errors import UserInputError
from sassid_jax.io import photo_checks, photo_codecs
from sassid_jax.io.atomic_files import write_bytes
from sassid_jax.io.paths import is_local
from sassid_jax.io.photo_codecs import ORIENTATION_TAG  # noqa: F401  (re-exported)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's bomb guard
_DECODERS = {
    "png": photo_codecs.decode_png,
    "jpeg": photo_codecs.decode_jpeg,
    "tiff": photo_codecs.decode_tiff,
}


class PhotoError(UserInputError, ValueError):
    """A photo that cannot be read or written; str() is one line naming the file."""


@dataclasses.dataclass
class Photo:
    """A decoded photo, upright.

    Attributes:
      pixels: (H, W, C) uint8 or uint16, C = 1 (grey), 2 (grey+alpha), 3 (RGB), 4 (RGBA).
      icc_profile: the ICC profile bytes, or None.
      exif: EXIF bytes (Pillow's: b"Exif\\0\\0" + TIFF structure) with orientation 1, or None.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def bits(self) -> int:
        """Bits per channel: 8 (uint8) or 16 (uint16)."""
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def color_channels(self) -> int:
        """1 for grey (with or without alpha), 3 for RGB."""
        return 1 if self.pixels.shape[2] in (1, 2) else 3

    @property
    def alpha(self) -> np.ndarray | None:
        """(H, W, 1) alpha channel in the pixels' dtype, or None."""
        c = self.pixels.shape[2]
        return self.pixels[:, :, c - 1 :] if c in (2, 4) else None

    def rgb(self) -> np.ndarray:
        """(H, W, 3) float32 on [0, 255] (16-bit values / 257; grey replicated)."""
        color = self.pixels[:, :, : self.color_channels].astype(np.float32)
        if self.bits == 16:
            color /= 257.0
        return np.repeat(color, 3, axis=2) if self.color_channels == 1 else color

    def with_rgb(self, rgb: np.ndarray) -> Photo:
        """A photo like this one (bit depth, alpha, ICC, EXIF) with new colour.

        Args:
          rgb: (H, W, 3) float on [0, 255], this photo's H and W; rounded half up and
            clipped (x 257 for 16 bit); a grey photo takes the channel mean.
        Returns:
          the new Photo.
        """
        color = rgb.mean(axis=2, keepdims=True) if self.color_channels == 1 else rgb
        scale, top, dtype = (257.0, 65535, np.uint16) if self.bits == 16 else (1.0, 255, np.uint8)
        color = np.clip(np.floor(color * scale + 0.5), 0, top).astype(dtype)
        alpha = self.alpha
        pixels = color if alpha is None else np.concatenate([color, alpha], axis=2)
        return dataclasses.replace(self, pixels=pixels)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> upright, like Pillow's ImageOps.exif_transpose.

    Args:
      pixels: (H, W, C), any dtype.
      orientation: the EXIF orientation 1..8 (other values: unchanged).
    Returns:
      the upright (H', W', C) array (H and W swapped for 5..8; a contiguous copy when
      turned).
    """
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return pixels if op is None else np.ascontiguousarray(op(pixels))


def is_image_file(path: epath.Path) -> bool:
    """A regular file (a link to one too) whose suffix is one of IMAGE_SUFFIXES
    (case-insensitive); a FIFO, device or folder named like a photo is not."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not_regular(path) is None


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    kinds += ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a loop of symbolic links"
    if e.errno == errno.ENOENT:
        return "no such file (or a link to nothing)"
    return e.strerror or str(e)


def not_regular(path: epath.Path) -> str | None:
    """None for a regular file (or a link to one; any bucket object), else what it is
    ('a FIFO', 'a folder', 'a loop of symbolic links', ...), without opening it."""
    if not is_local(path):
        return None if path.is_file() else "not a file"
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return _os_reason(e)
    return None if stat.S_ISREG(mode) else _file_kind(mode)


def _name_error(path: epath.Path) -> PhotoError | None:
    """A PhotoError for a file name that is not valid UTF-8 (the datasets key by name)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path.name)
        return PhotoError(
            f"{os.fsencode(path.parent)!r}/{raw!r}: file name is not valid UTF-8; rename it"
        )
    return None


def photo_files(folder: str | os.PathLike[str]) -> list[epath.Path]:
    """The photos at the top level of a folder, sorted by name.

    Files whose suffix is one of IMAGE_SUFFIXES; hidden files (a leading '.', macOS'
    AppleDouble '._x.png' among them) are left out, and entries named like photos that are
    no regular file (a FIFO, a folder, a broken link or a link loop) are skipped with a
    warning, so that nothing blocks or stops on them.

    Args:
      folder: the folder, local or a bucket URL.
    Returns:
      the photo paths.
    Raises:
      PhotoError: a photo whose name is not valid UTF-8.
    """
    files = []
    for path in sorted(epath.Path(folder).iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        error = _name_error(path)
        if error is not None:
            raise error
        kind = not_regular(path)
        if kind is not None:
            logging.warning("skipping %s: %s, not a photo file", path, kind)
            continue
        files.append(path)
    return files


def _open_regular(path: epath.Path, stack: contextlib.ExitStack) -> IO[bytes]:
    """`path` opened for reading, refused (PhotoError) unless it is a regular file: a local
    path is opened without blocking and checked on its descriptor (a FIFO cannot hang the
    read, nor a file swapped for one after a check)."""
    if not is_local(path):
        return stack.enter_context(path.open("rb"))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PhotoError(f"{path}: cannot read ({_os_reason(e)})") from e
    raw = io.FileIO(fd, "rb")
    raw.name = os.fspath(path)  # decoders (tifffile) read the name
    f = stack.enter_context(io.BufferedReader(raw))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise PhotoError(f"{path}: {_file_kind(mode)}, not a photo file")
    os.set_blocking(fd, True)
    return f


def _limit(max_pixels: int | None) -> int:
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    if max_pixels <= 0:
        raise PhotoError(f"max_pixels {max_pixels}: must be a positive number of pixels")
    return int(max_pixels)


def read_photo(path: str | os.PathLike[str], max_pixels: int | None = None) -> Photo:
    """Decode a PNG / JPEG / TIFF into an upright Photo.

    Args:
      path: the image file (the format is found from its content, not its suffix).
      max_pixels: largest width x height accepted, checked from the header before decoding;
        None: DEFAULT_MAX_PIXELS.
    Returns:
      the Photo: (H, W, C) uint8 or uint16 pixels, upright, with its ICC profile and EXIF.
    Raises:
      PhotoError: one line naming the file (unreadable, not an image, corrupt, too large,
        unsupported layout).
    """
    path, limit = epath.Path(path), _limit(max_pixels)
    with contextlib.ExitStack() as stack:
        try:
            f = _open_regular(path, stack)
            head = f.read(16)
        except OSError as e:
            raise PhotoError(f"{path}: cannot read ({_os_reason(e)})") from e
        kind = photo_codecs.sniff(head)
        if kind is None:
            raise PhotoError(f"{path}: not a PNG, JPEG or TIFF image")
        try:
            decoded = _DECODERS[kind](f, limit)
        except (photo_codecs.FormatError, photo_checks.StructureError) as e:
            raise PhotoError(f"{path}: {e}") from e
        except Exception as e:  # decoders raise OSError, ValueError, SyntaxError, PngError ...
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PhotoError(f"{path}: cannot decode {kind.upper()} image ({reason})") from e
    pixels = decoded.pixels
    if (
        pixels.ndim != 3
        or pixels.shape[2] not in (1, 2, 3, 4)
        or pixels.dtype
        not in (
            np.uint8,
            np.uint16,
        )
    ):
        raise PhotoError(f"{path}: unsupported image layout {pixels.shape} {pixels.dtype}")
    return Photo(
        apply_orientation(pixels, decoded.orientation),
        icc_profile=decoded.icc_profile or None,
        exif=photo_codecs.upright_exif(decoded.exif),
    )


def read_rgb8(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB in [0, 255] of an image file (`read_photo`; 16 bit / 257
    rounded, grey replicated, alpha dropped).

    Args:
      path: the image file, local or a bucket URL.
      max_pixels: the pixel limit (None: DEFAULT_MAX_PIXELS).
    Raises:
      PhotoError: one line naming the file.
    """
    photo = read_photo(path, max_pixels)
    if photo.bits == 8 and photo.color_channels == 3:
        return np.ascontiguousarray(photo.pixels[:, :, :3])
    return np.clip(np.floor(photo.rgb() + 0.5), 0, 255).astype(np.uint8)


def check_output_suffix(path: str | os.PathLike[str]) -> None:
    """PhotoError when `path`'s suffix is not one of IMAGE_SUFFIXES."""
    path = epath.Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise PhotoError(
            f"{path}: unsupported output format '{path.suffix}' "
            f"(use one of {', '.join(IMAGE_SUFFIXES)})"
        )


def check_writable(photo: Photo, path: str | os.PathLike[str]) -> None:
    """PhotoError when `path`'s suffix is no image format or cannot hold the photo.

    Args:
      photo: the photo to write (a JPEG cannot hold its alpha).
      path: the output file; only its suffix is read.
    """
    path = epath.Path(path)
    check_output_suffix(path)
    if path.suffix.lower() in (".jpg", ".jpeg") and photo.alpha is not None:
        raise PhotoError(
            f"{path}: JPEG cannot store the alpha channel of the input; write PNG or TIFF instead"
        )


def encode_photo(photo: Photo, suffix: str) -> bytes:
    """The photo encoded in a format (16 bit becomes 8 bit, rounded, in JPEG).

    Args:
      photo: the photo.
      suffix: .png, .jpg / .jpeg or .tif / .tiff (any case).
    Returns:
      the file's bytes.
    """
    pixels, suffix = photo.pixels, suffix.lower()
    if suffix in (".tif", ".tiff"):
        return photo_codecs.encode_tiff(pixels, photo.icc_profile, photo.exif)
    if suffix == ".png":
        return photo_codecs.encode_png(pixels, photo.icc_profile, photo.exif)
    if photo.bits == 16:  # JPEG has no 16 bit: 8 bit, rounded
        pixels = np.clip(np.floor(pixels / 257.0 + 0.5), 0, 255).astype(np.uint8)
    return photo_codecs.encode_jpeg(pixels, photo.icc_profile, photo.exif)


def write_photo(path: str | os.PathLike[str], photo: Photo) -> epath.Path:
    """Encode the photo (format from the suffix) and write it atomically (mode from the
    umask; parent folders created).

    Args:
      path: the output file, local or a bucket URL.
      photo: the photo.
    Returns:
      `path` as an epath.Path.
    Raises:
      PhotoError: a suffix that is no image format, or cannot hold the photo.
    """
    check_writable(photo, path)
    return write_bytes(path, encode_photo(photo, epath.Path(path).suffix))
