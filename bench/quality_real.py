"""Real-noise quality: SASL trained self-supervised on real SIDD noise, against baselines.

  python bench/quality_real.py sidd --protocol short --out scratch/quality_real/short
  python bench/quality_real.py sidd --protocol full  --out scratch/quality_real/full
  python bench/quality_real.py dnd  --from-run scratch/quality_real/full \
      --out scratch/quality_real/dnd

`sidd` trains, through the library's `sassid_jax.train.train_and_evaluate`, with a config
derived from configs/default.py (`dataset.name='image_folder'`):
- SASL: BNN (b = 9) -> LAN -> U-Net, the three stages;
- the blind-spot baseline: the same recipe with BNN blind size 1 (configs/blind_spot.py);
- only with `--methods ... sasl_b5`: SASL with blind size 5, which hides the lags <= 2 that
  carry SIDD's noise correlation (b = 9 hides lags <= 4), an experiment, not the paper;
on real noisy images only (no clean image is ever read for training), and scores every
network against the ground truth of the SIDD pair (PSNR/SSIM by the published protocol,
`sassid_jax.metrics`). BNN-alone and LAN-alone rows are stages 1 and 2 of the SASL run.
Stage-1 networks are scored two ways: on isolated `eval.bnn_block` blocks (64x64, the crop
size they are trained on and used at as teachers; the library's default) and on the whole
256x256 block. Also scored: BM3D (PyPI `bm3d`, sigma estimated from the noisy image by
scikit-image's `estimate_sigma`, no ground truth; also 1.5x that sigma) and the noisy input.

Protocols (override any number with the flags):
- short: the faithfulness protocol. Training data: the noisy block of the SIDD pair ALONE;
  width 32, 64x64 crops, batch 4, Adam 1e-3 cosine, normalize=True, 400 steps per stage.
- full: the noisy pair block plus the four SIDD noisy blocks; the steps per stage in
  FULL_STEPS (chosen from the steps/s measured on the shared 2-core CPU so that a stage takes
  at most about `--stage-minutes`; see bench/REAL_NOISE.md).

`dnd` reuses the nets of a `sidd` run (no training) on the 34 DND crops (no ground truth)
and reports the residual standard deviation in flat regions (flat = BNN output's flatness
map alpha < 0.5, i.e. 7x7 local std of the BNN output below alpha.lower) before and after
denoising, and saves panels of a few crops.

Outputs (in --out): results.json (table, per-stage wall times and steps/s, exact configs),
table.txt, panel_sidd.png (the same crop of every method side by side), runs/<method>_seed<k>/
(the library's workdirs: checkpoints, config.json, results.json, TensorBoard), data/ (the
symlink folders the config points at). Re-running the same command resumes finished runs
(stages are skipped, only the evaluation is repeated; the wall times of the run that trained
are kept in runs/*/timing.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"  # --shared overrides


def _data_paths(shared: Path) -> None:
    global SHARED, SIDD_PAIR, SIDD_NOISY, DND_NOISY
    SHARED = shared
    SIDD_PAIR, SIDD_NOISY, DND_NOISY = (
        shared / n for n in ("sidd_pair", "sidd_noisy", "dnd_noisy")
    )


_data_paths(SHARED)
EVAL_NAME = "sidd_pair.png"
STAGES = ("bnn", "lan", "unet")

SHORT_STEPS = (400, 400, 400)
# Full protocol: steps per stage; chosen from the steps/s of the short runs on this shared
# 2-core CPU (see bench/REAL_NOISE.md), so that each stage fits the per-stage time budget.
FULL_STEPS = (1000, 400, 800)
METHODS = {"sasl": 9, "bsn": 1, "sasl_b5": 5}  # method -> BNN blind size
# Run by default; sasl_b5 (SASL with a blind size fitted to SIDD's noise correlation range,
# lags <= 2) is an experiment, asked for with --methods.
DEFAULT_METHODS = ("sasl", "bsn")
LABELS = {
    "sasl": {"bnn": "BNN b=9 (stage 1)", "lan": "LAN (stage 2 of SASL)", "unet": "SASL U-Net"},
    "sasl_b5": {"bnn": "BNN b=5 (stage 1)", "lan": "b=5 -> LAN", "unet": "SASL b=5 U-Net"},
    "bsn": {"bnn": "BSN b=1 (stage 1)", "lan": "BSN b=1 -> LAN", "unet": "BSN b=1 -> U-Net"},
}


# ----------------------------------------------------------------------------- data/config


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.symlink_to(src.resolve())


def prepare_sidd_folders(out: Path, with_extra: bool) -> dict[str, str]:
    """Symlink folders: training noisy images, eval noisy / eval clean (same file name)."""
    for f in (SIDD_PAIR / "noisy.png", SIDD_PAIR / "gt.png"):
        if not f.exists():
            sys.exit(f"missing {f}: this bench needs ../shared/data beside the repository")
    data = out / "data"
    train = data / ("train_pair_plus_sidd_noisy" if with_extra else "train_pair_only")
    _link(SIDD_PAIR / "noisy.png", train / EVAL_NAME)
    if with_extra:
        for p in sorted(SIDD_NOISY.glob("*.png")):
            _link(p, train / f"sidd_noisy_{p.name}")
    _link(SIDD_PAIR / "noisy.png", data / "eval_noisy" / EVAL_NAME)
    _link(SIDD_PAIR / "gt.png", data / "eval_clean" / EVAL_NAME)
    return {
        "noisy_dir": str(train),
        "eval_noisy_dir": str(data / "eval_noisy"),
        "eval_clean_dir": str(data / "eval_clean"),
    }


def make_config(
    method: str,
    steps: tuple[int, int, int],
    dirs: dict[str, str],
    seed: int,
    args: argparse.Namespace,
):
    from configs import default

    c = default.get_config()
    c.seed = seed
    c.dataset.name = "image_folder"
    c.dataset.noisy_dir = dirs["noisy_dir"]
    c.dataset.eval_noisy_dir = dirs["eval_noisy_dir"]
    c.dataset.eval_clean_dir = dirs["eval_clean_dir"]
    c.networks.bnn.blind_size = METHODS[method]
    c.crop_size = args.crop
    c.eval.bnn_block = args.crop
    c.batch_size = args.batch
    c.networks.bnn.width = c.networks.unet.width = args.width
    for name, n in zip(STAGES, steps, strict=True):
        c.stages[name].steps = int(n)
        c.stages[name].lr = args.lr
    c.train.checkpoint_every = max(100, min(steps))
    c.train.log_every = 25
    c.train.eval_every = args.eval_every
    if method in args.stage1_only:
        c.stage_order = ("bnn",)
    return c


# ----------------------------------------------------------------------------- training


class StageClock(logging.Handler):
    """Times each stage from the library's log lines (train.py logs every stage's end eval)."""

    STEP = re.compile(r"stage (\w+) step (\d+)/(\d+) loss ([\d.]+) lr \S+ ([\d.]+) steps/s")
    EVAL = re.compile(r"stage (\w+) step (\d+) eval")
    EVAL_PSNR = re.compile(r"stage (\w+) step (\d+) eval (\w+): PSNR ([\d.]+) dB")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.t0 = time.perf_counter()
        self.last_end = self.t0
        self.stages: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.feed(record.getMessage(), time.perf_counter())

    def feed(self, msg: str, now: float) -> None:
        m = self.STEP.match(msg)
        if m:
            s = self.stages.setdefault(m[1], {"start": self.last_end, "rates": []})
            s["rates"].append(float(m[5]))
            s["final_loss"] = float(m[4])
            s["steps"] = int(m[3])
            return
        m = self.EVAL.match(msg)
        if m and m[1] in self.stages:
            s = self.stages[m[1]]
            e = self.EVAL_PSNR.match(msg)
            if e and e[3] != "noisy":
                s.setdefault("eval_curve", []).append((int(e[2]), e[3], float(e[4])))
            if int(m[2]) == s["steps"]:
                s["end"] = now
                self.last_end = now

    def summary(self) -> dict[str, Any]:
        out = {}
        for name, s in self.stages.items():
            if "end" not in s:
                continue
            rates = s["rates"][1:] or s["rates"]  # the first window includes compilation
            out[name] = {
                "wall_s": round(s["end"] - s["start"], 1),
                "steps": s["steps"],
                "steps_per_s": round(sum(rates) / len(rates), 3),
                "final_loss": s["final_loss"],
                "eval_curve": s.get("eval_curve", []),
            }
        return out


def train_run(config, workdir: Path, allow_config_change: bool = False) -> dict[str, Any]:
    """train_and_evaluate in workdir; per-stage wall times kept in workdir/timing.json."""
    from sassid_jax import train

    clock = StageClock()
    root = logging.getLogger()
    root.addHandler(clock)
    t0 = time.perf_counter()
    try:
        results = train.train_and_evaluate(config, workdir, allow_config_change=allow_config_change)
    finally:  # also when stopped (SIGTERM): the stages that finished keep their times
        root.removeHandler(clock)
        payload = _write_timing(workdir, clock.summary(), time.perf_counter() - t0)
    return {"library_results": results, "timing": payload}


def _write_timing(workdir: Path, stages: dict[str, Any], wall: float) -> dict[str, Any]:
    timing_path = workdir / "timing.json"
    old = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    payload = {"stages": {**old.get("stages", {}), **stages}, "last_call_wall_s": round(wall, 1)}
    timing_path.write_text(json.dumps(payload, indent=2))
    return payload


def timing_from_log(log: Path, workdir: Path) -> None:
    """Rebuild workdir/timing.json from a run's log (a process stopped before writing it).

    The first stage starts at the mtime of workdir/config.json (written when
    train_and_evaluate starts); log lines carry their own timestamps.
    """
    import datetime as dt

    clock = StageClock()
    clock.last_end = (workdir / "config.json").stat().st_mtime
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")
    for line in log.read_text().splitlines():
        m = stamp.match(line)
        if m:
            t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC)
            clock.feed(m[2], t.timestamp())
    stages = clock.summary()
    for s in stages.values():
        s["timing_source"] = f"rebuilt from {log.name}"
    payload = _write_timing(workdir, stages, 0.0)
    print(json.dumps(payload, indent=2))


def _finished(workdir: Path, requested) -> tuple[Any, dict[str, Any]] | None:
    """(config, info) of a run in workdir whose stages all finished, else None.

    The config is the one the run was trained with (workdir/config.json); fields that the
    library added since are not needed to evaluate it. Steps, blind size and training folder
    must match the request.
    """
    import ml_collections

    cfg_path, timing_path = workdir / "config.json", workdir / "timing.json"
    if not (cfg_path.exists() and timing_path.exists()):
        return None
    config = ml_collections.ConfigDict(json.loads(cfg_path.read_text()))
    for name in requested.stage_order:
        if not (workdir / "checkpoints" / name / str(config.stages[name].steps)).is_dir():
            return None
    for field in (
        "networks.bnn.blind_size",
        "dataset.noisy_dir",
        "seed",
        "crop_size",
        *(f"stages.{n}.steps" for n in requested.stage_order),
    ):
        a, b = config, requested
        for part in field.split("."):
            a, b = a[part], b[part]
        if field == "dataset.noisy_dir":  # same images (e.g. a copied run): fine
            a, b = _folder_content(a), _folder_content(b)
        if a != b:
            sys.exit(
                f"{workdir}: a finished run with {field} = {a!r}, requested {b!r}; "
                "use another --out"
            )
    config.stage_order = tuple(requested.stage_order)
    lib = workdir / "results.json"
    results = json.loads(lib.read_text()) if lib.exists() else {}
    return config, {"library_results": results, "timing": json.loads(timing_path.read_text())}


def _folder_content(folder: str) -> list[tuple[str, str]]:
    return sorted((p.name, str(p.resolve())) for p in Path(folder).iterdir())


def _item_dir(step_dir: Path) -> Path:
    found = sorted(p.parent for p in step_dir.rglob("_METADATA"))
    if not found:
        raise FileNotFoundError(f"no orbax item under {step_dir}")
    return min(found, key=lambda p: len(p.parts))


def load_params(workdir: Path, config) -> dict[str, Any]:
    """Final parameters of every network of a finished run (numpy pytrees)."""
    from sassid_jax.checkpoint_io import restore_local

    params = {}
    for name in config.stage_order:
        step_dir = workdir / "checkpoints" / name / str(config.stages[name].steps)
        params[name] = restore_local(_item_dir(step_dir))["params"][name]
    return params


# ----------------------------------------------------------------------------- baselines


def bm3d_denoise(noisy_u8, factor: float = 1.0) -> tuple[Any, float]:
    """BM3D (colour) with sigma estimated from the noisy image; output on [0, 255]."""
    import bm3d
    import numpy as np
    from skimage.restoration import estimate_sigma

    x = noisy_u8.astype(np.float64) / 255.0
    sigma = float(estimate_sigma(x, channel_axis=-1, average_sigmas=True))
    out = bm3d.bm3d_rgb(x, sigma * factor)
    return (np.asarray(out, np.float32) * 255.0), sigma * 255.0


# ----------------------------------------------------------------------------- SIDD part


def _score(clean, image) -> dict[str, float]:
    from sassid_jax import metrics

    s = metrics.evaluate_pairs([(clean, image)])
    return {"psnr": round(s["psnr"], 3), "ssim": round(s["ssim"], 4)}


def _upscale(img, k: int):
    import numpy as np

    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def run_sidd(args: argparse.Namespace) -> None:
    import jax
    import numpy as np
    from PIL import Image

    from sassid_jax import evaluate, metrics, train, visualize
    from sassid_jax.supervision import flatness_alpha

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    full = args.protocol == "full"
    steps = list(FULL_STEPS if full else SHORT_STEPS)
    for i, name in enumerate(STAGES):
        override = getattr(args, f"steps_{name}") or args.steps
        if override:
            steps[i] = override
    extra = full if args.extra is None else args.extra
    dirs = prepare_sidd_folders(out, extra)
    noisy = np.asarray(Image.open(SIDD_PAIR / "noisy.png").convert("RGB"))
    clean = np.asarray(Image.open(SIDD_PAIR / "gt.png").convert("RGB"))
    example = [{"noisy": noisy, "clean": clean, "name": "sidd_pair"}]

    rows: list[dict[str, Any]] = [{"method": "Noisy input", **_score(clean, noisy)}]
    images: dict[str, Any] = {"Noisy": noisy}
    bm3d_info = {}
    if not args.skip_bm3d:
        for factor in (1.0, 1.5):
            t = time.perf_counter()
            den, sigma = bm3d_denoise(noisy, factor)
            label = f"BM3D (sigma est. x{factor:g})"
            rows.append(
                {
                    "method": label,
                    **_score(clean, den),
                    "sigma_255": round(sigma * factor, 3),
                    "wall_s": round(time.perf_counter() - t, 1),
                }
            )
            images[label] = den
            bm3d_info[label] = rows[-1]

    runs: dict[str, Any] = {}
    alpha_img = None
    diagnostics: dict[str, Any] = {"noise_autocorrelation": noise_autocorrelation(noisy, clean)}
    for method in args.methods:
        for seed in args.seeds:
            config = make_config(method, tuple(steps), dirs, seed, args)
            workdir = out / "runs" / f"{method}_seed{seed}"
            print(
                f"\n=== {method} (b={METHODS[method]}) seed {seed}: steps {steps}, "
                f"train folder {dirs['noisy_dir']} ===",
                flush=True,
            )
            done = _finished(workdir, config)
            if done is not None:  # evaluate the finished run as it was trained
                print(f"{workdir}: finished earlier, not retraining", flush=True)
                config, info = done
            else:
                info = train_run(config, workdir, args.allow_config_change)
            params = load_params(workdir, config)
            nets = train.build_networks(config)
            outs = evaluate.predict_all(nets, params, example, bnn_block=config.eval.bnn_block)
            whole = evaluate.predict_all(nets, {"bnn": params["bnn"]}, example, bnn_block=0)
            scores = {name: _score(clean, outs[name][0]) for name in outs}
            scores["bnn_whole"] = _score(clean, whole["bnn"][0])
            diagnostics.setdefault("bnn_eval_size", {})[f"{method}_seed{seed}"] = (
                bnn_eval_size_sweep(nets, params["bnn"], example, whole["bnn"][0])
            )
            timing = info["timing"]["stages"]
            runs[f"{method}_seed{seed}"] = {
                "method": method,
                "blind_size": METHODS[method],
                "seed": seed,
                "scores": scores,
                "timing": timing,
                "config": json.loads(config.to_json_best_effort()),
                "loss_history": info["library_results"].get("loss_history"),
            }
            if seed == args.seeds[0]:
                lab = LABELS[method]
                images[lab["bnn"] + f" [{config.eval.bnn_block}-blocks]"] = outs["bnn"][0]
                images[lab["bnn"] + " [whole]"] = whole["bnn"][0]
                for name in ("lan", "unet"):
                    if name in outs:
                        images[lab[name]] = outs[name][0]
                if method != "bsn" and "lan" in outs:
                    diagnostics.setdefault("stage3_targets", {})[method] = stage3_targets(
                        clean, outs["bnn"][0], outs["lan"][0]
                    )
                if method == "sasl" and "lan" in outs:
                    alpha_img = np.asarray(
                        flatness_alpha(outs["bnn"][0][None], config.alpha.lower, config.alpha.upper)
                    )[0]
                    for name in outs:
                        Image.fromarray(metrics.quantize(outs[name][0]).astype(np.uint8)).save(
                            out / f"sidd_{method}_{name}.png"
                        )

    # Table rows for the networks: mean (and spread) over seeds.
    def add_row(method: str, key: str, label: str) -> None:
        vals = [
            r["scores"][key] for r in runs.values() if r["method"] == method and key in r["scores"]
        ]
        if not vals:
            return
        stage = "bnn" if key == "bnn_whole" else key
        t = [r["timing"].get(stage, {}) for r in runs.values() if r["method"] == method]
        row = {
            "method": label,
            "psnr": round(float(np.mean([v["psnr"] for v in vals])), 3),
            "ssim": round(float(np.mean([v["ssim"] for v in vals])), 4),
            "psnr_per_seed": [v["psnr"] for v in vals],
            "stage_wall_s": [x.get("wall_s") for x in t],
            "steps": [x.get("steps") for x in t],
            "steps_per_s": [x.get("steps_per_s") for x in t],
        }
        rows.append(row)

    for method in args.methods:
        lab = LABELS[method]
        add_row(method, "bnn", lab["bnn"] + f", {args.crop}-blocks")
        add_row(method, "bnn_whole", lab["bnn"] + ", whole 256")
        add_row(method, "lan", lab["lan"])
        add_row(method, "unet", lab["unet"])

    table = format_table(rows)
    print(
        "noise autocorrelation (analysis only, uses the ground truth):",
        json.dumps(diagnostics["noise_autocorrelation"]),
    )
    for key, val in diagnostics.get("bnn_eval_size", {}).items():
        print(f"BNN evaluation size sweep {key}: {val}")
    for method, targets in diagnostics.get("stage3_targets", {}).items():
        for key, val in targets.items():
            print(f"stage-3 target of {method}, thresholds {key}: {val}")
    print(
        f"\nSIDD pair (real noise, ground truth), protocol {args.protocol}:\n{table}\n", flush=True
    )
    (out / "table.txt").write_text(table + "\n")

    # The same crop of every method side by side (upscaled for visibility).
    y, x, size, k = args.crop_y, args.crop_x, args.crop_size, args.zoom
    cols = []
    for label, img in images.items():
        s = _score(clean, img)["psnr"]
        cols.append(
            (
                f"{label} {s:.2f} dB",
                _upscale(np.asarray(img, np.float32)[y : y + size, x : x + size], k),
            )
        )
    if alpha_img is not None:
        cols.append(
            (
                "alpha of BNN b=9 (white = texture)",
                _upscale(alpha_img[y : y + size, x : x + size], k),
            )
        )
    cols.append(("ground truth", _upscale(clean[y : y + size, x : x + size], k)))
    half = (len(cols) + 1) // 2
    visualize.save_panel(
        out / "panel_sidd.png",
        cols[:half],
        caption=f"SIDD pair crop y={y} x={x} {size}px x{k}, protocol {args.protocol} (1/2)",
    )
    visualize.save_panel(
        out / "panel_sidd_2.png", cols[half:], caption=f"(2/2) protocol {args.protocol}"
    )

    payload = {
        "protocol": args.protocol,
        "steps": steps,
        "extra_training_images": extra,
        "train_images": sorted(os.listdir(dirs["noisy_dir"])),
        "table": rows,
        "runs": runs,
        "bm3d": bm3d_info,
        "diagnostics": diagnostics,
        "command": " ".join(sys.argv),
        "library": _library_version(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
        },
    }
    evaluate.write_json(out / "results.json", payload)
    print(f"wrote {out / 'results.json'}, {out / 'panel_sidd.png'}", flush=True)


def noise_autocorrelation(noisy, clean, max_lag: int = 6) -> dict[str, list[float]]:
    """Normalised autocorrelation of the real noise (noisy - clean) at lags 0..max_lag.

    Analysis only (it reads the ground truth): how far the spatial correlation reaches,
    against the blind sizes (b = 1 hides lag 0 only; b = 9 hides lags up to 4).
    """
    import numpy as np

    n = noisy.astype(np.float64) - clean.astype(np.float64)
    n = n - n.mean(axis=(0, 1))
    var = np.mean(n * n)
    out = {}
    for axis, name in ((0, "vertical"), (1, "horizontal")):
        vals = []
        for lag in range(max_lag + 1):
            a = np.take(n, range(0, n.shape[axis] - lag), axis=axis)
            b = np.take(n, range(lag, n.shape[axis]), axis=axis)
            vals.append(round(float(np.mean(a * b) / var), 4))
        out[name] = vals
    return out


def _region_psnr(clean, image, mask) -> float:
    import numpy as np

    from sassid_jax.metrics import quantize

    d = quantize(np.asarray(image, np.float32)) - clean.astype(np.float32)
    return round(float(10 * np.log10(255.0**2 / np.mean(d[mask] ** 2))), 3)


def bnn_eval_size_sweep(nets, bnn_params, example, whole) -> dict[str, Any]:
    """Stage-1 PSNR when the BNN sees isolated 32/64/128 blocks or the whole 256 block, and
    the whole-block output's PSNR near the borders (<= 32 px from an edge) vs the centre.

    A BNN trained on 64x64 crops has only ever produced outputs whose receptive field ends
    at a zero-padded crop border less than 64 px away; on a whole 256 block most pixels are
    further than that from every border.
    """
    import numpy as np

    from sassid_jax import evaluate

    clean = example[0]["clean"]
    res: dict[str, Any] = {}
    for block in (32, 64, 128):
        out = evaluate.predict_all(nets, {"bnn": bnn_params}, example, bnn_block=block)
        res[f"blocks_{block}"] = _score(clean, out["bnn"][0])["psnr"]
    res["whole"] = _score(clean, whole)["psnr"]
    h, w = clean.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))
    res["whole_border_32px"] = _region_psnr(clean, whole, dist < 32)
    res["whole_centre_beyond_64px"] = _region_psnr(clean, whole, dist >= 64)
    out64 = evaluate.predict_all(nets, {"bnn": bnn_params}, example, bnn_block=64)
    res["blocks_64_centre_beyond_64px"] = _region_psnr(clean, out64["bnn"][0], dist >= 64)
    return res


def stage3_targets(clean, bnn, lan) -> dict[str, dict[str, float]]:
    """PSNR of what the U-Net is asked to reproduce, for several alpha thresholds.

    The stage-3 loss (1-a)|U-BNN| + a|U-LAN| is minimised per pixel by BNN where a < 0.5,
    LAN where a > 0.5 and anything between them where a = 0.5 ("hard" target, the midpoint
    there); "soft" is the blend (1-a) BNN + a LAN. No retraining: a diagnostic of the
    supervision the teachers give, on the SIDD pair (uses its ground truth).
    """
    import numpy as np

    from sassid_jax.supervision import flatness_alpha

    res = {}
    for lower, upper in ((1, 5), (0.5, 5), (2, 5), (1, 3), (1, 7)):
        a = np.asarray(flatness_alpha(bnn[None], lower, upper))[0]
        hard = np.where(a < 0.5, bnn, np.where(a > 0.5, lan, 0.5 * (bnn + lan)))
        soft = (1 - a) * bnn + a * lan
        res[f"{lower}/{upper}"] = {
            "hard_psnr": _score(clean, hard)["psnr"],
            "soft_psnr": _score(clean, soft)["psnr"],
            "frac_flat": round(float((a < 0.5).mean()), 3),
            "frac_texture": round(float((a > 0.5).mean()), 3),
        }
    return res


def _library_version() -> dict[str, str]:
    """Where sassid_jax was imported from, and its git commit / dirty state if known."""
    import subprocess

    import sassid_jax

    root = Path(sassid_jax.__file__).resolve().parents[1]
    info = {"path": str(root)}
    snap = root / "SNAPSHOT_OF"
    if snap.exists():  # a copy of the library outside git (see bench/REAL_NOISE.md)
        info["snapshot_of"] = snap.read_text().strip()
        return info
    for key, cmd in (
        ("commit", ["git", "rev-parse", "HEAD"]),
        ("dirty_files", ["git", "status", "--short", "--", "sassid_jax", "configs"]),
    ):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info[key] = subprocess.run(
                cmd, cwd=root, capture_output=True, text=True, timeout=20
            ).stdout.strip()
    return info


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'method':<34} {'PSNR dB':>8} {'SSIM':>7}  {'stage wall s':>12} {'steps':>6}",
        "-" * 74,
    ]
    for r in rows:
        wall = r.get("stage_wall_s") or ([r["wall_s"]] if "wall_s" in r else [])
        wall_s = "/".join(f"{w:.0f}" for w in wall if w is not None)
        steps = "/".join(str(s) for s in r.get("steps", []) if s is not None)
        lines.append(
            f"{r['method']:<34} {r['psnr']:>8.2f} {r['ssim']:>7.4f}  {wall_s:>12} {steps:>6}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- DND part


def flat_residual_std(image, mask) -> float:
    """Std of (image - its 7x7 local mean) over the masked pixels, all channels.

    In a flat region the signal is locally constant, so this high-pass residual is (nearly)
    all noise: for the noisy input it estimates the noise std (slightly low for correlated
    noise, part of which the 7x7 mean keeps), for a denoised image the noise left over.
    """
    import numpy as np
    from scipy.ndimage import uniform_filter

    x = np.asarray(image, np.float64)
    local = uniform_filter(x, size=(7, 7, 1), mode="reflect")
    r = (x - local)[mask]
    return float(np.sqrt(np.mean(r**2)))


def lowpass_bias(image, noisy, size: int = 15) -> float:
    """RMS difference between the size x size local means of an output and of its input.

    Noise is zero-mean, so a denoiser should keep the local mean: this measures colour
    casts and brightness shifts (for the clean SIDD image it is the residual of the real
    noise after a 15x15 mean, about 2 on the 0-255 scale).
    """
    import numpy as np
    from scipy.ndimage import uniform_filter

    a = uniform_filter(np.asarray(image, np.float64), size=(size, size, 1), mode="reflect")
    b = uniform_filter(np.asarray(noisy, np.float64), size=(size, size, 1), mode="reflect")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def run_dnd(args: argparse.Namespace) -> None:
    import jax
    import ml_collections
    import numpy as np
    from PIL import Image

    from sassid_jax import evaluate, metrics, train, visualize
    from sassid_jax.configuration import validate_config
    from sassid_jax.inference import jit_apply, predict_blocks, predict_image
    from sassid_jax.supervision import flatness_alpha

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.from_run).resolve()
    nets_by_method: dict[str, Any] = {}
    for method in args.methods:
        workdir = src / "runs" / f"{method}_seed{args.seeds[0]}"
        config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
        validate_config(config)
        if method in args.stage1_only:
            config.stage_order = ("bnn",)
        params = load_params(workdir, config)
        nets = train.build_networks(config)
        nets_by_method[method] = (config, {n: jit_apply(nets[n], params[n]) for n in params})
    if "sasl" not in nets_by_method:
        sys.exit("dnd needs the SASL run (its BNN defines the flat regions)")
    sasl_cfg, sasl = nets_by_method["sasl"]

    files = sorted(DND_NOISY.glob("*.png"))[: args.max_images or None]
    # The SIDD pair rides along as a sanity check of the measure (it has a ground truth);
    # it is reported separately and kept out of the DND means.
    jobs = [(p, None) for p in files] + [(SIDD_PAIR / "noisy.png", SIDD_PAIR / "gt.png")]
    masks_def = {
        "flat": "alpha < 0.5 (7x7 std of BNN output < alpha.lower)",
        "non_texture": "alpha <= 0.5 (7x7 std of BNN output <= alpha.upper)",
    }
    per_image, panels = [], set(args.dnd_panels)
    t0 = time.perf_counter()
    for i, (path, gt_path) in enumerate(jobs):
        name = "sidd_pair" if gt_path else path.stem
        noisy = np.asarray(Image.open(path).convert("RGB"))
        outs: dict[str, Any] = {"Noisy": noisy.astype(np.float32)}
        bnn = predict_blocks(sasl["bnn"], noisy, sasl_cfg.eval.bnn_block)
        alpha = np.asarray(flatness_alpha(bnn[None], sasl_cfg.alpha.lower, sasl_cfg.alpha.upper))[
            0, ..., 0
        ]
        masks = {"flat": alpha < 0.5, "non_texture": alpha <= 0.5}
        with_bm3d = not args.skip_bm3d and (gt_path or i < (args.bm3d_max or len(jobs)))
        if with_bm3d:
            outs["BM3D (sigma est.)"], sigma = bm3d_denoise(noisy)
        for method, (cfg, fns) in nets_by_method.items():
            lab = LABELS[method]
            outs[lab["bnn"]] = (
                bnn if method == "sasl" else predict_blocks(fns["bnn"], noisy, cfg.eval.bnn_block)
            )
            for net in ("lan", "unet"):
                if net in fns:
                    outs[lab[net]] = predict_image(fns[net], noisy)
        if gt_path:
            outs["Ground truth"] = np.asarray(Image.open(gt_path).convert("RGB"), np.float32)
        q = {k: metrics.quantize(v) for k, v in outs.items()}
        rec: dict[str, Any] = {"name": name}
        rec["lowpass_bias"] = {
            k: round(lowpass_bias(v, noisy), 3) for k, v in q.items() if k != "Noisy"
        }
        for mname, mask in masks.items():
            rec[f"{mname}_fraction"] = round(float(mask.mean()), 4)
            if mask.sum() >= 100:
                rec[f"{mname}_residual_std"] = {
                    k: round(flat_residual_std(v, mask), 3) for k, v in q.items()
                }
        if with_bm3d:
            rec["bm3d_sigma_255"] = round(sigma, 3)
        per_image.append(rec)
        print(
            f"[{i + 1}/{len(jobs)}] {name} flat {rec['flat_fraction']:.3f} "
            + " ".join(f"{k}={v:.2f}" for k, v in rec.get("flat_residual_std", {}).items()),
            flush=True,
        )
        if gt_path or name in panels or i < args.dnd_num_panels:
            cols = [(k, q[k]) for k in q] + [("alpha of BNN (white = texture)", alpha)]
            half = (len(cols) + 1) // 2
            visualize.save_panel(out / f"dnd_{name}_1.png", cols[:half], caption=path.name)
            visualize.save_panel(out / f"dnd_{name}_2.png", cols[half:], caption=path.name)
            Image.fromarray(q[LABELS["sasl"]["unet"]].astype(np.uint8)).save(
                out / f"dnd_{name}_sasl_unet.png"
            )
    dnd = [r for r in per_image if r["name"] != "sidd_pair"]
    summary: dict[str, Any] = {}
    lines = []
    for mname in masks_def:
        key = f"{mname}_residual_std"
        with_std = [r for r in dnd if key in r]
        methods = list(dict.fromkeys(k for r in with_std for k in r[key]))
        summary[mname] = {
            "num_crops": len(with_std),
            "mean_fraction": round(float(np.mean([r[f"{mname}_fraction"] for r in dnd])), 4),
            "residual_std": {
                k: round(float(np.mean([r[key][k] for r in with_std if k in r[key]])), 3)
                for k in methods
            },
            "num_crops_per_method": {k: sum(k in r[key] for r in with_std) for k in methods},
        }
        sidd = per_image[-1].get(key, {})
        lines += [
            f"{mname}: {masks_def[mname]}; {len(with_std)}/{len(dnd)} DND crops with "
            f">= 100 such pixels, mean fraction {summary[mname]['mean_fraction']:.3f}",
            f"{'method':<28} {'DND mean':>9} {'crops':>6} {'SIDD pair':>10}",
            "-" * 56,
        ]
        lines += [
            f"{k:<28} {v:>9.2f} {summary[mname]['num_crops_per_method'][k]:>6} "
            f"{sidd.get(k, float('nan')):>10.2f}"
            for k, v in summary[mname]["residual_std"].items()
        ]
        if "Ground truth" in sidd:
            lines.append(f"{'Ground truth':<28} {'':>9} {sidd['Ground truth']:>10.2f}")
        lines.append("")
    with_bias = [r["lowpass_bias"] for r in dnd]
    bias_methods = list(dict.fromkeys(k for r in with_bias for k in r))
    summary["lowpass_bias"] = {
        k: round(float(np.mean([r[k] for r in with_bias if k in r])), 3) for k in bias_methods
    }
    lines += [
        "lowpass bias: RMS of (15x15 mean of output - 15x15 mean of noisy input), "
        "all pixels (colour casts / brightness shifts)",
        f"{'method':<28} {'DND mean':>9} {'SIDD pair':>10}",
        "-" * 49,
    ]
    sidd_bias = per_image[-1]["lowpass_bias"]
    lines += [
        f"{k:<28} {v:>9.2f} {sidd_bias.get(k, float('nan')):>10.2f}"
        for k, v in summary["lowpass_bias"].items()
    ]
    if "Ground truth" in sidd_bias:
        lines.append(f"{'Ground truth':<28} {'':>9} {sidd_bias['Ground truth']:>10.2f}")
    table = "\n".join(lines)
    print(f"\nResidual std (image minus its 7x7 local mean, 0-255 scale):\n{table}")
    (out / "table_dnd.txt").write_text(table + "\n")
    evaluate.write_json(
        out / "results_dnd.json",
        {
            "from_run": str(src),
            "summary": summary,
            "per_image": per_image,
            "mask_definitions": masks_def,
            "wall_s": round(time.perf_counter() - t0, 1),
            "command": " ".join(sys.argv),
            "devices": [str(d) for d in jax.devices()],
        },
    )


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "part",
        choices=("sidd", "dnd", "timing"),
        help="timing: rebuild --workdir's timing.json from --log",
    )
    p.add_argument("--log", default="")
    p.add_argument("--workdir", default="")
    p.add_argument(
        "--stage1-only",
        nargs="*",
        default=[],
        choices=tuple(METHODS),
        help="methods trained (or evaluated) for stage 1 only",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a workdir made with another config (e.g. other LAN/U-Net "
        "steps after a finished BNN stage)",
    )
    p.add_argument("--out", default=str(REPO / "scratch" / "quality_real"))
    p.add_argument("--protocol", choices=("short", "full"), default="short")
    p.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(DEFAULT_METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=0, help="steps of every stage (0: protocol's)")
    for name in STAGES:
        p.add_argument(f"--steps-{name}", type=int, default=0)
    p.add_argument(
        "--extra",
        dest="extra",
        action="store_true",
        default=None,
        help="add the four SIDD noisy blocks to training (default: full only)",
    )
    p.add_argument("--no-extra", dest="extra", action="store_false")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also score on the SIDD pair every N steps (convergence curve)",
    )
    p.add_argument("--skip-bm3d", action="store_true")
    p.add_argument("--crop-y", type=int, default=64)
    p.add_argument("--crop-x", type=int, default=64)
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--zoom", type=int, default=2)
    p.add_argument("--from-run", default="", help="dnd: a sidd --out folder to take nets from")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--dnd-num-panels", type=int, default=3)
    p.add_argument(
        "--bm3d-max",
        type=int,
        default=0,
        help="dnd: BM3D on the first N crops only (0: all); it is the slow part",
    )
    p.add_argument("--dnd-panels", nargs="*", default=[])
    p.add_argument(
        "--shared",
        default=str(SHARED),
        help="the shared data folder (sidd_pair/, sidd_noisy/, dnd_noisy/)",
    )
    args = p.parse_args(argv)
    _data_paths(Path(args.shared).resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    for noisy in ("absl", "orbax", "jax", "tensorflow", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.part == "timing":
        timing_from_log(Path(args.log), Path(args.workdir))
    elif args.part == "sidd":
        run_sidd(args)
    else:
        if not args.from_run:
            p.error("dnd needs --from-run (a sidd --out folder)")
        run_dnd(args)


if __name__ == "__main__":
    main()
