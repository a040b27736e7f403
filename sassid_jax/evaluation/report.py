"""The report at the end of a training run: the table of scores, the panels, TensorBoard images.

Panels: workdir/panels/<example name>.png with noisy | BNN | LAN | U-Net | alpha | clean
(`panel_columns`; alpha is the flatness map of the BNN output, the LAN teacher's weight in
the U-Net's loss), also TensorBoard images `panels/<example name>`. Only process 0 prints
and writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers
from etils import epath

from sassid_jax.data.sources import evaluates_training_images
from sassid_jax.evaluation import panels
from sassid_jax.evaluation.scoring import predict_all, score_outputs
from sassid_jax.inference import procedure, safeguard
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.inference.predict import predict_blocks
from sassid_jax.logs import ProgressLog, count, format_seconds
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


def panel_columns(
    example: dict,
    outputs: Mapping[str, np.ndarray],
    alpha: np.ndarray | None,
    per_image: Mapping[str, float],
    bnn_block: int = 0,
) -> list[tuple[str, np.ndarray]]:
    """The (label, image) columns of one example's panel (see `panels.render_panel`).

    Args:
      example: the eval example ((H, W, 3) uint8 `noisy`, `clean` or None).
      outputs: {network: (H, W, 3) float32 output on [0, 255]}.
      alpha: (H, W, 1) flatness map on [0, 1] (`alpha_map`), or None.
      per_image: {name: PSNR in dB} shown in the labels ("noisy" and the networks).
      bnn_block: the block side the BNN ran on (0: whole images), named in the labels.
    """

    def label(name: str) -> str:
        text = ROW_LABELS.get(name, name)
        if name == "bnn" and bnn_block:
            text += f" ({bnn_block}-px blocks)"
        return f"{text} {per_image[name]:.2f} dB" if name in per_image else text

    columns = [(label("noisy"), example["noisy"])]
    columns += [(label(n), outputs[n]) for n in NETWORK_NAMES if n in outputs]
    if alpha is not None:
        per_block = f" per {bnn_block}-px block" if bnn_block else ""
        columns.append((f"alpha{per_block} (legend above)", alpha))
    if example["clean"] is not None:
        columns.append(("clean", example["clean"]))
    return columns


def alpha_legend(config: Any) -> str:
    """The panel caption's key to the alpha column's greys, with config.alpha's thresholds."""
    lower, upper = config.alpha.lower, config.alpha.upper
    darkest = float(jax.nn.sigmoid(-lower))
    return (
        f"alpha: the LAN teacher's weight in the U-Net's loss (the BNN's is 1 - alpha), from the "
        f"local std s (8-bit levels) of the BNN output: white (up to 1) where s > {upper:g}: "
        f"texture; grey = 0.5 where {lower:g} <= s <= {upper:g}; darker (down to "
        f"{darkest:.2f}) where s < {lower:g}: flat"
    )


def final_report(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    config: Any,
    workdir: str | os.PathLike[str],
    writer: metric_writers.MetricWriter | None = None,
    step: int = 0,
) -> dict[str, Any]:
    """Evaluate every trained network, write the panels, print the table (once) and where
    the results go; progress is logged as it goes.

    Args:
      networks: {name: module}; params: {name: parameters} of the networks to evaluate.
      examples: the eval examples ((H, W, 3) uint8 `noisy`, `clean` or None, `name`).
      config: the run's config (eval, postprocess, alpha, dataset).
      workdir: the run folder (panels/ goes there; train.py writes results.json there).
      writer, step: where and at which step the panels also go as TensorBoard images.
    Returns:
      {"table": {name: {"psnr", "ssim", "colour_shift_abs" [R, G, B]}}, "per_image":
      {example: {name: {"psnr", "ssim", "colour_shift" [R, G, B] signed}}}, "num_images",
      "colour_sigma", "quality_estimate": {"unet": {"gain_db", "safeguard", "per_image"}}}.

    Outputs are colour-anchored with config.postprocess.colour_sigma; the U-Net's quality is
    estimated from each noisy photo alone and its output blended with the input where the
    estimate says it is not better (postprocess.safeguard, safeguard.py). Only process 0
    estimates the quality (and applies the safeguard), prints and writes; the others return
    the scores of the outputs as they are. With config.eval.save_panels, one panel per
    example (module docstring).
    """
    block = config.eval.bnn_block
    logging.info("final report: %s on %s", ", ".join(params), count(len(examples), "image"))
    progress = ProgressLog("final report", len(params) * len(examples), "predictions")
    procedures = {n: procedure.from_config(config, n) for n in params}  # config.inference
    outputs = predict_all(
        networks, params, examples, block, config_sigma(config), progress.advance, procedures
    )
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
    where = [f"Results: {epath.Path(workdir) / 'results.json'}"]
    if config.eval.save_panels:
        folder = _write_panels(examples, outputs, scores, config, workdir, writer, step)
        where.append(f"Panels:  {folder}/ ({count(len(examples), 'PNG file')})")
    logging.info("final report: done in %s", format_seconds(progress.seconds))
    lines = "\n".join(where)
    print(f"\n{table_title(config, len(examples))}\n{table}\n\n{lines}", flush=True)
    return results


def table_title(config: Any, num_images: int) -> str:
    """The line above the final table: which photos it scores."""
    if evaluates_training_images(config.dataset):
        return (
            f"Evaluation on the training photos ({count(num_images, 'image')}; no separate "
            "evaluation photos, so the networks trained on these):"
        )
    return f"Held-out evaluation ({count(num_images, 'image')}):"


def _write_panels(
    examples: Sequence[dict],
    outputs: Mapping[str, Sequence[np.ndarray]],
    scores: Mapping[str, Any],
    config: Any,
    workdir: str | os.PathLike[str],
    writer: metric_writers.MetricWriter | None,
    step: int,
) -> epath.Path:
    """One panel per example into workdir/panels (and `writer`'s images); returns the folder."""
    block = config.eval.bnn_block
    folder = epath.Path(workdir) / "panels"
    images = {}
    for i, example in enumerate(examples):
        alpha = alpha_map(outputs["bnn"][i], config) if "bnn" in outputs else None
        columns = panel_columns(
            example,
            {n: o[i] for n, o in outputs.items()},
            alpha,
            {n: s["psnr_list"][i] for n, s in scores.items()},
            block if "bnn" in outputs else 0,
        )
        caption = example["name"] + (f". {alpha_legend(config)}" if alpha is not None else "")
        image, _ = panels.render_panel(columns, caption=caption)
        panels.write_png(folder / f"{example['name']}.png", image)
        images[f"panels/{example['name']}"] = image
    if writer is not None and images:
        writer.write_images(step, images)
    return folder


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
    progress = ProgressLog("final report: U-Net quality estimate", len(examples), "photos")
    for i, example in enumerate(examples):
        name = f"U-Net on {example['name']}"
        checked = safeguard.try_check(
            fn, example["noisy"], outputs["unet"][i], mode, name, logging.info, sigma
        )
        progress.advance()
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


def alpha_map(bnn_output: np.ndarray, config: Any) -> np.ndarray:
    """(H, W, 1) flatness map on [0, 1] of one (H, W, 3) BNN output on [0, 255], computed per
    config.eval.bnn_block block as the U-Net's loss sees it on training crops (whole image
    when 0): the BNN's block seams are not taken for texture."""
    lower, upper = config.alpha.lower, config.alpha.upper
    block = config.eval.bnn_block
    if not block:
        return np.asarray(flatness_alpha(bnn_output[None], lower, upper))[0]

    def alpha_rgb(x: jax.Array) -> jax.Array:  # predict_blocks maps 3 channels to 3
        return jnp.repeat(flatness_alpha(x, lower, upper), 3, axis=-1)

    return predict_blocks(alpha_rgb, bnn_output, block)[..., :1]
