"""The training runs of the real-noise bench: data folders, run configs, timing, resuming.

Each (method, seed) is one library run (`train.train_and_evaluate`) in
<out>/runs/<method>_seed<seed>/. Stage times come from the library's results["timing"] and
are kept in the run's timing.json, stage by stage, from the call that trained the stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_collections

from bench import common

STAGES = ("bnn", "lan", "unet")
METHODS = {"sasl": 9, "bsn": 1, "sasl_b5": 5}  # method -> BNN blind size
LABELS = {
    "sasl": {"bnn": "BNN b=9 (stage 1)", "lan": "LAN (stage 2 of SASL)", "unet": "SASL U-Net"},
    "sasl_b5": {"bnn": "BNN b=5 (stage 1)", "lan": "b=5 -> LAN", "unet": "SASL b=5 U-Net"},
    "bsn": {"bnn": "BSN b=1 (stage 1)", "lan": "BSN b=1 -> LAN", "unet": "BSN b=1 -> U-Net"},
}
EVAL_NAME = "sidd_pair.png"


@dataclasses.dataclass(frozen=True)
class SharedData:
    """The shared data folder: the SIDD pair, four SIDD noisy blocks, the DND crops."""

    root: Path

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> SharedData:
        return cls(Path(cfg.shared or common.REPO.parent / "shared" / "data").resolve())

    @property
    def pair(self) -> Path:
        return self.root / "sidd_pair"

    @property
    def sidd_noisy(self) -> Path:
        return self.root / "sidd_noisy"

    @property
    def dnd_noisy(self) -> Path:
        return self.root / "dnd_noisy"


def names(field: str) -> list[str]:
    """A comma-separated config field as a list (empty entries dropped)."""
    return [v.strip() for v in str(field).split(",") if v.strip()]


def check_methods(cfg: ml_collections.ConfigDict) -> None:
    for field in ("methods", "stage1_only"):
        bad = [m for m in names(cfg[field]) if m not in METHODS]
        if bad:
            sys.exit(f"config.{field}: unknown methods {bad}; known: {', '.join(METHODS)}")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.symlink_to(src.resolve())


def prepare_sidd_folders(out: Path, data: SharedData, with_extra: bool) -> dict[str, str]:
    """Symlink folders: training noisy images, eval noisy / eval clean (same file name)."""
    for f in (data.pair / "noisy.png", data.pair / "gt.png"):
        if not f.exists():
            sys.exit(f"missing {f}: this bench needs the shared data (config.shared)")
    folders = out / "data"
    train = folders / ("train_pair_plus_sidd_noisy" if with_extra else "train_pair_only")
    _link(data.pair / "noisy.png", train / EVAL_NAME)
    if with_extra:
        for p in sorted(data.sidd_noisy.glob("*.png")):
            _link(p, train / f"sidd_noisy_{p.name}")
    _link(data.pair / "noisy.png", folders / "eval_noisy" / EVAL_NAME)
    _link(data.pair / "gt.png", folders / "eval_clean" / EVAL_NAME)
    return {
        "noisy_dir": str(train),
        "eval_noisy_dir": str(folders / "eval_noisy"),
        "eval_clean_dir": str(folders / "eval_clean"),
    }


def run_config(
    cfg: ml_collections.ConfigDict, method: str, seed: int, dirs: dict[str, str]
) -> ml_collections.ConfigDict:
    """The library config of one run: the protocol's `run` with this run's folders, seed,
    BNN blind size and (for stage1_only methods) stage order."""
    c = ml_collections.ConfigDict(cfg.run.to_dict())
    c.seed = seed
    for key, folder in dirs.items():
        c.dataset[key] = folder
    c.networks.bnn.blind_size = METHODS[method]
    if method in names(cfg.stage1_only):
        c.stage_order = ("bnn",)
    return c


def trained_networks(config: ml_collections.ConfigDict) -> list[str]:
    """Networks learnt by the stages of config.stage_order, in STAGES order."""
    learnt = {n for s in config.stage_order for n in config.stages[s].learners}
    return [n for n in STAGES if n in learnt]


def load_params(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Final parameters (numpy pytrees) of every network the run trained."""
    from sassid_jax.io import checkpoints

    return {n: checkpoints.final_params(workdir, n) for n in trained_networks(config)}


def eval_curve(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, list]:
    """{stage: [(step in stage, network, PSNR)]}: the `eval/<net>_psnr` scalars the library
    wrote to TensorBoard (at train.eval_every and at each stage's end)."""
    import tensorflow as tf

    offsets, start = {}, 0
    for s in config.stage_order:
        offsets[s] = (start, start + config.stages[s].steps)
        start += config.stages[s].steps
    curve: dict[str, list] = {s: [] for s in config.stage_order}
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if not (v.tag.startswith("eval/") and v.tag.endswith("_psnr")):
                    continue
                net = v.tag.removeprefix("eval/").removesuffix("_psnr")
                for s, (lo, hi) in offsets.items():
                    if net in config.stages[s].learners and lo < event.step <= hi:
                        psnr = round(float(tf.make_ndarray(v.tensor)), 3)
                        curve[s].append((event.step - lo, net, psnr))
    return {s: sorted(set(c)) for s, c in curve.items()}


def record_timing(workdir: Path, config: ml_collections.ConfigDict, results: dict) -> dict:
    """Merge the library's results["timing"] into workdir/timing.json: a stage's entry is
    replaced only by a call that ran steps of it (a resumed call skips finished stages)."""
    path = workdir / "timing.json"
    old = json.loads(path.read_text()).get("stages", {}) if path.exists() else {}
    curves = eval_curve(workdir, config)
    stages = dict(old)
    for stage, t in results.get("timing", {}).items():
        if t["steps_run"] > 0 or stage not in old:
            history = results.get("loss_history", {}).get(stage) or [(None, None)]
            stages[stage] = {**t, "final_loss": history[-1][1], "eval_curve": curves.get(stage)}
    payload = {"stages": stages}
    common.write_record(path, payload)
    return payload


def stage_times(timing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{stage: {seconds, steps_run, steps_per_sec, ...}} of a timing.json, also of one
    written before the library reported timings (wall_s, steps, steps_per_s)."""
    out = {}
    for stage, t in timing.get("stages", {}).items():
        if "seconds" not in t:  # older bench: times parsed from the library's log
            t = {**t, "seconds": t["wall_s"], "steps_run": t["steps"]}
            t["steps_per_sec"] = t["steps_per_s"]
        out[stage] = t
    return out


def train_run(config: ml_collections.ConfigDict, workdir: Path, allow_change: bool) -> dict:
    """train_and_evaluate in workdir; {"library_results", "timing"} (timing.json's)."""
    from sassid_jax import train

    results = train.train_and_evaluate(config, workdir, allow_config_change=allow_change)
    return {"library_results": results, "timing": record_timing(workdir, config, results)}


def _folder_content(folder: str) -> list[tuple[str, str]]:
    return sorted((p.name, str(p.resolve())) for p in Path(folder).iterdir())


def finished(workdir: Path, requested: ml_collections.ConfigDict) -> tuple[Any, dict] | None:
    """(config, info) of a run in workdir whose requested stages all reached their last
    step, else None. The config is the one the run was trained with (workdir/config.json).
    Steps, blind size, seed, crop size and training images must match the request."""
    from sassid_jax.io import checkpoints

    if not (workdir / checkpoints.CONFIG_FILE).exists():
        return None
    config = ml_collections.ConfigDict(checkpoints.read_run_config(workdir))
    for name in requested.stage_order:
        with checkpoints.stage_manager(workdir, name) as mgr:
            if (mgr.latest_step() or 0) < config.stages[name].steps:
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
                f"{workdir}: a finished run with {field} = {a!r}, requested {b!r}; use another out"
            )
    config.stage_order = tuple(requested.stage_order)
    lib, timing = workdir / "results.json", workdir / "timing.json"
    return config, {
        "library_results": json.loads(lib.read_text()) if lib.exists() else {},
        "timing": json.loads(timing.read_text()) if timing.exists() else {},
    }


def library_version() -> dict[str, str]:
    """Where sassid_jax was imported from, and its git commit / dirty state if known."""
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
