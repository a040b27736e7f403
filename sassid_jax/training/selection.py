"""Model selection without ground truth: a held-out self-supervised loss, best step, early stop.

On a few photos the BNN memorises them; the stage's own loss on crops never trained on (the
bottom band of each photo) picks the step whose parameters the stage's final checkpoint keeps,
and may stop a stage early. Details: docs/training.md#selection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sassid_jax.data import tiles
from sassid_jax.errors import ConfigError
from sassid_jax.io.atomic_files import write_json
from sassid_jax.methods.stages import Stage
from sassid_jax.training import sharding
from sassid_jax.training.train_step import State

if TYPE_CHECKING:  # run_context loads TensorFlow, which config checks must not
    from sassid_jax.training.run_context import RunContext

FOLDER = "selection"
Curve = list[tuple[int, float]]


def check_config(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming the first bad selection.* field (no-op without a selection block)."""
    sel = config.get("selection")
    if sel is None or not sel.enabled:
        return
    for field in ("max_crops", "every"):
        value = sel[field]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"selection.{field} must be a positive integer, got {value!r}")
    if not isinstance(sel.patience, int) or isinstance(sel.patience, bool) or sel.patience < 0:
        raise ConfigError(f"selection.patience must be an integer >= 0, got {sel.patience!r}")
    if not 0 < sel.fraction < 1:
        raise ConfigError(f"selection.fraction must be in (0, 1), got {sel.fraction!r}")
    if not 0 <= sel.min_delta < 1:
        raise ConfigError(f"selection.min_delta must be in [0, 1), got {sel.min_delta!r}")
    per_call = config.train.get("steps_per_call", 1)
    if sel.every % per_call:
        raise ConfigError(
            f"selection.every ({sel.every}) must be a multiple of train.steps_per_call "
            f"({per_call}): the held-out loss is computed between calls"
        )


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The split of the training photos.

    Attributes:
      train: per photo, the rows training crops come from: (H_i - band_i, W_i, 3) uint8, or
        the whole photo when it has no band.
      crops: (N, crop, crop, 3) uint8 held-out crops.
      where: (photo index, top, left) of each crop in its photo.
    """

    train: list[np.ndarray]
    crops: np.ndarray
    where: list[tuple[int, int, int]]


def band_rows(height: int, crop: int, fraction: float) -> int:
    """Rows held out at the bottom of a photo: max(crop, ceil(fraction * height)), or 0 when
    the rows above would not hold a crop.

    Args:
      height: the photo's height in pixels.
      crop: the training crop side in pixels.
      fraction: selection.fraction, in (0, 1).
    """
    band = max(crop, math.ceil(fraction * height))
    return band if height - band >= crop else 0


def split(images: Sequence[np.ndarray], crop: int, fraction: float, max_crops: int) -> HeldOut:
    """Hold out the bottom band of each photo and cut the bands into crops on a grid.

    Deterministic; no crop overlaps another or the rows left for training.

    Args:
      images: (H_i, W_i, 3) uint8 photos.
      crop: crop side in pixels (config.crop_size).
      fraction: selection.fraction, in (0, 1) (`band_rows`).
      max_crops: most crops kept, evenly spread over all bands.
    Returns:
      The `HeldOut` split; its crops are (0, crop, crop, 3) when no photo has room.
    """
    train, where = [], []
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        band = band_rows(height, crop, fraction)
        train.append(image[: height - band])
        where += [
            (i, height - band + r * crop, c * crop)
            for r in range(band // crop)
            for c in range(width // crop)
        ]
    if len(where) > max_crops:
        where = [where[j] for j in np.linspace(0, len(where) - 1, max_crops).round().astype(int)]
    crops = [images[i][t : t + crop, x : x + crop] for i, t, x in where]
    crops_array = np.stack(crops) if crops else np.zeros((0, crop, crop, 3), np.uint8)
    return HeldOut(train, crops_array, where)


def split_for_run(
    config: ml_collections.ConfigDict, images: list[np.ndarray] | tiles.TileSource
) -> tuple[list[np.ndarray] | tiles.TileSource, np.ndarray | None]:
    """The split of a run's training images, with one log line saying what was held out or
    why selection is off.

    Args:
      config: the run's config (selection.*, crop_size).
      images: (H, W, 3) uint8 training photos, or SIDD-Medium tiles (no selection).
    Returns:
      (training images, held-out crops (N, crop, crop, 3) uint8, or None: selection off).
    """
    sel = config.get("selection")
    if sel is None or not sel.enabled:
        return images, None
    if isinstance(images, tiles.TileSource):
        logging.info("selection: off (SIDD-Medium tiles: no held-out band; all steps are kept)")
        return images, None
    held = split(images, config.crop_size, sel.fraction, sel.max_crops)
    if not len(held.crops):
        logging.info(
            "selection: off (no training photo is tall enough for a held-out band of "
            "%d rows plus a %d-pixel training crop)",
            config.crop_size,
            config.crop_size,
        )
        return images, None
    bands = sum(1 for t, im in zip(held.train, images, strict=True) if len(t) < len(im))
    logging.info(
        "selection: %d held-out %dx%d crops from the bottom bands of %d of %d photos "
        "(training crops never touch them); held-out loss every %d steps",
        len(held.crops),
        config.crop_size,
        config.crop_size,
        bands,
        len(images),
        sel.every,
    )
    return held.train, held.crops


def make_heldout_loss(networks: dict[str, Any], stage: Stage, mesh: jax.sharding.Mesh):
    """The stage's loss on held-out crops, without gradient.

    Args:
      networks: modules by name.
      stage: the stage whose `Stage.loss` is computed.
      mesh: the device mesh; inputs and output are replicated on it.
    Returns:
      Jitted (learner params, teacher params, x) -> float32 scalar loss, x (N, H, W, 3)
      float32 on [0, 255].
    """

    def loss(params: dict[str, Any], teachers: dict[str, Any], x: jax.Array) -> jax.Array:
        every = {**teachers, **params}
        return stage.loss(stage.outputs(networks, every, x), x)

    repl = sharding.replicated(mesh)
    return jax.jit(loss, in_shardings=(repl, repl, repl), out_shardings=repl)


def replay(curve: Curve, min_delta: float) -> tuple[int | None, float, int]:
    """The best step of a held-out curve and its patience count.

    Args:
      curve: [(step, loss)] in step order.
      min_delta: relative fall below the best that counts as an improvement, in [0, 1).
    Returns:
      (best step, best loss, evaluations since the last improvement by more than min_delta);
      (None, inf, 0) for an empty curve. NaN never improves.
    """
    best_step, best, ref, wait = None, math.inf, math.inf, 0
    for step, loss in curve:
        if loss < best:
            best_step, best = step, loss
        if loss < ref * (1 - min_delta):
            ref, wait = loss, 0
        else:
            wait += 1
    return best_step, best, wait


def curve_path(workdir: epath.Path, stage: str) -> epath.Path:
    """workdir/selection/<stage>.json: the file of stage `stage`'s held-out curve."""
    return workdir / FOLDER / f"{stage}.json"


def load_record(workdir: epath.Path, stage: str, upto: int) -> dict[str, Any]:
    """The record `Tracker.persist` wrote for a stage, its curve cut at a step.

    Args:
      workdir: the run folder.
      stage: the stage's name.
      upto: last step of the curve kept.
    Returns:
      {"step", "curve": [(step, loss)], "best_step", "stopped_at"}, or {"curve": []} when
      there is no readable file (a warning if unreadable).
    """
    path, empty = curve_path(workdir, stage), {"curve": []}
    if not path.exists():
        return empty
    try:
        saved = json.loads(path.read_text())
        saved["curve"] = [(int(s), float(v)) for s, v in saved["curve"] if s <= upto]
    except (OSError, ValueError, KeyError, TypeError) as e:
        logging.warning("%s: cannot read the held-out curve (%s); it restarts here", path, e)
        return empty
    return saved


def _manager(workdir: epath.Path, stage: str, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(workdir / FOLDER / stage, options=options)


class Tracker:
    """One stage's held-out evaluations, best state and early stop.

    A disabled tracker (the run has no held-out crops) never evaluates and keeps what it is
    given.

    Args:
      ctx: the run (its held-out crops, networks, mesh, config).
      stage_index: index of the stage in ctx.stages.
      teachers: the frozen teachers' parameters by name (empty with precomputed teachers:
        then they are restored here).
    """

    def __init__(self, ctx: RunContext, stage_index: int, teachers: dict[str, Any]) -> None:
        self.ctx, self.stage = ctx, ctx.stages[stage_index]
        self.steps = ctx.config.stages[self.stage.name].steps
        self.enabled = ctx.heldout is not None
        self.curve: Curve = []
        self.best_step: int | None = None
        self.best_loss, self.wait, self.stopped_at = math.inf, 0, None
        self.best_state: State | None = None  # host copy
        self.saved_best: int | None = None
        self.note = ""
        if self.enabled:
            sel = ctx.config.selection
            self.every, self.patience, self.min_delta = sel.every, sel.patience, sel.min_delta
            self.keep = ctx.config.train.keep_checkpoints + 1
            self.fn = make_heldout_loss(ctx.networks, self.stage, ctx.mesh)
            missing = [t for t in self.stage.teachers if t not in teachers]
            given = {t: ctx.final_params(t, stage_index) for t in missing}  # precomputed mode
            self.teachers = {**{t: teachers[t] for t in teachers if t not in missing}, **given}
            self.x = sharding.replicate(np.asarray(ctx.heldout, np.float32), ctx.mesh)

    @classmethod
    def start(cls, ctx: RunContext, index: int, teachers: dict, run: Any, state: State, at: int):
        """The tracker of a stage's run, resumed at a step.

        Args:
          ctx, index, teachers: as for the class (index: the stage index).
          run: the stage's `resume.StageRun`; the tracker persists with its checkpoints.
          state: the stage's state at step `at`.
          at: the step the stage starts from (0: fresh).
        """
        tracker = cls(ctx, index, teachers)
        tracker.resume(state, at)
        run.on_save = tracker.persist
        return tracker

    def resume(self, state: State, start: int) -> None:
        """Continue from `state` at step `start`: the curve up to it, its best and patience
        count; the best state from workdir/selection (later ones, from a run that went
        further before a crash, are removed). A collective in multi-process runs."""
        if not self.enabled:
            return
        name, workdir = self.stage.name, self.ctx.workdir
        self.curve = load_record(workdir, name, start)["curve"]
        self.best_step, self.best_loss, self.wait = replay(self.curve, self.min_delta)
        if jax.process_index() == 0:
            for folder in (workdir / FOLDER / name).glob("*"):
                if folder.name.isdigit() and int(folder.name) > start:
                    folder.rmtree()
        sharding.any_process(
            False
        )  # a barrier: stale best states are gone before anyone lists them
        if self.best_step is None:
            return
        if self.best_step == start:
            self.best_state = jax.device_get(state)
        else:
            with _manager(workdir, name, self.keep) as mgr:
                if self.best_step in mgr.all_steps():
                    target = self.ctx.abstract_state(self.stage)
                    args = ocp.args.StandardRestore(target)
                    self.best_state = jax.device_get(mgr.restore(self.best_step, args=args))
        if self.best_state is None:
            logging.warning(
                "stage %s: the kept state of step %d is gone; the best is tracked afresh",
                name,
                self.best_step,
            )
            self.best_step, self.best_loss, self.wait = None, math.inf, 0
        self.saved_best = self.best_step

    def due(self, step: int) -> bool:
        """Whether the held-out loss is computed after stage step `step`."""
        return self.enabled and (step % self.every == 0 or step == self.steps)

    def evaluate(self, state: State, step: int) -> bool:
        """Compute the held-out loss of `state` (log note, TensorBoard, curve, best state).

        Args:
          state: the stage's state after stage step `step`.
          step: the stage step.
        Returns:
          True when the stage should stop early.
        """
        loss = float(jax.device_get(self.fn(state["params"], self.teachers, self.x)))
        self.curve.append((step, loss))
        _, _, self.wait = replay(self.curve, self.min_delta)
        if loss < self.best_loss:
            self.best_step, self.best_loss = step, loss
            self.best_state = jax.device_get(state)
        self.note = f"held-out {loss:.4f} (best {self.best_loss:.4f} @ step {self.best_step})"
        at = self.ctx.global_step(self.ctx.stages.index(self.stage), step)
        self.ctx.writer.write_scalars(at, {f"heldout/{self.stage.name}": loss})
        stop = 0 < self.patience <= self.wait and step < self.steps
        self.stopped_at = step if stop else None
        return stop

    def pop_note(self) -> str:
        """The held-out part of the next log line ("" when nothing was evaluated)."""
        note, self.note = self.note, ""
        return note

    def final_state(self, state: State, step: int) -> State:
        """What the stage's final checkpoint holds when it ends after `step`; logs which step
        is kept and why.

        Args:
          state: the stage's current state.
          step: the stage step it ends after.
        Returns:
          The best state (replicated on the mesh), or `state` when there is none.
        """
        if self.best_state is None:
            return state
        why = f"ended at step {step}"
        if self.stopped_at is not None:
            why = (
                f"stopped early at step {step} of {self.steps}: the held-out loss has not "
                f"fallen by more than {self.min_delta:.2%} for {self.wait} evaluations"
            )
        kept = f"step {self.best_step} (lowest held-out loss {self.best_loss:.4f} of "
        kept += f"{len(self.curve)} evaluations)"
        logging.info("stage %s: %s; keeping %s", self.stage.name, why, kept)
        return sharding.replicate(self.best_state, self.ctx.mesh)

    def persist(self, step: int) -> None:
        """With the checkpoint of stage step `step` (StageRun.on_save): write the curve and,
        unless saved already or the stage is ending (its final checkpoint holds it), the best
        state."""
        if not self.enabled:
            return
        payload = {"step": step, "curve": self.curve, "best_step": self.best_step}
        payload["stopped_at"] = self.stopped_at
        if jax.process_index() == 0:
            write_json(curve_path(self.ctx.workdir, self.stage.name), payload)
        ending = step == self.steps
        if self.best_state is None or self.saved_best == self.best_step or ending:
            return
        best = sharding.replicate(self.best_state, self.ctx.mesh)
        with _manager(self.ctx.workdir, self.stage.name, self.keep) as mgr:
            mgr.save(self.best_step, args=ocp.args.StandardSave(best), force=True)
        self.saved_best = self.best_step


def summary(workdir: epath.Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The held-out curves of a run for results.json.

    Args:
      workdir: the run folder.
      config: the run's config (its stage_order and steps).
    Returns:
      {"heldout": {stage: [[step, loss], ...]}, "heldout_best": {stage: {"step", "loss",
      "stopped_at"}}} of the stages with a recorded curve.
    """
    curves, best = {}, {}
    for name in config.stage_order:
        record = load_record(workdir, name, config.stages[name].steps)
        if record["curve"]:
            curves[name] = [list(p) for p in record["curve"]]
            step = record.get("best_step")
            loss = dict(record["curve"]).get(step)
            best[name] = {"step": step, "loss": loss, "stopped_at": record.get("stopped_at")}
    return {"heldout": curves, "heldout_best": best}
