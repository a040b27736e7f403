"""SASL against its peers on equal terms: same data, step budget, seed and evaluation protocol.

  python -m bench.compare [--methods sasl,blind_spot,atbsn,atbsn_d,apbsn] [--steps 100]
      [--data embedded|sidd] [--noisy_dir DIR --clean_dir DIR] [--seed 0] [--out DIR]

Each method is its config (configs/<method>.py) trained by launch.py in a child process
(<out>/runs/<method>/, resumable: a finished run is read, not retrained) with every stage at
`--steps` steps (a step schedule's decay_every scaled alike: `stage_overrides`) and the one
protocol: the run's final report on the same evaluation photos,
each method's test-time procedure (config.inference), raw outputs (no colour anchor, no
safeguard: --config.postprocess.colour_sigma=0, safeguard=off). Then, in this process: the
test network's parameter count, one train step of each stage (median ms, after compilation)
and the test-time procedure's ms per megapixel on a 256x256 image. Writes <out>/compare.md
(table), <out>/compare.json and <out>/compare_panels.png (the same crop of each method's output
side by side). Data: the embedded default, the real SIDD block pair (../shared/data/sidd_pair:
noisy.png trained on and scored against gt.png) or any folder pair. TBSN and TBSN(D)
(--methods ...,tbsn,tbsn_d) are opt-in, not in the default list: their CPU recipe is a reduced
TBSN (configs/tbsn.py), tested with PD 2 + R3 (9 full-resolution passes), and TBSN(D) first
precomputes its teacher's target on every training photo (minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common

# method -> (config file, table label)
METHODS = {
    "sasl": ("configs/default.py", "SASL"),
    "blind_spot": ("configs/blind_spot.py", "SASL, blind spot b = 1"),
    "atbsn": ("configs/atbsn.py", "AT-BSN"),
    "atbsn_d": ("configs/atbsn_distill.py", "AT-BSN(D)"),
    "apbsn": ("configs/apbsn.py", "AP-BSN"),
    "tbsn": ("configs/tbsn.py", "TBSN"),
    "tbsn_d": ("configs/tbsn_distill.py", "TBSN(D)"),
}
# --methods without the option; TBSN and TBSN(D) are opt-in (a reduced TBSN, slower runs)
DEFAULT_METHODS = ("sasl", "blind_spot", "atbsn", "atbsn_d", "apbsn")
PROTOCOL = ("--config.postprocess.colour_sigma=0", "--config.postprocess.safeguard=off")
HEADER = (
    "method",
    "PSNR dB",
    "SSIM",
    "|shift| R/G/B",
    "parameters",
    "train step ms (per stage)",
    "inference ms/MP",
    "wall s",
)
TIMING_SIDE = 256  # inference timing image: TIMING_SIDE x TIMING_SIDE
PANEL_CROP = 128


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve())


def data_args(data: str, noisy_dir: str, clean_dir: str, shared: Path, out: Path) -> list[str]:
    """The launch.py dataset overrides of the chosen data.

    Args:
      data: "embedded" or "sidd" (ignored when noisy_dir is given).
      noisy_dir, clean_dir: a folder pair of noisy photos and their references (same names).
      shared: ../shared/data (sidd_pair/noisy.png and gt.png).
      out: the bench folder (the SIDD pair's links go into out/data).
    Returns:
      --config.dataset.* arguments ([] for the embedded default).
    """
    if noisy_dir:
        pair = (Path(noisy_dir), Path(clean_dir) if clean_dir else None)
    elif data == "sidd":
        folder = out / "data" / "sidd"
        _link(shared / "sidd_pair" / "noisy.png", folder / "noisy" / "noisy.png")
        _link(shared / "sidd_pair" / "gt.png", folder / "clean" / "noisy.png")
        pair = (folder / "noisy", folder / "clean")
    elif data == "embedded":
        return []
    else:
        raise ValueError(f"--data {data!r}: expected embedded or sidd")
    args = ["--config.dataset.name=image_folder", f"--config.dataset.noisy_dir={pair[0]}"]
    return args + ([f"--config.dataset.clean_dir={pair[1]}"] if pair[1] else [])


def train(method: str, args: list[str], out: Path) -> dict[str, Any]:
    """Train (or read) one method's run; {"results", "wall_seconds", "command"}."""
    config = common.REPO / METHODS[method][0]
    workdir = out / "runs" / method
    return common.launch_run([f"--config={config}", *args], workdir, out / "logs" / f"{method}.log")


def stage_overrides(stage: Any, steps: int) -> dict[str, int]:
    """One stage's fields at a budget of `steps`, its learning-rate schedule scaled with it.

    The cosine schedule spans the stage's steps by itself; a step schedule's boundaries
    (x decay every decay_every steps: TBSN's x0.1 at 40% and 80%) keep their fraction of the
    steps: decay_every * steps / the config's steps, rounded, at least 1. decay_every is
    scaled wherever the config has it, so that --extra=--config.stages.X.schedule=step (AP-BSN's
    published shape) decays at the budget's fractions too.

    Args:
      stage: the config's stages.<name> (steps, optionally decay_every).
      steps: the budget.
    Returns:
      {"steps": steps} and, where the stage has one, {"decay_every": the scaled interval}.
    """
    fields = {"steps": steps}
    if stage.get("decay_every"):
        fields["decay_every"] = max(1, round(stage.decay_every * steps / stage.steps))
    return fields


def stage_args(method: str, steps: int) -> list[str]:
    """--config.stages.<stage>.<field>=value for every stage of the method's config at a
    budget of `steps` steps (`stage_overrides`).

    Args:
      method: a key of METHODS.
      steps: the budget of every stage.
    Returns:
      launch.py arguments.
    """
    config = _config(method)
    return [
        f"--config.stages.{name}.{field}={value}"
        for name in config.stage_order
        for field, value in stage_overrides(config.stages[name], steps).items()
    ]


def _config(method: str) -> Any:
    import importlib

    name = Path(METHODS[method][0]).stem
    return importlib.import_module(f"sassid_jax.configs.{name}").get_config()


def _median_ms(fn, repeats: int) -> float:
    fn()  # compile
    times = common.repeat(fn, repeats)
    return 1000 * float(np.median(times))


def teachers_mode(config: Any, stage: Any) -> str:
    """How the run trains `stage`'s teachers: config.train.teachers ("online" by default),
    "online" for a stage without teachers.

    Args:
      config: the run's config.
      stage: one of its `train_step.build_stages`.
    Returns:
      "online" or "precomputed".
    """
    mode = config.train.get("teachers", "online")
    return mode if stage.teachers else "online"


def step_batch(config: Any, stage: Any, seed: int = 0) -> np.ndarray:
    """A random batch of the run's batch and crop size, as `stage`'s train step takes it:
    (N, crop, crop, 3), with the 3 channels of each teacher's output appended where the run
    precomputes them (`teachers_mode`; teacher_cache.split_batch).

    Args:
      config: the run's config.
      stage: one of its `train_step.build_stages`.
      seed: the numpy seed.
    Returns:
      float32 on [0, 255].
    """
    channels = 3 * (1 + len(stage.teachers) * (teachers_mode(config, stage) == "precomputed"))
    shape = (config.batch_size, config.crop_size, config.crop_size, channels)
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def train_step_ms(workdir: Path, repeats: int = 3) -> list[float]:
    """Median ms of one train step of each stage of the run in `workdir` (its config, random
    batches of its crop and batch size, fresh parameters: the cost, not the result). Teachers
    run as the run trains them: online (forward in every step, random parameters) or
    precomputed (their outputs in the batch: `step_batch`, TBSN(D)'s distillation)."""
    import jax

    from sassid_jax.io import checkpoints
    from sassid_jax.training import sharding, train_step

    config = _config_of(workdir, checkpoints)
    mesh = sharding.make_mesh()
    networks = train_step.build_networks(config)
    out = []
    for i, stage in enumerate(train_step.build_stages(config)):
        key, mode = jax.random.key(i), teachers_mode(config, stage)
        x = sharding.global_batch(step_batch(config, stage), sharding.batch_sharding(mesh))
        teachers = {
            t: networks[t].init(jax.random.fold_in(key, 99), x[:1])["params"]
            for t in stage.teachers
            if mode == "online"
        }
        tx = train_step.make_optimizer(config, stage.name)
        step = train_step.make_train_step(networks, stage, tx, mesh, mode)
        # replicated, as train.py starts a stage: an uncommitted state would make the second
        # call compile again (its output is replicated), and one repeat would time that
        fresh = train_step.init_state(networks, stage, tx, key, config.crop_size)
        state = [sharding.replicate(fresh, mesh)]

        def run(state=state, step=step, teachers=teachers, x=x) -> None:
            state[0], metrics = step(state[0], teachers, x, True)
            jax.block_until_ready(metrics)

        out.append(_median_ms(run, repeats))
    return out


def _config_of(workdir: Path, checkpoints: Any) -> Any:
    import ml_collections

    return ml_collections.ConfigDict(checkpoints.read_run_config(workdir))


def test_network(workdir: Path) -> tuple[Any, Any, Any, Any]:
    """(config, module, params, procedure) of the run's test-time network."""
    from sassid_jax.inference import procedure
    from sassid_jax.io import checkpoints

    config = _config_of(workdir, checkpoints)
    module, params = checkpoints.load_network(workdir, config.eval.network)
    return config, module, params, procedure.from_config(config)


def inference_ms_per_mp(module: Any, params: Any, proc: Any, repeats: int = 3) -> float:
    """Median ms per megapixel of the test-time procedure on one TIMING_SIDE^2 image."""
    import jax

    from sassid_jax.inference.procedure import jit_procedure

    fn = jit_procedure(module, params, proc)
    x = np.random.default_rng(1).uniform(0, 255, (1, TIMING_SIDE, TIMING_SIDE, 3))
    x = x.astype(np.float32)
    ms = _median_ms(lambda: jax.block_until_ready(fn(x)), repeats)
    return ms / (TIMING_SIDE * TIMING_SIDE / 1e6)


def parameter_count(params: Any) -> int:
    """How many numbers the parameters hold."""
    import jax

    return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def panels(runs: dict[str, Path], path: Path) -> Path:
    """noisy | each method | clean on the same PANEL_CROP crop of the first evaluation photo,
    each output as the final report makes it (a BNN on eval.bnn_block blocks)."""
    from sassid_jax.data import sources
    from sassid_jax.evaluation import panels as panel_lib
    from sassid_jax.evaluation.metrics import psnr, quantize
    from sassid_jax.inference.predict import predict_blocks, predict_image
    from sassid_jax.inference.procedure import jit_procedure

    first = next(iter(runs.values()))
    config, *_ = test_network(first)
    example = sources.load_eval_examples(config.dataset)[0]
    h, w = example["noisy"].shape[:2]
    top, left = (h - min(h, PANEL_CROP)) // 2, (w - min(w, PANEL_CROP)) // 2
    window = (slice(top, top + PANEL_CROP), slice(left, left + PANEL_CROP))
    clean = example["clean"]

    def label(name: str, image: np.ndarray) -> str:
        return (
            name
            if clean is None
            else f"{name} {float(np.mean(psnr(clean, quantize(image)))):.2f} dB"
        )

    columns = [(label("noisy", example["noisy"]), example["noisy"][window])]
    for method, workdir in runs.items():
        run_config, module, params, proc = test_network(workdir)
        fn, block = jit_procedure(module, params, proc), run_config.eval.bnn_block
        if run_config.eval.network == "bnn" and block:  # as the final report scores a BNN
            out = predict_blocks(fn, example["noisy"], block)
        else:
            out = predict_image(fn, example["noisy"])
        columns.append((label(METHODS[method][1], out), quantize(out)[window]))
    if clean is not None:
        columns.append(("clean", clean[window]))
    caption = f"{example['name']}, crop {PANEL_CROP} px at ({top}, {left}); PSNR of the whole image"
    image, _ = panel_lib.render_panel(columns, caption=caption)
    panel_lib.write_png(path, image)
    return path


def row(method: str, record: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """One table row: the test network's scores from the run's final report, and `extra`."""
    table = record["results"].get("table", {})
    scores = table.get(extra["network"])
    if scores is None:
        cells = ["-", "-", "-"]
    else:
        shift = "/".join(f"{v:.1f}" for v in scores["colour_shift_abs"])
        cells = [f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}", shift]
    return [
        METHODS[method][1],
        *cells,
        f"{extra['parameters']:,}",
        " / ".join(f"{ms:.0f}" for ms in extra["train_step_ms"]),
        f"{extra['inference_ms_per_mp']:.0f}",
        f"{record['wall_seconds']:.0f}",
    ]


def noisy_row(records: dict[str, Any]) -> list[str] | None:
    """The noisy input's row (the same photos for every method)."""
    for record in records.values():
        noisy = record["results"].get("table", {}).get("noisy")
        if noisy:
            shift = "/".join(f"{v:.1f}" for v in noisy["colour_shift_abs"])
            return ["noisy input", f"{noisy['psnr']:.2f}", f"{noisy['ssim']:.4f}", shift]
    return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the options, train what is missing, write the table, JSON and panels."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, of {', '.join(METHODS)} (default: %(default)s); tbsn and "
        "tbsn_d are opt-in: a reduced TBSN on CPU, tested with PD 2 + R3, and TBSN(D) "
        "precomputes its teacher's target on every training photo first (slower runs)",
    )
    p.add_argument(
        "--steps", type=int, default=100, help="steps of every stage (step schedules scaled alike)"
    )
    p.add_argument("--data", default="embedded", help="embedded or sidd (the real block pair)")
    p.add_argument("--noisy_dir", default="", help="a folder of noisy photos (instead of --data)")
    p.add_argument("--clean_dir", default="", help="their clean references (same names)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=common.RESULTS / "compare")
    p.add_argument("--shared", type=Path, default=common.REPO.parent / "shared" / "data")
    p.add_argument("--extra", action="append", default=[], help="more --config.* overrides")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; known: {list(METHODS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = common.timestamp(), time.perf_counter()
    data = data_args(args.data, args.noisy_dir, args.clean_dir, args.shared.resolve(), out)
    records, extras, rows = {}, {}, []
    for method in methods:
        run_args = [
            *data,
            *stage_args(method, args.steps),
            f"--config.seed={args.seed}",
            *PROTOCOL,
            *args.extra,
        ]
        records[method] = train(method, run_args, out)
        workdir = out / "runs" / method
        config, module, params, proc = test_network(workdir)
        extras[method] = {
            "network": config.eval.network,
            "architecture": module.__class__.__name__,
            "parameters": parameter_count(params),
            "train_step_ms": train_step_ms(workdir, args.repeats),
            "inference_ms_per_mp": inference_ms_per_mp(module, params, proc, args.repeats),
            "procedure": proc.__dict__,
        }
        rows.append(row(method, records[method], extras[method]))
    noisy = noisy_row(records)
    if noisy:
        rows.insert(0, noisy + ["-"] * (len(HEADER) - len(noisy)))
    table = common.markdown_table(HEADER, rows)
    panel = panels({m: out / "runs" / m for m in methods}, out / "compare_panels.png")
    print(table)
    common.write_text(out / "compare.md", table + "\n")
    payload = {
        "started": started,
        "seconds": time.perf_counter() - t0,
        "options": {k: str(v) for k, v in vars(args).items()},
        "machine": common.machine_info(),
        "header": list(HEADER),
        "table": rows,
        "methods": {m: {**records[m], **extras[m]} for m in methods},
        "panels": str(panel),
    }
    common.write_record(out / "compare.json", payload)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {panel}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    common.on_path()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
