"""Predictions and scores of trained networks on evaluation examples (the published protocol).

Scores are `metrics`' (the protocol's rounding, PSNR per image with peak 255, averaged; SSIM as
scikit-image's). Examples are dicts with `name`, `noisy` and `clean` ((H, W, 3) uint8; clean
None: nothing is scored), and optionally `phone` and `iso`. Training evaluates with
`evaluate_networks`; the final table and panels are `report.final_report`; `--mode eval` is
`modes/evaluate.py`.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import tqdm

from sassid_jax.evaluation import metrics
from sassid_jax.inference.colour_anchor import anchor_image
from sassid_jax.inference.predict import predict_blocks, predict_image
from sassid_jax.inference.procedure import Procedure, network_fn


def limit(examples: list[dict[str, Any]], max_images: int) -> list[dict[str, Any]]:
    """The first `max_images` of `examples` (all of them when max_images is 0).

    Args:
      examples: evaluation examples (module docstring).
      max_images: how many to keep; 0: all.
    Returns:
      A list of at most max_images examples, in order.
    """
    return examples[:max_images] if max_images else examples


def predict_all(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    bnn_block: int = 0,
    colour_sigma: float = 0.0,
    progress: Callable[[], None] | None = None,
    procedures: Mapping[str, Procedure] | None = None,
) -> dict[str, list[np.ndarray]]:
    """Every network's outputs on every example.

    Args:
      networks: modules by name.
      params: parameters by network name; only these networks run.
      examples: evaluation examples (module docstring).
      bnn_block: > 0 runs the BNN on isolated bnn_block x bnn_block blocks, the input size it
        was trained on and used at as a teacher (a BNN trained on small crops does not
        transfer to whole images: its one-sided padding gives it positional cues); 0: whole
        images.
      colour_sigma: > 0: every output keeps its input's local mean colour (`colour_anchor`).
      progress: called after each prediction (len(params) x len(examples) calls), if given.
      procedures: {network name: its test-time procedure (`inference.procedure`)}; a network
        without one runs as it is.
    Returns:
      {network name: [(H, W, 3) float32 output on [0, 255] per example]}, not rounded.
    """
    # Evaluation is small: every process runs it alone on its first local device (explicit
    # shardings, so it never mixes with the training mesh); only process 0 reports.
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    outputs = {}
    for name, p in params.items():
        procedure = (procedures or {}).get(name, Procedure())
        if procedure.plain:
            apply = jax.jit(networks[name].apply, in_shardings=local, out_shardings=local)

            def run(x, p=p, apply=apply):
                return apply({"params": p}, x)
        else:
            fn = partial(network_fn, networks[name], procedure=procedure)
            jitted = jax.jit(lambda p, x, fn=fn: fn(p)(x), in_shardings=local, out_shardings=local)

            def run(x, p=p, jitted=jitted):
                return jitted(p, x)

        outputs[name] = []
        for e in examples:
            if name == "bnn" and bnn_block:
                out = predict_blocks(run, e["noisy"], bnn_block)
            else:
                out = predict_image(run, e["noisy"])
            outputs[name].append(anchor_image(out, e["noisy"], colour_sigma))
            if progress is not None:
                progress()
    return outputs


def score(examples: Sequence[dict], images: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """PSNR and SSIM of `images` against the examples' clean references.

    Args:
      examples: evaluation examples (module docstring).
      images: one (H, W, 3) image on [0, 255] per example (rounded by the metrics).
    Returns:
      `metrics.evaluate_pairs`' dict, or None when an example has no clean reference (or
      there are none).
    """
    if not examples or any(e["clean"] is None for e in examples):
        return None
    return metrics.evaluate_pairs(
        (e["clean"], np.asarray(img, np.float32)) for e, img in zip(examples, images, strict=True)
    )


def score_outputs(
    examples: Sequence[dict], outputs: Mapping[str, Sequence[np.ndarray]]
) -> dict[str, dict[str, Any]]:
    """Scores of the noisy inputs and of every network's outputs.

    Args:
      examples: evaluation examples (module docstring).
      outputs: {network name: one (H, W, 3) output on [0, 255] per example}.
    Returns:
      {"noisy" or network name: `score`'s dict}; {} without clean references.
    """
    every = {"noisy": [e["noisy"] for e in examples], **outputs}
    scores = {name: score(examples, images) for name, images in every.items()}
    return {name: s for name, s in scores.items() if s is not None}


def evaluate_networks(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    examples: Sequence[dict],
    bnn_block: int = 0,
    colour_sigma: float = 0.0,
    progress: Callable[[], None] | None = None,
    procedures: Mapping[str, Procedure] | None = None,
) -> dict[str, dict[str, Any]]:
    """`score_outputs` of `predict_all`: the arguments are `predict_all`'s.

    Returns:
      {"noisy" or network name: `score`'s dict}; {} without clean references.
    """
    outputs = predict_all(networks, params, examples, bnn_block, colour_sigma, progress, procedures)
    return score_outputs(examples, outputs)


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
    """Protocol scores of one method's outputs, with per-phone and per-ISO means.

    Args:
      examples: evaluation examples with clean references (module docstring).
      outputs: one (H, W, 3) output on [0, 255] per example.
    Returns:
      {"psnr", "ssim", "images", "noisy_psnr", "noisy_ssim", "colour_shift_abs",
      "noisy_colour_shift_abs", "per_image": {name: {"psnr", "ssim", "colour_shift",
      "noisy_colour_shift"}}}, plus "per_phone" / "per_iso" ({group: {"psnr", "ssim",
      "images"}}) when the examples carry `phone` / `iso`. PSNR in dB, shifts [R, G, B] in
      8-bit levels.
    """
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
        "colour_shift_abs": scores["shift"],
        "noisy_colour_shift_abs": noisy["shift"],
        "per_image": {
            e["name"]: {"psnr": p, "ssim": s, "colour_shift": c, "noisy_colour_shift": n}
            for e, p, s, c, n in zip(
                examples,
                scores["psnr_list"],
                scores["ssim_list"],
                scores["shift_list"],
                noisy["shift_list"],
                strict=True,
            )
        },
    }
    for key in ("phone", "iso"):
        groups = _group_scores(examples, scores["psnr_list"], scores["ssim_list"], key)
        if groups:
            result[f"per_{key}"] = groups
    return result


def _rgb(values: Sequence[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def format_scores(name: str, result: dict[str, Any]) -> str:
    """Plain-text summary of `score_examples`' `result` under the heading `name`: the means,
    then the per-phone / per-ISO rows if any."""
    lines = [
        f"{name}: {result['images']} images, PSNR {result['psnr']:.2f} dB, "
        f"SSIM {result['ssim']:.4f}, |colour shift| R/G/B {_rgb(result['colour_shift_abs'])} "
        f"(noisy input {result['noisy_psnr']:.2f} dB, {result['noisy_ssim']:.4f}, "
        f"{_rgb(result['noisy_colour_shift_abs'])})"
    ]
    for key in ("per_phone", "per_iso"):
        for group, s in result.get(key, {}).items():
            lines.append(
                f"  {key[4:]:>5} {group:>6}: {s['psnr']:.2f} dB  {s['ssim']:.4f}  "
                f"({s['images']} blocks)"
            )
    return "\n".join(lines)


def progress_bar(total: int, what: str) -> tqdm.tqdm:
    """A tqdm progress bar on stderr, `total` steps of the unit `what` (hidden when stderr
    is not a terminal)."""
    return tqdm.tqdm(
        total=total, unit=what, file=sys.stderr, dynamic_ncols=True, disable=None, mininterval=2.0
    )
