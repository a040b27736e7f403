"""Own-photos bench: the self-tuning recipe against the former one, on four photo sets.

  python -m bench.own_photos --sets mild,main,sidd,dnd --variants before,after \
      --out scratch/own_photos            # trains what is missing, then writes the table
  python -m bench.own_photos --out scratch/own_photos --table_only

Sets (no ground truth is used for any choice; clean references only score the results):
- mild: simulated mild noise from ONE simulated camera (`data.noise`, the simulator's default
  shot range, noisy ~20-35 dB): the seven training photos of the embedded dataset, three noisy
  realisations each (21 photos), evaluated on the four held-out crops of chelsea and coffee
  (never trained on) at four log-spaced noise levels of that range;
- main: the main job, `configs/default.py` on the embedded dataset (heavy SIDD-like simulator);
- sidd: the five real SIDD blocks of ../shared/data (the pair's noisy block and the four noisy
  blocks) through `configs/own_photos.py`, scored on the pair;
- dnd: the 34 real DND crops (no ground truth): the estimate of the gain only, and panels.
Variants: "after" = the configs as they are (blind size "auto", held-out model selection,
colour anchoring, safeguard); "before" = the former recipe (blind size 9, no selection, raw
outputs), same steps.

Each run is `launch.py` in a child process (<out>/runs/<set>_<variant>/, resumable: a finished
run is read, not retrained); its wall time is measured around the child. Writes
<out>/own_photos.md (table) and bench/results/own_photos-<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import common

SETS = ("mild", "main", "sidd", "dnd")
VARIANTS = ("before", "after")
BEFORE = (
    "--config.networks.bnn.blind_size=9",
    "--config.postprocess.colour_sigma=0",
    "--config.selection.enabled=False",
    "--config.postprocess.safeguard=off",
)
LABELS = {"noisy": "noisy", "bnn": "BNN", "lan": "LAN", "unet": "U-Net"}


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def make_mild(folder: Path) -> Path:
    """Write the mild set (train/, eval_noisy/, eval_clean/ PNGs) into folder; returns it."""
    from sassid_jax.data import embedded
    from sassid_jax.noise import simulator

    if (folder / "done").exists():
        return folder
    mild = simulator.NoiseRange()  # the simulator's own (mild) range
    camera = simulator.sample_noise_params(np.random.default_rng(embedded.CAMERA_SEED), mild)
    lo, hi = mild.shot

    def noisy_of(name: str, clean: np.ndarray, shot: float | None) -> np.ndarray:
        rng = np.random.default_rng(embedded._seed("mild/" + name))
        if shot is None:
            shot = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        read = float(np.exp(mild.read_slope * np.log(shot) + mild.read_intercept))
        params = dataclasses.replace(camera, shot=shot, read=read)
        return simulator.simulate_camera_noise(clean, rng, params)[0]

    for photo in embedded.TRAIN_PHOTOS:
        clean = embedded.load_photo(photo)
        for r in range(embedded.TRAIN_REALISATIONS):
            _write_png(folder / "train" / f"{photo}_{r}.png", noisy_of(f"{photo}_{r}", clean, None))
    levels = np.exp(np.linspace(np.log(lo), np.log(hi), len(embedded.TEST_CROPS)))
    for i, (photo, top, left, height, width, level) in enumerate(embedded.TEST_CROPS):
        crop = np.ascontiguousarray(
            embedded.load_photo(photo)[top : top + height, left : left + width]
        )
        name = f"{photo}_crop{i}.png"
        _write_png(folder / "eval_clean" / name, crop)
        _write_png(folder / "eval_noisy" / name, noisy_of(name, crop, float(levels[level])))
    (folder / "done").write_text("")
    return folder


def _link_folder(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def run_args(name: str, out: Path, shared: Path) -> list[str]:
    """The launch.py config arguments of set `name`."""
    if name == "main":
        return ["--config=configs/default.py"]
    base = ["--config=configs/own_photos.py", "--config.dataset.name=image_folder"]
    if name == "mild":
        data = make_mild(out / "data" / "mild")
        return base + [
            f"--config.dataset.noisy_dir={data / 'train'}",
            f"--config.dataset.eval_noisy_dir={data / 'eval_noisy'}",
            f"--config.dataset.eval_clean_dir={data / 'eval_clean'}",
        ]
    if name == "sidd":
        pair, data = shared / "sidd_pair", out / "data" / "sidd"
        blocks = [pair / "noisy.png", *sorted((shared / "sidd_noisy").glob("*.png"))]
        train = _link_folder(data / "train", blocks)
        eval_noisy = _link_folder(data / "eval_noisy", [pair / "noisy.png"])
        eval_clean = data / "eval_clean"
        eval_clean.mkdir(parents=True, exist_ok=True)
        if not (eval_clean / "noisy.png").exists():  # the reference under the noisy's name
            (eval_clean / "noisy.png").symlink_to((pair / "gt.png").resolve())
        return base + [
            f"--config.dataset.noisy_dir={train}",
            f"--config.dataset.eval_noisy_dir={eval_noisy}",
            f"--config.dataset.eval_clean_dir={eval_clean}",
        ]
    if name == "dnd":
        train = _link_folder(out / "data" / "dnd", sorted((shared / "dnd_noisy").glob("*.png")))
        return base + [f"--config.dataset.noisy_dir={train}", "--config.eval.max_images=8"]
    raise ValueError(f"unknown set {name!r}; known: {SETS}")


def train(name: str, variant: str, out: Path, shared: Path, extra: list[str]) -> dict[str, Any]:
    """Train (or read) one run; {"results": results.json, "wall_seconds": ...}."""
    args = [*run_args(name, out, shared), *(BEFORE if variant == "before" else ()), *extra]
    workdir = out / "runs" / f"{name}_{variant}"
    return common.launch_run(args, workdir, out / f"{name}_{variant}.log")


def _excess_shift(per_image: dict[str, Any], network: str) -> float | None:
    """max over images and channels of |shift(network)| - |shift(noisy)| (levels)."""
    values = [
        abs(n) - abs(x)
        for scores in per_image.values()
        if network in scores and "colour_shift" in scores[network]
        for n, x in zip(
            scores[network]["colour_shift"], scores["noisy"]["colour_shift"], strict=True
        )
    ]
    return max(values) if values else None


def row(name: str, variant: str, record: dict[str, Any]) -> list[str]:
    res = record["results"]
    table = res.get("table", {})
    cells = [name, variant]
    for net in ("noisy", "bnn", "lan", "unet"):
        cells.append(f"{table[net]['psnr']:.2f}" if net in table else "-")
    shift = _excess_shift(res.get("per_image", {}), "unet")
    cells.append("-" if shift is None else f"{shift:+.1f}")
    estimate = res.get("quality_estimate", {}).get("unet", {})
    cells.append(f"{estimate['gain_db']:+.2f}" if "gain_db" in estimate else "-")
    cells.append(f"{record['wall_seconds'] / 60:.1f}")
    return cells


HEADER = (
    "set",
    "variant",
    "noisy dB",
    "BNN",
    "LAN",
    "U-Net",
    "U-Net excess |shift|",
    "est. U-Net gain dB",
    "wall min",
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("scratch/own_photos"))
    p.add_argument("--shared", type=Path, default=common.REPO.parent / "shared" / "data")
    p.add_argument("--table_only", action="store_true")
    p.add_argument("--extra", action="append", default=[], help="more --config.* overrides")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = common.timestamp()
    rows, records = [], {}
    for name in args.sets.split(","):
        for variant in args.variants.split(","):
            done = out / "runs" / f"{name}_{variant}" / "bench_run.json"
            if args.table_only and not done.exists():
                continue
            record = train(name, variant, out, args.shared.resolve(), args.extra)
            records[f"{name}_{variant}"] = record
            rows.append(row(name, variant, record))
    table = common.markdown_table(HEADER, rows)
    print(table)
    common.write_text(out / "own_photos.md", table + "\n")
    path = common.write_record(
        common.record_path("own_photos", started),
        {"started": started, "machine": common.machine_info(), "table": rows, "runs": records},
    )
    print(f"wrote {out / 'own_photos.md'} and {path}", file=sys.stderr)


if __name__ == "__main__":
    common.on_path()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
