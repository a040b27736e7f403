"""Training crops per second from SIDD-Medium: whole-PNG decoding vs the builder's tiles.

  python bench/sidd_crops.py [--images 2] [--repeats 5] [--cores 1,2] [--size 3000x5328]
                             [--out scratch/sidd_crops]

Makes a fake SIDD-Medium download of `--images` noisy/GT pairs of `--size` (HxW; default
5328x3000, scikit-image photos upscaled, plus Gaussian noise of std 8 in the noisy one, so
that PNG sizes behave like real noisy and clean photos), then measures
  A. decode one whole noisy PNG and cut a 256x256 crop (what a naive loader does per crop);
  B. `sassid_jax.data.tiles.tile_batches` over the prepared `sidd_medium_srgb` builder
     (512 tiles at stride 256, ArrayRecord), batch 8 of 256x256 crops, on every core this
     process may use (one reader thread per core: `tiles.default_threads`);
  C. the same as B in a child process pinned to 1, 2, ... cores (`--cores`, via
     os.sched_setaffinity), reported as crops/s per core (target >= 100);
and prints crops/s (median of --repeats), the preparation time and the bytes on disk.
Writes <out>/sidd_crops.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from PIL import Image

common.on_path()
HEIGHT, WIDTH = 3000, 5328
CROP, BATCH, STEPS = 256, 8, 10
TARGET_PER_CORE = 100.0


def fake_pair(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) (height, width, 3) uint8: a scikit-image photo upscaled (smooth, so its
    PNG compresses like a clean photo) plus Gaussian noise of std 8 (so the noisy PNG
    compresses like a real noisy one: noise dominates the bytes)."""
    from skimage import data

    photo = (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())[seed % 4]
    clean = np.asarray(Image.fromarray(photo).resize((width, height), Image.BICUBIC))
    noise = np.random.default_rng(seed).normal(0.0, 8.0, clean.shape)
    return np.clip(clean + noise, 0, 255).astype(np.uint8), clean


def write_download(root: Path, images: int, height: int, width: int) -> list[Path]:
    noisy_paths = []
    for i in range(images):
        scene = root / "SIDD_Medium_Srgb" / "Data" / f"{i + 1:04d}_001_S6_00100_00060_3200_L"
        scene.mkdir(parents=True)
        noisy, clean = fake_pair(i, height, width)
        Image.fromarray(noisy).save(scene / f"{i + 1:04d}_NOISY_SRGB_010.PNG")
        Image.fromarray(clean).save(scene / f"{i + 1:04d}_GT_SRGB_010.PNG")
        noisy_paths.append(scene / f"{i + 1:04d}_NOISY_SRGB_010.PNG")
    return noisy_paths


def whole_png_crops_per_s(paths: list[Path], repeats: int, crop: int = CROP) -> float:
    rng = np.random.default_rng(0)
    paths = iter(paths * repeats)

    def one_crop() -> None:
        with Image.open(next(paths)) as im:
            pixels = np.asarray(im)
        top, left = (int(rng.integers(0, n - crop)) for n in pixels.shape[:2])
        _ = pixels[top : top + crop, left : left + crop].astype(np.float32)

    return 1.0 / statistics.median(common.repeat(one_crop, repeats))


def tile_crops_per_s(
    tiles_source, repeats: int, steps: int = STEPS, batch: int = BATCH, crop: int = CROP
) -> float:
    """Median crops/s of `repeats` runs of `steps` batches of `crop`^2 crops (default reader
    threads)."""
    from sassid_jax.data.tiles import tile_batches

    seeds = iter(range(repeats))

    def run() -> None:
        for _ in tile_batches(
            tiles_source, crop_size=crop, batch_size=batch, seed=next(seeds), num_steps=steps
        ):
            pass

    return steps * batch / statistics.median(common.repeat(run, repeats))


def tiles_config(root: Path):
    import ml_collections

    return ml_collections.ConfigDict(
        {
            "name": "sidd_medium_srgb",
            "data_dir": str(root / "tfds"),
            "manual_dir": str(root / "dl"),
            "tile": 512,
            "tile_stride": 256,
        }
    )


def pinned_child(root: Path, cores: int, repeats: int) -> dict:
    """Run in a child process: pin it to its first `cores` cores, then measure B there."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from sassid_jax.data import sources, tiles

    rate = tile_crops_per_s(sources.sidd_medium_tiles(tiles_config(root)), repeats)
    return {
        "cores": len(os.sched_getaffinity(0)),
        "threads": tiles.default_threads(),
        "crops_per_s": rate,
        "crops_per_s_per_core": rate / cores,
    }


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores", default="1,2", help="core counts of the pinned runs (C)")
    parser.add_argument("--size", default=f"{HEIGHT}x{WIDTH}", help="fake image size HxW")
    parser.add_argument("--out", default="scratch/sidd_crops")
    parser.add_argument("--child-root", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child-cores", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_root:
        common.print_json_line(pinned_child(Path(args.child_root), args.child_cores, args.repeats))
        return
    from sassid_jax.data import sources, tiles

    height, width = (int(v) for v in args.size.lower().split("x"))
    cores = [
        n for n in (int(c) for c in args.cores.split(",") if c) if n <= common.available_cores()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_download(root / "dl", args.images, height, width)
        whole = whole_png_crops_per_s(paths, args.repeats)
        start = time.perf_counter()
        tiles_source = sources.sidd_medium_tiles(tiles_config(root))
        prepare_s = time.perf_counter() - start
        tiled = tile_crops_per_s(tiles_source, args.repeats)
        pinned = [
            common.run_child(
                __file__,
                ["--child-root", tmp, "--child-cores", str(n), "--repeats", str(args.repeats)],
            )
            for n in cores
        ]
        result = {
            "images": args.images,
            "image_size": [height, width],
            "crop": CROP,
            "batch": BATCH,
            "whole_png_crops_per_s": whole,
            "tile_crops_per_s": tiled,
            "tile_threads": tiles.default_threads(),
            "speedup": tiled / whole,
            "pinned": pinned,
            "target_crops_per_s_per_core": TARGET_PER_CORE,
            "tiles": len(tiles_source),
            "prepare_seconds": prepare_s,
            "download_bytes": folder_bytes(root / "dl"),
            "prepared_bytes": folder_bytes(root / "tfds"),
            "machine": common.machine_info(),
        }
    mp = height * width / 1e6
    rows = [
        (f"A. whole {mp:.1f} MP PNG decode per crop", "", "1", f"{whole:.1f}", ""),
        (
            f"B. 512 tiles (ArrayRecord), batch {BATCH}",
            common.available_cores(),
            tiles.default_threads(),
            f"{tiled:.1f}",
            f"{tiled / common.available_cores():.1f}",
        ),
    ]
    for p in pinned:
        met = "yes" if p["crops_per_s_per_core"] >= TARGET_PER_CORE else "no"
        rows.append(
            (
                f"C. B pinned to {p['cores']} core(s) (>= {TARGET_PER_CORE:.0f}/core: {met})",
                p["cores"],
                p["threads"],
                f"{p['crops_per_s']:.1f}",
                f"{p['crops_per_s_per_core']:.1f}",
            )
        )
    print(common.text_table(("loader", "cores", "threads", "crops/s", "per core"), rows))
    print(
        f"speed-up {tiled / whole:.0f}x; {len(tiles_source)} tiles from {args.images} images, "
        f"prepared in {prepare_s:.0f} s; disk {result['prepared_bytes'] / 1e6:.0f} MB "
        f"vs {result['download_bytes'] / 1e6:.0f} MB downloaded (noisy + GT); "
        f"load {result['machine']['loadavg'][0]:.1f} "
        f"({common.load_state(result['machine']['loadavg'][0], common.available_cores())})"
    )
    common.write_record(Path(args.out) / "sidd_crops.json", result)


if __name__ == "__main__":
    main()
