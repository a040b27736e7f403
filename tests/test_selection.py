"""Model selection without ground truth: held-out band split, best step kept, early stop, resume."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import default
from sassid_jax import train
from sassid_jax.configuration import check_resume_compatible, validate_config
from sassid_jax.errors import ConfigError
from sassid_jax.io.checkpoints import final_params, restore_local
from sassid_jax.training import selection
from tests.test_train import (
    _summaries,
    assert_same_params,
    logged_run,
    tiny_config,
)

STEPS = 12


def _photos(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(100, 70), (40, 90), (63, 64), (300, 50)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def test_band_split_keeps_every_row_and_never_overlaps_training_rows():
    photos = _photos()
    held = selection.split(photos, crop=32, fraction=0.1, max_crops=100)
    # 100 rows: band max(32, 10) = 32, 68 left; 40 and 63 rows: no room; 300: band 30 -> 32
    assert [len(t) for t in held.train] == [68, 40, 63, 268]
    for photo, part in zip(photos, held.train, strict=True):
        np.testing.assert_array_equal(part, photo[: len(part)])  # nothing dropped
    assert held.where == [(0, 68, 0), (0, 68, 32), (3, 268, 0)]
    for (i, top, left), crop in zip(held.where, held.crops, strict=True):
        assert top >= len(held.train[i]) and top + 32 <= photos[i].shape[0]
        np.testing.assert_array_equal(crop, photos[i][top : top + 32, left : left + 32])
    again = selection.split(_photos(), crop=32, fraction=0.1, max_crops=100)
    np.testing.assert_array_equal(again.crops, held.crops)  # deterministic


def test_band_split_spreads_at_most_max_crops_and_may_find_no_room():
    photos = [np.zeros((640, 320, 3), np.uint8)] * 3  # band 64 rows: 2 x 10 crops per photo
    held = selection.split(photos, crop=32, fraction=0.1, max_crops=7)
    assert len(held.crops) == 7 == len(set(held.where))
    assert {i for i, _, _ in held.where} == {0, 1, 2}
    none = selection.split([np.zeros((40, 40, 3), np.uint8)], 32, 0.1, 8)
    assert none.crops.shape == (0, 32, 32, 3) and len(none.train[0]) == 40


def test_replay_counts_evaluations_without_a_relative_improvement():
    curve = [(1, 10.0), (2, 9.95), (3, 11.0), (4, 8.0), (5, 7.99)]
    assert selection.replay(curve, 0.01) == (5, 7.99, 1)
    assert selection.replay(curve[:3], 0.01) == (2, 9.95, 2)
    assert selection.replay([(1, float("nan"))], 0.0) == (None, float("inf"), 1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("every", 3, r"selection.every \(3\) must be a multiple of train.steps_per_call \(2\)"),
        ("fraction", 1.0, "selection.fraction must be in"),
        ("max_crops", 0, "selection.max_crops must be a positive integer"),
        ("patience", -1, "selection.patience must be an integer >= 0"),
    ],
)
def test_bad_selection_field_is_named(field, value, message):
    config = default.get_config()
    config.train.steps_per_call, config.train.log_every, config.train.checkpoint_every = 2, 2, 2
    config.selection[field] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_run_folder_from_before_selection_resumes():
    current = json.loads(default.get_config().to_json_best_effort())
    saved = {k: v for k, v in current.items() if k != "selection"}
    check_resume_compatible(saved, current, "config.json", allow_change=False)
    changed = json.loads(json.dumps(current))
    changed["selection"]["every"] = 10
    with pytest.raises(ConfigError, match="selection.every"):
        check_resume_compatible(changed, current, "config.json", allow_change=False)


def _config(data_dir: Path):
    """BNN only, a learning rate so high that the held-out loss rises after its first value;
    patience 2: the stage stops early."""
    c = tiny_config(data_dir, {"bnn": STEPS})
    c.stage_order = ("bnn",)
    c.stages.bnn.lr = 0.3
    c.selection.every, c.selection.patience = 2, 2
    c.train.checkpoint_every, c.train.keep_checkpoints = 2, 100
    c.eval.save_panels = False
    return c


@pytest.fixture(scope="module")
def rising(data_dir, tmp_path_factory):
    """(workdir, config, results, log lines) of an uninterrupted run of `_config`."""
    workdir, config = tmp_path_factory.mktemp("rising"), _config(data_dir)
    return workdir, config, *logged_run(config, workdir)


def test_best_step_is_kept_and_the_stage_stops_early(rising):
    workdir, _, results, lines = rising
    curve = results["heldout"]["bnn"]
    best = results["heldout_best"]["bnn"]
    losses = [loss for _, loss in curve]
    assert best["step"] == curve[int(np.argmin(losses))][0]
    assert best["step"] < curve[-1][0], f"the held-out loss did not rise: {curve}"
    assert best["stopped_at"] == curve[-1][0] < STEPS  # early stop ...
    assert [s for s, _ in curve] == list(range(2, best["stopped_at"] + 1, 2))
    assert results["timing"]["bnn"]["steps_run"] == best["stopped_at"]
    final = final_params(workdir, "bnn")  # ... and the final checkpoint holds the best step
    at_best = restore_local(workdir / "checkpoints" / "bnn" / str(best["step"]) / "default")
    assert_same_params(final, at_best["params"]["bnn"])
    later = restore_local(workdir / "checkpoints" / "bnn" / str(best["step"] + 2) / "default")
    with pytest.raises(AssertionError):
        assert_same_params(final, later["params"]["bnn"])
    assert any(f"keeping step {best['step']}" in line and "stopped early" in line for line in lines)
    assert any("| held-out " in line for line in lines)


def test_results_and_tensorboard_hold_the_curve(rising):
    workdir, _, results, _ = rising
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["heldout"] == results["heldout"] and list(saved["heldout"]) == ["bnn"]
    assert saved["heldout_best"] == results["heldout_best"]
    assert "heldout/bnn" in _summaries(workdir / "tensorboard")


def test_resume_after_the_best_step_gives_the_same_result(rising, tmp_path):
    ref_dir, config, ref_results, _ = rising
    best = ref_results["heldout_best"]["bnn"]["step"]
    stop = best + 2  # after the best step: the resumed run must restore the kept state
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("bnn", stop))
    assert (tmp_path / "selection" / "bnn" / str(best)).is_dir()
    results = train.train_and_evaluate(config, tmp_path)
    assert results["heldout"] == ref_results["heldout"]
    assert results["heldout_best"] == ref_results["heldout_best"]
    assert results["timing"]["bnn"]["steps_run"] == ref_results["timing"]["bnn"]["steps_run"] - stop
    assert_same_params(final_params(tmp_path, "bnn"), final_params(ref_dir, "bnn"))
    again = train.train_and_evaluate(config, tmp_path)  # the stage is finished: skipped
    assert again["timing"]["bnn"]["steps_run"] == 0
    assert again["heldout"] == ref_results["heldout"]
    leaves = jax.tree.leaves(final_params(tmp_path, "bnn"))
    assert all(np.isfinite(x).all() for x in leaves)
