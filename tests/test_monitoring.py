"""The run's progress: which evaluations are left, and the ETA that counts them."""

from __future__ import annotations

import types

import pytest

from configs import default
from sassid_jax.training import monitoring

ALL = ("bnn", "lan", "unet")


def _config(eval_every: int = 0):
    config = default.get_config()  # bnn 400, lan 150, unet 400 steps
    config.train.eval_every = eval_every
    return config


def test_evaluations_left_at_stage_ends_and_the_final_report():
    config = _config()
    assert monitoring.evaluations_left(config, 0, 25) == [("bnn",), ("lan",), ("unet",), ALL]
    assert monitoring.evaluations_left(config, 2, 400) == [("unet",), ALL]


def test_evaluations_left_with_eval_every():
    left = monitoring.evaluations_left(_config(eval_every=100), 0, 100)
    # bnn at 100, 200, 300 and its end; lan at 100 and its end; unet like bnn; the report
    assert left == [("bnn",)] * 4 + [("lan",)] * 2 + [("unet",)] * 4 + [ALL]


def test_evaluation_seconds_left_from_measured_costs():
    progress = monitoring.make_progress(_config(), writer=None)
    assert progress.evaluation_seconds_left(0, 400) is None  # nothing timed yet
    progress.record_evaluation(("bnn",), 8.0)
    # bnn's end 8, lan and unet at the mean (8), the report 3 x 8
    assert progress.evaluation_seconds_left(0, 400) == pytest.approx(48.0)
    progress.record_evaluation(("lan",), 2.0)
    # lan's end 2, unet at the mean (5), the report 8 + 2 + 5
    assert progress.evaluation_seconds_left(1, 150) == pytest.approx(22.0)


def _ctx(progress, stage_sizes=(400, 150, 400)):
    offsets = [sum(stage_sizes[:i]) for i in range(len(stage_sizes))]
    return types.SimpleNamespace(
        progress=progress,
        total_steps=sum(stage_sizes),
        global_step=lambda stage_index, step: offsets[stage_index] + step,
    )


def test_eta_counts_evaluations_once_timed():
    progress = monitoring.make_progress(_config(eval_every=100), writer=None)
    ctx = _ctx(progress)
    # 900 steps left at 1 step/s, no evaluation timed yet
    assert monitoring.eta_text(ctx, 0, 50, 25, 1.0) == "15m00s + evaluations"
    progress(50)  # the log line at step 50: a new window starts
    progress.record_evaluation(("bnn",), 12.5)  # as if an evaluation ran inside the window
    # its 25 steps took 25 s, 12.5 s of them evaluating: 2 steps/s, 875 steps left -> 437.5 s;
    # plus 13 network evaluations left at 12.5 s (bnn at 100, 200, 300 and its end, lan at
    # 100 and its end, unet like bnn, the report's 3) -> 162.5 s
    assert monitoring.eta_text(ctx, 0, 75, 25, 1.0) == "10m00s"
    progress(75)
    assert progress.window_eval_seconds == 0.0  # the next window starts without it
