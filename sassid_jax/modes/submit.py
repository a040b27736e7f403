"""`--mode submit`: the SIDD and DND benchmark submission files.

- SIDD benchmark -> <output>/SubmitSrgb.mat ('DenoisedBlocksSrgb', uint8, the shape of the
  benchmark blocks, rounded by the protocol (metrics.quantize); 'TimeMPSrgb', measured seconds
  per megapixel).
- DND -> one file per box <output>/boxes/<image>_<box>.mat (denoised with the spec's context
  margins; boxes already written are kept, so an interrupted submission resumes), then the 50
  bundles <output>/bundled/0001.mat .. 0050.mat to upload.
The network comes from our run folder or an authors' .pth (checkpoint_io.load_network);
images go through it on the [0, 255] scale, optionally with the x8 self-ensemble.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sassid_jax.configuration import validate_eval_config
from sassid_jax.data import dnd, sources
from sassid_jax.evaluation import metrics
from sassid_jax.evaluation.scoring import progress_bar
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.inference.predict import BatchFn, denoise_images, jit_apply
from sassid_jax.io.checkpoints import load_network
from sassid_jax.io.matfiles import write_atomic_mat


def write_sidd_submission(
    path: str | os.PathLike[str],
    examples: Sequence[dict],
    outputs: Sequence[np.ndarray],
    seconds_per_mp: float,
) -> np.ndarray:
    """SubmitSrgb.mat: outputs quantized by the protocol into the (images, blocks, H, W, 3)
    uint8 array 'DenoisedBlocksSrgb' (positions from the examples' image/block indices)."""
    n_img = 1 + max(e["image_index"] for e in examples)
    n_blk = 1 + max(e["block_index"] for e in examples)
    if n_img * n_blk != len(examples):
        raise ValueError(f"{len(examples)} blocks do not fill a {n_img} x {n_blk} grid")
    blocks = np.zeros((n_img, n_blk, *np.shape(outputs[0])), np.uint8)
    for e, out in zip(examples, outputs, strict=True):
        blocks[e["image_index"], e["block_index"]] = metrics.quantize(out).astype(np.uint8)
    write_atomic_mat(path, {"DenoisedBlocksSrgb": blocks, "TimeMPSrgb": np.float64(seconds_per_mp)})
    return blocks


def submit_sidd(
    dataset: Any,
    apply_fn: BatchFn,
    out: epath.Path,
    *,
    ensemble: bool = False,
    batch: int = 8,
    colour_sigma: float = 0.0,
) -> epath.Path:
    """Denoise the SIDD benchmark blocks of the `dataset` config block into
    out/SubmitSrgb.mat (colour-anchored with colour_sigma); returns its path."""
    examples = sources.sidd_blocks("sidd_benchmark_srgb", dataset)
    start = time.perf_counter()
    with progress_bar(len(examples), "block") as bar:
        outputs = denoise_images(
            apply_fn,
            [e["noisy"] for e in examples],
            ensemble=ensemble,
            batch=batch,
            progress=bar.update,
            colour_sigma=colour_sigma,
        )
    megapixels = sum(np.shape(e["noisy"])[0] * np.shape(e["noisy"])[1] for e in examples) / 1e6
    path = out / "SubmitSrgb.mat"
    write_sidd_submission(path, examples, outputs, (time.perf_counter() - start) / megapixels)
    return path


def denoise_dnd_box(
    apply_fn: BatchFn, example: dict[str, Any], ensemble: bool, colour_sigma: float = 0.0
) -> np.ndarray:
    """The denoised box of one dnd_srgb example: its context window x255 through the network
    (colour-anchored on the window), the box cut out, /255 and clipped to [0, 1] (float32
    (h, w, 3))."""
    (window,) = denoise_images(
        apply_fn,
        [np.asarray(example["noisy"], np.float32) * 255.0],
        ensemble=ensemble,
        batch=1,
        colour_sigma=colour_sigma,
    )
    top, left, height, width = (int(v) for v in example["inner"])
    return np.clip(window[top : top + height, left : left + width] / 255.0, 0.0, 1.0)


def submit_dnd(
    dataset: Any,
    apply_fn: BatchFn,
    out: epath.Path,
    *,
    ensemble: bool = False,
    colour_sigma: float = 0.0,
) -> epath.Path:
    """Denoise every DND box of the `dataset` config block into out/boxes/ (keeping boxes
    already there) and bundle them into out/bundled/; returns that folder."""
    builder = sources.prepared_builder("dnd_srgb", dataset)
    split = "benchmark"
    total = builder.info.splits[split].num_examples
    with progress_bar(total, "box") as bar:
        for e in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            i, k = int(e["image_index"]), int(e["box_index"])
            if not dnd.box_path(out, i, k).exists():
                dnd.write_box(out, i, k, denoise_dnd_box(apply_fn, e, ensemble, colour_sigma))
            bar.update(1)
    dnd.bundle(out)
    return out / "bundled"


def run_submit(config: Any, checkpoint: str, output: str) -> epath.Path:
    """Write the submission files of config.dataset.name (sidd_benchmark_srgb or dnd_srgb);
    `checkpoint` and `output` may be bucket URLs (gs://...)."""
    validate_eval_config(config, "submit")  # also when called from Python, not the CLI
    name = config.dataset.name
    module, params = load_network(checkpoint, config.eval.network)
    apply_fn = jit_apply(module, params)
    out = epath.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sigma, ensemble = config_sigma(config), config.eval.ensemble
    if name == "sidd_benchmark_srgb":
        path = submit_sidd(
            config.dataset,
            apply_fn,
            out,
            ensemble=ensemble,
            batch=config.eval.batch,
            colour_sigma=sigma,
        )
    else:
        path = submit_dnd(config.dataset, apply_fn, out, ensemble=ensemble, colour_sigma=sigma)
    print(f"{name}: submission written to {path}")
    return path
