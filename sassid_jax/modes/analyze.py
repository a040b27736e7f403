"""`--mode analyze`: the noise of your photos, from the noisy photos alone.

  sassid --mode analyze --input PHOTO_OR_FOLDER [--output DIR]

Writes DIR/noise_analysis.json (all photos pooled under "all", then one entry per photo) and
DIR/noise_analysis.png (correlation per lag, ring correlations against the blind-size
threshold, and the cross-channel correlation), both atomically; DIR defaults to the current
folder (never the input folder: the plot would be read as a photo next time). The method and
its limits: `sassid_jax.noise.analysis`.
"""

from __future__ import annotations

import io

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from sassid_jax.errors import UserInputError
from sassid_jax.io.atomic_files import write_bytes, write_json
from sassid_jax.io.paths import check_writable_folder
from sassid_jax.io.photos import IMAGE_SUFFIXES, not_regular, photo_files, read_rgb8
from sassid_jax.noise.analysis import (
    LEAK_THRESHOLD,
    MAX_LAG,
    MIN_BLOCK,
    NoiseAnalysis,
    NoiseAnalysisError,
    analyze_noise,
)

JSON_NAME = "noise_analysis.json"
PLOT_NAME = "noise_analysis.png"
COLOURS = {"horizontal": (200, 40, 40), "vertical": (40, 80, 200), "ring": (30, 140, 60)}
PLOT_SIZE = (1100, 540)  # width, height in pixels
FONT = 18  # text size in pixels
CELL = 72  # side of a cross-channel cell in pixels


class AnalyzeInputError(UserInputError):
    """--input of --mode analyze is missing or holds no photo."""


def input_photos(path: str | epath.PathLike) -> list[epath.Path]:
    """The photo `path`, or the photos (by suffix) in the folder `path` (local or a bucket
    URL), sorted."""
    source = epath.Path(path)
    if source.is_dir():
        files = photo_files(source)
        if not files:
            raise AnalyzeInputError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    what = not_regular(source)
    if what is not None:
        raise AnalyzeInputError(f"{source}: {what}")
    return [source]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _vertical_text(image: Image.Image, xy: tuple[int, int], text: str, size: int) -> None:
    """`text` rotated a quarter turn (reading upwards), its top-left corner at xy."""
    font = _font(size)
    box = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
    strip = Image.new("L", (box[2] + 2, box[3] + 2), 0)
    ImageDraw.Draw(strip).text((1, 1), text, fill=255, font=font)
    strip = strip.rotate(90, expand=True)
    image.paste((0, 0, 0), (*xy, xy[0] + strip.width, xy[1] + strip.height), strip)


def _chart(image: Image.Image, box: tuple[int, int, int, int], a: NoiseAnalysis) -> None:
    """Correlation (y, -0.2..1) against lag in pixels (x, 0..MAX_LAG) inside box (left, top,
    width, height), with axis labels and a legend."""
    left, top, width, height = box
    draw = ImageDraw.Draw(image)
    small, large = _font(FONT - 2), _font(FONT)

    def xy(lag: float, value: float) -> tuple[float, float]:
        return left + lag * width / MAX_LAG, top + (1.0 - value) / 1.2 * height

    for value in (-0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = xy(0, value)[1]
        draw.line([(left, y), (left + width, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{value:.1f}", fill=(0, 0, 0), font=small, anchor="rm")
    draw.rectangle((left, top, left + width, top + height), outline=(120, 120, 120))
    for lag in range(MAX_LAG + 1):
        x = xy(lag, 0)[0]
        draw.line([(x, top + height), (x, top + height + 5)], fill=(120, 120, 120))
        draw.text((x, top + height + 8), str(lag), fill=(0, 0, 0), font=small, anchor="mt")
    draw.text(
        (left + width / 2, top + height + 32),
        "lag, or ring distance R (pixels)",
        fill=(0, 0, 0),
        font=large,
        anchor="mt",
    )
    _vertical_text(image, (left - 78, top + height // 2 - 90), "noise correlation", FONT)
    threshold = [xy(0, LEAK_THRESHOLD), xy(MAX_LAG, LEAK_THRESHOLD)]
    draw.line(threshold, fill=(150, 150, 150), width=2)
    series = {
        "horizontal (along rows)": ("horizontal", list(enumerate(a.horizontal))),
        "vertical (along columns)": ("vertical", list(enumerate(a.vertical))),
        "ring at distance R (blind size)": ("ring", list(enumerate(a.ring, start=1))),
    }
    for colour, points in series.values():
        coords = [xy(lag, float(np.clip(v, -0.2, 1.0))) for lag, v in points]
        draw.line(coords, fill=COLOURS[colour], width=3)
        for x, y in coords:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=COLOURS[colour])
    legend = [(name, COLOURS[colour]) for name, (colour, _) in series.items()]
    legend.append((f"ring threshold {LEAK_THRESHOLD:g}", (150, 150, 150)))
    x0, y0 = left + width - 300, top + 14
    for row, (name, colour) in enumerate(legend):
        y = y0 + row * (FONT + 8)
        draw.line([(x0, y + FONT // 2), (x0 + 30, y + FONT // 2)], fill=colour, width=3)
        draw.text((x0 + 40, y), name, fill=(0, 0, 0), font=small)


def _cross_channel(draw: ImageDraw.ImageDraw, left: int, top: int, a: NoiseAnalysis) -> None:
    """The 3x3 cross-channel correlation as shaded cells, its top-left corner at (left, top)."""
    small, large = _font(FONT - 2), _font(FONT)
    cell = CELL
    draw.text((left, top - 80), "cross-channel correlation", fill=(0, 0, 0), font=large)
    draw.text((left, top - 56), "(noise of R, G, B at one pixel)", fill=(0, 0, 0), font=small)
    for i, name in enumerate("RGB"):
        centre = left + i * cell + cell // 2
        draw.text((centre, top - 6), name, fill=(0, 0, 0), font=large, anchor="mb")
        draw.text(
            (left - 8, top + i * cell + cell // 2), name, fill=(0, 0, 0), font=large, anchor="rm"
        )
        for j in range(3):
            value = a.cross_channel[i][j]
            shade = int(255 * (1.0 - np.clip(abs(value), 0, 1) * 0.7))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(255, 255, 255))
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            draw.text(centre, f"{value:.2f}", fill=(0, 0, 0), font=small, anchor="mm")


def plot_png(a: NoiseAnalysis) -> bytes:
    """A PNG (PLOT_SIZE pixels) of the analysis: the noise correlation per lag in pixels
    along rows and columns and the ring correlations against the blind-size threshold
    (left), and the cross-channel correlation (right)."""
    image = Image.new("RGB", PLOT_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    std = "/".join(f"{s:.1f}" for s in a.std)
    title = (
        f"Noise of {a.images} photo(s): std R/G/B {std} (8-bit levels); blind size {a.blind_size}"
    )
    draw.text((20, 12), title, fill=(0, 0, 0), font=_font(FONT + 2))
    rule = (
        "blind size = 2 R + 1, R the largest ring distance whose correlation is above the threshold"
    )
    draw.text((20, 38), rule, fill=(0, 0, 0), font=_font(FONT - 2))
    _chart(image, (110, 80, 620, 370), a)
    _cross_channel(draw, 820, 170, a)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_analyze(input_path: str, output_dir: str | None = None) -> int:
    """Analyse the photos of `input_path`, write the JSON and the plot into `output_dir`
    (default: the current folder), print the summary; returns 0."""
    check_writable_folder(output_dir or ".", "--output")
    files = input_photos(input_path)
    images = [read_rgb8(f) for f in files]
    for path, image in zip(files, images, strict=True):
        if min(image.shape[:2]) < MIN_BLOCK:
            raise AnalyzeInputError(
                f"{path}: {image.shape[1]}x{image.shape[0]} px, too small for the noise "
                f"analysis (at least {MIN_BLOCK} px on the short side); leave it out"
            )
    pooled = analyze_noise(images)
    per_photo = {}
    for path, image in zip(files, images, strict=True):
        try:
            per_photo[path.name] = analyze_noise([image]).to_json()
        except NoiseAnalysisError as e:
            per_photo[path.name] = {"error": str(e)}
    folder = epath.Path(output_dir or ".")
    if folder.exists() and not folder.is_dir():
        raise AnalyzeInputError(f"{folder}: --output must be a folder")
    try:
        json_path = write_json(folder / JSON_NAME, {"all": pooled.to_json(), "photos": per_photo})
        plot_path = write_bytes(folder / PLOT_NAME, plot_png(pooled))
    except OSError as e:
        raise AnalyzeInputError(f"{e.filename or folder}: cannot write ({e.strerror or e})") from e
    print(pooled.summary())
    print(f"wrote {json_path} and {plot_path}")
    return 0
