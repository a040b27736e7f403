"""The `denoise` command: run a trained U-Net on photos (files or folders).

`run_denoise(checkpoint, input_path, output_path)` is what `launch.py --mode denoise` calls.
It returns an exit code (0 done, 2 bad input, 130 interrupted) and never lets a traceback reach
the user for bad input: every problem is one line naming the file.

- Checkpoints: our run folder (workdir with config.json; the last stage training 'unet'),
  any folder inside its checkpoints/ (a stage or a step), or the authors' `.pth` U-Net (width
  read from `encode_block_1.0.weight`; no code from the file runs).
- Images: PNG, JPEG, TIFF; 8-bit or 16-bit per channel (16-bit stays 16-bit: values / 257 go to
  the network on [0, 255] and * 257 back); grayscale (replicated to RGB, mean of the output
  written back as one channel), with or without alpha (alpha copied unchanged); the EXIF
  orientation is applied to the pixels (the output is stored upright, without the tag).
- Output format follows the output's extension; in folder mode names and extensions are kept.
  Writes are atomic (a hidden temp file in the same folder, then os.replace), and existing
  outputs are skipped unless overwrite=True.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION_TAG = 0x0112


class DenoiseInputError(Exception):
    """Bad input (image, path or checkpoint); str() is one line naming the file."""


# ============================================================================ checkpoints


def load_denoiser(checkpoint: str | os.PathLike) -> tuple[Any, Any]:
    """(UNet module, params) from a run folder, a folder inside its checkpoints/, or an
    authors' `.pth`. Raises DenoiseInputError (one line naming the path) for anything else."""
    from sassid_jax.checkpoint_io import CheckpointInputError, load_network

    try:
        return load_network(checkpoint, "unet")
    except CheckpointInputError as e:
        raise DenoiseInputError(str(e)) from e


# ============================================================================ 16-bit PNG


def _png_chunks(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise DenoiseInputError(f"{path}: truncated PNG (chunk {kind!r} cut short)")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise DenoiseInputError(f"{path}: truncated PNG (no IEND chunk)")


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) of PNG bytes, None if not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, ctype, interlace


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_unfilter(filters: np.ndarray, rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filtering. filters: (H,) types 0..4; rows: (H, W * bpp) uint8 filtered bytes.

    Runs along anti-diagonals of (row, pixel) (all pixels of one diagonal are independent),
    so every filter type is vectorized. Returns (H, W * bpp) uint8.
    """
    h, n = rows.shape
    w = n // bpp
    raw = rows.reshape(h, w, bpp).astype(np.int32)
    out = np.zeros((h + 1, w + 1, bpp), np.int32)  # row 0 / column 0: the zero border
    ftype = filters.astype(np.int32)
    for t in range(h + w - 1):
        r = np.arange(max(0, t - w + 1), min(h, t + 1))
        c = t - r
        a, b, d = out[r + 1, c], out[r, c + 1], out[r, c]
        f = ftype[r][:, None]
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) // 2, _paeth(a, b, d)], 0)
        out[r + 1, c + 1] = (raw[r, c] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(h, n)


def read_png16(path: Path, data: bytes) -> np.ndarray:
    """A 16-bit PNG (grey, grey+alpha, RGB, RGBA) -> (H, W, C) uint16; non-interlaced only."""
    w, h, depth, ctype, interlace = png_header(data)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 16 or channels is None:
        raise DenoiseInputError(f"{path}: unsupported PNG (bit depth {depth}, colour type {ctype})")
    if interlace:
        raise DenoiseInputError(
            f"{path}: interlaced 16-bit PNGs are not supported; re-save it "
            "without interlacing (or as 16-bit TIFF)"
        )
    idat = b"".join(body for kind, body in _png_chunks(data, path) if kind == b"IDAT")
    try:
        raw = zlib.decompressobj().decompress(idat)
    except zlib.error as e:
        raise DenoiseInputError(f"{path}: corrupt PNG data ({e})") from e
    stride = w * channels * 2
    if len(raw) < h * (stride + 1):
        raise DenoiseInputError(f"{path}: truncated PNG (image data cut short)")
    rows = np.frombuffer(raw, np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    if rows[:, 0].max(initial=0) > 4:
        raise DenoiseInputError(f"{path}: corrupt PNG (unknown row filter)")
    pixels = png_unfilter(rows[:, 0], rows[:, 1:], channels * 2)
    return pixels.view(">u2").reshape(h, w, channels).astype(np.uint16)


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_png16(image: np.ndarray) -> bytes:
    """(H, W, C) uint16, C in 1..4 (grey, grey+alpha, RGB, RGBA) -> 16-bit PNG bytes (every row
    'Up'-filtered)."""
    h, w, c = image.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(image.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps mod 256, as the filter wants
    body = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(body.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


# ============================================================================ reading


@dataclass
class Photo:
    """A decoded photo, upright.

    Attributes:
      pixels: (H, W, C) uint8 or uint16, C = 1 (grey), 2 (grey+alpha), 3 (RGB), 4 (RGBA).
    """

    pixels: np.ndarray

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def color_channels(self) -> int:
        return 1 if self.pixels.shape[2] in (1, 2) else 3

    @property
    def alpha(self) -> np.ndarray | None:
        """(H, W, 1) alpha channel or None."""
        c = self.pixels.shape[2]
        return self.pixels[:, :, c - 1 :] if c in (2, 4) else None

    def rgb(self) -> np.ndarray:
        """(H, W, 3) float32 on [0, 255] (16-bit values / 257; grey replicated)."""
        color = self.pixels[:, :, : self.color_channels].astype(np.float32)
        if self.bits == 16:
            color /= 257.0
        return np.repeat(color, 3, axis=2) if self.color_channels == 1 else color

    def with_rgb(self, rgb: np.ndarray) -> Photo:
        """A photo like this one with colour from (H, W, 3) float on [0, 255] (rounded,
        clipped; grey: the channel mean), alpha unchanged."""
        color = rgb.mean(axis=2, keepdims=True) if self.color_channels == 1 else rgb
        scale, top, dtype = (257.0, 65535, np.uint16) if self.bits == 16 else (1.0, 255, np.uint8)
        color = np.clip(np.floor(color * scale + 0.5), 0, top).astype(dtype)
        alpha = self.alpha
        return Photo(color if alpha is None else np.concatenate([color, alpha], axis=2))


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) as stored -> upright, for EXIF orientation 1..8 (like ImageOps.exif_transpose)."""
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


def _exif_orientation(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # metadata only: a file PIL cannot parse simply has no orientation
        return 1


def _pil_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode.startswith("I;16") or mode == "I":
            return np.asarray(im).astype(np.uint16)[:, :, None]
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode not in ("L", "LA", "RGB", "RGBA"):
            im = im.convert("RGB")  # 1, CMYK, YCbCr, ...
        array = np.asarray(im)
    return array[:, :, None] if array.ndim == 2 else array


def _tiff_pixels(path: Path) -> tuple[np.ndarray, int]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        tag = page.tags.get("Orientation")
        orientation = int(tag.value) if tag is not None else 1
        if array.ndim == 3 and page.planarconfig == 2:  # separate planes: (C, H, W)
            array = np.moveaxis(array, 0, -1)
    if array.dtype not in (np.uint8, np.uint16):
        raise DenoiseInputError(
            f"{path}: unsupported TIFF sample type {array.dtype} "
            "(8-bit or 16-bit unsigned integers only)"
        )
    return (array[:, :, None] if array.ndim == 2 else array), orientation


def _decode(path: Path, head: bytes) -> tuple[np.ndarray, int]:
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _tiff_pixels(path)
    if head.startswith(PNG_SIGNATURE):
        header = png_header(head)
        if header is not None and header[2] == 16:
            return read_png16(path, path.read_bytes()), _exif_orientation(path)
        return _pil_pixels(path), _exif_orientation(path)
    if head.startswith(b"\xff\xd8"):
        return _pil_pixels(path), _exif_orientation(path)
    raise DenoiseInputError(f"{path}: not a PNG, JPEG or TIFF image")


def read_photo(path: str | os.PathLike) -> Photo:
    """Decode a PNG / JPEG / TIFF into an upright Photo; DenoiseInputError for anything bad."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise DenoiseInputError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        pixels, orientation = _decode(path, head)
    except DenoiseInputError:
        raise
    except Exception as e:  # decoders raise OSError, ValueError, SyntaxError, struct.error ...
        raise DenoiseInputError(f"{path}: cannot decode image ({e})") from e
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise DenoiseInputError(f"{path}: unsupported image layout {pixels.shape}")
    return Photo(apply_orientation(pixels, orientation))


# ============================================================================ writing


def _encode(photo: Photo, out: IO[bytes], suffix: str) -> None:
    pixels = photo.pixels
    if suffix in (".tif", ".tiff"):
        import tifffile

        photometric = "minisblack" if photo.color_channels == 1 else "rgb"
        extra = ["unassalpha"] if photo.alpha is not None else None
        buffer = io.BytesIO()  # tifffile wants a named file or a seekable buffer
        tifffile.imwrite(buffer, pixels, photometric=photometric, extrasamples=extra)
        out.write(buffer.getbuffer())
        return
    if suffix == ".png" and photo.bits == 16:
        out.write(encode_png16(pixels))
        return
    from PIL import Image

    if photo.bits == 16:  # JPEG has no 16-bit: 8-bit, rounded
        pixels = np.clip(np.floor(pixels / 257.0 + 0.5), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if suffix == ".png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=95, subsampling=0)


def check_writable(photo: Photo, path: Path) -> None:
    """DenoiseInputError when `path`'s format cannot hold the photo (alpha in JPEG)."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DenoiseInputError(
            f"{path}: unsupported output format '{path.suffix}' "
            f"(use one of {', '.join(IMAGE_SUFFIXES)})"
        )
    if suffix in (".jpg", ".jpeg") and photo.alpha is not None:
        raise DenoiseInputError(
            f"{path}: JPEG cannot store the alpha channel of the input; write PNG or TIFF instead"
        )


def write_atomic(
    path: str | os.PathLike, photo: Photo, encode: Callable[[Photo, IO[bytes], str], None] = _encode
) -> None:
    """Encode photo (format from path's extension) to a temp file beside path, then rename.

    On any error or KeyboardInterrupt the temp file is removed and path is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            encode(photo, f, path.suffix.lower())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ============================================================================ the command


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def plan_jobs(input_path: str | os.PathLike, output_path: str | os.PathLike) -> list[Job]:
    """Jobs for a file -> file/folder or a folder -> folder run (folders: top level only,
    names kept). DenoiseInputError for missing or empty inputs and in-place overwrites."""
    source, target = Path(input_path), Path(output_path)
    if not source.exists():
        raise DenoiseInputError(f"{source}: no such file or directory")
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise DenoiseInputError(
                f"{target}: the input is a folder, so the output must be a folder too"
            )
        if _same_file(source, target):
            raise DenoiseInputError(
                f"{target}: output folder is the input folder; the results "
                "would overwrite the inputs"
            )
        files = sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DenoiseInputError(f"{source}: no PNG, JPEG or TIFF images in this folder")
        return [Job(p, target / p.name) for p in files]
    if target.is_dir():
        target = target / source.name
    if _same_file(source, target):
        raise DenoiseInputError(f"{target}: output would overwrite the input")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise DenoiseInputError(
            f"{target}: unsupported output format '{target.suffix}' "
            f"(use one of {', '.join(IMAGE_SUFFIXES)})"
        )
    if not target.parent.is_dir():
        raise DenoiseInputError(f"{target.parent}: output folder does not exist")
    return [Job(source, target)]


class _Progress:
    """Bars over files and over the tiles of the current file (tqdm, else plain stderr)."""

    def __init__(self, total_files: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm ships with the pinned dependencies
            tqdm = None
        self._tqdm = tqdm
        self._files = tqdm(total=total_files, unit="file", file=sys.stderr) if tqdm else None
        self._tiles: Any = None

    def message(self, text: str, *, error: bool = False) -> None:
        stream = sys.stderr if error else sys.stdout
        if self._tqdm is not None:
            self._tqdm.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def tiles(self, done: int, total: int) -> None:
        if self._tqdm is None:
            print(
                f"\r  tiles {done}/{total}",
                end="\n" if done == total else "",
                file=sys.stderr,
                flush=True,
            )
            return
        if self._tiles is None:
            self._tiles = self._tqdm(total=total, unit="tile", leave=False, file=sys.stderr)
        self._tiles.update(done - self._tiles.n)

    def file_done(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None
        if self._files is not None:
            self._files.update(1)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        if self._files is not None:
            self._files.close()


def denoise_photo(
    apply_fn: Any,
    photo: Photo,
    *,
    ensemble: bool,
    tile: int,
    progress: Callable[[int, int], None] | None,
) -> Photo:
    """The denoised photo (same size, bit depth, channels; alpha unchanged)."""
    from sassid_jax import inference

    run = inference.denoise_ensemble if ensemble else inference.denoise
    return photo.with_rgb(run(apply_fn, photo.rgb(), tile=tile, progress=progress))


def _process(job: Job, apply_fn: Any, bars: _Progress, *, ensemble: bool, tile: int) -> None:
    from sassid_jax.inference import MIN_SIZE

    start = time.perf_counter()
    photo = read_photo(job.source)
    h, w = photo.pixels.shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise DenoiseInputError(
            f"{job.source}: image of {w}x{h} pixels is too small to "
            f"denoise (need at least {MIN_SIZE}x{MIN_SIZE})"
        )
    check_writable(photo, job.target)
    result = denoise_photo(apply_fn, photo, ensemble=ensemble, tile=tile, progress=bars.tiles)
    write_atomic(job.target, result)
    note = (
        " (JPEG output: 8-bit)"
        if photo.bits == 16 and job.target.suffix.lower() in (".jpg", ".jpeg")
        else ""
    )
    bars.message(
        f"{job.source} -> {job.target} ({w}x{h}, {photo.bits}-bit{note}, "
        f"{time.perf_counter() - start:.1f} s)"
    )


def run_denoise(
    checkpoint: str,
    input_path: str,
    output_path: str,
    *,
    ensemble: bool = False,
    overwrite: bool = False,
    tile: int = 1024,
) -> int:
    """Denoise a file or every image of a folder; returns the exit code.

    0: all done (or skipped because the output exists); 2: bad input (one line per problem,
    naming the file; in folder mode the other files are still processed); 130: Ctrl-C (no
    partial output file is left).
    """
    from sassid_jax.inference import DEFAULT_MARGIN, jit_apply

    try:
        smallest = 2 * DEFAULT_MARGIN + 32
        if tile < smallest or tile % 32:
            raise DenoiseInputError(
                f"--tile {tile}: must be a multiple of 32, at least "
                f"{smallest} (two {DEFAULT_MARGIN}-pixel margins + 32)"
            )
        jobs = plan_jobs(input_path, output_path)
        todo = [j for j in jobs if overwrite or not j.target.exists()]
        for job in jobs:
            if job not in todo:
                print(f"skip {job.target}: already exists (use --overwrite to redo it)")
        if not todo:
            return EXIT_OK
        module, params = load_denoiser(checkpoint)
        todo[0].target.parent.mkdir(parents=True, exist_ok=True)  # folder mode: may be new
    except DenoiseInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # e.g. the output folder cannot be created
        print(f"error: {e.filename or output_path}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    apply_fn = jit_apply(module, params)
    bars, failed = _Progress(len(todo)), 0
    try:
        for job in todo:
            try:
                _process(job, apply_fn, bars, ensemble=ensemble, tile=tile)
            except DenoiseInputError as e:
                failed += 1
                bars.message(f"error: {e}", error=True)
            except OSError as e:  # writing: disk full, permissions, ...
                failed += 1
                bars.message(f"error: {job.target}: cannot write ({e.strerror or e})", error=True)
            bars.file_done()
    except KeyboardInterrupt:
        bars.close()
        print("interrupted: no partial output was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    bars.close()
    return EXIT_BAD_INPUT if failed else EXIT_OK
