"""`--mode eval` and `--mode submit`: the published evaluation protocol and submission files.

- eval: denoise the config's evaluation dataset (SIDD validation blocks, the embedded
  default, a folder with references, ...) with one trained network and score it by the
  protocol (metrics.py: round half up, clip, PSNR per image with data range 255 and SSIM as
  scikit-image's, both averaged), optionally with the x8 self-ensemble; SIDD validation
  adds a breakdown per phone and per ISO when the block metadata is known. Writes
  <output>/eval_<dataset>.json.
- submit: SIDD benchmark -> <output>/SubmitSrgb.mat ('DenoisedBlocksSrgb', uint8, the shape
  of the benchmark blocks; 'TimeMPSrgb', measured seconds per megapixel). DND -> one file per
  box <output>/boxes/<image>_<box>.mat (denoised with the spec's context margins; boxes
  already written are kept, so an interrupted submission resumes), then the 50 bundles
  <output>/bundled/0001.mat .. 0050.mat to upload.
The network comes from our run folder or an authors' .pth (checkpoint_io.load_network).
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from sassid_jax import metrics
from sassid_jax.inference import jit_apply, pad_to_multiple, self_ensemble

ApplyFn = Callable[[Any], Any]
EXIT_OK, EXIT_BAD_INPUT = 0, 2
SUBMIT_DATASETS = ("sidd_benchmark_srgb", "dnd_srgb")


def denoise_images(
    apply_fn: ApplyFn,
    images: Sequence[np.ndarray],
    *,
    ensemble: bool = False,
    batch: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Denoise (H, W, 3) images on [0, 255] (uint8 or float), batching equal shapes.

    Each image is padded (reflect) to a multiple of 32 and cropped back; with ensemble,
    the output is the mean over the 8 flips x rotations, each undone. Returns float32
    (H, W, 3) outputs on [0, 255], in input order. progress(n) is called after each batch
    with the number of images it finished (counted once, in the last ensemble pass).
    """

    def run(stack: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> (N, H, W, 3) float32
        padded = np.stack([pad_to_multiple(x) for x in stack])
        return np.asarray(apply_fn(padded), np.float32)[:, : stack.shape[1], : stack.shape[2]]

    groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
    for i, image in enumerate(images):
        groups[np.shape(image)].append(i)
    outputs: list[np.ndarray | None] = [None] * len(images)
    for members in groups.values():
        for start in range(0, len(members), batch):
            chunk = members[start : start + batch]
            stack = np.stack([np.asarray(images[i], np.float32) for i in chunk])
            result = self_ensemble(run, stack) if ensemble else run(stack)
            for k, i in enumerate(chunk):
                outputs[i] = result[k]
            if progress is not None:
                progress(len(chunk))
    return outputs  # type: ignore[return-value]


def _group_scores(
    examples: Sequence[dict], psnr: Sequence[float], ssim: Sequence[float], key: str
) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, e in enumerate(examples):
        if e.get(key) is not None:
            groups[str(e[key])].append(i)
    return {
        g: {
            "psnr": float(np.mean([psnr[i] for i in idx])),
            "ssim": float(np.mean([ssim[i] for i in idx])),
            "images": len(idx),
        }
        for g, idx in sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0]))
    }


def score_examples(examples: Sequence[dict], outputs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Protocol scores of outputs against the examples' clean references, with per-phone
    and per-ISO means when the examples carry `phone` / `iso`."""
    scores = metrics.evaluate_pairs(
        (e["clean"], out) for e, out in zip(examples, outputs, strict=True)
    )
    noisy = metrics.evaluate_pairs((e["clean"], e["noisy"]) for e in examples)
    result = {
        "psnr": scores["psnr"],
        "ssim": scores["ssim"],
        "images": len(examples),
        "noisy_psnr": noisy["psnr"],
        "noisy_ssim": noisy["ssim"],
        "per_image": {
            e["name"]: {"psnr": p, "ssim": s}
            for e, p, s in zip(examples, scores["psnr_list"], scores["ssim_list"], strict=True)
        },
    }
    for key in ("phone", "iso"):
        groups = _group_scores(examples, scores["psnr_list"], scores["ssim_list"], key)
        if groups:
            result[f"per_{key}"] = groups
    return result


def format_scores(name: str, result: dict[str, Any]) -> str:
    """Plain-text summary: the means, then the per-phone / per-ISO rows if any."""
    lines = [
        f"{name}: {result['images']} images, PSNR {result['psnr']:.2f} dB, "
        f"SSIM {result['ssim']:.4f} (noisy input {result['noisy_psnr']:.2f} dB, "
        f"{result['noisy_ssim']:.4f})"
    ]
    for key in ("per_phone", "per_iso"):
        for group, s in result.get(key, {}).items():
            lines.append(
                f"  {key[4:]:>5} {group:>6}: {s['psnr']:.2f} dB  {s['ssim']:.4f}  "
                f"({s['images']} blocks)"
            )
    return "\n".join(lines)


def _progress_bar(total: int, what: str) -> tqdm.tqdm:
    return tqdm.tqdm(
        total=total, unit=what, file=sys.stderr, dynamic_ncols=True, disable=None, mininterval=2.0
    )


def run_eval(config: Any, checkpoint: str, output: str) -> dict[str, Any]:
    """Evaluate one network of `checkpoint` (config.eval.network) on the config's eval data.

    Returns the results written to <output>/eval_<dataset>.json.
    """
    from sassid_jax.checkpoint_io import load_network
    from sassid_jax.data import sources
    from sassid_jax.evaluate import limit, write_json

    examples = limit(sources.load_eval_examples(config.dataset), config.eval.max_images)
    name = config.dataset.get("eval_name") or config.dataset.name
    missing = [e["name"] for e in examples if e["clean"] is None]
    if missing:
        raise ValueError(
            f"dataset {name!r}: {len(missing)} images have no clean reference "
            f"(first: {missing[0]}); use --mode submit or --mode denoise"
        )
    module, params = load_network(checkpoint, config.eval.network)
    apply_fn = jit_apply(module, params)
    start = time.perf_counter()
    with _progress_bar(len(examples), "img") as bar:
        outputs = denoise_images(
            apply_fn,
            [e["noisy"] for e in examples],
            ensemble=config.eval.ensemble,
            batch=config.eval.batch,
            progress=bar.update,
        )
    seconds = time.perf_counter() - start
    result = score_examples(examples, outputs)
    result.update(
        {
            "dataset": name,
            "checkpoint": str(checkpoint),
            "network": config.eval.network,
            "ensemble": bool(config.eval.ensemble),
            "seconds": seconds,
        }
    )
    print(
        format_scores(
            f"{name} ({config.eval.network}{', x8 ensemble' if config.eval.ensemble else ''})",
            result,
        )
    )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"eval_{name}.json", result)
    logging.info("wrote %s", out / f"eval_{name}.json")
    return result


def write_sidd_submission(
    path: str | Path, examples: Sequence[dict], outputs: Sequence[np.ndarray], seconds_per_mp: float
) -> np.ndarray:
    """SubmitSrgb.mat: outputs quantized by the protocol into the (images, blocks, H, W, 3)
    uint8 array 'DenoisedBlocksSrgb' (positions from the examples' image/block indices)."""
    from sassid_jax.data.matfiles import write_atomic_mat

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
    dataset: Any, apply_fn: ApplyFn, out: Path, *, ensemble: bool = False, batch: int = 8
) -> Path:
    """Denoise the SIDD benchmark blocks of the `dataset` config block into
    out/SubmitSrgb.mat; returns its path."""
    from sassid_jax.data import sources

    examples = sources.sidd_blocks("sidd_benchmark_srgb", dataset)
    start = time.perf_counter()
    with _progress_bar(len(examples), "block") as bar:
        outputs = denoise_images(
            apply_fn,
            [e["noisy"] for e in examples],
            ensemble=ensemble,
            batch=batch,
            progress=bar.update,
        )
    megapixels = sum(np.shape(e["noisy"])[0] * np.shape(e["noisy"])[1] for e in examples) / 1e6
    path = out / "SubmitSrgb.mat"
    write_sidd_submission(path, examples, outputs, (time.perf_counter() - start) / megapixels)
    return path


def denoise_dnd_box(apply_fn: ApplyFn, example: dict[str, Any], ensemble: bool) -> np.ndarray:
    """The denoised box of one dnd_srgb example: its context window x255 through the network,
    the box cut out, /255 and clipped to [0, 1] (float32 (h, w, 3))."""
    (window,) = denoise_images(
        apply_fn, [np.asarray(example["noisy"], np.float32) * 255.0], ensemble=ensemble, batch=1
    )
    top, left, height, width = (int(v) for v in example["inner"])
    return np.clip(window[top : top + height, left : left + width] / 255.0, 0.0, 1.0)


def submit_dnd(dataset: Any, apply_fn: ApplyFn, out: Path, *, ensemble: bool = False) -> Path:
    """Denoise every DND box of the `dataset` config block into out/boxes/ (keeping boxes
    already there) and bundle them into out/bundled/; returns that folder."""
    import tensorflow_datasets as tfds

    from sassid_jax.data import dnd, sources

    builder = sources.prepared_builder("dnd_srgb", dataset)
    split = "benchmark"
    total = builder.info.splits[split].num_examples
    with _progress_bar(total, "box") as bar:
        for e in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            i, k = int(e["image_index"]), int(e["box_index"])
            if not dnd.box_path(out, i, k).exists():
                dnd.write_box(out, i, k, denoise_dnd_box(apply_fn, e, ensemble))
            bar.update(1)
    dnd.bundle(out)
    return out / "bundled"


def run_submit(config: Any, checkpoint: str, output: str) -> Path:
    """Write the submission files of config.dataset.name (sidd_benchmark_srgb or dnd_srgb)."""
    from sassid_jax.checkpoint_io import load_network

    name = config.dataset.name
    if name not in SUBMIT_DATASETS:
        raise ValueError(
            f"dataset.name: --mode submit needs one of {SUBMIT_DATASETS}, got {name!r}"
        )
    module, params = load_network(checkpoint, config.eval.network)
    apply_fn = jit_apply(module, params)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if name == "sidd_benchmark_srgb":
        path = submit_sidd(
            config.dataset, apply_fn, out, ensemble=config.eval.ensemble, batch=config.eval.batch
        )
    else:
        path = submit_dnd(config.dataset, apply_fn, out, ensemble=config.eval.ensemble)
    print(f"{name}: submission written to {path}")
    return path
