"""What a training run reports while it runs: log lines, TensorBoard scalars, progress, hparams.

Per log interval (train.log_every steps, and each stage's last step) one readable log line and
the scalars <stage>/loss, <stage>/grad_norm and <stage>/lr at the run-wide step; only process
0 writes TensorBoard files. Details: docs/training.md#monitoring.
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


def make_progress(
    config: ml_collections.ConfigDict, writer: metric_writers.MetricWriter
) -> periodic_actions.ReportProgress:
    """clu's progress report over the whole run (all stages of `config`): at each log step
    it writes steps_per_sec and uptime to `writer` and logs the run's percentage and ETA."""
    total = sum(config.stages[name].steps for name in config.stage_order)
    return periodic_actions.ReportProgress(
        num_train_steps=total, writer=writer, every_secs=None, on_steps=log_steps(config)
    )


def hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
    """The config flattened for TensorBoard's hparams: dotted keys; sequences as strings."""
    tree = json.loads(config.to_json_best_effort())
    flat = flax.traverse_util.flatten_dict(tree, sep=".")
    return {
        k: ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
        for k, v in flat.items()
    }


def format_eta(seconds: float) -> str:
    """A duration in seconds as text: 1h02m03s, or 2m03s under an hour."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def log_window(
    ctx: RunContext,
    stage_index: int,
    step: int,
    window: list[dict[str, jax.Array]],
    rate: float,
    extra: str = "",
) -> float:
    """Log the mean loss and grad norm of the steps since the last log, and write them to
    TensorBoard with the learning rate.

    Args:
      ctx: the run.
      stage_index: the stage's index in ctx.stages.
      step: the stage step logged.
      window: the train step's metrics of the calls since the last log ({"loss",
        "grad_norm"}: float32 scalars, or (K,) with train.steps_per_call K).
      rate: steps per second since the last log.
      extra: appended after " | " when given (the held-out loss).
    Returns:
      The mean loss of the interval.
    """
    name = ctx.stages[stage_index].name
    means = {
        k: float(np.mean(np.concatenate([np.ravel(m[k]) for m in jax.device_get(window)])))
        for k in ("loss", "grad_norm")
    }
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
        format_eta((ctx.total_steps - at) / rate),
        f" | {extra}" if extra else "",
    )
    ctx.progress(at)
    return means["loss"]


def evaluate_learners(ctx: RunContext, stage_index: int, state: State, step: int) -> None:
    """Score the learners' current parameters on the run's eval examples; log the PSNR and
    SSIM and write them to TensorBoard (eval/<network>_psnr, eval/<network>_ssim).

    Args:
      ctx: the run.
      stage_index: the stage's index in ctx.stages.
      state: the stage's state (its "params" are scored).
      step: the stage step, for the log and the run-wide TensorBoard step.
    """
    stage = ctx.stages[stage_index]
    scores = scoring.evaluate_networks(
        ctx.networks,
        jax.device_get(state["params"]),
        ctx.eval_examples,
        ctx.config.eval.bnn_block,
        config_sigma(ctx.config),
    )
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
    if scalars:
        ctx.writer.write_scalars(ctx.global_step(stage_index, step), scalars)
