"""The SIDD protocols: train every (method, seed), score all networks and baselines on the
SIDD pair, write results.json, table.txt and the side-by-side panels (see __init__)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bench import common
from bench.real_noise import runs, scores


def _bm3d_rows(noisy, clean, images: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for factor in (1.0, 1.5):
        t = time.perf_counter()
        den, sigma = scores.bm3d_denoise(noisy, factor)
        label = f"BM3D (sigma est. x{factor:g})"
        rows.append(
            {
                "method": label,
                **scores.score(clean, den),
                "sigma_255": round(sigma * factor, 3),
                "wall_s": round(time.perf_counter() - t, 1),
            }
        )
        images[label] = den
    return rows


def _evaluate_run(config, workdir: Path, example, clean) -> tuple[dict, dict]:
    """(scores per network, outputs on bnn_block blocks, whole-block BNN output)."""
    from sassid_jax import train
    from sassid_jax.evaluation import scoring

    params = runs.load_params(workdir, config)
    nets = train.build_networks(config)
    outs = scoring.predict_all(nets, params, example, bnn_block=config.eval.bnn_block)
    whole = scoring.predict_all(nets, {"bnn": params["bnn"]}, example, bnn_block=0)["bnn"][0]
    result = {name: scores.score(clean, outs[name][0]) for name in outs}
    result["bnn_whole"] = scores.score(clean, whole)
    sweep = scores.bnn_eval_size_sweep(nets, params["bnn"], example, whole)
    return result, {"outs": outs, "whole": whole, "sweep": sweep}


def _first_seed_outputs(method, config, outputs, clean, out: Path, images, diagnostics):
    """Panel columns, stage-3 target diagnostics and the SASL output PNGs of a first seed;
    returns the SASL BNN's alpha map (or None)."""
    from PIL import Image

    from sassid_jax.evaluation import metrics
    from sassid_jax.methods.sasl import flatness_alpha

    outs, lab = outputs["outs"], runs.LABELS[method]
    images[lab["bnn"] + f" [{config.eval.bnn_block}-blocks]"] = outs["bnn"][0]
    images[lab["bnn"] + " [whole]"] = outputs["whole"]
    for name in ("lan", "unet"):
        if name in outs:
            images[lab[name]] = outs[name][0]
    if method != "bsn" and "lan" in outs:
        diagnostics.setdefault("stage3_targets", {})[method] = scores.stage3_targets(
            clean, outs["bnn"][0], outs["lan"][0]
        )
    if method != "sasl" or "lan" not in outs:
        return None
    for name in outs:
        Image.fromarray(metrics.quantize(outs[name][0]).astype(np.uint8)).save(
            out / f"sidd_{method}_{name}.png"
        )
    alpha = flatness_alpha(outs["bnn"][0][None], config.alpha.lower, config.alpha.upper)
    return np.asarray(alpha)[0]


def _network_rows(cfg, trained: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows of the networks: mean (and spread) over seeds, with stage times."""
    rows = []
    for method in runs.names(cfg.methods):
        lab = runs.LABELS[method]
        for key, label in (
            ("bnn", lab["bnn"] + f", {cfg.run.eval.bnn_block}-blocks"),
            ("bnn_whole", lab["bnn"] + ", whole 256"),
            ("lan", lab["lan"]),
            ("unet", lab["unet"]),
        ):
            mine = [r for r in trained.values() if r["method"] == method]
            vals = [r["scores"][key] for r in mine if key in r["scores"]]
            if not vals:
                continue
            stage = "bnn" if key == "bnn_whole" else key
            # a call that skipped a finished stage has no time for it (steps_run 0)
            t = [r["timing"].get(stage, {}) for r in mine]
            t = [x if x.get("steps_run") else {} for x in t]
            rows.append(
                {
                    "method": label,
                    "psnr": round(float(np.mean([v["psnr"] for v in vals])), 3),
                    "ssim": round(float(np.mean([v["ssim"] for v in vals])), 4),
                    "psnr_per_seed": [v["psnr"] for v in vals],
                    "stage_wall_s": [x.get("seconds") for x in t],
                    "steps": [x.get("steps_run") for x in t],
                    "steps_per_s": [x.get("steps_per_sec") for x in t],
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        wall = r.get("stage_wall_s") or ([r["wall_s"]] if "wall_s" in r else [])
        steps = r.get("steps", [])
        cells.append(
            (
                r["method"],
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.4f}",
                "/".join(f"{w:.0f}" for w in wall if w is not None),
                "/".join(str(s) for s in steps if s is not None),
            )
        )
    return common.text_table(("method", "PSNR dB", "SSIM", "stage wall s", "steps"), cells)


def save_panels(cfg, out: Path, images: dict[str, Any], alpha, clean) -> None:
    """The same crop of every method side by side (upscaled), in two panels."""
    from sassid_jax.evaluation import panels

    p = cfg.panel
    window = np.s_[p.y : p.y + p.size, p.x : p.x + p.size]
    cols = [
        (f"{label} {scores.score(clean, img)['psnr']:.2f} dB", np.asarray(img, np.float32))
        for label, img in images.items()
    ]
    if alpha is not None:
        cols.append(("alpha of BNN b=9 (white = texture)", alpha))
    cols.append(("ground truth", clean))
    cols = [(label, scores.upscale(img[window], p.zoom)) for label, img in cols]
    half = (len(cols) + 1) // 2
    caption = f"SIDD pair crop y={p.y} x={p.x} {p.size}px x{p.zoom}, protocol {cfg.protocol}"
    panels.save_panel(out / "panel_sidd.png", cols[:half], caption=caption + " (1/2)")
    panels.save_panel(
        out / "panel_sidd_2.png", cols[half:], caption=f"(2/2) protocol {cfg.protocol}"
    )


def _print_diagnostics(diagnostics: dict[str, Any]) -> None:
    print(
        "noise autocorrelation (analysis only, uses the ground truth):",
        json.dumps(diagnostics["noise_autocorrelation"]),
    )
    for key, val in diagnostics.get("bnn_eval_size", {}).items():
        print(f"BNN evaluation size sweep {key}: {val}")
    for method, targets in diagnostics.get("stage3_targets", {}).items():
        for key, val in targets.items():
            print(f"stage-3 target of {method}, thresholds {key}: {val}")


def run_sidd(cfg: ml_collections.ConfigDict) -> None:
    import jax
    from PIL import Image

    data = runs.SharedData.from_config(cfg)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dirs = runs.prepare_sidd_folders(out, data, cfg.extra_images)
    noisy = np.asarray(Image.open(data.pair / "noisy.png").convert("RGB"))
    clean = np.asarray(Image.open(data.pair / "gt.png").convert("RGB"))
    example = [{"noisy": noisy, "clean": clean, "name": "sidd_pair"}]

    rows: list[dict[str, Any]] = [{"method": "Noisy input", **scores.score(clean, noisy)}]
    images: dict[str, Any] = {"Noisy": noisy}
    bm3d_rows = [] if cfg.skip_bm3d else _bm3d_rows(noisy, clean, images)
    rows += bm3d_rows
    trained: dict[str, Any] = {}
    alpha = None
    diagnostics: dict[str, Any] = {
        "noise_autocorrelation": scores.noise_autocorrelation(noisy, clean)
    }
    seeds = [int(s) for s in runs.names(cfg.seeds)]
    for method in runs.names(cfg.methods):
        for seed in seeds:
            config = runs.run_config(cfg, method, seed, dirs)
            key = f"{method}_seed{seed}"
            workdir = out / "runs" / key
            steps = [config.stages[s].steps for s in config.stage_order]
            print(f"\n=== {method} (b={runs.METHODS[method]}) seed {seed}: steps {steps}, "
                  f"train folder {dirs['noisy_dir']} ===", flush=True)  # fmt: skip
            done = runs.finished(workdir, config)
            if done is not None:  # evaluate the finished run as it was trained
                print(f"{workdir}: finished earlier, not retraining", flush=True)
                config, info = done
            else:
                info = runs.train_run(config, workdir, cfg.allow_config_change)
            run_scores, outputs = _evaluate_run(config, workdir, example, clean)
            diagnostics.setdefault("bnn_eval_size", {})[key] = outputs["sweep"]
            trained[key] = {
                "method": method,
                "blind_size": runs.METHODS[method],
                "seed": seed,
                "scores": run_scores,
                "timing": runs.stage_times(info["timing"]),
                "config": json.loads(config.to_json_best_effort()),
                "loss_history": info["library_results"].get("loss_history"),
            }
            if seed == seeds[0]:
                found = _first_seed_outputs(
                    method, config, outputs, clean, out, images, diagnostics
                )
                alpha = found if found is not None else alpha
    rows += _network_rows(cfg, trained)
    table = format_table(rows)
    _print_diagnostics(diagnostics)
    print(f"\nSIDD pair (real noise, ground truth), protocol {cfg.protocol}:\n{table}\n")
    common.write_text(out / "table.txt", table + "\n")
    save_panels(cfg, out, images, alpha, clean)
    payload = {
        "protocol": cfg.protocol,
        "steps": [cfg.run.stages[s].steps for s in runs.STAGES],
        "extra_training_images": cfg.extra_images,
        "train_images": sorted(os.listdir(dirs["noisy_dir"])),
        "table": rows,
        "runs": trained,
        "bm3d": {r["method"]: r for r in bm3d_rows},
        "diagnostics": diagnostics,
        "bench_config": json.loads(cfg.to_json_best_effort()),
        "command": " ".join(sys.argv),
        "library": runs.library_version(),
        "machine": {**common.machine_info(), "devices": [str(d) for d in jax.devices()]},
    }
    common.write_record(out / "results.json", payload)
    print(f"wrote {out / 'results.json'}, {out / 'panel_sidd.png'}", flush=True)
