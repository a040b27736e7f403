"""What a training run reports while it runs: log lines, TensorBoard scalars, progress, hparams.

Per log interval (train.log_every steps, and each stage's last step) one readable log line and
the scalars <stage>/loss, <stage>/grad_norm and <stage>/lr at the run-wide step; the ETA counts
the evaluations still to come at their measured cost (`RunProgress`). Only process 0 writes
TensorBoard files. Details: docs/training.md#monitoring.
"""

from __future__ import annotations

import json
import logging

import flax
import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions

from sassid_jax.evaluation import scoring
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.logs import ProgressLog, count, format_seconds
from sassid_jax.nn import NETWORK_NAMES
from sassid_jax.training.run_context import RunContext
from sassid_jax.training.train_step import State, learning_rate


def log_steps(config: ml_collections.ConfigDict) -> list[int]:
    """The run-wide steps (see `RunContext.global_step`) at which the training loop logs:
    every train.log_every steps of each stage and at each stage's last step."""
    points, offset = [], 0
    for name in config.stage_order:
        steps = config.stages[name].steps
        points += [offset + s for s in range(config.train.log_every, steps, config.train.log_every)]
        points.append(offset + steps)
        offset += steps
    return points


def evaluations_left(
    config: ml_collections.ConfigDict, stage_index: int, step: int
) -> list[tuple[str, ...]]:
    """The evaluations still to come after the log line at `step` of stage `stage_index`,
    in order, each as the networks it predicts: the stages' train.eval_every evaluations
    and end-of-stage ones (their learners), then the final report's (every trained network)."""
    every = config.train.eval_every
    left: list[tuple[str, ...]] = []
    for index in range(stage_index, len(config.stage_order)):
        stage = config.stages[config.stage_order[index]]
        first = step if index == stage_index else 1
        periodic = sum(1 for s in range(first, stage.steps) if every and s % every == 0)
        left += [tuple(stage.learners)] * (periodic + 1)
    trained = {n for name in config.stage_order for n in config.stages[name].learners}
    left.append(tuple(n for n in NETWORK_NAMES if n in trained))
    return left


class RunProgress(periodic_actions.ReportProgress):
    """clu's progress report over the whole run (all stages), plus the evaluations' cost.

    At each log step clu writes steps_per_sec and uptime to the writer. Each evaluation's
    time is recorded per network it predicted (`record_evaluation`); the ETA of the log
    line (`eta_text`) adds the evaluations still to come at those measured costs (the
    final report's predictions too; not its U-Net quality estimate, first timed there).
    """

    def __init__(
        self, config: ml_collections.ConfigDict, writer: metric_writers.MetricWriter
    ) -> None:
        total = sum(config.stages[name].steps for name in config.stage_order)
        super().__init__(
            num_train_steps=total, writer=writer, every_secs=None, on_steps=log_steps(config)
        )
        self.config = config
        self.seconds_per_network: dict[str, float] = {}  # one network on every eval example
        self.window_eval_seconds = 0.0  # evaluation time inside the current log window

    def __call__(self, step: int, t: float | None = None) -> bool:
        """clu's report at run step `step`; a log window starts (train.py calls this at each
        stage's start, `log_window` at each log line)."""
        self.window_eval_seconds = 0.0
        return super().__call__(step, t)

    def record_evaluation(self, networks: tuple[str, ...], seconds: float) -> None:
        """An evaluation of `networks` took `seconds` (shared equally among them)."""
        for name in networks:
            self.seconds_per_network[name] = seconds / max(len(networks), 1)
        self.window_eval_seconds += seconds

    def evaluation_seconds_left(self, stage_index: int, step: int) -> float | None:
        """Seconds the evaluations after (stage_index, step) will take at the measured
        costs (a network not measured yet at the mean of those that are); None before any
        measurement."""
        if not self.seconds_per_network:
            return None
        mean = float(np.mean(list(self.seconds_per_network.values())))
        return sum(
            self.seconds_per_network.get(name, mean)
            for networks in evaluations_left(self.config, stage_index, step)
            for name in networks
        )


def make_progress(
    config: ml_collections.ConfigDict, writer: metric_writers.MetricWriter
) -> RunProgress:
    """The `RunProgress` of a run of `config`, writing clu's scalars to `writer`."""
    return RunProgress(config, writer)


def hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
    """The config flattened for TensorBoard's hparams: dotted keys; sequences as strings."""
    tree = json.loads(config.to_json_best_effort())
    flat = flax.traverse_util.flatten_dict(tree, sep=".")
    return {
        k: ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
        for k, v in flat.items()
    }


def _run_progress(ctx: RunContext) -> RunProgress | None:
    return ctx.progress if isinstance(ctx.progress, RunProgress) else None


def eta_text(ctx: RunContext, stage_index: int, step: int, steps: int, rate: float) -> str:
    """The run's ETA after the log line at `step` of stage `stage_index`, the window's
    `steps` trained at `rate` steps/s: the steps left at the step rate without the window's
    evaluations, plus the evaluations left at their measured costs ("+ evaluations" until
    one was timed)."""
    at = ctx.global_step(stage_index, step)
    progress = _run_progress(ctx)
    if progress is not None and progress.window_eval_seconds:
        # train.eval_every evaluations ran inside the window: time them apart
        window_seconds = steps / rate - progress.window_eval_seconds
        rate = steps / window_seconds if window_seconds > 0 else rate
    seconds = (ctx.total_steps - at) / rate
    evaluations = None if progress is None else progress.evaluation_seconds_left(stage_index, step)
    if evaluations is None:
        return f"{format_seconds(seconds)} + evaluations"
    return format_seconds(seconds + evaluations)


def log_window(
    ctx: RunContext,
    stage_index: int,
    step: int,
    window: list[dict[str, jax.Array]],
    rate: float,
    extra: str = "",
) -> float:
    """Log the mean loss and grad norm of the steps since the last log, trained at `rate`
    steps/s (and `extra`, appended after " | " when given: the held-out loss); returns the
    loss. `window`: the train step's metrics of each call since the last log."""
    name = ctx.stages[stage_index].name
    values = {
        k: np.concatenate([np.ravel(m[k]) for m in jax.device_get(window)])
        for k in ("loss", "grad_norm")
    }
    means = {k: float(np.mean(v)) for k, v in values.items()}
    lr = learning_rate(ctx.config, name, step)
    at = ctx.global_step(stage_index, step)
    ctx.writer.write_scalars(
        at,
        {f"{name}/loss": means["loss"], f"{name}/grad_norm": means["grad_norm"], f"{name}/lr": lr},
    )
    logging.info(
        "stage %s step %d/%d loss %.4f lr %.2e %.2f steps/s grad_norm %.4g"
        " | run step %d/%d, ETA %s%s",
        name,
        step,
        ctx.config.stages[name].steps,
        means["loss"],
        lr,
        rate,
        means["grad_norm"],
        at,
        ctx.total_steps,
        eta_text(ctx, stage_index, step, len(values["loss"]), rate),
        f" | {extra}" if extra else "",
    )
    ctx.progress(at)
    return means["loss"]


def evaluate_learners(ctx: RunContext, stage_index: int, state: State, step: int) -> None:
    """Score the learners' current parameters on the eval examples; log and write them, and
    record the time taken in the run's progress (its ETA)."""
    stage = ctx.stages[stage_index]
    params = jax.device_get(state["params"])
    examples = ctx.eval_examples
    what = f"stage {stage.name} step {step}"
    logging.info("%s: evaluating %s on %s", what, ", ".join(params), count(len(examples), "image"))
    progress = ProgressLog(f"{what}: evaluating", len(params) * len(examples), "predictions")
    scores = scoring.evaluate_networks(
        ctx.networks,
        params,
        examples,
        ctx.config.eval.bnn_block,
        config_sigma(ctx.config),
        progress.advance,
    )
    if (run := _run_progress(ctx)) is not None:
        run.record_evaluation(tuple(params), progress.seconds)
    scalars = {}
    for name, s in scores.items():
        if s.get("psnr") is not None:
            scalars.update({f"eval/{name}_psnr": s["psnr"], f"eval/{name}_ssim": s["ssim"]})
            logging.info(
                "stage %s step %d eval %s: PSNR %.2f dB SSIM %.4f",
                stage.name,
                step,
                name,
                s["psnr"],
                s["ssim"],
            )
    logging.info("%s: evaluated in %s", what, format_seconds(progress.seconds))
    if scalars:
        ctx.writer.write_scalars(ctx.global_step(stage_index, step), scalars)
