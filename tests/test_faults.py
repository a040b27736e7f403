"""Faults a run survives or refuses clearly: damaged checkpoints, a diverging loss, a second
run on the same workdir, training photos smaller than the crop."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from sassid_jax import train
from sassid_jax.errors import ConfigError
from sassid_jax.io import checkpoints
from sassid_jax.training import sharding
from sassid_jax.training.train_step import init_state, make_optimizer, make_train_step
from tests.conftest import REPO_ROOT
from tests.test_train import (
    _launch_args,
    assert_same_params,
    run_params,
    tiny_config,
)

STOP = 5  # the interrupted run stops here; it keeps the checkpoints of steps 4 and 5


def bnn_config(data: Path, steps: int = 6):
    """The BNN stage alone: logs at 4 and 6, checkpoints every 2 steps, keeps 2."""
    c = tiny_config(data, {"bnn": steps})
    c.stage_order = ("bnn",)
    c.train.log_every = 4
    c.eval.save_panels = False
    return c


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """(config, uninterrupted workdir, its results, workdir of a run stopped at STOP)."""
    config = bnn_config(data_dir)
    ref = tmp_path_factory.mktemp("ref")
    results = train.train_and_evaluate(config, ref)
    stopped = tmp_path_factory.mktemp("stopped")
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, stopped, stop_after=("bnn", STOP))
    return config, ref, results, stopped


def _data_files(item: Path) -> list[Path]:
    """The array data files of an orbax item folder, largest first."""
    files = [p for p in (item / "ocdbt.process_0" / "d").iterdir() if p.is_file()]
    return sorted(files, key=lambda p: os.path.getsize(p), reverse=True)


def _write_nan_checkpoint(workdir: Path, config, step: int) -> None:
    """Replace checkpoint `step` of the BNN stage by a well-formed one holding a NaN."""
    stage = train.build_stages(config)[0]
    state = init_state(
        train.build_networks(config), stage, make_optimizer(config, "bnn"), jax.random.key(0), 32
    )
    leaf = state["params"]["bnn"]["trunk"]["enc1_0"]["kernel"]
    state["params"]["bnn"]["trunk"]["enc1_0"]["kernel"] = leaf.at[0, 0, 0, 0].set(np.nan)
    shutil.rmtree(checkpoints.stage_dir(workdir, "bnn") / str(step))
    with checkpoints.stage_manager(workdir, "bnn") as mgr:
        mgr.save(step, args=ocp.args.StandardSave(state))
        mgr.wait_until_finished()


def _damage(workdir: Path, config, step: int, kind: str) -> None:
    item = checkpoints.stage_dir(workdir, "bnn") / str(step) / checkpoints.ITEM
    if kind == "truncated data file":
        path = _data_files(item)[0]
        path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    elif kind == "missing data file":
        _data_files(item)[0].unlink()
    elif kind == "missing _METADATA":
        (item / "_METADATA").unlink()
    elif kind == "NaN weights":
        _write_nan_checkpoint(workdir, config, step)


@pytest.mark.parametrize(
    "kind", ["none", "truncated data file", "missing data file", "missing _METADATA", "NaN weights"]
)
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(runs, tmp_path, kind, caplog):
    config, ref, ref_results, stopped = runs
    workdir = tmp_path / "run"
    shutil.copytree(stopped, workdir)
    _damage(workdir, config, STOP, kind)
    with caplog.at_level(logging.WARNING):
        results = train.train_and_evaluate(config, workdir)
    damaged = workdir / "damaged" / "bnn" / str(STOP)
    if kind == "none":
        assert results["timing"]["bnn"]["steps_run"] == 6 - STOP
        assert not damaged.exists()
    else:
        assert results["timing"]["bnn"]["steps_run"] == 6 - (STOP - 1)
        assert f"checkpoints/bnn/{STOP} is damaged" in caplog.text
        assert damaged.is_dir()  # moved aside, not deleted
    # The loss history (the interval 1-4 logged before the stop, 5 pending) is the same.
    assert results["loss_history"] == ref_results["loss_history"]
    assert_same_params(run_params(workdir, config), run_params(ref, config))


def test_every_checkpoint_damaged_starts_the_stage_afresh(runs, tmp_path, caplog):
    config, ref, ref_results, stopped = runs
    workdir = tmp_path / "run"
    shutil.copytree(stopped, workdir)
    for step in (STOP - 1, STOP):
        _damage(workdir, config, step, "missing _METADATA")
    with caplog.at_level(logging.WARNING):
        results = train.train_and_evaluate(config, workdir)
    assert "no checkpoint restores; starting the stage afresh" in caplog.text
    assert sorted(p.name for p in (workdir / "damaged" / "bnn").iterdir()) == ["4", "5"]
    assert results["timing"]["bnn"]["steps_run"] == 6
    assert results["loss_history"] == ref_results["loss_history"]
    assert_same_params(run_params(workdir, config), run_params(ref, config))


def test_checkpoint_of_other_shapes_is_refused_not_moved(runs, tmp_path):
    config, _, _, stopped = runs
    workdir = tmp_path / "run"
    shutil.copytree(stopped, workdir)
    wider = bnn_config(Path(config.dataset.data_dir))
    wider.networks.bnn.width = 8
    before = _tree(workdir)
    with pytest.raises(checkpoints.CheckpointInputError, match="other shapes"):
        train.train_and_evaluate(wider, workdir, allow_config_change=True)
    assert not (workdir / "damaged").exists()
    # config.json is written only once the restores it describes succeed: nothing changed
    assert _tree(workdir) == before


def _tree(folder: Path) -> dict[str, bytes]:
    """{relative path: content} of every file under `folder` (the lock file aside)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_ctrl_c_is_one_line_naming_stage_step_and_checkpoint(runs, tmp_path, monkeypatch):
    """Ctrl-C mid-stage: Interrupted (exit 130) whose line names the stage, the step, the
    newest checkpoint (saved every 2 steps: 2 at step 3) and how to resume."""
    config, real, calls = runs[0], sharding.global_batch, []

    def global_batch(*args):  # the batch of step 4: Ctrl-C after 3 steps
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(sharding, "global_batch", global_batch)
    with pytest.raises(train.Interrupted) as e:
        train.train_and_evaluate(config, tmp_path / "run")
    assert e.value.code == 130
    assert str(e.value) == (
        "stage bnn at step 3 (newest checkpoint: step 2); run the same command again to resume"
    )


def test_ctrl_c_in_the_step_loop_checkpoints_the_step_then_stops(runs, tmp_path, monkeypatch):
    """A real SIGINT during step 4: the loop finishes the step, checkpoints it (no save cut
    short, no orbax thread left failing) and stops with Interrupted (exit 130)."""
    config, real, calls = runs[0], sharding.global_batch, []

    def global_batch(*args):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(sharding, "global_batch", global_batch)
    with pytest.raises(train.Interrupted) as e:
        train.train_and_evaluate(config, tmp_path / "run")
    assert e.value.code == 130
    assert str(e.value).startswith("stage bnn at step 4 (newest checkpoint: step 4);")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_sigterm_in_the_final_evaluation_stops_instead_of_claiming_to():
    """Once training is done, SIGTERM raises Preempted (exit 143) at once: nothing is left
    to checkpoint and the next run redoes the evaluation."""
    from sassid_jax.training.run_context import SigtermFlag

    with SigtermFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
        flag.training_done = True
        with pytest.raises(train.Preempted) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs between bytecodes
    assert e.value.code == 143


def test_step_keeps_the_last_finite_state():
    config = bnn_config(Path("unused"))
    networks, stage = train.build_networks(config), train.build_stages(config)[0]
    tx, mesh = make_optimizer(config, "bnn"), sharding.make_mesh(jax.devices()[:1])
    fresh = init_state(networks, stage, tx, jax.random.key(0), 32)
    xs = np.random.default_rng(0).uniform(0, 255, (3, 2, 32, 32, 3)).astype(np.float32)
    xs[1, 0, 5, 5, 0] = np.nan  # the second of three steps sees a NaN
    one = make_train_step(networks, stage, tx, mesh)
    _, shapes = one.eval_shape(fresh, {}, xs[0], True)  # the jax.jit function itself
    assert shapes["loss"].shape == () and shapes["finite"].dtype == np.bool_
    after_one, metrics = one(jax.tree.map(np.copy, fresh), {}, xs[0], True)
    assert bool(metrics["finite"])
    want = jax.device_get(after_one)
    three = make_train_step(networks, stage, tx, mesh, several_steps=True)
    state, metrics = three(jax.tree.map(np.copy, fresh), {}, xs, True)
    assert not bool(metrics["finite"]) and np.isfinite(metrics["loss"][0])
    assert_same_params(jax.device_get(state), want)  # step 1's state; step 3 was not applied
    state, metrics = one(state, {}, xs[0], metrics["finite"])  # once not finite, sticky
    assert not bool(metrics["finite"]) and np.isfinite(metrics["loss"])
    assert_same_params(jax.device_get(state), want)


def test_diverging_run_stops_with_a_finite_checkpoint(data_dir, tmp_path):
    config = tiny_config(data_dir, {"bnn": 6, "lan": 2, "unet": 2})
    config.train.log_every = config.train.checkpoint_every = 3
    args = _launch_args(config, tmp_path) + ["--config.stages.bnn.lr=1e30"]
    proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    m = re.fullmatch(
        r"error: stage bnn: training diverged at step (\d+) .* the last finite state, step "
        r"(\d+), is checkpointed\. Lower stages\.bnn\.lr \(1e\+30\) .*",
        line,
    )
    assert m, line
    good = int(m[2])
    assert int(m[1]) == good + 1 and good < 6
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints" / "bnn").iterdir())
    assert steps[-1] == good
    saved = checkpoints.restore_local(tmp_path / "checkpoints" / "bnn" / str(good) / "default")
    assert int(saved["step"]) == good
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved) if x.dtype.kind == "f")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.slow
def test_second_run_on_a_workdir_refuses_and_a_killed_runs_lock_is_taken_over(
    data_dir,
    tmp_path,
    caplog,
):
    config = tiny_config(data_dir, {"bnn": 5000, "lan": 2, "unet": 2})
    config.train.checkpoint_every = 100000
    args = _launch_args(config, tmp_path)
    first = subprocess.Popen(
        args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / "config.json", first)
        start = time.time()
        second = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert "is in use by another run (host " in second.stderr
        assert f"pid {first.pid}," in second.stderr
        assert "Traceback" not in second.stderr
        assert time.time() - start < 120  # the imports; no data loading, no training
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert (tmp_path / ".lock").exists()  # left behind by the killed run
    with caplog.at_level(logging.WARNING), pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("bnn", 1))
    assert "removing the stale lock" in caplog.text
    assert not (tmp_path / ".lock").exists()  # released on the way out


def _photos(folder: Path, size: int, count: int = 2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
    return folder


def test_photos_smaller_than_the_crop_fail_before_the_run_config_is_written(tmp_path):
    config = bnn_config(Path("unused"), steps=2)
    config.dataset.name = "image_folder"
    config.dataset.noisy_dir = str(_photos(tmp_path / "small", 24))
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"crop_size 32 is larger than training image 0 "):
        train.train_and_evaluate(config, workdir)
    assert not (workdir / "config.json").exists()
    config.dataset.noisy_dir = str(_photos(tmp_path / "large", 40))  # the corrected folder
    results = train.train_and_evaluate(config, workdir)
    assert [s for s, _ in results["loss_history"]["bnn"]] == [2]
    assert (workdir / "config.json").exists()


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_damaged_config_json_in_the_workdir_is_one_line_naming_it(tmp_path, content):
    from etils import epath

    from configs import default
    from sassid_jax.errors import ConfigError
    from sassid_jax.train import _check_run_config

    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/config\.json: not a run config") as e:
        _check_run_config(default.get_config(), epath.Path(tmp_path), allow_change=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_damaged_config_json_is_one_error_for_every_reader(tmp_path, content):
    """Denoise, eval and final_params read config.json through the one reader (as training
    does above): the same one line naming the file."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(content)
    readers = (
        lambda: checkpoints.load_network(tmp_path, "unet"),
        lambda: checkpoints.checkpoint_item(tmp_path / "checkpoints", "bnn"),
        lambda: checkpoints.final_params(tmp_path, "lan"),
        lambda: checkpoints.run_config_of(tmp_path),
    )
    expected = rf"^{re.escape(str(tmp_path))}/config\.json: not a run config \(empty or damaged"
    for read in readers:
        with pytest.raises(checkpoints.CheckpointInputError, match=expected) as e:
            read()
        assert "\n" not in str(e.value)
