"""A stage's checkpoints and loss history: saving, stopping (SIGTERM, divergence), resuming.

`StageRun` saves a stage's checkpoints with its loss history (workdir/history/<stage>.json)
and stops it; `restore_newest` resumes from the newest checkpoint that restores, moving
damaged ones to workdir/damaged. Details: docs/training.md#resume-and-preemption.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sassid_jax.io import checkpoints
from sassid_jax.io.atomic_files import write_json
from sassid_jax.io.torch_params import check_finite
from sassid_jax.methods.stages import Stage
from sassid_jax.training import sharding
from sassid_jax.training.run_context import (
    Preempted,
    RunContext,
    TrainingDivergedError,
)
from sassid_jax.training.train_step import State

DAMAGED = "damaged"
HISTORY = "history"
History = list[tuple[int, float]]
Window = list[dict[str, Any]]


def _item(workdir: epath.Path, stage: str, step: int) -> epath.Path:
    return checkpoints.stage_dir(workdir, stage) / str(step) / checkpoints.ITEM


def _check_layout(item: epath.Path, target: State) -> None:
    """CheckpointInputError when the checkpoint's arrays differ from `target`'s; any other
    exception when its metadata cannot be read (damage)."""
    meta = ocp.StandardCheckpointHandler().metadata(item)
    got = [(tuple(m.shape), np.dtype(m.dtype)) for m in jax.tree.leaves(meta)]
    want = [(tuple(t.shape), np.dtype(t.dtype)) for t in jax.tree.leaves(target)]
    if got != want:
        raise checkpoints.CheckpointInputError(
            f"{item}: holds arrays of other shapes than this config's networks (a run with "
            "another config?); use another --workdir"
        )


def _try_restore(ctx: RunContext, stage: Stage, step: int, target: State) -> State | None:
    """The state at `step`, or None (with a warning naming the checkpoint) if damaged."""
    item = _item(ctx.workdir, stage.name, step)
    try:
        _check_layout(item, target)
        state = checkpoints.restore_stage(ctx.workdir, stage.name, step, target)
        check_finite(jax.device_get(state), str(item))
    except checkpoints.CheckpointInputError:
        raise
    except Exception as e:  # orbax and tensorstore raise many types for damaged folders
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        logging.warning("stage %s: checkpoint %s is damaged: %s", stage.name, item.parent, reason)
        return None
    return state


def _steps(workdir: epath.Path, stage: str) -> list[int]:
    """The finished checkpoint steps of `stage` (their folders), newest first."""
    folder = checkpoints.stage_dir(workdir, stage)
    if not folder.is_dir():
        return []
    return sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)


def check_layouts(
    workdir: epath.Path, stages: list[Stage], target_of: Callable[[Stage], State]
) -> None:
    """Refuse a resume whose restores would fail, before the run writes anything.

    For each stage, the newest checkpoint whose metadata reads (the one `restore_newest`
    would try first; damaged ones are its business) must hold the arrays of
    `target_of(stage)`: so `config.json` is only rewritten (--allow_config_change) once the
    restores it describes can succeed.

    Args:
      workdir: the run folder.
      stages: the run's stages.
      target_of: a stage's abstract state under the run's config (`abstract_stage_state`).
    Raises:
      CheckpointInputError: naming the checkpoint and the fields to look at.
    """
    for stage in stages:
        steps = _steps(workdir, stage.name)
        target = target_of(stage) if steps else None
        for step in steps:
            try:
                _check_layout(_item(workdir, stage.name, step), target)
            except checkpoints.CheckpointInputError as e:
                raise checkpoints.CheckpointInputError(
                    f"{e} (or resume without the changed networks / crop fields); "
                    "nothing was changed in the run folder"
                ) from e
            except Exception:  # unreadable metadata: damaged, moved aside on restore
                continue
            break


def interrupted_message(workdir: epath.Path, position: tuple[str, int] | None) -> str:
    """The one line Ctrl-C prints: where the run stopped, its stage's newest checkpoint, and
    how to resume.

    Args:
      workdir: the run folder.
      position: (stage, step) reached, or None during set-up.
    Returns:
      the line (without 'interrupted: ').
    """
    if position is None:
        return "during set-up, before any training step; nothing to resume (run it again)"
    stage, step = position
    if stage == "final evaluation":
        return (
            "during the final evaluation; every stage is checkpointed: run the same command "
            "again to redo the evaluation"
        )
    steps = _steps(workdir, stage)
    saved = f"newest checkpoint: step {steps[0]}" if steps else "no checkpoint of it yet"
    return f"stage {stage} at step {step} ({saved}); run the same command again to resume"


def move_aside(workdir: epath.Path, stage: str, step: int) -> epath.Path:
    """Move a checkpoint to workdir/damaged/<stage>/<step> (<step>.<n> when taken).

    Args:
      workdir: the run folder.
      stage: the stage's name.
      step: the checkpoint's step.
    Returns:
      The checkpoint's new path.
    """
    source = checkpoints.stage_dir(workdir, stage) / str(step)
    folder = workdir / DAMAGED / stage
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / str(step), 0
    while target.exists():
        n += 1
        target = folder / f"{step}.{n}"
    source.rename(target)
    return target


def restore_newest(ctx: RunContext, stage: Stage) -> tuple[State | None, int | None]:
    """(state, step) of the newest checkpoint of `stage` that restores and is finite, or
    (None, None) when there is none; damaged ones are moved to workdir/damaged.
    In multi-process runs every process takes the same decision."""
    with ctx.manager(stage.name) as mgr:
        steps = sorted(mgr.all_steps(), reverse=True)
    if not steps:
        return None, None
    target = ctx.abstract_state(stage)
    for step in steps:
        state = _try_restore(ctx, stage, step, target)
        if not sharding.any_process(state is None):
            return state, step
        if jax.process_index() == 0:
            moved = move_aside(ctx.workdir, stage.name, step)
            logging.warning("stage %s: moved damaged checkpoint %d to %s", stage.name, step, moved)
        sharding.any_process(
            False
        )  # a barrier: the move is done before anyone lists the steps again
    logging.warning("stage %s: no checkpoint restores; starting the stage afresh", stage.name)
    return None, None


def history_path(workdir: epath.Path, stage: str) -> epath.Path:
    """workdir/history/<stage>.json: the loss history of stage `stage` of run folder
    `workdir`."""
    return workdir / HISTORY / f"{stage}.json"


def save_history(
    workdir: epath.Path, stage: str, step: int, history: History, window: Window
) -> None:
    """Record a stage's loss history with its checkpoint of `step` (process 0 only).

    Args:
      workdir: the run folder.
      stage: the stage's name.
      step: the step of the checkpoint being saved.
      history: the stage's (step, mean loss) log points.
      window: metrics of the calls since the last log point ({"loss", "grad_norm"}: float32
        scalars or (K,) arrays); their per-step values are kept.
    """
    if jax.process_index() != 0:
        return
    pending = {
        k: [float(v) for m in jax.device_get(window) for v in np.ravel(m[k])]
        for k in ("loss", "grad_norm")
    }
    payload = {"step": step, "history": history, "pending": pending}
    write_json(history_path(workdir, stage), payload)


def load_history(workdir: epath.Path, stage: str, step: int) -> tuple[History, Window]:
    """A stage's loss history as `save_history` recorded it, at a checkpoint's step.

    Args:
      workdir: the run folder.
      stage: the stage's name.
      step: the step resumed from (0: fresh, empty history).
    Returns:
      (log points [(step, mean loss)] up to `step`, window of the interval in progress at
      `step`); the window is empty unless recorded with the checkpoint of `step`. A missing
      or unreadable file gives an empty history (with a warning if unreadable).
    """
    path = history_path(workdir, stage)
    if step == 0 or not path.exists():
        return [], []
    try:
        saved = json.loads(path.read_text())
        history = [(int(s), float(loss)) for s, loss in saved["history"] if s <= step]
        pending = saved["pending"] if saved["step"] == step else {"loss": []}
        window = [{k: np.asarray(v, np.float32) for k, v in pending.items()}]
    except (OSError, ValueError, KeyError, TypeError) as e:
        logging.warning("%s: cannot read the loss history (%s); it restarts here", path, e)
        return [], []
    return history, window if len(window[0]["loss"]) else []


@dataclasses.dataclass
class StageRun:
    """A training stage's checkpoint manager, its (step, loss) log points and the metrics of
    the log interval in progress (the training loop appends to both)."""

    ctx: RunContext
    mgr: ocp.CheckpointManager
    stage: str
    history: History
    window: Window
    on_save: Callable[[int], None] | None = None  # also called with each checkpoint's step

    def save(self, state: State, step: int) -> None:
        """Checkpoint the stage's `state` at stage step `step`, and the loss history with it."""
        if self.on_save is not None:
            self.on_save(step)
        self.mgr.save(step, args=ocp.args.StandardSave(state), force=True)
        save_history(self.ctx.workdir, self.stage, step, self.history, self.window)

    def stop(self, state: State, step: int) -> NoReturn:
        """Make sure `state` is checkpointed at stage step `step`, then raise Preempted."""
        self.mgr.wait_until_finished()
        if self.mgr.latest_step() != step:
            self.save(state, step)
            self.mgr.wait_until_finished()
        logging.warning("stage %s: stopped at step %d (checkpoint written)", self.stage, step)
        raise Preempted(self.stage, step)

    def diverged(self, state: State, step: int) -> NoReturn:
        """Checkpoint the last finite state unless saved already, then raise
        TrainingDivergedError.

        Args:
          state: the state the training step kept: the last finite one, at its own step
            counter.
          step: the stage step at which the divergence was seen.
        """
        good = int(jax.device_get(state["step"]))
        self.mgr.wait_until_finished()
        if good not in self.mgr.all_steps():
            self.history[:] = [p for p in self.history if p[0] <= good]
            self.window = []
            self.save(state, good)
            self.mgr.wait_until_finished()
        lr = self.ctx.config.stages[self.stage].lr
        raise TrainingDivergedError(
            f"stage {self.stage}: training diverged at step {good + 1} (the loss or the weights "
            f"became NaN or inf; checked at step {step}); the last finite state, step {good}, "
            f"is checkpointed. Lower stages.{self.stage}.lr ({lr}) or check the training images"
        )
