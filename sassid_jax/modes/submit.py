"""`--mode submit`: the SIDD and DND benchmark submission files of one trained network.

SIDD: <output>/SubmitSrgb.mat (the blocks rounded by the protocol, and the measured seconds per
megapixel). DND: one file per box in <output>/boxes/ (kept on a rerun, so an interrupted
submission resumes), then the 50 files to upload in <output>/bundled/.
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
from sassid_jax.inference import procedure
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.inference.predict import BatchFn, denoise_images
from sassid_jax.io.checkpoints import load_network_or_hint
from sassid_jax.io.matfiles import write_atomic_mat
from sassid_jax.io.paths import check_writable_folder


def write_sidd_submission(
    path: str | os.PathLike[str],
    examples: Sequence[dict],
    outputs: Sequence[np.ndarray],
    seconds_per_mp: float,
) -> np.ndarray:
    """Write SubmitSrgb.mat at `path` and return its 'DenoisedBlocksSrgb' array.

    Args:
      path: the .mat file written (atomically).
      examples: the benchmark blocks, dicts with 'image_index' and 'block_index'.
      outputs: the denoised blocks, (H, W, 3) float on [0, 255], in the order of examples.
      seconds_per_mp: the measured time, stored as 'TimeMPSrgb'.
    Returns:
      (images, blocks, H, W, 3) uint8: the outputs rounded by the protocol (metrics.quantize).
    """
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
    out/SubmitSrgb.mat and return its path.

    Args:
      dataset: the config's dataset block (where the prepared benchmark blocks are).
      apply_fn: (N, H, W, 3) float32 on [0, 255] -> the same, the network.
      out: the output folder.
      ensemble: average the x8 flips and rotations.
      batch: blocks per apply_fn call.
      colour_sigma: the colour anchor's blur in pixels (0 = off).
    """
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
    """The denoised box of one dnd_srgb example (a dict with 'noisy', its context window
    (H, W, 3) float on [0, 1], and 'inner', the box's top, left, height, width in it): the
    window x255 through apply_fn (colour-anchored on the window), the box cut out, /255 and
    clipped, as float32 (height, width, 3) on [0, 1]."""
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
    already there) and bundle them into out/bundled/; returns that folder. apply_fn,
    ensemble and colour_sigma: as in `submit_sidd`."""
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
    """Write the submission files of config.dataset.name (sidd_benchmark_srgb or dnd_srgb).

    Args:
      config: a run config; config.eval.network picks the network of `checkpoint`,
        config.eval.ensemble and config.postprocess.colour_sigma how it is run.
      checkpoint: a run folder, a folder inside its checkpoints/, or an authors' `.pth`.
      output: the folder written (created if missing).
    Returns:
      The path of SubmitSrgb.mat (SIDD) or of the bundled/ folder (DND). `checkpoint` and
      `output` may be bucket URLs (gs://...).
    """
    validate_eval_config(config, "submit")  # also when called from Python, not the CLI
    check_writable_folder(output, "--output")  # before the work, not after it
    name = config.dataset.name
    network = config.eval.network  # and the method's procedure (config.inference) around it
    arch = procedure.architecture(config, network)
    attributes = procedure.pth_attributes(config, network)  # a .pth's input_scale
    module, params = load_network_or_hint(
        checkpoint, network, "--config.eval.network=", arch, attributes
    )
    apply_fn = procedure.jit_procedure(module, params, procedure.from_config(config, network))
    sources.prepared_builder(name, config.dataset)  # its files first: no output without them
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
