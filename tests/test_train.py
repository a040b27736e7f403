"""The training loop: losses go down, exact resume, stage-aware restart, SIGTERM, bad configs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import default
from sassid_jax import train
from sassid_jax.configuration import validate_config
from sassid_jax.io import checkpoints
from sassid_jax.io.checkpoints import CheckpointInputError, final_params, restore_local
from sassid_jax.nn import NETWORK_NAMES
from tests.conftest import REPO_ROOT

TINY_STEPS = {"bnn": 6, "lan": 4, "unet": 4}


def tiny_config(data_dir: Path, steps: dict[str, int] | None = None):
    c = default.get_config()
    c.dataset.data_dir = str(data_dir)
    c.crop_size, c.batch_size = 32, 2
    c.networks.bnn.width, c.networks.unet.width = 4, 4
    c.networks.lan.width, c.networks.lan.num_blocks = 8, 1
    for name, n in (steps or TINY_STEPS).items():
        c.stages[name].steps = n
    c.train.log_every, c.train.checkpoint_every, c.train.keep_checkpoints = 1, 2, 2
    c.eval.max_images = 1
    return c


def run_params(workdir: Path, config) -> dict[str, dict]:
    """{network: final parameters (numpy)} of every network the run of `config` trains."""
    trained = {n for name in config.stage_order for n in config.stages[name].learners}
    return {n: final_params(workdir, n) for n in NETWORK_NAMES if n in trained}


def assert_same_params(a: dict, b: dict) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def logged_run(config, workdir: Path) -> tuple[dict, list[str]]:
    """(results, log lines) of a whole run of `config` in `workdir`."""
    root, handler = logging.getLogger(), _Lines()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        results = train.train_and_evaluate(config, workdir)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return results, handler.lines


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """A whole tiny run; returns (workdir, config, results, log lines)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    config = tiny_config(data_dir)
    return workdir, config, *logged_run(config, workdir)


def _summaries(logdir: Path) -> dict[str, str]:
    """{tag: plugin name} of every summary in the TensorBoard event files of logdir."""
    import tensorflow as tf

    tags = {}
    for path in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = value.metadata.plugin_data.plugin_name
    return tags


def test_three_stage_run_outputs(uninterrupted):
    workdir, _, results, _ = uninterrupted
    saved = json.loads((workdir / "results.json").read_text())
    assert set(saved["table"]) == {"noisy", "bnn", "lan", "unet"}
    assert saved["num_images"] == 1
    panels = list((workdir / "panels").glob("*.png"))
    assert len(panels) == 1
    assert (workdir / "config.json").exists()
    for stage, n in TINY_STEPS.items():
        assert [s for s, _ in results["loss_history"][stage]] == list(range(1, n + 1))
        timing = saved["timing"][stage]
        assert timing["steps_run"] == n
        assert timing["seconds"] > 0
        assert timing["steps_per_sec"] >= n / timing["seconds"]  # the loop is within the stage
    assert saved["timing"] == results["timing"]
    assert {s: [p[0] for p in c] for s, c in saved["heldout"].items()} == {
        stage: [n]
        for stage, n in TINY_STEPS.items()  # every 50 steps and at the last one
    }


def test_tensorboard_gets_scalars_progress_panels_and_hparams(uninterrupted):
    workdir, _, _, _ = uninterrupted
    tags = _summaries(workdir / "tensorboard")
    assert tags[f"panels/{next((workdir / 'panels').glob('*.png')).stem}"] == "images"
    for stage in TINY_STEPS:
        for name in ("loss", "grad_norm", "lr"):
            assert f"{stage}/{name}" in tags
    assert "steps_per_sec" in tags and "uptime" in tags  # clu's ReportProgress
    assert "eval/unet_psnr" in tags
    assert "_hparams_/session_start_info" in tags


def test_log_line_per_interval_with_grad_norm_and_run_eta(uninterrupted):
    _, _, results, lines = uninterrupted
    total = sum(TINY_STEPS.values())
    pattern = re.compile(
        r"stage (\w+) step (\d+)/(\d+) loss ([\d.]+) lr \S+ ([\d.]+) steps/s "
        r"grad_norm (\S+) \| run step (\d+)/(\d+), ETA \d+m\d\ds"
    )
    found = [m for m in map(pattern.match, lines) if m]
    assert [(m[1], int(m[2])) for m in found] == [
        (stage, step) for stage, history in results["loss_history"].items() for step, _ in history
    ]
    assert all(int(m[8]) == total and float(m[6]) > 0 for m in found)
    assert [int(m[7]) for m in found] == list(range(1, total + 1))
    assert any(f"({total}/{total})" in line for line in lines)  # ReportProgress's note


def test_final_params_are_the_last_stage_at_its_last_step(uninterrupted, tmp_path):
    workdir, _, _, _ = uninterrupted
    for name, steps in TINY_STEPS.items():
        item = workdir / "checkpoints" / name / str(steps) / "default"
        assert_same_params(final_params(workdir, name), restore_local(item)["params"][name])
    with pytest.raises(CheckpointInputError, match="config.json"):
        final_params(tmp_path, "unet")


@pytest.mark.slow
def test_each_stage_loss_goes_down(data_dir, tmp_path):
    steps = {"bnn": 25, "lan": 25, "unet": 25}
    config = tiny_config(data_dir, steps)
    config.train.checkpoint_every = 25
    config.eval.save_panels = False
    history = train.train_and_evaluate(config, tmp_path)["loss_history"]
    for stage, points in history.items():
        losses = [loss for _, loss in points]
        first, last = np.mean(losses[:5]), np.mean(losses[-5:])
        assert last < first, f"{stage}: loss {first:.3f} -> {last:.3f}"


def test_resume_mid_stage_is_exact(data_dir, tmp_path, uninterrupted):
    ref_dir, config, ref_results, _ = uninterrupted
    with pytest.raises(train.Preempted) as stop:
        train.train_and_evaluate(config, tmp_path, stop_after=("bnn", 3))
    assert (stop.value.stage, stop.value.step) == ("bnn", 3)
    assert (tmp_path / "checkpoints" / "bnn" / "3").exists()  # mid-interval checkpoint
    assert not (tmp_path / "checkpoints" / "lan").exists()
    with pytest.raises(CheckpointInputError, match=r"bnn/6/default: missing \(stage 'bnn'"):
        final_params(tmp_path, "bnn")
    results = train.train_and_evaluate(config, tmp_path)
    assert results["loss_history"] == ref_results["loss_history"]  # steps 1-3 kept on disk
    assert results["timing"]["bnn"]["steps_run"] == 3
    assert results["timing"]["lan"]["steps_run"] == TINY_STEPS["lan"]
    assert_same_params(run_params(tmp_path, config), run_params(ref_dir, config))


def test_resume_restores_each_finished_stage_once(tmp_path, uninterrupted, monkeypatch):
    """A run resumed after its lan stage (the uninterrupted run without its unet checkpoints)
    restores the final checkpoints of bnn and lan once each: the restore that checks them is
    also what the unet stage's teachers and the final report use."""
    ref_dir, config, ref_results, _ = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    shutil.rmtree(workdir / "checkpoints" / "unet")
    restored, restore = [], checkpoints.restore_stage

    def counted(workdir, stage, step, target, mgr=None):
        restored.append((stage, step))
        return restore(workdir, stage, step, target, mgr)

    monkeypatch.setattr(checkpoints, "restore_stage", counted)
    results = train.train_and_evaluate(config, workdir)
    assert sorted(restored) == sorted(TINY_STEPS.items())  # unet: once, for the final report
    assert results["timing"]["bnn"]["steps_run"] == results["timing"]["lan"]["steps_run"] == 0
    assert results["loss_history"] == ref_results["loss_history"]
    assert results["table"] == ref_results["table"]


@pytest.mark.slow
def test_several_steps_per_call_give_the_same_run(data_dir, tmp_path, uninterrupted, monkeypatch):
    ref_dir, ref_config, _, _ = uninterrupted
    calls, groups = [], train._groups

    def spy(batches, start, size):
        for group in groups(batches, start, size):
            calls.append(len(group))
            yield group

    monkeypatch.setattr(train, "_groups", spy)
    config = tiny_config(data_dir)
    config.train.steps_per_call = 4  # bnn: 6 steps = a call of 4, then a call of 2
    config.train.log_every = config.train.checkpoint_every = config.selection.every = 4
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("bnn", 4))
    results = train.train_and_evaluate(config, tmp_path)  # resumes at 4: one call of 2
    assert [s for s, _ in results["loss_history"]["bnn"]] == [4, 6]
    assert [s for s, _ in results["loss_history"]["lan"]] == [4]
    assert calls == [4, 2, 4, 4]  # bnn to step 4 | bnn 5-6, lan 1-4, unet 1-4
    got, want = run_params(tmp_path, config), run_params(ref_dir, ref_config)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_restart_after_stage_one_continues_at_stage_two(data_dir, tmp_path, uninterrupted):
    ref_dir, config, ref_results, _ = uninterrupted
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("bnn", TINY_STEPS["bnn"]))
    results = train.train_and_evaluate(config, tmp_path)
    assert results["loss_history"] == ref_results["loss_history"]
    assert results["timing"]["bnn"]["steps_run"] == 0
    assert results["timing"]["bnn"]["steps_per_sec"] == 0.0
    assert results["timing"]["lan"]["steps_run"] == TINY_STEPS["lan"]
    assert [s for s, _ in results["loss_history"]["lan"]] == [1, 2, 3, 4]
    assert_same_params(run_params(tmp_path, config), run_params(ref_dir, config))


def _launch_args(config, workdir: Path) -> list[str]:
    c = config
    overrides = {
        "dataset.data_dir": c.dataset.data_dir,
        "crop_size": c.crop_size,
        "batch_size": c.batch_size,
        "networks.bnn.width": c.networks.bnn.width,
        "networks.unet.width": c.networks.unet.width,
        "networks.lan.width": c.networks.lan.width,
        "networks.lan.num_blocks": c.networks.lan.num_blocks,
        "train.log_every": c.train.log_every,
        "train.checkpoint_every": c.train.checkpoint_every,
        "eval.max_images": c.eval.max_images,
    }
    overrides.update({f"stages.{n}.steps": c.stages[n].steps for n in c.stage_order})
    return [
        sys.executable,
        str(REPO_ROOT / "launch.py"),
        "--config",
        "configs/default.py",
        "--workdir",
        str(workdir),
    ] + [f"--config.{k}={v}" for k, v in overrides.items()]


@pytest.mark.slow
def test_sigterm_checkpoints_then_restart_matches(data_dir, tmp_path):
    config = tiny_config(data_dir, {"bnn": 60, "lan": 2, "unet": 2})
    config.train.checkpoint_every = 50
    ref = tmp_path / "ref"
    train.train_and_evaluate(config, ref)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _launch_args(config, run),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = run / "tensorboard"
    deadline = time.time() + 180
    while time.time() < deadline and not list(log.glob("events.out.tfevents.*")):
        time.sleep(0.2)
    time.sleep(3.0)  # let it take some steps, not yet 50
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    steps = sorted(int(p.name) for p in (run / "checkpoints" / "bnn").iterdir() if p.name.isdigit())
    assert steps and 0 < steps[-1] < 60, steps
    assert "SIGTERM" in out
    train.train_and_evaluate(config, run)
    assert_same_params(run_params(run, config), run_params(ref, config))


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "networks.bnn.blind_size",
            8,
            "bnn.blind_size must be an odd integer >= 1 or 'auto', got 8",
        ),
        ("networks.lan.blind_size", 4, "networks.lan.blind_size must be an odd integer"),
        ("crop_size", 48, "crop_size must be a multiple of 32 (five 2x2 poolings), got 48"),
        ("crop_size", 0, "crop_size must be a positive integer, got 0"),
        ("batch_size", 0, "batch_size must be a positive integer, got 0"),
        ("batch_size", -4, "batch_size must be a positive integer, got -4"),
        ("stages.bnn.steps", 0, "stages.bnn.steps must be a positive integer, got 0"),
        ("stages.lan.steps", -1, "stages.lan.steps must be a positive integer, got -1"),
        ("dataset.name", "imagenet", "dataset.name: unknown dataset 'imagenet'"),
        ("stage_order", ("bnn", "lam"), "stage_order: unknown stage name 'lam'"),
        ("stage_order", ("lan", "bnn"), "stage 'lan' reads ['bnn'] as frozen teachers"),
        ("compute_dtype", "float16", "compute_dtype must be 'float32' or 'bfloat16'"),
        ("train.steps_per_call", 0, "train.steps_per_call must be a positive integer, got 0"),
        (
            "train.steps_per_call",
            3,
            "train.log_every (25) must be a multiple of train.steps_per_call (3)",
        ),
    ],
)
def test_bad_config_names_field_and_value(field, value, message):
    config = default.get_config()
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_bad_config_fails_before_any_work_from_the_command_line(launch, tmp_path):
    workdir = tmp_path / "w"
    proc = launch("--workdir", str(workdir), "--config.networks.bnn.blind_size=4")
    assert proc.returncode == 2
    assert "networks.bnn.blind_size must be an odd integer >= 1 or 'auto', got 4" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


def test_workdir_with_other_config_refuses_to_resume(uninterrupted):
    workdir, config, ref_results, _ = uninterrupted
    changed = tiny_config(Path(config.dataset.data_dir))
    changed.stages.lan.lr = 5e-4
    with pytest.raises(ValueError, match=r"different config \(stages\.lan\.lr: 0\.001 -> 0\.0005"):
        train.train_and_evaluate(changed, workdir)
    # A field that changes no result (log frequency) may differ.
    relaxed = tiny_config(Path(config.dataset.data_dir))
    relaxed.train.log_every = 2
    results = train.train_and_evaluate(relaxed, workdir)
    assert all(t["steps_run"] == 0 for t in results["timing"].values())
    assert results["loss_history"] == ref_results["loss_history"]  # read from workdir/history


@pytest.mark.parametrize("name", ["default", "blind_spot", "joint", "sasl_paper"])
def test_every_shipped_config_validates(name):
    module = __import__(f"configs.{name}", fromlist=["get_config"])
    validate_config(module.get_config())


def test_paper_config_asks_to_prepare_sidd(tmp_path):
    from configs import sasl_paper
    from sassid_jax.data.sources import DatasetUnavailableError

    with pytest.raises(DatasetUnavailableError, match="prepare SIDD first"):
        train.train_and_evaluate(sasl_paper.get_config(), tmp_path)


@pytest.mark.slow
def test_joint_ablation_trains_all_three_in_one_stage(data_dir, tmp_path):
    from configs import joint

    config = joint.get_config()
    tiny = tiny_config(data_dir)
    for key in ("dataset", "networks", "train", "eval"):
        config[key] = tiny[key]
    config.crop_size, config.batch_size = tiny.crop_size, tiny.batch_size
    config.stages.joint.steps = 3
    results = train.train_and_evaluate(config, tmp_path)
    assert set(results["table"]) == {"noisy", "bnn", "lan", "unet"}
    saved = restore_local(tmp_path / "checkpoints" / "joint" / "3" / "default")["params"]
    assert set(saved) == set(NETWORK_NAMES)
    for name in NETWORK_NAMES:  # the final parameters of each network: the joint stage's
        assert_same_params(final_params(tmp_path, name), saved[name])


def test_eval_bnn_block_follows_crop_size_unless_set():
    from absl import flags
    from ml_collections import config_flags

    def parse(*overrides: str):
        values, argv = flags.FlagValues(), ["prog", *overrides]
        path = str(REPO_ROOT / "configs" / "default.py")  # launch.py's --config default
        config_flags.DEFINE_config_file("config", path, flag_values=values, sys_argv=argv)
        values(argv)
        return values.config

    assert default.get_config().eval.bnn_block == default.get_config().crop_size
    assert parse("--config.crop_size=128").eval.bnn_block == 128
    c = parse("--config.crop_size=128", "--config.eval.bnn_block=0")
    assert (c.crop_size, c.eval.bnn_block) == (128, 0)
    c = parse("--config.eval.bnn_block=32", "--config.crop_size=96")
    assert (c.crop_size, c.eval.bnn_block) == (96, 32)
    from configs import sasl_paper

    c = sasl_paper.get_config()
    assert (c.crop_size, c.eval.bnn_block) == (256, 0)


def test_stages_carry_the_config_alpha_thresholds():
    from sassid_jax.methods import sasl

    config = default.get_config()
    config.alpha.lower, config.alpha.upper = 2.0, 9.0
    stages = train.build_stages(config)
    assert {(s.alpha_lower, s.alpha_upper) for s in stages} == {(2.0, 9.0)}
    rng = np.random.default_rng(0)
    outs = {n: rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32) for n in NETWORK_NAMES}
    x = rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    outs["bnn"] = 128 + rng.normal(0, 1.5, x.shape).astype(np.float32)  # local std ~1.5
    alpha = sasl.flatness_alpha(outs["bnn"], 2.0, 9.0)
    want = sasl.adaptive_loss(outs["unet"], outs["bnn"], outs["lan"], alpha)
    np.testing.assert_allclose(float(stages[-1].loss(outs, x)), float(want), rtol=1e-6)
    paper = train.build_stages(default.get_config())[-1]
    assert float(paper.loss(outs, x)) != float(want)
