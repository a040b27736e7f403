"""The DND protocol: the networks of a SIDD run on the DND crops (no ground truth).

Per crop: the flat mask (alpha of the SASL BNN's output < 0.5) and the non-texture mask
(alpha <= 0.5), the residual std in them (`scores.flat_residual_std`) and the low-pass bias
(`scores.lowpass_bias`) of every output; panels of a few crops. The SIDD pair rides along as
a check of the measure (it has a ground truth) and is kept out of the DND means.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bench import common
from bench.real_noise import runs, scores

MASKS = {
    "flat": "alpha < 0.5 (7x7 std of BNN output < alpha.lower)",
    "non_texture": "alpha <= 0.5 (7x7 std of BNN output <= alpha.upper)",
}


def load_methods(cfg: ml_collections.ConfigDict) -> dict[str, tuple[Any, dict[str, Any]]]:
    """{method: (run config, {network: jitted apply})} from the first seed of each method."""
    from sassid_jax import train
    from sassid_jax.configuration import validate_config
    from sassid_jax.inference.predict import jit_apply
    from sassid_jax.io.checkpoints import read_run_config

    src = Path(cfg.from_run).resolve()
    loaded = {}
    for method in runs.names(cfg.methods):
        workdir = src / "runs" / f"{method}_seed{runs.names(cfg.seeds)[0]}"
        config = ml_collections.ConfigDict(read_run_config(workdir))
        validate_config(config)
        if method in runs.names(cfg.stage1_only):
            config.stage_order = ("bnn",)
        params = runs.load_params(workdir, config)
        nets = train.build_networks(config)
        loaded[method] = (config, {n: jit_apply(nets[n], params[n]) for n in params})
    if "sasl" not in loaded:
        sys.exit("the dnd protocol needs the SASL run (its BNN defines the flat regions)")
    return loaded


def _outputs(noisy, loaded, with_bm3d: bool) -> tuple[dict[str, Any], Any, float | None]:
    """(every output by label, the SASL BNN's alpha map, BM3D's sigma or None)."""
    from sassid_jax.inference.predict import predict_blocks, predict_image
    from sassid_jax.methods.sasl import flatness_alpha

    sasl_cfg, sasl = loaded["sasl"]
    outs: dict[str, Any] = {"Noisy": noisy.astype(np.float32)}
    bnn = predict_blocks(sasl["bnn"], noisy, sasl_cfg.eval.bnn_block)
    alpha = flatness_alpha(bnn[None], sasl_cfg.alpha.lower, sasl_cfg.alpha.upper)
    sigma = None
    if with_bm3d:
        outs["BM3D (sigma est.)"], sigma = scores.bm3d_denoise(noisy)
    for method, (config, fns) in loaded.items():
        lab = runs.LABELS[method]
        outs[lab["bnn"]] = (
            bnn if method == "sasl" else predict_blocks(fns["bnn"], noisy, config.eval.bnn_block)
        )
        for net in ("lan", "unet"):
            if net in fns:
                outs[lab[net]] = predict_image(fns[net], noisy)
    return outs, np.asarray(alpha)[0, ..., 0], sigma


def measure_crop(name: str, noisy, q: dict[str, Any], alpha) -> dict[str, Any]:
    """One crop's record: mask fractions, residual stds (masks of >= 100 pixels), bias."""
    rec: dict[str, Any] = {"name": name}
    rec["lowpass_bias"] = {
        k: round(scores.lowpass_bias(v, noisy), 3) for k, v in q.items() if k != "Noisy"
    }
    for mname, mask in (("flat", alpha < 0.5), ("non_texture", alpha <= 0.5)):
        rec[f"{mname}_fraction"] = round(float(mask.mean()), 4)
        if mask.sum() >= 100:
            rec[f"{mname}_residual_std"] = {
                k: round(scores.flat_residual_std(v, mask), 3) for k, v in q.items()
            }
    return rec


def _save_crop_panels(out: Path, name: str, path: Path, q: dict[str, Any], alpha) -> None:
    from PIL import Image

    from sassid_jax.evaluation import panels as visualize

    cols = [(k, q[k]) for k in q] + [("alpha of BNN (white = texture)", alpha)]
    half = (len(cols) + 1) // 2
    visualize.save_panel(out / f"dnd_{name}_1.png", cols[:half], caption=path.name)
    visualize.save_panel(out / f"dnd_{name}_2.png", cols[half:], caption=path.name)
    Image.fromarray(q[runs.LABELS["sasl"]["unet"]].astype(np.uint8)).save(
        out / f"dnd_{name}_sasl_unet.png"
    )


def _mean(values) -> float:
    return round(float(np.mean(list(values))), 3)


def summarize(per_image: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """(summary over the DND crops, the text tables) of the per-crop records; the SIDD
    pair's record (last) is shown beside the DND means."""
    dnd, sidd = per_image[:-1], per_image[-1]
    summary: dict[str, Any] = {}
    blocks = []
    for mname, definition in MASKS.items():
        key = f"{mname}_residual_std"
        with_std = [r for r in dnd if key in r]
        methods = list(dict.fromkeys(k for r in with_std for k in r[key]))
        counts = {k: sum(k in r[key] for r in with_std) for k in methods}
        s = summary[mname] = {
            "num_crops": len(with_std),
            "mean_fraction": round(float(np.mean([r[f"{mname}_fraction"] for r in dnd])), 4),
            "residual_std": {k: _mean(r[key][k] for r in with_std if k in r[key]) for k in methods},
            "num_crops_per_method": counts,
        }
        ref = sidd.get(key, {})
        rows = [
            (k, f"{v:.2f}", counts[k], f"{ref.get(k, np.nan):.2f}")
            for k, v in s["residual_std"].items()
        ]
        if "Ground truth" in ref:
            rows.append(("Ground truth", "", "", f"{ref['Ground truth']:.2f}"))
        blocks.append(
            f"{mname}: {definition}; {len(with_std)}/{len(dnd)} DND crops with >= 100 such "
            f"pixels, mean fraction {s['mean_fraction']:.3f}\n"
            + common.text_table(("method", "DND mean", "crops", "SIDD pair"), rows)
        )
    bias_methods = list(dict.fromkeys(k for r in dnd for k in r["lowpass_bias"]))
    summary["lowpass_bias"] = {
        k: _mean(r["lowpass_bias"][k] for r in dnd if k in r["lowpass_bias"]) for k in bias_methods
    }
    ref = sidd["lowpass_bias"]
    rows = [
        (k, f"{v:.2f}", f"{ref.get(k, np.nan):.2f}") for k, v in summary["lowpass_bias"].items()
    ]
    if "Ground truth" in ref:
        rows.append(("Ground truth", "", f"{ref['Ground truth']:.2f}"))
    blocks.append(
        "lowpass bias: RMS of (15x15 mean of output - 15x15 mean of noisy input), "
        "all pixels (colour casts / brightness shifts)\n"
        + common.text_table(("method", "DND mean", "SIDD pair"), rows)
    )
    return summary, "\n\n".join(blocks)


def run_dnd(cfg: ml_collections.ConfigDict) -> None:
    import jax
    from PIL import Image

    from sassid_jax.evaluation import metrics

    if not cfg.from_run:
        sys.exit("the dnd protocol needs --config.from_run (the out folder of a SIDD run)")
    data = runs.SharedData.from_config(cfg)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_methods(cfg)
    files = sorted(data.dnd_noisy.glob("*.png"))[: cfg.max_images or None]
    jobs = [(p, None) for p in files] + [(data.pair / "noisy.png", data.pair / "gt.png")]
    per_image, panels = [], set(runs.names(cfg.panels))
    t0 = time.perf_counter()
    for i, (path, gt_path) in enumerate(jobs):
        name = "sidd_pair" if gt_path else path.stem
        noisy = np.asarray(Image.open(path).convert("RGB"))
        with_bm3d = not cfg.skip_bm3d and bool(gt_path or i < (cfg.bm3d_max or len(jobs)))
        outs, alpha, sigma = _outputs(noisy, loaded, with_bm3d)
        if gt_path:
            outs["Ground truth"] = np.asarray(Image.open(gt_path).convert("RGB"), np.float32)
        q = {k: metrics.quantize(v) for k, v in outs.items()}
        rec = measure_crop(name, noisy, q, alpha)
        if sigma is not None:
            rec["bm3d_sigma_255"] = round(sigma, 3)
        per_image.append(rec)
        stds = rec.get("flat_residual_std", {})
        print(f"[{i + 1}/{len(jobs)}] {name} flat {rec['flat_fraction']:.3f} "
              + " ".join(f"{k}={v:.2f}" for k, v in stds.items()), flush=True)  # fmt: skip
        if gt_path or name in panels or i < cfg.num_panels:
            _save_crop_panels(out, name, path, q, alpha)
    summary, table = summarize(per_image)
    print(f"\nResidual std (image minus its 7x7 local mean, 0-255 scale):\n{table}")
    common.write_text(out / "table_dnd.txt", table + "\n")
    payload = {
        "from_run": str(Path(cfg.from_run).resolve()),
        "summary": summary,
        "per_image": per_image,
        "mask_definitions": MASKS,
        "wall_s": round(time.perf_counter() - t0, 1),
        "bench_config": json.loads(cfg.to_json_best_effort()),
        "command": " ".join(sys.argv),
        "devices": [str(d) for d in jax.devices()],
    }
    common.write_record(out / "results_dnd.json", payload)
