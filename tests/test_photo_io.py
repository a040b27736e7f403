"""photo_io: library codecs, round trips (8/16 bit, PNG/TIFF/JPEG), ICC + EXIF kept, the pixel
limit checked before decoding, one-line errors naming the file, umask-following writes."""

from __future__ import annotations

import io
import os
import struct
import time
import tracemalloc
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps, TiffImagePlugin

from sassid_jax.errors import UserInputError
from sassid_jax.io import photo_codecs, photos
from sassid_jax.io.photos import Photo, PhotoError, read_photo, read_rgb8, write_photo

EXIF_IFD, ISO_TAG, MAKE_TAG = 0x8769, 0x8827, 0x010F


def _pixels(h: int, w: int, c: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max + 1
    return np.random.default_rng(seed).integers(0, top, (h, w, c), dtype=dtype)


def _smooth_rgb8(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


def _one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, UserInputError) and "\n" not in message
    assert name in message, message


ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[photos.ORIENTATION_TAG] = orientation
    exif[MAKE_TAG] = "TestCam"
    exif.get_ifd(EXIF_IFD)[ISO_TAG] = 1600
    return exif


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, ctype: int, interlace: int, raw: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 16, ctype, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)  # (x0, y0, dx, dy) of the 7 passes


def _interlaced_png16(image: np.ndarray) -> bytes:
    """An Adam7-interlaced 16-bit RGB PNG (no row filters), written by hand: no library
    here writes interlaced PNGs."""
    raw = b""
    for x0, y0, dx, dy in ADAM7:
        sub = image[y0::dy, x0::dx].astype(">u2")
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return _png(image.shape[1], image.shape[0], 2, 1, raw) + _chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_lossless_round_trip(tmp_path, suffix, dtype, channels):
    pixels = _pixels(13, 17, channels, dtype, seed=channels)
    path = write_photo(tmp_path / f"x{suffix}", Photo(pixels))
    back = read_photo(path).pixels
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize("compression", ["lzw", "zlib"])
def test_16bit_compressed_tiff(tmp_path, compression):
    image = _pixels(24, 40, 3, np.uint16)
    tifffile.imwrite(
        tmp_path / "c.tif", image, photometric="rgb", compression=compression, predictor=True
    )
    np.testing.assert_array_equal(read_photo(tmp_path / "c.tif").pixels, image)


def test_jpeg_compressed_tiff(tmp_path):
    image = _smooth_rgb8()
    tifffile.imwrite(tmp_path / "j.tif", image, photometric="rgb", compression="jpeg")
    back = read_photo(tmp_path / "j.tif").pixels
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image).max() <= 8  # lossy, close


def test_interlaced_16bit_png(tmp_path):
    image = _pixels(11, 13, 3, np.uint16, seed=7)
    (tmp_path / "i.png").write_bytes(_interlaced_png16(image))
    np.testing.assert_array_equal(read_photo(tmp_path / "i.png").pixels, image)


def test_jpeg_16bit_is_written_as_8bit(tmp_path):
    photo = Photo(_smooth_rgb8().astype(np.uint16) * 257)
    back = read_photo(write_photo(tmp_path / "x.jpg", photo)).pixels
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - _smooth_rgb8()).max() <= 8


@pytest.mark.parametrize("source", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("target", [".png", ".jpg", ".tif"])
def test_icc_and_exif_are_kept(tmp_path, source, target):
    image = _smooth_rgb8()
    stored = np.rot90(image, 1)  # orientation 6: rotate 90 degrees clockwise to show upright
    src, exif = tmp_path / f"in{source}", _exif(6)
    if source == ".tif":  # Pillow writes EXIF's sub-IFD into TIFFs only given as tiffinfo
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        tags.update({**exif, EXIF_IFD: exif.get_ifd(EXIF_IFD), 34675: ICC})
        Image.fromarray(stored).save(src, tiffinfo=tags)
    else:
        Image.fromarray(stored).save(src, icc_profile=ICC, exif=exif, quality=100)
    photo = read_photo(src)
    assert photo.icc_profile == ICC
    assert np.abs(photo.pixels.astype(int) - image).max() <= (8 if source == ".jpg" else 0)
    write_photo(tmp_path / f"out{target}", photo)
    with Image.open(tmp_path / f"out{target}") as out:
        assert out.info.get("icc_profile") == ICC
        exif = out.getexif()
        assert exif[MAKE_TAG] == "TestCam" and out.size == (48, 32)
        assert exif.get(photos.ORIENTATION_TAG, 1) == 1
        if target != ".tif":  # tifffile cannot write EXIF's sub-IFD (see photo_codecs)
            assert exif.get_ifd(EXIF_IFD)[ISO_TAG] == 1600


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    image = Image.fromarray(_pixels(12, 20, 3, seed=orientation))
    image.save(tmp_path / "o.png", exif=_exif(orientation))
    with Image.open(tmp_path / "o.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_photo(tmp_path / "o.png").pixels, expected)


def test_tiff_orientation_tag(tmp_path):
    image = _pixels(10, 16, 3, np.uint16, seed=4)
    tifffile.imwrite(
        tmp_path / "r.tif", image, photometric="rgb", extratags=[(274, "H", 1, 8, False)]
    )
    np.testing.assert_array_equal(read_photo(tmp_path / "r.tif").pixels, np.rot90(image))


def test_read_rgb8_conversions(tmp_path):
    grey16 = _pixels(8, 9, 1, np.uint16)
    write_photo(tmp_path / "g.png", Photo(grey16))
    expected = np.clip(np.floor(grey16 / 257.0 + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_rgb8(tmp_path / "g.png"), np.repeat(expected, 3, axis=2))
    rgba = _pixels(8, 9, 4)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "a.png"), rgba[:, :, :3])
    palette = Image.fromarray(_pixels(8, 9, 3)).convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))


# ----------------------------------------------------------------------------- refusals


def test_png_with_bad_crc_is_refused(tmp_path):
    data = bytearray(imagecodecs.png_encode(_pixels(16, 16, 3, np.uint16)))
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    data[idat + 4 + length] ^= 0xFF  # first byte of IDAT's CRC
    (tmp_path / "crc.png").write_bytes(bytes(data))
    with pytest.raises(PhotoError) as error:
        read_photo(tmp_path / "crc.png")
    _one_line_naming(error, "crc.png")
    assert "CRC" in str(error.value)


@pytest.mark.parametrize("name", ["x.bmp", "x.txt", "x.gif"])
def test_other_formats_are_refused(tmp_path, name):
    Image.fromarray(_pixels(8, 8, 3)).save(tmp_path / "x.bmp")
    (tmp_path / "x.txt").write_text("not an image")
    Image.fromarray(_pixels(8, 8, 3)).convert("P").save(tmp_path / "x.gif")
    with pytest.raises(PhotoError, match="not a PNG, JPEG or TIFF") as error:
        read_photo(tmp_path / name)
    _one_line_naming(error, name)
    assert not photos.is_image_file(tmp_path / name)


def _png_bomb() -> bytes:
    """A 16-bit RGB PNG of ~80 bytes whose header claims 30000 x 30000 pixels."""
    return _png(30000, 30000, 2, 0, bytes(1000)) + _chunk(b"IEND", b"")


def _tiff_bomb() -> bytes:
    """A TIFF of ~170 bytes whose tags claim one 60000 x 60000 strip."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((1, 1), np.uint8), metadata=None, software=False)
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            if name in tags:
                fmt = "<H" if tags[name].dtype == 3 else "<I"
                struct.pack_into(fmt, data, tags[name].valueoffset, 60000)
    return bytes(data)


@pytest.mark.parametrize("name, make", [("bomb.png", _png_bomb), ("bomb.tif", _tiff_bomb)])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, name, make):
    (tmp_path / name).write_bytes(make())
    assert (tmp_path / name).stat().st_size < 400
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(PhotoError, match="over the limit") as error:
            read_photo(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0 and peak < 20e6
    _one_line_naming(error, name)


def test_max_pixels_override(tmp_path, monkeypatch):
    image = _smooth_rgb8(1000, 1500)  # 1.5 megapixels
    for suffix in (".png", ".jpg", ".tif"):
        path = write_photo(tmp_path / f"big{suffix}", Photo(image))
        with pytest.raises(PhotoError, match="1500x1000 image") as error:
            read_photo(path, max_pixels=1_000_000)
        _one_line_naming(error, path.name)
        assert read_photo(path, max_pixels=2_000_000).pixels.shape == (1000, 1500, 3)
    # The one limit is ours: Pillow's own bomb guard (here far lower) does not interfere.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert read_photo(tmp_path / "big.jpg").pixels.shape == (1000, 1500, 3)
    with pytest.raises(PhotoError, match="max_pixels 0"):
        read_photo(tmp_path / "big.png", max_pixels=0)


# ----------------------------------------------------------------------------- writing


def test_write_follows_umask_and_is_atomic(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        path = write_photo(tmp_path / "x.png", Photo(_pixels(8, 8, 3)))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    before = path.read_bytes()

    def broken(*args):
        raise RuntimeError("encoder on fire")

    monkeypatch.setattr(photo_codecs, "encode_png", broken)
    with pytest.raises(RuntimeError):
        write_photo(path, Photo(_pixels(8, 8, 3, seed=1)))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_unwritable_formats(tmp_path):
    with pytest.raises(PhotoError, match="alpha") as error:
        write_photo(tmp_path / "a.jpg", Photo(_pixels(8, 8, 4)))
    _one_line_naming(error, "a.jpg")
    with pytest.raises(PhotoError, match="unsupported output format") as error:
        write_photo(tmp_path / "a.bmp", Photo(_pixels(8, 8, 3)))
    _one_line_naming(error, "a.bmp")
    assert list(tmp_path.iterdir()) == []
