"""One stage-generic training loop for SASL: bnn -> lan -> unet (or any stage list).

`train_and_evaluate(config, workdir)` trains the config's stages in order, each in one jitted
step with its frozen teachers, checkpointing to workdir/checkpoints/<stage>/<step>; a restart
resumes each stage from its newest checkpoint that restores and ends with the parameters of an
uninterrupted run. Then the final evaluation. Details: docs/training.md#stage-loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers
from etils import epath

from sassid_jax.configuration import check_resume_compatible, validate_config
from sassid_jax.data import pipeline, tiles
from sassid_jax.errors import ConfigError
from sassid_jax.evaluation import report
from sassid_jax.io import checkpoints, workdir_lock
from sassid_jax.io.atomic_files import write_json
from sassid_jax.io.paths import absolute, check_url, is_local
from sassid_jax.logs import ProgressLog
from sassid_jax.methods.stages import plain_forward
from sassid_jax.nn import NETWORK_NAMES
from sassid_jax.noise.blind_size import resolve_config_blind_size
from sassid_jax.training import monitoring, pretrained, resume, selection, sharding, teacher_cache
from sassid_jax.training.resume import History
from sassid_jax.training.run_context import (
    Interrupted as Interrupted,  # re-exported: what Ctrl-C raises
)
from sassid_jax.training.run_context import (
    Preempted as Preempted,  # re-exported: what a stop raises
)
from sassid_jax.training.run_context import (
    RunContext,
    SigtermFlag,
    abstract_stage_state,
    load_inputs,
)
from sassid_jax.training.run_context import TrainingDivergedError as TrainingDivergedError
from sassid_jax.training.train_step import (
    State,
    build_networks,
    build_stages,
    init_state,
    make_optimizer,
    make_train_step,
)

STAGE_SEED_STRIDE = 1000


def _batches(
    ctx: RunContext, stage_index: int, start: int, steps: int, aux: list[np.ndarray] | None = None
) -> Iterator[np.ndarray]:
    kwargs = {
        "crop_size": ctx.config.crop_size,
        "batch_size": ctx.config.batch_size,
        "seed": ctx.config.seed * STAGE_SEED_STRIDE + stage_index,
        "start_step": start,
        "num_steps": steps - start,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
    }
    if isinstance(ctx.train_images, tiles.TileSource):  # SIDD-Medium: random-access tiles
        return tiles.tile_batches(ctx.train_images, **kwargs)
    return pipeline.numpy_batches(pipeline.train_dataset(ctx.train_images, aux=aux, **kwargs))


def _groups(batches: Iterator[np.ndarray], start: int, size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive batches in groups that end at multiples of `size` (the first and last
    groups may be shorter), so that steps reached after a group are the same whatever step
    a run resumed from."""
    group: list[np.ndarray] = []
    step = start
    for batch in batches:
        group.append(batch)
        step += 1
        if step % size == 0:
            yield group
            group = []
    if group:
        yield group


def train_stage(ctx: RunContext, stage_index: int) -> tuple[History, dict[str, Any]]:
    """Train one stage to its last step, resuming from its newest checkpoint that restores.

    Args:
      ctx: the run.
      stage_index: the stage's index in ctx.stages.

    Returns:
      (history, timing): the stage's (step, mean loss) log points (those of earlier runs in
      this workdir too, see `resume.load_history`) and the timing of this call {"seconds":
      wall time of the call (checkpoint restore, teacher set-up, steps, checkpoints, end
      evaluation), "steps_run": steps trained by this call, "steps_per_sec": steps_run over
      the seconds of the step loop (compilation, checkpoint saves and train.eval_every
      evaluations included; set-up and the end-of-stage evaluation not; 0.0 when nothing
      ran)}.
    """
    t0 = time.perf_counter()
    stage = ctx.stages[stage_index]
    steps = ctx.config.stages[stage.name].steps
    state, latest = resume.restore_newest(ctx, stage)
    history, window = resume.load_history(ctx.workdir, stage.name, latest or 0)
    if latest is not None and latest >= steps:
        logging.info("stage %s: finished earlier (step %d), skipping", stage.name, latest)
        ctx.keep_restored(stage.name, latest, state)  # later stages and the report reuse it
        steps_run, loop_seconds = 0, 0.0
    else:
        with ctx.manager(stage.name) as mgr:
            run = resume.StageRun(ctx, mgr, stage.name, history, window)
            steps_run, loop_seconds = _train_from(ctx, stage_index, run, state, latest or 0)
    timing = {
        "seconds": time.perf_counter() - t0,
        "steps_run": steps_run,
        "steps_per_sec": steps_run / loop_seconds if steps_run else 0.0,
    }
    return history, timing


def _initial_state(ctx: RunContext, stage_index: int, state: State | None, start: int) -> State:
    """The restored `state` at step `start`, or a fresh one at step 0 when None."""
    stage, cfg = ctx.stages[stage_index], ctx.config
    if state is not None:
        steps = cfg.stages[stage.name].steps
        logging.info("stage %s: resuming at step %d of %d", stage.name, start, steps)
        return state
    key = jax.random.fold_in(jax.random.key(cfg.seed), stage_index)
    tx = make_optimizer(cfg, stage.name)
    state = init_state(ctx.networks, stage, tx, key, cfg.crop_size)
    if stage.starts_from_teachers:  # e.g. AT-BSN(D)'s student from its teacher's trunk
        teachers = {t: ctx.final_params(t, stage_index) for t in stage.teachers}
        params = stage.start(state["params"], jax.device_get(teachers))
        state = {**state, "params": params, "opt_state": tx.init(params)}
    state = pretrained.start_from(ctx.pretrained, cfg, stage_index, state, tx)  # config.pretrained
    return sharding.replicate(state, ctx.mesh)


def _teachers(ctx: RunContext, stage_index: int) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """(teacher params for the step, per-image teacher outputs for the batches or None).

    Online: the teachers' final parameters. Precomputed: their outputs on every training
    image (teacher_cache), and no parameters."""
    stage, cfg = ctx.stages[stage_index], ctx.config
    teachers = {t: ctx.final_params(t, stage_index) for t in stage.teachers}
    if cfg.train.get("teachers", "online") != "precomputed" or not stage.teachers:
        return teachers, None
    t0 = time.perf_counter()
    forwards = {t: stage.forward(t) for t in stage.teachers}  # image-wise (TBSN's target) or plain
    procedures = {t: f for t, f in forwards.items() if f is not plain_forward}
    images = ctx.train_images
    progress = ProgressLog(
        f"stage {stage.name}: teachers' outputs",
        len(images) if isinstance(images, Sequence) else 0,  # else precompute refuses
        "images",
    )
    aux = teacher_cache.precompute(
        ctx.networks,
        teachers,
        stage.teachers,
        images,
        bnn_block=cfg.crop_size,
        forwards=procedures,
        progress=progress.advance,
    )
    logging.info(
        "stage %s: teachers %s precomputed on %d images in %.1f s",
        stage.name,
        stage.teachers,
        len(aux),
        time.perf_counter() - t0,
    )
    return {}, aux


def _train_from(
    ctx: RunContext, stage_index: int, run: resume.StageRun, state: State | None, start: int
) -> tuple[int, float]:
    """The body of `train_stage` for an unfinished stage, from `state` at step `start` (None:
    fresh); `run` saves its checkpoints and collects its log points.

    Returns (steps run, seconds of the step loop)."""
    stage, cfg, tc = ctx.stages[stage_index], ctx.config, ctx.config.train
    steps = cfg.stages[stage.name].steps
    ctx.position = (stage.name, start)
    state = _initial_state(ctx, stage_index, state, start)
    teachers, aux = _teachers(ctx, stage_index)
    tracker = selection.Tracker.start(ctx, stage_index, teachers, run, state, start)
    several = tc.get("steps_per_call", 1) > 1
    step_fn = make_train_step(
        ctx.networks,
        stage,
        make_optimizer(cfg, stage.name),
        ctx.mesh,
        tc.get("teachers", "online"),
        several_steps=several,
    )
    data_sharding = (
        sharding.steps_batch_sharding(ctx.mesh) if several else sharding.batch_sharding(ctx.mesh)
    )
    ctx.progress(ctx.global_step(stage_index, start))
    t_loop = t_window = time.perf_counter()
    finite = sharding.replicate(np.True_, ctx.mesh)
    step = since = start
    batches = _batches(ctx, stage_index, start, steps, aux)
    ctx.sigterm.in_loop = True  # Ctrl-C from here: checkpoint the step, then stop
    try:
        for group in _groups(batches, start, tc.get("steps_per_call", 1)):
            x = sharding.global_batch(np.stack(group) if several else group[0], data_sharding)
            state, metrics = step_fn(state, teachers, x, finite)
            finite = metrics["finite"]
            step += len(group)
            ctx.position = (stage.name, step)
            run.window.append(metrics)
            due = tracker.due(step)
            logs = step % tc.log_every == 0 or step == steps or due
            saves = step % tc.checkpoint_every == 0 or step == steps
            evals = tc.eval_every and step % tc.eval_every == 0 and step != steps
            if (logs or saves or evals) and not finite:  # the host waits for the step here only
                run.diverged(state, step)
            ends = (due and tracker.evaluate(state, step)) or step == steps  # True: stop early
            if logs:
                jax.block_until_ready(run.window)  # steps run asynchronously: time them
                rate = (step - since) / (time.perf_counter() - t_window)
                note = tracker.pop_note()
                loss = monitoring.log_window(ctx, stage_index, step, run.window, rate, note)
                run.history.append((step, loss))
                t_window, run.window, since = time.perf_counter(), [], step
            if ends:  # the final checkpoint holds the kept (best) state, also after an early stop
                state = tracker.final_state(state, step)
                run.save(state, steps)
                if step < steps:
                    break
            elif saves:
                run.save(state, step)
            if evals:
                monitoring.evaluate_learners(ctx, stage_index, state, step)
            if ctx.should_stop(stage.name, step, agree=bool(logs or saves or evals)):
                if not finite:
                    run.diverged(state, step)
                run.stop(state, step)
    finally:
        ctx.sigterm.in_loop = False
    jax.block_until_ready(state)
    loop_seconds = time.perf_counter() - t_loop
    run.mgr.wait_until_finished()
    monitoring.evaluate_learners(ctx, stage_index, state, step)
    return step - start, loop_seconds


class WorkdirError(ConfigError):
    """A --workdir that cannot hold a run: an unsupported URL, a file, not writable."""


def _check_run_config(
    config: ml_collections.ConfigDict, workdir: epath.Path, allow_change: bool
) -> dict[str, Any]:
    """The config to write to config.json, after checking it against the saved one (a resume
    with another config is refused unless `allow_change`); nothing is written here."""
    path = workdir / checkpoints.CONFIG_FILE
    current = json.loads(config.to_json_best_effort())
    if path.exists():
        try:
            saved = checkpoints.read_run_config(workdir)
        except checkpoints.CheckpointInputError as e:
            raise ConfigError(
                f"{e}; restore it, delete it to start this workdir afresh, or use another --workdir"
            ) from e
        check_resume_compatible(saved, current, path, allow_change)
    return current


def _check_workdir(workdir: str | epath.PathLike) -> epath.Path:
    """`workdir` made absolute, after refusing (WorkdirError) an unsupported URL or a path
    that is an existing file."""
    try:
        check_url(workdir, "--workdir")
    except ConfigError as e:
        raise WorkdirError(str(e)) from e
    path = absolute(workdir)
    if is_local(path) and os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path}: is a file, not a folder; name a folder")
    return path


@contextlib.contextmanager
def _locked(workdir: epath.Path) -> Iterator[None]:
    """Hold the workdir lock (process 0), turning a failure to create or lock the folder
    (read-only, a bucket that cannot be reached) into one WorkdirError."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                workdir_lock.workdir_lock(workdir, enabled=jax.process_index() == 0)
            )
        except workdir_lock.WorkdirLockedError:
            raise
        except Exception as e:  # OSError; a bucket's client raises its own types too
            if is_local(workdir) and not isinstance(e, OSError):
                raise
            reason = " ".join(str(getattr(e, "strerror", None) or e).split())[:200]
            where = "write there" if is_local(workdir) else "use this bucket"
            raise WorkdirError(f"--workdir {workdir}: cannot {where} ({reason})") from e
        yield


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | epath.PathLike,
    *,
    allow_config_change: bool = False,
    stop_after: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run every stage of `config` in `workdir` (resuming), then the final evaluation.

    Args:
      config: a config from configs/ (validated before any work).
      workdir: run folder (checkpoints, TensorBoard logs, config.json, results); a local
        path or a bucket URL (gs://...).
      allow_config_change: resume even if workdir/config.json differs from `config`.
      stop_after: (stage, step): checkpoint and raise Preempted there (for tests).
    Raises:
      WorkdirLockedError: another live run holds `workdir`.
      TrainingDivergedError: the loss or the weights became NaN or inf.
      Preempted: after SIGTERM, once the current step is checkpointed.
    Returns:
      the results dict also written to workdir/results.json: the final evaluation
      (report.final_report), "loss_history" {stage: [(step, loss)]}, "timing" {stage:
      {"seconds", "steps_run", "steps_per_sec"}} (see `train_stage`), "train_seconds", and
      the held-out curves "heldout" / "heldout_best" (`selection.summary`).
    """
    validate_config(config)
    workdir = _check_workdir(workdir)  # absolute: orbax wants it; gs://... stays as given
    created = is_local(workdir) and not os.path.lexists(workdir)
    try:
        # SIGTERM handled from the start: one during set-up is not lost
        with SigtermFlag() as sigterm, _locked(workdir):
            return _run(config, workdir, allow_config_change, stop_after, sigterm)
    except KeyboardInterrupt:  # during set-up (later ones are Interrupted already)
        raise Interrupted(resume.interrupted_message(workdir, None)) from None
    finally:
        if created:  # a run that failed before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                os.rmdir(workdir)


def _run(
    config: ml_collections.ConfigDict,
    workdir: epath.Path,
    allow_config_change: bool,
    stop_after: tuple[str, int] | None,
    sigterm: SigtermFlag,
) -> dict[str, Any]:
    mesh = sharding.make_mesh()
    sharding.check_global_batch(config.batch_size, mesh)
    pipeline.hide_gpus_from_tf()
    train_images, eval_examples = load_inputs(config)  # checked before config.json is written
    config = resolve_config_blind_size(config, train_images)  # blind_size "auto": from the noise
    loaded = pretrained.load_all(config)  # config.pretrained: checked before config.json too
    train_images, heldout = selection.split_for_run(config, train_images)
    networks, stages = build_networks(config), build_stages(config)
    run_config = _check_run_config(config, workdir, allow_config_change)
    if (workdir / checkpoints.CONFIG_FILE).exists():  # a resume: its restores must succeed
        resume.check_layouts(
            workdir, stages, lambda stage: abstract_stage_state(config, networks, stage, mesh)
        )
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        write_json(workdir / checkpoints.CONFIG_FILE, run_config)
    pretrained.check_unchanged(workdir, loaded, config, allow_config_change)
    logdir = str(workdir / "tensorboard") if config.train.get("tensorboard", True) else None
    writer = metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)
    if jax.process_index() == 0:
        writer.write_hparams(monitoring.hparams(config))
    ctx = RunContext(
        config=config,
        workdir=workdir,
        networks=networks,
        stages=stages,
        train_images=train_images,
        eval_examples=eval_examples,
        writer=writer,
        progress=monitoring.make_progress(config, writer),
        sigterm=sigterm,
        mesh=mesh,
        stop_after=stop_after,
        pretrained=loaded,
        heldout=heldout,
    )
    t0 = time.perf_counter()
    try:
        runs = {s.name: train_stage(ctx, i) for i, s in enumerate(ctx.stages)}
        ctx.position, sigterm.training_done = ("final evaluation", ctx.total_steps), True
        params = {
            name: jax.device_get(ctx.final_params(name))
            for name in NETWORK_NAMES
            if any(name in s.learners for s in ctx.stages)
        }
        results = report.final_report(
            ctx.networks, params, ctx.eval_examples, config, workdir, writer, ctx.total_steps
        )
    except KeyboardInterrupt:
        raise Interrupted(resume.interrupted_message(workdir, ctx.position)) from None
    except Preempted:
        if sigterm.interrupted:  # Ctrl-C in a step loop: the step is checkpointed
            raise Interrupted(resume.interrupted_message(workdir, ctx.position)) from None
        raise
    results["loss_history"] = {name: history for name, (history, _) in runs.items()}
    results["timing"] = {name: timing for name, (_, timing) in runs.items()}
    results.update(selection.summary(workdir, config))
    results["train_seconds"] = time.perf_counter() - t0
    results["pretrained"] = pretrained.summary(loaded, config)
    if jax.process_index() == 0:
        write_json(workdir / "results.json", results)
    writer.flush()
    return results
