"""One stage-generic training loop for SASL: bnn -> lan -> unet (or any stage list).

`train_and_evaluate(config, workdir)` runs the config's stages in order. Per stage: the
learners' parameters and Adam state (cosine-decayed learning rate) live in one state dict;
frozen teachers are restored from the stage that trained them and applied inside the same
jitted step; the step donates the state. Orbax checkpoints go to
`workdir/checkpoints/<stage>/<step>`; a restart resumes each stage where its latest
checkpoint left it (finished stages are skipped), and because the batch of step s is a pure
function of (seed, stage, s), a resumed run ends with exactly the parameters of an
uninterrupted one. SIGTERM (a preempted machine) saves a checkpoint and exits.
Metrics go to TensorBoard (`workdir/tensorboard`) and the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from clu import metric_writers

from sassid_jax import evaluate, sharding, teacher_cache
from sassid_jax.configuration import check_resume_compatible, validate_config
from sassid_jax.data import pipeline, sources, tiles
from sassid_jax.nn import make_network
from sassid_jax.stages import Stage, make_stage

State = dict[str, Any]
STAGE_SEED_STRIDE = 1000


class Preempted(SystemExit):
    """Raised after a SIGTERM once the checkpoint of the current step is written."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.stage, self.step = stage, step


def build_networks(config: ml_collections.ConfigDict) -> dict[str, nn.Module]:
    """The three networks with the config's attributes and compute dtype."""
    dtype = jnp.dtype(config.compute_dtype)
    dtype = None if dtype == jnp.float32 else dtype
    return {
        name: make_network(name, dtype=dtype, **config.networks[name].to_dict())
        for name in ("bnn", "lan", "unet")
    }


def build_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    return [
        make_stage(name, config.stages[name].learners, config.stages[name].losses)
        for name in config.stage_order
    ]


def make_optimizer(config: ml_collections.ConfigDict, stage: str) -> optax.GradientTransformation:
    """Adam with the stage's lr, cosine-annealed to 0 over the stage's steps."""
    sc, oc = config.stages[stage], config.optimizer
    schedule = optax.cosine_decay_schedule(sc.lr, sc.steps)
    return optax.adam(schedule, b1=oc.b1, b2=oc.b2, eps=oc.eps)


def learning_rate(config: ml_collections.ConfigDict, stage: str, step: int) -> float:
    sc = config.stages[stage]
    return float(optax.cosine_decay_schedule(sc.lr, sc.steps)(step))


def init_state(
    networks: Mapping[str, nn.Module],
    stage: Stage,
    tx: optax.GradientTransformation,
    key: jax.Array,
    crop: int,
) -> State:
    """Fresh learner parameters (one key per network) and optimizer state, step 0."""
    x = jnp.zeros((1, crop, crop, 3), jnp.float32)
    params = {
        name: networks[name].init(jax.random.fold_in(key, i), x)["params"]
        for i, name in enumerate(stage.learners)
    }
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def make_train_step(
    networks: Mapping[str, nn.Module],
    stage: Stage,
    tx: optax.GradientTransformation,
    lower: float,
    upper: float,
    mesh: jax.sharding.Mesh,
    teachers_mode: str = "online",
    several_steps: bool = False,
) -> Callable[[State, Mapping[str, Any], jax.Array], tuple[State, dict[str, jax.Array]]]:
    """Jitted SPMD (state, teacher_params, x) -> (state, metrics); state is donated.

    x: (N, H, W, 3) noisy crops in [0, 255], split over the mesh's 'data' axis; state,
    teachers and metrics are replicated. Teachers run forward only ("online"), or, with
    teachers_mode="precomputed", x carries their outputs as extra channels (see
    `teacher_cache.split_batch`) and teacher_params is unused.
    several_steps: the function takes (K, N, H, W, C), runs K consecutive steps in one
    call (one compiled program per K) and returns metrics of shape (K,). Same arithmetic as
    K calls; one call allocates XLA's temporaries once instead of K times.
    """
    teacher_cache.check_mode(teachers_mode, "teachers_mode")
    given = stage.teachers if teachers_mode == "precomputed" else ()

    def loss_fn(params: Mapping[str, Any], teachers: Mapping[str, Any], x: jax.Array):
        x, outputs = teacher_cache.split_batch(x, given)
        every = {**teachers, **params}
        outputs.update(
            {n: networks[n].apply({"params": every[n]}, x) for n in stage.uses if n not in outputs}
        )
        return stage.loss(outputs, x, lower, upper)

    def step(state: State, teachers: Mapping[str, Any], x: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], teachers, x)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    if not several_steps:
        return jax.jit(
            step, in_shardings=(repl, repl, data), out_shardings=(repl, repl), donate_argnums=0
        )

    def steps(state: State, teachers: Mapping[str, Any], xs: jax.Array):
        # Unrolled on purpose: XLA:CPU runs convolutions inside a loop body (lax.scan) far
        # slower than in straight-line code (bench/NOTES.md, section 7e).
        metrics = []
        for i in range(xs.shape[0]):
            state, m = step(state, teachers, xs[i])
            metrics.append(m)
        return state, jax.tree.map(lambda *m: jnp.stack(m), *metrics)

    return jax.jit(
        steps,
        in_shardings=(repl, repl, sharding.steps_batch_sharding(mesh)),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )


class _SigtermFlag:
    """Context manager: SIGTERM sets `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        logging.warning("SIGTERM received: checkpointing the current step, then exiting")
        self.requested = True

    def __enter__(self) -> _SigtermFlag:
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
    workdir: Path
    networks: dict[str, nn.Module]
    stages: list[Stage]
    train_images: list[np.ndarray] | tiles.TileSource
    eval_examples: list[dict[str, Any]]
    writer: metric_writers.MetricWriter
    sigterm: _SigtermFlag
    mesh: jax.sharding.Mesh
    stop_after: tuple[str, int] | None = None

    def manager(self, stage: str) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.config.train.keep_checkpoints, create=True
        )
        return ocp.CheckpointManager(self.workdir / "checkpoints" / stage, options=options)

    def abstract_state(self, stage: Stage) -> State:
        """Shapes, dtypes and (replicated) shardings of a stage's state, for restoring."""
        tx = make_optimizer(self.config, stage.name)
        shapes = jax.eval_shape(
            lambda: init_state(self.networks, stage, tx, jax.random.key(0), self.config.crop_size)
        )
        repl = sharding.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), shapes)

    def restore(self, stage: Stage, step: int, mgr: ocp.CheckpointManager | None = None) -> State:
        """The stage's state at `step` (through `mgr` if given, else a manager of its own)."""
        args = ocp.args.StandardRestore(self.abstract_state(stage))
        if mgr is not None:
            return mgr.restore(step, args=args)
        with self.manager(stage.name) as own:
            return own.restore(step, args=args)

    def final_params(self, name: str, before: int) -> Any:
        """Parameters of network `name` from the last stage before index `before` training it."""
        for stage in reversed(self.stages[:before]):
            if name in stage.learners:
                steps = self.config.stages[stage.name].steps
                return self.restore(stage, steps)["params"][name]
        raise ValueError(f"no stage before #{before} trains {name!r}")


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


def _format_eta(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def train_stage(ctx: RunContext, stage_index: int) -> list[tuple[int, float]]:
    """Train one stage to its last step, resuming from its latest checkpoint if any.

    Returns the (step, mean loss) pairs logged by this call (empty if already finished).
    """
    stage = ctx.stages[stage_index]
    cfg = ctx.config
    steps = cfg.stages[stage.name].steps
    with ctx.manager(stage.name) as mgr:
        latest = mgr.latest_step()
        if latest is not None and latest >= steps:
            logging.info("stage %s: finished earlier (step %d), skipping", stage.name, latest)
            return []
        return _train_from(ctx, stage_index, mgr, latest)


def _train_from(
    ctx: RunContext, stage_index: int, mgr: ocp.CheckpointManager, latest: int | None
) -> list[tuple[int, float]]:
    """The body of `train_stage` for an unfinished stage; `mgr` is the stage's manager."""
    stage = ctx.stages[stage_index]
    cfg = ctx.config
    steps = cfg.stages[stage.name].steps
    teachers = {t: ctx.final_params(t, stage_index) for t in stage.teachers}
    tx = make_optimizer(cfg, stage.name)
    if latest is None:
        key = jax.random.fold_in(jax.random.key(cfg.seed), stage_index)
        state = sharding.replicate(
            init_state(ctx.networks, stage, tx, key, cfg.crop_size), ctx.mesh
        )
        start = 0
    else:
        state = ctx.restore(stage, latest, mgr)
        start = latest
        logging.info("stage %s: resuming at step %d of %d", stage.name, start, steps)
    mode = cfg.train.get("teachers", "online")
    aux = None
    if mode == "precomputed" and stage.teachers:
        t0 = time.perf_counter()
        aux = teacher_cache.precompute(
            ctx.networks, teachers, stage.teachers, ctx.train_images, bnn_block=cfg.crop_size
        )
        logging.info(
            "stage %s: teachers %s precomputed on %d images in %.1f s",
            stage.name,
            stage.teachers,
            len(aux),
            time.perf_counter() - t0,
        )
        teachers = {}
    tc = cfg.train
    per_call = tc.get("steps_per_call", 1)
    several = per_call > 1
    step_fn = make_train_step(
        ctx.networks,
        stage,
        tx,
        cfg.alpha.lower,
        cfg.alpha.upper,
        ctx.mesh,
        mode,
        several_steps=several,
    )
    data_sharding = (
        sharding.steps_batch_sharding(ctx.mesh) if several else sharding.batch_sharding(ctx.mesh)
    )
    t_window, n_window, losses = time.perf_counter(), 0, []
    history: list[tuple[int, float]] = []
    step = start
    for group in _groups(_batches(ctx, stage_index, start, steps, aux), start, per_call):
        x = sharding.global_batch(np.stack(group) if several else group[0], data_sharding)
        state, metrics = step_fn(state, teachers, x)
        step += len(group)
        n_window += len(group)
        losses.append(metrics["loss"])
        if step % tc.log_every == 0 or step == steps:
            loss = float(np.mean(np.concatenate([np.ravel(v) for v in jax.device_get(losses)])))
            rate = n_window / (time.perf_counter() - t_window)
            lr = learning_rate(cfg, stage.name, step)
            history.append((step, loss))
            ctx.writer.write_scalars(
                _global_step(ctx, stage_index, step),
                {
                    f"{stage.name}/loss": loss,
                    f"{stage.name}/lr": lr,
                    f"{stage.name}/steps_per_sec": rate,
                },
            )
            logging.info(
                "stage %s step %d/%d loss %.4f lr %.2e %.2f steps/s ETA %s",
                stage.name,
                step,
                steps,
                loss,
                lr,
                rate,
                _format_eta((steps - step) / rate),
            )
            t_window, n_window, losses = time.perf_counter(), 0, []
        if step % tc.checkpoint_every == 0 or step == steps:
            mgr.save(step, args=ocp.args.StandardSave(state))
        if tc.eval_every and step % tc.eval_every == 0 and step != steps:
            _evaluate_learners(ctx, stage_index, state, step)
        halt = ctx.stop_after is not None and ctx.stop_after == (stage.name, step)
        if ctx.sigterm.requested or halt:
            mgr.wait_until_finished()
            if mgr.latest_step() != step:
                mgr.save(step, args=ocp.args.StandardSave(state), force=True)
                mgr.wait_until_finished()
            logging.warning("stage %s: stopped at step %d (checkpoint written)", stage.name, step)
            raise Preempted(stage.name, step)
    mgr.wait_until_finished()
    _evaluate_learners(ctx, stage_index, state, step)
    return history


def _global_step(ctx: RunContext, stage_index: int, step: int) -> int:
    """A step counter increasing across stages, for TensorBoard's x axis."""
    return sum(ctx.config.stages[s.name].steps for s in ctx.stages[:stage_index]) + step


def _evaluate_learners(ctx: RunContext, stage_index: int, state: State, step: int) -> None:
    stage = ctx.stages[stage_index]
    scores = evaluate.evaluate_networks(
        ctx.networks,
        jax.device_get(state["params"]),
        ctx.eval_examples,
        ctx.config.eval.bnn_block,
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
        ctx.writer.write_scalars(_global_step(ctx, stage_index, step), scalars)


def _write_run_config(config: ml_collections.ConfigDict, workdir: Path, allow_change: bool) -> None:
    path = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists():
        check_resume_compatible(json.loads(path.read_text()), current, path, allow_change)
    if jax.process_index() == 0:
        evaluate.write_json(path, current)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    allow_config_change: bool = False,
    stop_after: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run every stage of `config` in `workdir` (resuming), then the final evaluation.

    Args:
      config: a config from configs/ (validated before any work).
      workdir: run folder (checkpoints, TensorBoard logs, config.json, results).
      allow_config_change: resume even if workdir/config.json differs from `config`.
      stop_after: (stage, step): checkpoint and raise Preempted there (for tests).
    Returns:
      the results dict also written to workdir/results.json.
    """
    validate_config(config)
    workdir = Path(workdir).resolve()  # orbax wants absolute paths
    with _SigtermFlag() as sigterm:  # from the start: a SIGTERM during set-up is not lost
        return _run(config, workdir, allow_config_change, stop_after, sigterm)


def _run(
    config: ml_collections.ConfigDict,
    workdir: Path,
    allow_config_change: bool,
    stop_after: tuple[str, int] | None,
    sigterm: _SigtermFlag,
) -> dict[str, Any]:
    mesh = sharding.make_mesh()
    sharding.check_global_batch(config.batch_size, mesh)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_run_config(config, workdir, allow_config_change)
    pipeline.hide_gpus_from_tf()
    writer = metric_writers.create_default_writer(
        str(workdir / "tensorboard"), just_logging=jax.process_index() > 0
    )
    ctx = RunContext(
        config=config,
        workdir=workdir,
        networks=build_networks(config),
        stages=build_stages(config),
        train_images=sources.load_train_images(config.dataset),
        eval_examples=evaluate.limit(
            sources.load_eval_examples(config.dataset), config.eval.max_images
        ),
        writer=writer,
        sigterm=sigterm,
        mesh=mesh,
        stop_after=stop_after,
    )
    t0 = time.perf_counter()
    history = {s.name: train_stage(ctx, i) for i, s in enumerate(ctx.stages)}
    params = {
        name: jax.device_get(ctx.final_params(name, len(ctx.stages)))
        for name in ("bnn", "lan", "unet")
        if any(name in s.learners for s in ctx.stages)
    }
    results = evaluate.final_report(ctx.networks, params, ctx.eval_examples, config, workdir)
    results["loss_history"] = history
    results["train_seconds"] = time.perf_counter() - t0
    if jax.process_index() == 0:
        evaluate.write_json(workdir / "results.json", results)
    writer.flush()
    return results
