"""What the stages of one training run share: the run context, SIGTERM handling, progress.

`RunContext` binds the run folder layout of `checkpoint_io` (stage managers, restore
targets, which checkpoint holds a network's final parameters) to the run's networks, stages
and device mesh; `SigtermFlag` turns SIGTERM into a flag the training loop checks after each
call (it then checkpoints and raises `Preempted`).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from clu import metric_writers, periodic_actions
from etils import epath

from sassid_jax import checkpoint_io, sharding
from sassid_jax.data import tiles
from sassid_jax.stages import Stage
from sassid_jax.train_step import State, init_state, make_optimizer


class Preempted(SystemExit):
    """Raised after a SIGTERM once the checkpoint of the current step is written."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.stage, self.step = stage, step


class SigtermFlag:
    """Context manager: SIGTERM sets `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        logging.warning("SIGTERM received: checkpointing the current step, then exiting")
        self.requested = True

    def __enter__(self) -> SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class RunContext:
    """Everything the stages of one run share."""

    config: ml_collections.ConfigDict
    workdir: epath.Path  # local (absolute) or a bucket URL (gs://...)
    networks: dict[str, nn.Module]
    stages: list[Stage]
    train_images: list[np.ndarray] | tiles.TileSource
    eval_examples: list[dict[str, Any]]
    writer: metric_writers.MetricWriter
    progress: periodic_actions.ReportProgress
    sigterm: SigtermFlag
    mesh: jax.sharding.Mesh
    stop_after: tuple[str, int] | None = None

    @property
    def total_steps(self) -> int:
        """Steps of all stages together."""
        return sum(self.config.stages[s.name].steps for s in self.stages)

    def global_step(self, stage_index: int, step: int) -> int:
        """A step counter increasing across stages (TensorBoard's x axis, the run's ETA)."""
        return sum(self.config.stages[s.name].steps for s in self.stages[:stage_index]) + step

    def manager(self, stage: str) -> ocp.CheckpointManager:
        """The checkpoint manager of `stage` (keeps train.keep_checkpoints steps)."""
        return checkpoint_io.stage_manager(
            self.workdir, stage, keep=self.config.train.keep_checkpoints
        )

    def abstract_state(self, stage: Stage) -> State:
        """Shapes, dtypes and (replicated) shardings of a stage's state, for restoring."""
        tx = make_optimizer(self.config, stage.name)
        return checkpoint_io.abstract_state(
            lambda: init_state(self.networks, stage, tx, jax.random.key(0), self.config.crop_size),
            sharding.replicated(self.mesh),
        )

    def restore(self, stage: Stage, step: int, mgr: ocp.CheckpointManager | None = None) -> State:
        """The stage's state at `step` (through `mgr` if given, else a manager of its own)."""
        target = self.abstract_state(stage)
        return checkpoint_io.restore_stage(self.workdir, stage.name, step, target, mgr)

    def final_params(self, name: str, before: int | None = None) -> Any:
        """Parameters of network `name` (replicated over the mesh) from the checkpoint
        `checkpoint_io.final_checkpoint` names: the last stage before index `before` (all
        stages if None) that trains it, at its last step."""
        stage_name, step = checkpoint_io.final_checkpoint(self.config, name, before)
        stage = next(s for s in self.stages if s.name == stage_name)
        return self.restore(stage, step)["params"][name]
