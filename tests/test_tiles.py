"""The SIDD tile loader's reader threads follow the cores this process may run on."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sassid_jax.data import tiles

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity (Linux)"
)


def _source(n: int = 3, tile: int = 16) -> tiles.TileSource:
    rng = np.random.default_rng(0)
    items = [{"noisy": rng.integers(0, 256, (tile, tile, 3), np.uint8)} for _ in range(n)]
    return tiles.TileSource(items, tile=tile, max_crop=tile // 2)


def _pool_sizes(monkeypatch) -> list[int]:
    """Record max_workers of every pool tile_batches makes."""
    sizes: list[int] = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers=None, *args, **kwargs):
            sizes.append(max_workers)
            super().__init__(max_workers, *args, **kwargs)

    monkeypatch.setattr(tiles.concurrent.futures, "ThreadPoolExecutor", Recording)
    return sizes


def test_default_threads_is_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert tiles.default_threads() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert tiles.default_threads() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert tiles.default_threads() == 1


def test_pinned_process_gets_one_thread():
    """A real affinity change (taskset-like) in a child process: one core, one thread."""
    code = (
        "import os; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1]); "
        "from sassid_jax.data import tiles; print(tiles.default_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "1"


def test_tile_batches_uses_default_or_given_threads(monkeypatch):
    sizes = _pool_sizes(monkeypatch)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    kwargs = {"crop_size": 8, "batch_size": 2, "seed": 0, "num_steps": 2}
    default = list(tiles.tile_batches(_source(), **kwargs))
    given = list(tiles.tile_batches(_source(), **kwargs, threads=1))
    assert sizes == [3, 1]
    for a, b in zip(default, given, strict=True):  # the thread count never changes the data
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="threads 0 must be >= 1"):
        next(tiles.tile_batches(_source(), **kwargs, threads=0))
