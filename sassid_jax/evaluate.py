"""Evaluation of trained networks on held-out examples: scores, results.json and panels.

Scores follow the published protocol (metrics.quantize: floor(x + 0.5), clip to [0, 255];
PSNR with data range 255 per image, averaged; SSIM as scikit-image's). Examples are dicts
with `noisy` and `clean` ((H, W, 3) uint8; clean may be None: then only outputs are saved)
and `name`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sassid_jax import metrics, visualize
from sassid_jax.inference import predict_blocks, predict_image
from sassid_jax.supervision import flatness_alpha

ROW_LABELS = {"noisy": "Noisy", "bnn": "BNN", "lan": "LAN", "unet": "U-Net"}


def limit(examples: list[dict[str, Any]], max_images: int) -> list[dict[str, Any]]:
    """The first max_images examples (all of them when max_images is 0)."""
    return examples[:max_images] if max_images else examples


def predict_all(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    bnn_block: int = 0,
) -> dict[str, list[np.ndarray]]:
    """{network name: [(H, W, 3) float32 output per example]} for every network in params.

    bnn_block > 0 runs the BNN on isolated bnn_block-sized blocks, the input size it was
    trained on and used at as a teacher (a BNN trained on small crops does not transfer to
    whole images: its one-sided padding gives it positional cues); 0 = whole images.
    """
    # Evaluation is small: every process runs it alone on its first local device (explicit
    # shardings, so it never mixes with the training mesh); only process 0 reports.
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    outputs = {}
    for name, p in params.items():
        apply = jax.jit(networks[name].apply, in_shardings=local, out_shardings=local)

        def run(x, p=p, apply=apply):
            return apply({"params": p}, x)

        if name == "bnn" and bnn_block:
            outputs[name] = [predict_blocks(run, e["noisy"], bnn_block) for e in examples]
        else:
            outputs[name] = [predict_image(run, e["noisy"]) for e in examples]
    return outputs


def score(examples: Sequence[dict], images: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """PSNR/SSIM of images against the examples' clean references (None without them)."""
    if not examples or any(e["clean"] is None for e in examples):
        return None
    return metrics.evaluate_pairs(
        (e["clean"], np.asarray(img, np.float32)) for e, img in zip(examples, images, strict=True)
    )


def score_outputs(
    examples: Sequence[dict], outputs: Mapping[str, Sequence[np.ndarray]]
) -> dict[str, dict[str, Any]]:
    """{name: scores} for 'noisy' and every entry of outputs ({} without references)."""
    every = {"noisy": [e["noisy"] for e in examples], **outputs}
    scores = {name: score(examples, images) for name, images in every.items()}
    return {name: s for name, s in scores.items() if s is not None}


def evaluate_networks(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    bnn_block: int = 0,
) -> dict[str, dict[str, Any]]:
    """{name: scores} for 'noisy' and every network in params ({} without references)."""
    return score_outputs(examples, predict_all(networks, params, examples, bnn_block))


def format_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: one row per method, mean PSNR (dB) and SSIM."""
    lines = [f"{'method':<8} {'PSNR (dB)':>10} {'SSIM':>8}", "-" * 28]
    for name, s in scores.items():
        lines.append(f"{ROW_LABELS.get(name, name):<8} {s['psnr']:>10.2f} {s['ssim']:>8.4f}")
    return "\n".join(lines)


def _panel_columns(
    example: dict,
    outputs: Mapping[str, np.ndarray],
    alpha: np.ndarray | None,
    per_image: Mapping[str, float],
) -> list[tuple[str, np.ndarray]]:
    def label(name: str) -> str:
        text = ROW_LABELS.get(name, name)
        return f"{text} {per_image[name]:.2f} dB" if name in per_image else text

    columns = [(label("noisy"), example["noisy"])]
    columns += [(label(n), outputs[n]) for n in ("bnn", "lan", "unet") if n in outputs]
    if alpha is not None:
        columns.append(("alpha (white = texture)", alpha))
    if example["clean"] is not None:
        columns.append(("clean", example["clean"]))
    return columns


def final_report(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    config: Any,
    workdir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Evaluate every trained network, print the table and write the panels.

    Panels: workdir/panels/<example name>.png with noisy | BNN | LAN | U-Net | alpha | clean
    (alpha is the flatness map of the BNN output, white = textured). Only process 0 writes.
    """
    workdir = Path(workdir)
    outputs = predict_all(networks, params, examples, config.eval.bnn_block)
    scores = score_outputs(examples, outputs)
    table = format_table(scores) if scores else "(no clean references: no scores)"
    results: dict[str, Any] = {
        "table": {n: {"psnr": s["psnr"], "ssim": s["ssim"]} for n, s in scores.items()},
        "per_image": {
            e["name"]: {
                n: {"psnr": s["psnr_list"][i], "ssim": s["ssim_list"][i]} for n, s in scores.items()
            }
            for i, e in enumerate(examples)
        },
        "num_images": len(examples),
    }
    if jax.process_index() != 0:
        return results
    print(f"\nHeld-out evaluation ({len(examples)} images):\n{table}\n", flush=True)
    logging.info("final evaluation:\n%s", table)
    if config.eval.save_panels:
        for i, example in enumerate(examples):
            alpha = None
            if "bnn" in outputs:
                bnn = outputs["bnn"][i][None]
                alpha = np.asarray(flatness_alpha(bnn, config.alpha.lower, config.alpha.upper))[0]
            per_image = {n: s["psnr_list"][i] for n, s in scores.items()}
            visualize.save_panel(
                workdir / "panels" / f"{example['name']}.png",
                _panel_columns(example, {n: o[i] for n, o in outputs.items()}, alpha, per_image),
                caption=example["name"],
            )
    return results


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename): no half-written file after a crash."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
