"""Training crops from a tiled, random-access dataset (SIDD-Medium as stored by its builder).

Like `pipeline.train_dataset`, every sample is a pure function of (seed, global index): a tile
chosen uniformly, a crop offset uniform inside it, the same flips and transpose. Reads and PNG
decodes run on a thread pool, a few batches ahead. Details: docs/data.md#tiles.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["TileSource", "default_threads", "tile_batches"]


def default_threads() -> int:
    """Cores this process may run on: its CPU affinity (`os.sched_getaffinity`, which
    follows taskset, cgroup cpusets and SLURM bindings) where the OS has one, else
    os.cpu_count(); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class TileSource:
    """Random-access tiles: `source[i]['noisy']` is a (tile, tile, 3) uint8 array.

    max_crop: the largest crop side that lies inside one tile for every window position
    (tile - stride for the SIDD-Medium builder).
    """

    source: Any
    tile: int
    max_crop: int
    name: str = "tiles"

    def __len__(self) -> int:
        return len(self.source)


def _sample(tiles: TileSource, crop_size: int, seed: int, index: int, augment: bool) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    tile = tiles.source[int(rng.integers(len(tiles)))]["noisy"]
    top, left = (int(v) for v in rng.integers(0, tiles.tile - crop_size + 1, size=2))
    crop = tile[top : top + crop_size, left : left + crop_size]
    flips = rng.random(3) < 0.5
    if augment:
        if flips[0]:
            crop = crop[::-1]
        if flips[1]:
            crop = crop[:, ::-1]
        if flips[2]:
            crop = crop.transpose(1, 0, 2)
    return crop.astype(np.float32)


def tile_batches(
    tiles: TileSource,
    *,
    crop_size: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: int,
    process_index: int = 0,
    process_count: int = 1,
    augment: bool = True,
    threads: int | None = None,
    prefetch: int = 2,
) -> Iterator[np.ndarray]:
    """Local batches of steps start_step .. start_step + num_steps - 1.

    Args:
      tiles: the random-access tiles.
      crop_size: side of the square crops, at most tiles.max_crop.
      batch_size: GLOBAL batch size (all processes together).
      seed: the run's data seed.
      start_step: first training step to produce (to resume a run).
      num_steps: number of steps to produce.
      process_index, process_count: this process and the number of processes.
      augment: apply the random flips and transpose.
      threads: reader/decoder threads; None = `default_threads()` (one per available core).
      prefetch: batches read ahead.
    Yields:
      float32 (batch_size // process_count, crop_size, crop_size, 3) in [0, 255].
    Raises:
      ValueError: a crop larger than tiles.max_crop, non-positive sizes, a batch that does
        not divide over the processes, no tiles or threads < 1.
    """
    if not 0 < crop_size <= tiles.max_crop:
        raise ValueError(
            f"crop_size {crop_size} must be in [1, {tiles.max_crop}] for "
            f"{tiles.name} (tiles of {tiles.tile})"
        )
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(
            f"global batch_size {batch_size} must be positive and divisible by "
            f"process_count {process_count}"
        )
    if len(tiles) == 0:
        raise ValueError(f"{tiles.name}: no tiles")
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads {threads} must be >= 1")
    local = batch_size // process_count

    def indices(step: int) -> list[int]:
        return [step * batch_size + process_index * local + j for j in range(local)]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        pending: collections.deque = collections.deque()
        steps = iter(range(start_step, start_step + num_steps))

        def submit() -> None:
            step = next(steps, None)
            if step is not None:
                pending.append(
                    [
                        pool.submit(_sample, tiles, crop_size, seed, g, augment)
                        for g in indices(step)
                    ]
                )

        for _ in range(prefetch + 1):
            submit()
        while pending:
            futures = pending.popleft()
            submit()
            yield np.stack([f.result() for f in futures])
