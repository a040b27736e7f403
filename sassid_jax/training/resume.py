"""A stage's checkpoints and loss history: saving, stopping (SIGTERM, divergence), resuming.

`StageRun` saves a training stage's checkpoints with its loss history, and stops it:
`stop` checkpoints the current step and raises Preempted; `diverged` checkpoints the last
finite state (which train_step's guard kept) and raises TrainingDivergedError.

`restore_newest` tries a stage's checkpoints newest first. A checkpoint that cannot be read
(a truncated or missing data file, a missing or damaged _METADATA) or that holds NaN or inf
is damaged: it is moved, never deleted, to `workdir/damaged/<stage>/<step>` with a warning,
and the previous one is tried; when none is left the stage starts afresh (with a warning;
the damaged steps stay there for inspection). A readable checkpoint whose arrays have other
shapes than the config's networks is not damage but another run: CheckpointInputError.

`workdir/history/<stage>.json` keeps the stage's (step, mean loss) log points and the
per-step metrics of the log interval in progress, written by process 0 whenever a checkpoint
is saved, so that a resumed run reports the loss history of an uninterrupted one.
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


def move_aside(workdir: epath.Path, stage: str, step: int) -> epath.Path:
    """Move checkpoint `step` of `stage` to workdir/damaged/<stage>/<step>[.<n>]; its path."""
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
    (None, None) when there is none; damaged ones are moved aside (see module docstring).
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
    """workdir/history/<stage>.json."""
    return workdir / HISTORY / f"{stage}.json"


def save_history(
    workdir: epath.Path, stage: str, step: int, history: History, window: Window
) -> None:
    """Record, with the checkpoint of `step`, the stage's log points and the per-step loss
    and grad norm of the log interval in progress (`window`: metrics of the calls since the
    last log point). Process 0 only."""
    if jax.process_index() != 0:
        return
    pending = {
        k: [float(v) for m in jax.device_get(window) for v in np.ravel(m[k])]
        for k in ("loss", "grad_norm")
    }
    payload = {"step": step, "history": history, "pending": pending}
    write_json(history_path(workdir, stage), payload)


def load_history(workdir: epath.Path, stage: str, step: int) -> tuple[History, Window]:
    """(log points up to `step`, window of the interval in progress at `step`) as recorded
    by `save_history`; the window is empty unless recorded with the checkpoint of `step`.
    A missing or unreadable file gives an empty history (with a warning if unreadable)."""
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
        """Checkpoint `state` at `step`, and the loss history with it."""
        if self.on_save is not None:
            self.on_save(step)
        self.mgr.save(step, args=ocp.args.StandardSave(state), force=True)
        save_history(self.ctx.workdir, self.stage, step, self.history, self.window)

    def stop(self, state: State, step: int) -> NoReturn:
        """Make sure the checkpoint of `step` is written, then raise Preempted."""
        self.mgr.wait_until_finished()
        if self.mgr.latest_step() != step:
            self.save(state, step)
            self.mgr.wait_until_finished()
        logging.warning("stage %s: stopped at step %d (checkpoint written)", self.stage, step)
        raise Preempted(self.stage, step)

    def diverged(self, state: State, step: int) -> NoReturn:
        """Checkpoint the last finite state (`state`, at its own step counter, which the
        training step kept) unless saved already, then raise TrainingDivergedError."""
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
