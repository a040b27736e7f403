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
from sassid_jax.io.photos import IMAGE_SUFFIXES, is_image_file, read_rgb8
from sassid_jax.noise.analysis import (
    LEAK_THRESHOLD,
    MAX_LAG,
    NoiseAnalysis,
    NoiseAnalysisError,
    analyze_noise,
)

JSON_NAME = "noise_analysis.json"
PLOT_NAME = "noise_analysis.png"
COLOURS = {"horizontal": (200, 40, 40), "vertical": (40, 80, 200), "ring": (30, 140, 60)}


class AnalyzeInputError(UserInputError):
    """--input of --mode analyze is missing or holds no photo."""


def input_photos(path: str | epath.PathLike) -> list[epath.Path]:
    """The photo `path`, or the photos (by suffix) in the folder `path` (local or a bucket
    URL), sorted."""
    source = epath.Path(path)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if is_image_file(p))
        if not files:
            raise AnalyzeInputError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not source.is_file():
        raise AnalyzeInputError(f"{source}: no such file or directory")
    return [source]


def _chart(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], a: NoiseAnalysis) -> None:
    """Correlation (y, -0.2..1) against lag (x, 0..MAX_LAG) inside box (left, top, w, h)."""
    left, top, width, height = box
    font = ImageFont.load_default()

    def xy(lag: float, value: float) -> tuple[float, float]:
        return left + lag * width / MAX_LAG, top + (1.0 - value) / 1.2 * height

    for value in (0.0, 0.5, 1.0):
        draw.line([xy(0, value), xy(MAX_LAG, value)], fill=(220, 220, 220))
        draw.text((left - 24, xy(0, value)[1] - 5), f"{value:.1f}", fill=(0, 0, 0), font=font)
    for lag in range(MAX_LAG + 1):
        draw.text((xy(lag, -0.2)[0] - 3, top + height + 4), str(lag), fill=(0, 0, 0), font=font)
    draw.line([xy(0, LEAK_THRESHOLD), xy(MAX_LAG, LEAK_THRESHOLD)], fill=(150, 150, 150))
    series = {
        "horizontal": list(enumerate(a.horizontal)),
        "vertical": list(enumerate(a.vertical)),
        "ring": list(enumerate(a.ring, start=1)),
    }
    for row, (name, points) in enumerate(series.items()):
        coords = [xy(lag, float(np.clip(v, -0.2, 1.0))) for lag, v in points]
        draw.line(coords, fill=COLOURS[name], width=2)
        for x, y in coords:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=COLOURS[name])
        draw.text((left + width - 70, top + 4 + 12 * row), name, fill=COLOURS[name], font=font)


def plot_png(a: NoiseAnalysis) -> bytes:
    """A small PNG (about 460x230) of the analysis: correlation per lag and the ring
    correlations with the threshold line (left), cross-channel correlation (right)."""
    image = Image.new("RGB", (460, 230), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    std = "/".join(f"{s:.1f}" for s in a.std)
    title = f"noise std R/G/B {std} (8-bit) - blind size {a.blind_size}"
    draw.text((8, 6), title, fill=(0, 0, 0), font=font)
    draw.text((40, 212), "lag (px); grey line: ring threshold", fill=(0, 0, 0), font=font)
    _chart(draw, (40, 30, 240, 160), a)
    cell, left, top = 40, 320, 50
    for i, name in enumerate("RGB"):
        draw.text((left + i * cell + 16, top - 14), name, fill=(0, 0, 0), font=font)
        draw.text((left - 12, top + i * cell + 14), name, fill=(0, 0, 0), font=font)
        for j in range(3):
            shade = int(255 * (1.0 - np.clip(abs(a.cross_channel[i][j]), 0, 1) * 0.7))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255))
            label = f"{a.cross_channel[i][j]:.2f}"
            draw.text((box[0] + 7, box[1] + 14), label, fill=(0, 0, 0), font=font)
    draw.text((left, top + 3 * cell + 8), "cross-channel", fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_analyze(input_path: str, output_dir: str | None = None) -> int:
    """Analyse the photos of `input_path`, write the JSON and the plot into `output_dir`
    (default: the current folder), print the summary; returns 0."""
    files = input_photos(input_path)
    images = [read_rgb8(f) for f in files]
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
    json_path = write_json(folder / JSON_NAME, {"all": pooled.to_json(), "photos": per_photo})
    plot_path = write_bytes(folder / PLOT_NAME, plot_png(pooled))
    print(pooled.summary())
    print(f"wrote {json_path} and {plot_path}")
    return 0
