"""The report at the end of a training run: the table of scores, the panels, TensorBoard images.

Panels: workdir/panels/<example name>.png with noisy | BNN | LAN | U-Net | alpha | clean
(alpha is the flatness map of the BNN output, white = textured); the same panels go to
TensorBoard as images `panels/<example name>`. Only process 0 prints and writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from clu import metric_writers
from etils import epath

from sassid_jax.evaluation import panels
from sassid_jax.evaluation.scoring import predict_all, score_outputs
from sassid_jax.inference import safeguard
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.methods.sasl import flatness_alpha
from sassid_jax.nn import NETWORK_NAMES

ROW_LABELS = {"noisy": "Noisy", "bnn": "BNN", "lan": "LAN", "unet": "U-Net"}


def format_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: one row per method, mean PSNR (dB), SSIM and colour shift (mean
    over images of |mean(output - clean)| per channel R/G/B, 8-bit levels)."""
    lines = [f"{'method':<8} {'PSNR (dB)':>10} {'SSIM':>8}  {'|shift| R/G/B':>16}", "-" * 46]
    for name, s in scores.items():
        shift = "/".join(f"{v:.1f}" for v in s.get("shift", ()))
        lines.append(
            f"{ROW_LABELS.get(name, name):<8} {s['psnr']:>10.2f} {s['ssim']:>8.4f}  {shift:>16}"
        )
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
    columns += [(label(n), outputs[n]) for n in NETWORK_NAMES if n in outputs]
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
    writer: metric_writers.MetricWriter | None = None,
    step: int = 0,
) -> dict[str, Any]:
    """Evaluate every trained network, print the table and write the panels.

    Returns {"table": {name: {"psnr", "ssim", "colour_shift_abs" [R, G, B]}}, "per_image":
    {example: {name: {"psnr", "ssim", "colour_shift" [R, G, B] signed}}}, "num_images",
    "colour_sigma", "quality_estimate": {"unet": {"gain_db", "safeguard", "per_image"}}}.
    Outputs are colour-anchored with config.postprocess.colour_sigma; the U-Net's quality is
    estimated from each noisy photo alone and its output blended with the input where the
    estimate says it is not better (postprocess.safeguard, safeguard.py).
    Only process 0 estimates the quality (and applies the safeguard); the others return the
    scores of the outputs as they are. With config.eval.save_panels, process 0 writes one
    panel per example (module docstring)
    and, given a `writer`, the same panels as TensorBoard images at `step`.
    """
    outputs = predict_all(networks, params, examples, config.eval.bnn_block, config_sigma(config))
    # the estimate costs a few network Jacobians per photo: process 0, which reports, alone
    quality = None
    if jax.process_index() == 0:
        quality = _check_unet(networks, params, examples, outputs, config)
    scores = score_outputs(examples, outputs)
    table = format_table(scores) if scores else "(no clean references: no scores)"
    results: dict[str, Any] = {
        "table": {
            n: {"psnr": s["psnr"], "ssim": s["ssim"], "colour_shift_abs": s["shift"]}
            for n, s in scores.items()
        },
        "per_image": {
            e["name"]: {
                n: {
                    "psnr": s["psnr_list"][i],
                    "ssim": s["ssim_list"][i],
                    "colour_shift": s["shift_list"][i],
                }
                for n, s in scores.items()
            }
            for i, e in enumerate(examples)
        },
        "num_images": len(examples),
        "colour_sigma": config_sigma(config),
    }
    if quality:
        results["quality_estimate"] = {"unet": quality}
        table += "\n" + _estimate_line(quality, scores)
    if jax.process_index() != 0:
        return results
    print(f"\nHeld-out evaluation ({len(examples)} images):\n{table}\n", flush=True)
    logging.info("final evaluation:\n%s", table)
    if config.eval.save_panels:
        images = {}
        for i, example in enumerate(examples):
            columns = _panel_columns(
                example,
                {n: o[i] for n, o in outputs.items()},
                _alpha_map(outputs, i, config),
                {n: s["psnr_list"][i] for n, s in scores.items()},
            )
            image, _ = panels.render_panel(columns, caption=example["name"])
            path = epath.Path(workdir) / "panels" / f"{example['name']}.png"
            panels.write_png(path, image)
            images[f"panels/{example['name']}"] = image
        if writer is not None and images:
            writer.write_images(step, images)
    return results


def _check_unet(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    outputs: dict[str, list[np.ndarray]],
    config: Any,
) -> dict[str, Any] | None:
    """Estimate the U-Net's gain per example and apply the safeguard to outputs["unet"] in
    place; the summary for results.json (None without a U-Net or any usable photo)."""
    if "unet" not in outputs:
        return None
    sigma = config_sigma(config)
    fn = safeguard.denoiser_fn(networks["unet"], params["unet"], sigma)
    mode = safeguard.config_mode(config)
    per_image = {}
    for i, example in enumerate(examples):
        name = f"U-Net on {example['name']}"
        checked = safeguard.try_check(
            fn, example["noisy"], outputs["unet"][i], mode, name, logging.info, sigma
        )
        if checked is None:
            continue
        outputs["unet"][i] = checked.output
        per_image[example["name"]] = checked.to_json()
        logging.info("%s", safeguard.verdict(name, checked))
    if not per_image:
        return None
    gains = [p["estimated_gain_db"] for p in per_image.values()]
    return {"gain_db": float(np.mean(gains)), "safeguard": mode, "per_image": per_image}


def _estimate_line(quality: Mapping[str, Any], scores: Mapping[str, Any]) -> str:
    """The report's plain words on the estimated gain (and the measured one, if any)."""
    gain = quality["gain_db"]
    measured = ""
    if "unet" in scores and "noisy" in scores:
        measured = f" (measured: {scores['unet']['psnr'] - scores['noisy']['psnr']:+.2f} dB)"
    line = f"U-Net gain estimated from the noisy photos alone: {gain:+.2f} dB{measured}"
    blended = [n for n, p in quality["per_image"].items() if p["blended"]]
    if gain <= 0:
        line += "\nThe U-Net is estimated NOT better than its noisy input on these photos."
    if blended:
        line += f"\nSafeguard: blended with the input on {len(blended)} photo(s): {blended}"
    return line


def _alpha_map(outputs: Mapping[str, Sequence[np.ndarray]], i: int, config: Any):
    """(H, W, 1) flatness map in [0, 1] of example i's BNN output (None without a BNN)."""
    if "bnn" not in outputs:
        return None
    bnn = outputs["bnn"][i][None]
    return np.asarray(flatness_alpha(bnn, config.alpha.lower, config.alpha.upper))[0]
