"""Training crops per second from SIDD-Medium: whole-PNG decoding vs the builder's tiles.

  python bench/sidd_crops.py [--images 2] [--repeats 5] [--out scratch/sidd_crops]

Makes a fake SIDD-Medium download of `--images` 5328x3000 noisy/GT pairs (scikit-image
photos upscaled, plus Gaussian noise of std 8 in the noisy one, so that PNG sizes behave like
real noisy and clean photos), then measures
  A. decode one whole noisy PNG and cut a 256x256 crop (what a naive loader does per crop);
  B. `sassid_jax.data.tiles.tile_batches` over the prepared `sidd_medium_srgb` builder
     (512 tiles at stride 256, ArrayRecord), batch 8 of 256x256 crops;
and prints crops/s (median of --repeats), the preparation time and the bytes on disk.
Writes <out>/sidd_crops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HEIGHT, WIDTH = 3000, 5328


def fake_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) (3000, 5328, 3) uint8: a scikit-image photo upscaled (smooth, so its
    PNG compresses like a clean photo) plus Gaussian noise of std 8 (so the noisy PNG
    compresses like a real noisy one: noise dominates the bytes)."""
    from skimage import data

    photo = (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())[seed % 4]
    clean = np.asarray(Image.fromarray(photo).resize((WIDTH, HEIGHT), Image.BICUBIC))
    noise = np.random.default_rng(seed).normal(0.0, 8.0, clean.shape)
    return np.clip(clean + noise, 0, 255).astype(np.uint8), clean


def write_download(root: Path, images: int) -> list[Path]:
    noisy_paths = []
    for i in range(images):
        scene = root / "SIDD_Medium_Srgb" / "Data" / f"{i + 1:04d}_001_S6_00100_00060_3200_L"
        scene.mkdir(parents=True)
        noisy, clean = fake_pair(i)
        Image.fromarray(noisy).save(scene / f"{i + 1:04d}_NOISY_SRGB_010.PNG")
        Image.fromarray(clean).save(scene / f"{i + 1:04d}_GT_SRGB_010.PNG")
        noisy_paths.append(scene / f"{i + 1:04d}_NOISY_SRGB_010.PNG")
    return noisy_paths


def whole_png_crops_per_s(paths: list[Path], repeats: int, crop: int = 256) -> float:
    rng = np.random.default_rng(0)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        with Image.open(paths[r % len(paths)]) as im:
            pixels = np.asarray(im)
        top, left = rng.integers(0, HEIGHT - crop), rng.integers(0, WIDTH - crop)
        _ = pixels[top : top + crop, left : left + crop].astype(np.float32)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def tile_crops_per_s(tiles_source, repeats: int, steps: int = 10, batch: int = 8) -> float:
    from sassid_jax.data.tiles import tile_batches

    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for _ in tile_batches(
            tiles_source, crop_size=256, batch_size=batch, seed=r, num_steps=steps
        ):
            pass
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="scratch/sidd_crops")
    args = parser.parse_args()
    import ml_collections

    from sassid_jax.data import sources

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_download(root / "dl", args.images)
        whole = whole_png_crops_per_s(paths, args.repeats)
        cfg = ml_collections.ConfigDict(
            {
                "name": "sidd_medium_srgb",
                "data_dir": str(root / "tfds"),
                "manual_dir": str(root / "dl"),
                "tile": 512,
                "tile_stride": 256,
            }
        )
        start = time.perf_counter()
        tiles_source = sources.sidd_medium_tiles(cfg)
        prepare_s = time.perf_counter() - start
        tiled = tile_crops_per_s(tiles_source, args.repeats)
        result = {
            "images": args.images,
            "image_size": [HEIGHT, WIDTH],
            "crop": 256,
            "whole_png_crops_per_s": whole,
            "tile_crops_per_s": tiled,
            "speedup": tiled / whole,
            "tiles": len(tiles_source),
            "prepare_seconds": prepare_s,
            "download_bytes": folder_bytes(root / "dl"),
            "prepared_bytes": folder_bytes(root / "tfds"),
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
    print(f"{'loader':<36} {'crops/s':>9}")
    print(f"{'A. whole 12 MP PNG decode per crop':<36} {whole:>9.1f}")
    print(f"{'B. 512 tiles (ArrayRecord), batch 8':<36} {tiled:>9.1f}")
    print(
        f"speed-up {tiled / whole:.0f}x; {len(tiles_source)} tiles from {args.images} images, "
        f"prepared in {prepare_s:.0f} s; disk {result['prepared_bytes'] / 1e6:.0f} MB "
        f"vs {result['download_bytes'] / 1e6:.0f} MB downloaded (noisy + GT)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sidd_crops.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
