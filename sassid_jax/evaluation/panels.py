"""Side-by-side comparison panels written as one PNG.

A panel is a row of equally tall columns between white bars (`SEPARATOR` px), each under a
title strip with its label, and an optional caption strip above all. Columns are RGB images
(H, W, 3) on [0, 255] (uint8 or float, rounded as `metrics.quantize` does) or maps (H, W) /
(H, W, 1) on [0, 1], shown in grey (0 black, 1 white).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sassid_jax.evaluation.metrics import quantize
from sassid_jax.io.atomic_files import write_bytes
from sassid_jax.io.photos import Photo, encode_photo

SEPARATOR = 4  # width in pixels of the white bars between and around columns
TEXT_PAD = 2  # padding in pixels around text lines
FONT_SIZE = 12  # text height in pixels


@dataclass(frozen=True)
class PanelLayout:
    """Where things landed in a panel written by :func:`save_panel`.

    Attributes:
        width: PNG width in pixels.
        height: PNG height in pixels.
        image_top: row of the first image pixel (same for all columns).
        title_top: row of the first title pixel (below the caption strip, if any).
        column_lefts: column of the first image pixel of each column, in order.
    """

    width: int
    height: int
    image_top: int
    column_lefts: tuple[int, ...]
    title_top: int


def _to_rgb_uint8(label: str, image: np.ndarray) -> np.ndarray:
    """Convert one column's image to ``(H, W, 3)`` uint8 (see module docstring)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return quantize(arr.astype(np.float32)).astype(np.uint8)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1):
        gray = arr.reshape(arr.shape[0], arr.shape[1]).astype(np.float32)
        gray = quantize(gray * np.float32(255.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ValueError(
        f"column {label!r}: expected (H, W, 3) image or (H, W) / (H, W, 1) map, "
        f"got shape {arr.shape}"
    )


def _wrap(
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
    draw: ImageDraw.ImageDraw,
) -> list[str]:
    """Greedily wrap ``text`` on spaces so each line fits ``width`` pixels if possible."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            trial = word if not current else f"{current} {word}"
            if current and draw.textlength(trial, font=font) > width:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    return lines


def render_panel(
    columns: Sequence[tuple[str, np.ndarray]], *, caption: str | None = None
) -> tuple[np.ndarray, PanelLayout]:
    """The panel of ``columns`` as an ``(H, W, 3)`` uint8 image, and its layout.

    Args:
        columns: ``(label, image)`` pairs, left to right.  ``label`` is drawn in the title
            strip above the image (put a PSNR in the label text to show it).  Images are
            ``(H, W, 3)`` in ``[0, 255]`` or ``(H, W)`` / ``(H, W, 1)`` maps in ``[0, 1]``
            (grayscale x255); all must share the same ``H``.
        caption: optional text drawn in a strip above the column titles.

    Raises:
        ValueError: no columns, a column with a bad shape, or heights that differ (the
            message names the offending column's label).
    """
    if not columns:
        raise ValueError("save_panel needs at least one column")
    images: list[np.ndarray] = []
    for label, image in columns:
        rgb = _to_rgb_uint8(label, image)
        if images and rgb.shape[0] != images[0].shape[0]:
            raise ValueError(
                f"column {label!r} has height {rgb.shape[0]}, expected {images[0].shape[0]} "
                f"(height of column {columns[0][0]!r})"
            )
        images.append(rgb)

    font = ImageFont.load_default(size=FONT_SIZE)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    ascent_box = scratch.textbbox((0, 0), "Ag|", font=font)
    line_h = ascent_box[3] + TEXT_PAD

    height = images[0].shape[0]
    widths = [img.shape[1] for img in images]
    total_w = sum(widths) + SEPARATOR * (len(images) + 1)

    caption_lines = _wrap(caption, font, total_w - 2 * SEPARATOR, scratch) if caption else []
    title_lines = [
        _wrap(label, font, w, scratch) for (label, _), w in zip(columns, widths, strict=True)
    ]
    caption_h = len(caption_lines) * line_h + (TEXT_PAD if caption_lines else 0)
    title_h = max(len(lines) for lines in title_lines) * line_h + TEXT_PAD
    image_top = SEPARATOR + caption_h + title_h
    total_h = image_top + height + SEPARATOR

    canvas = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = SEPARATOR
    for line in caption_lines:
        draw.text((SEPARATOR, y), line, fill=(0, 0, 0), font=font)
        y += line_h

    lefts: list[int] = []
    x = SEPARATOR
    for img, lines in zip(images, title_lines, strict=True):
        ty = SEPARATOR + caption_h
        for line in lines:
            draw.text((x, ty), line, fill=(0, 0, 0), font=font)
            ty += line_h
        lefts.append(x)
        x += img.shape[1] + SEPARATOR
    # Paste images last so long title text can never spill onto them.
    for img, left in zip(images, lefts, strict=True):
        canvas.paste(Image.fromarray(img), (left, image_top))
    # Re-whiten the separators between columns below the caption (titles may run across).
    title_top = SEPARATOR + caption_h
    for left, w in zip(lefts, widths, strict=True):
        bar = (left + w, title_top, left + w + SEPARATOR - 1, total_h - 1)
        draw.rectangle(bar, fill=(255, 255, 255))

    layout = PanelLayout(total_w, total_h, image_top, tuple(lefts), title_top)
    return np.asarray(canvas, dtype=np.uint8), layout


def save_panel(
    path: str | os.PathLike[str],
    columns: Sequence[tuple[str, np.ndarray]],
    *,
    caption: str | None = None,
) -> PanelLayout:
    """Write the panel of ``columns`` (see :func:`render_panel`) as one PNG at ``path``.

    The file is written atomically (``atomic_files.write_bytes``, mode from the umask);
    parent folders are created.  Returns the :class:`PanelLayout` of the written PNG; raises as
    :func:`render_panel`.
    """
    image, layout = render_panel(columns, caption=caption)
    write_png(path, image)
    return layout


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 image as a PNG at ``path``, atomically."""
    write_bytes(path, encode_photo(Photo(np.asarray(image, np.uint8)), ".png"))
