"""Benchmark: denoise a 4000x3000 photo with a paper-size U-Net (width 48) on this machine.

Prints wall time, peak RSS (resource.getrusage: the whole process, including the image, the
output and XLA's buffers) and the achieved GFLOP/s (FLOPs of one tile apply from XLA's cost
analysis x the number of apply calls / the time of the tiled run), and writes the figures and
the machine (bench/common.py) to bench/results/denoise_large-<time>.json. Targets: under 2
minutes, under 3 GB peak RSS.

Usage: python bench/denoise_large.py [--tile 1024] [--margin 128] [--batch 1] [--width 48]
The weights are random (He init): the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

common.on_path()

from sassid_jax.inference import predict  # noqa: E402
from sassid_jax.nn import UNet  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def tile_flops(apply_fn, batch: int, shape: tuple[int, int]) -> float:
    """FLOPs of one apply call on a (batch, th, tw, 3) float32 batch (XLA cost analysis)."""
    x = jax.ShapeDtypeStruct((batch, *shape, 3), jnp.float32)
    cost = jax.jit(apply_fn).lower(x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: smooth gradients plus Gaussian noise (sigma 15)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([200 * yy + 30, 180 * xx + 40, 120 * (1 - yy * xx) + 60], axis=-1)
    return np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width-px", type=int, default=4000)
    parser.add_argument("--tile", type=int, default=predict.DEFAULT_TILE)
    parser.add_argument("--margin", type=int, default=predict.DEFAULT_MARGIN)
    parser.add_argument("--batch", type=int, default=predict.DEFAULT_BATCH)
    parser.add_argument("--width", type=int, default=48, help="U-Net base width C")
    args = parser.parse_args()

    module = UNet(width=args.width)
    params = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    apply_fn = predict.jit_apply(module, params)
    image = synthetic_photo(args.height, args.width_px)
    plan = predict.plan_tiles(args.height, args.width_px, tile=args.tile, margin=args.margin)
    calls = math.ceil(plan.num_tiles / args.batch)
    flops = tile_flops(apply_fn, args.batch, plan.tile_shape)

    started = common.timestamp()
    start = time.perf_counter()  # compile of the tile shape happens in the first call: timed
    first: list[float] = []
    out = predict.denoise(
        apply_fn,
        image,
        tile=args.tile,
        margin=args.margin,
        batch=args.batch,
        progress=lambda d, t: first.append(time.perf_counter() - start),
    )
    seconds = time.perf_counter() - start
    assert out.shape == (*image.shape[:2], 3) and np.isfinite(out).all()
    steady = (seconds - first[0]) / max(1, len(first) - 1) if len(first) > 1 else seconds
    result = {
        "image": [args.height, args.width_px],
        "unet_width": args.width,
        "tile": args.tile,
        "margin": args.margin,
        "batch": args.batch,
        "tile_shape": list(plan.tile_shape),
        "tiles": plan.num_tiles,
        "apply_calls": calls,
        "computed_over_image_pixels": plan.num_tiles
        * math.prod(plan.tile_shape)
        / (args.height * args.width_px),
        "seconds": seconds,
        "first_call_seconds_incl_compile": first[0],
        "steady_seconds_per_call": steady,
        "tflops_total": flops * calls / 1e12,
        "gflops_per_s": flops * calls / seconds / 1e9,
        "gflops_per_s_steady": flops / steady / 1e9,
        "peak_rss_gb": peak_rss_gb(),
        "cpu_count": jax.local_device_count(),
        "backend": jax.default_backend(),
        "machine": common.machine_info(),
        "targets": {"seconds": 120, "peak_rss_gb": 3.0},
    }
    print(json.dumps(result, indent=2))
    rss = result["peak_rss_gb"]
    print(
        f"{args.width_px}x{args.height}: {seconds:.1f} s, peak RSS {rss:.2f} GB,"
        f" {result['gflops_per_s']:.1f} GFLOP/s ({plan.num_tiles} tiles of {plan.tile_shape})"
    )
    print(f"wrote {common.write_record(common.record_path('denoise_large', started), result)}")


if __name__ == "__main__":
    main()
