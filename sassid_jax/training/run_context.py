"""What the stages of one training run share: the run context, its inputs, how it stops.

`RunContext` binds the run folder layout of `io.checkpoints` to the run's networks, stages and
device mesh; `SigtermFlag` turns SIGTERM into a flag the loop checks (then `Preempted`);
`load_inputs` reads and checks the datasets before any file of the run is written. Details:
docs/training.md#resume-and-preemption.
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

from sassid_jax.data import sources, tiles
from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.evaluation import scoring
from sassid_jax.io import checkpoints
from sassid_jax.methods.stages import Stage
from sassid_jax.training import sharding
from sassid_jax.training.train_step import State, init_state, make_optimizer


class Preempted(SystemExit):
    """Raised after a SIGTERM once the checkpoint of the current step is written."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.stage, self.step = stage, step


class Interrupted(SystemExit):
    """Ctrl-C (SIGINT) during a run; str() is the one line saying where it stopped, whether a
    checkpoint holds that stage's work and how to resume. Exit code 130."""

    def __init__(self, message: str) -> None:
        super().__init__(128 + signal.SIGINT)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TrainingDivergedError(UserInputError):
    """The loss or the weights became NaN or inf; the last finite state is checkpointed."""


class SigtermFlag:
    """Context manager: SIGTERM sets `requested` instead of killing the process; once
    `training_done` is set (the final evaluation), SIGTERM raises Preempted at once, since
    every stage is checkpointed and the evaluation is redone by the next run.

    Ctrl-C (SIGINT) inside a stage's step loop (`in_loop`) sets `requested` and `interrupted`
    the same way (the loop checkpoints its step and stops: no save is cut short); a second
    Ctrl-C, or one outside the loop, raises KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self.training_done = False
        self.in_loop = False
        self.interrupted = False
        self._previous: Any = None
        self._previous_int: Any = None

    def _interrupt(self, signum: int, frame: Any) -> None:
        if not self.in_loop or self.interrupted:
            raise KeyboardInterrupt
        logging.warning(
            "Ctrl-C: checkpointing the current step, then exiting (Ctrl-C again: at once)"
        )
        self.interrupted = self.requested = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.training_done:
            logging.warning(
                "SIGTERM received during the final evaluation: stopping now (every stage is "
                "checkpointed; the same command redoes the evaluation)"
            )
            raise Preempted("final evaluation", 0)
        logging.warning("SIGTERM received: checkpointing the current step, then exiting")
        self.requested = True

    def __enter__(self) -> SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous_int = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        if self._previous_int is not None:
            signal.signal(signal.SIGINT, self._previous_int)


@dataclasses.dataclass
class RunContext:
    """Everything the stages of one run share: its config, run folder (`workdir`), networks,
    stages, inputs, TensorBoard writer, progress report, SIGTERM flag, mesh, and the
    pretrained networks and held-out crops."""

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
    pretrained: dict[str, Any] = dataclasses.field(default_factory=dict)  # pretrained.load_all
    heldout: np.ndarray | None = None  # (N, crop, crop, 3) uint8 held-out crops (selection.py)
    # {(stage, step): learner params} of the final checkpoints restored so far (`final_params`)
    restored: dict[tuple[str, int], Any] = dataclasses.field(default_factory=dict)
    # (stage, step) the run has reached, for the line Ctrl-C prints (None: still setting up)
    position: tuple[str, int] | None = None

    @property
    def total_steps(self) -> int:
        """Steps of all stages together."""
        return sum(self.config.stages[s.name].steps for s in self.stages)

    def global_step(self, stage_index: int, step: int) -> int:
        """The run-wide step, a counter increasing across stages (TensorBoard's x axis, the
        run's ETA), of stage step `step` of the stage at `stage_index` in `stages`."""
        return sum(self.config.stages[s.name].steps for s in self.stages[:stage_index]) + step

    def should_stop(self, stage: str, step: int, agree: bool) -> bool:
        """Whether to stop after a step: stop_after says so, or SIGTERM came.

        Args:
          stage: the stage's name.
          step: the stage step just run.
          agree: whether all processes check at this step (multi-process runs look at
            SIGTERM, on any process, only there; one process looks at once).
        """
        if self.stop_after == (stage, step):
            return True
        if jax.process_count() == 1:
            return self.sigterm.requested
        return agree and sharding.any_process(self.sigterm.requested)

    def manager(self, stage: str) -> ocp.CheckpointManager:
        """The checkpoint manager of `stage` (keeps train.keep_checkpoints steps)."""
        return checkpoints.stage_manager(
            self.workdir, stage, keep=self.config.train.keep_checkpoints
        )

    def abstract_state(self, stage: Stage) -> State:
        """Shapes, dtypes and (replicated) shardings of a stage's state, for restoring."""
        return abstract_stage_state(self.config, self.networks, stage, self.mesh)

    def restore(self, stage: Stage, step: int, mgr: ocp.CheckpointManager | None = None) -> State:
        """The stage's state at `step` (through `mgr` if given, else a manager of its own)."""
        target = self.abstract_state(stage)
        return checkpoints.restore_stage(self.workdir, stage.name, step, target, mgr)

    def keep_restored(self, stage: str, step: int, state: State) -> None:
        """Keep the learner params of `state`, restored from `stage` at `step`, so that
        `final_params` does not restore that checkpoint again."""
        self.restored[(stage, step)] = state["params"]

    def final_params(self, name: str, before: int | None = None) -> Any:
        """Parameters of network `name` (replicated over the mesh) from the checkpoint
        `checkpoints.final_checkpoint` names: the last stage before index `before` (all
        stages if None) that trains it, at its last step; config.pretrained's if none does.
        Each checkpoint is restored once per run (see `restored`)."""
        if (
            name in self.pretrained
            and checkpoints.training_stage(self.config, name, before) is None
        ):
            return sharding.replicate(self.pretrained[name].params, self.mesh)
        key = checkpoints.final_checkpoint(self.config, name, before)
        if key not in self.restored:
            stage = next(s for s in self.stages if s.name == key[0])
            self.keep_restored(*key, self.restore(stage, key[1]))
        return self.restored[key][name]


def abstract_stage_state(
    config: ml_collections.ConfigDict,
    networks: dict[str, nn.Module],
    stage: Stage,
    mesh: jax.sharding.Mesh,
) -> State:
    """Shapes, dtypes and (replicated) shardings of a stage's state (nothing computed).

    Args:
      config: the run's config.
      networks: the run's networks (`train_step.build_networks`).
      stage: the stage.
      mesh: the device mesh.
    Returns:
      the abstract State, a restore target.
    """
    tx = make_optimizer(config, stage.name)
    return checkpoints.abstract_state(
        lambda: init_state(networks, stage, tx, jax.random.key(0), config.crop_size),
        sharding.replicated(mesh),
    )


def _check_crop(images: list[np.ndarray] | tiles.TileSource, config: Any) -> None:
    """ConfigError when crop_size does not fit in every training image (or tile)."""
    crop, cfg = config.crop_size, config.dataset
    where = f"dataset.noisy_dir {cfg.noisy_dir}" if cfg.get("noisy_dir") else f"dataset {cfg.name}"
    if isinstance(images, tiles.TileSource):
        if crop > images.max_crop:
            raise ConfigError(
                f"crop_size {crop} is larger than {images.max_crop}, the largest "
                f"crop that the tiles of {where} allow"
            )
        return
    for i, image in enumerate(images):
        if min(image.shape[:2]) < crop:
            raise ConfigError(
                f"crop_size {crop} is larger than training image {i} ({image.shape[1]}x"
                f"{image.shape[0]} pixels) of {where}; lower crop_size (a multiple of 32)"
                " or remove the small images"
            )


def load_inputs(config: ml_collections.ConfigDict) -> tuple[Any, list[dict[str, Any]]]:
    """(training images or tiles, eval examples) of config.dataset, after checking that the
    crops fit: all a run reads before it writes anything to its workdir. Images are (H, W, 3)
    uint8; eval examples are limited to config.eval.max_images (0: all)."""
    train_images = sources.load_train_images(config.dataset)
    _check_crop(train_images, config)
    eval_examples = sources.load_eval_examples(config.dataset)
    return train_images, scoring.limit(eval_examples, config.eval.max_images)
