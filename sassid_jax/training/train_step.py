"""One training step of a stage: networks, stages and optimizer from the config, the state, and
the jitted SPMD step (`make_train_step`).

The state of a stage is {"step": int32 scalar, "params": {learner: params}, "opt_state": Adam
state}. Inputs are noisy crops (N, H, W, 3) on the [0, 255] scale. Details:
docs/training.md#stage-loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sassid_jax.methods.stages import Stage, make_stage
from sassid_jax.nn import NETWORK_NAMES, network_for_role
from sassid_jax.training import sharding, teacher_cache

State = dict[str, Any]


def build_networks(config: ml_collections.ConfigDict) -> dict[str, nn.Module]:
    """The three networks {"bnn", "lan", "unet": module}, each of the architecture and with the
    attributes of config.networks.<role>, and config.compute_dtype (float32: the modules'
    default)."""
    dtype = jnp.dtype(config.compute_dtype)
    dtype = None if dtype == jnp.float32 else dtype
    return {
        name: network_for_role(name, config.networks[name].to_dict(), dtype=dtype)
        for name in NETWORK_NAMES
    }


def build_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    """The stages of config.stage_order, with the alpha thresholds of config.alpha."""
    return [
        make_stage(
            name,
            config.stages[name].learners,
            config.stages[name].losses,
            alpha_lower=config.alpha.lower,
            alpha_upper=config.alpha.upper,
        )
        for name in config.stage_order
    ]


def lr_schedule(config: ml_collections.ConfigDict, stage: str) -> optax.Schedule:
    """The learning rate of a stage: stages.<stage>.lr cosine-annealed to 0 over its steps, or
    with stages.<stage>.schedule = "step" multiplied by `decay` every `decay_every` steps
    (AP-BSN's published schedule).

    Args:
      config: the run's config.
      stage: the stage's name.
    Returns:
      An optax schedule of the stage step.
    """
    sc = config.stages[stage]
    if sc.get("schedule", "cosine") == "step":
        return optax.exponential_decay(sc.lr, sc.decay_every, sc.decay, staircase=True)
    return optax.cosine_decay_schedule(sc.lr, sc.steps)


def make_optimizer(config: ml_collections.ConfigDict, stage: str) -> optax.GradientTransformation:
    """Adam (config.optimizer's b1, b2, eps) with `lr_schedule(config, stage)`; AdamW with
    decoupled weight decay (x lr, as PyTorch's) when config.optimizer.weight_decay > 0
    (TBSN: 0.01, PyTorch's default); `stage` is the stage's name."""
    oc = config.optimizer
    lr, decay = lr_schedule(config, stage), float(oc.get("weight_decay", 0.0))
    if decay > 0:
        return optax.adamw(lr, b1=oc.b1, b2=oc.b2, eps=oc.eps, weight_decay=decay)
    return optax.adam(lr, b1=oc.b1, b2=oc.b2, eps=oc.eps)


def learning_rate(config: ml_collections.ConfigDict, stage: str, step: int) -> float:
    """The learning rate `lr_schedule(config, stage)` gives at stage step `step`, a float."""
    return float(lr_schedule(config, stage)(step))


def init_state(
    networks: Mapping[str, nn.Module],
    stage: Stage,
    tx: optax.GradientTransformation,
    key: jax.Array,
    crop: int,
) -> State:
    """A fresh stage state at step 0.

    Args:
      networks: modules by name.
      stage: the stage; its learners get parameters.
      tx: the stage's optimizer.
      key: PRNG key, folded in with each learner's index (one key per network).
      crop: the crop side of the (1, crop, crop, 3) input the parameters are made for.
    Returns:
      {"step": int32 0, "params": {learner: params}, "opt_state": tx's state}.
    """
    x = jnp.zeros((1, crop, crop, 3), jnp.float32)
    params = {
        name: networks[name].init(jax.random.fold_in(key, i), x)["params"]
        for i, name in enumerate(stage.learners)
    }
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def all_finite(tree: Any) -> jax.Array:
    """A bool scalar: every floating-point leaf of `tree` is free of NaN and inf."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def keep_if(ok: jax.Array, new: State, old: State) -> State:
    """Choose between two states, bit for bit.

    Args:
      ok: bool scalar.
      new, old: pytrees of one structure.
    Returns:
      `new` where `ok` is True, else `old`.
    """
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def make_train_step(
    networks: Mapping[str, nn.Module],
    stage: Stage,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    teachers_mode: str = "online",
    several_steps: bool = False,
) -> jax.stages.Wrapped:
    """Jitted SPMD (state, teacher_params, x, finite) -> (state, metrics); state is donated.

    x: (N, H, W, 3) noisy crops in [0, 255], split over the mesh's 'data' axis; finite: a
    bool scalar, True for a run's first call. State, teachers and metrics ({"loss",
    "grad_norm"}: float32 scalars, "finite": bool scalar) are replicated. The result is the
    `jax.jit` function itself (`.lower(...)` for ahead-of-time compilation).
    Divergence guard: a step whose loss or new state holds a NaN or inf keeps the
    state it started from, and so does every step once `finite` is False; metrics["finite"]
    says whether every step so far was finite (pass it to the next call, so that the state
    stays the last finite one, whose "step" counter says which). The loss is
    `stage.loss` (its alpha thresholds are the stage's). Teachers run forward only
    ("online"), or, with teachers_mode="precomputed", x carries their outputs as extra
    channels (see `teacher_cache.split_batch`) and teacher_params is unused.
    several_steps: the function takes (K, N, H, W, C), runs K consecutive steps in one
    call (one compiled program per K) and returns loss and grad_norm of shape (K,). Same
    arithmetic as K calls; one call allocates XLA's temporaries once instead of K times.
    """
    teacher_cache.check_mode(teachers_mode, "teachers_mode")
    given = stage.teachers if teachers_mode == "precomputed" else ()
    if given and not stage.precomputable_teachers:
        raise ValueError(
            f"stage {stage.name!r}: its losses run the teachers {list(given)} other than "
            "plainly or image-wise (several blind sizes): use train.teachers='online'"
        )

    def loss_fn(params: Mapping[str, Any], teachers: Mapping[str, Any], x: jax.Array):
        x, outputs = teacher_cache.split_batch(x, given)
        every = {**teachers, **params}
        run = [n for n in stage.uses if n not in outputs]
        outputs.update({n: stage.forward(n)(networks[n], every[n], x) for n in run})
        return stage.loss(outputs, x)

    def step(state: State, teachers: Mapping[str, Any], x: jax.Array, finite: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], teachers, x)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        finite = finite & jnp.isfinite(loss) & all_finite(new_state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite}
        return keep_if(finite, new_state, state), metrics

    def steps(state: State, teachers: Mapping[str, Any], xs: jax.Array, finite: jax.Array):
        # Unrolled on purpose: XLA:CPU runs convolutions inside a loop body (lax.scan) far
        # slower than in straight-line code (bench/NOTES.md, section 7e).
        metrics = []
        for i in range(xs.shape[0]):
            state, m = step(state, teachers, xs[i], finite)
            finite = m.pop("finite")
            metrics.append(m)
        return state, {**jax.tree.map(lambda *m: jnp.stack(m), *metrics), "finite": finite}

    repl = sharding.replicated(mesh)
    data = sharding.steps_batch_sharding(mesh) if several_steps else sharding.batch_sharding(mesh)
    return jax.jit(
        steps if several_steps else step,
        in_shardings=(repl, repl, data, repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
