"""Cost of model selection's held-out loss (training/selection.py) against the train steps,
for the main job's config (configs/default.py): per stage, a train step (batch, crop) and a
held-out evaluation (selection.max_crops crops), random inputs and initial parameters (only
the time is measured), and the share of the stage's step time that its evaluations (every
selection.every steps and at the last step) plus one compilation add.

  python bench/selection_cost.py
"""

from __future__ import annotations

import time

import common

common.on_path()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from sassid_jax.training import selection, sharding  # noqa: E402
from sassid_jax.training.train_step import (  # noqa: E402
    build_networks,
    build_stages,
    init_state,
    make_optimizer,
    make_train_step,
)


def _seconds(fn, repeats: int) -> float:
    """Mean seconds of `fn()` (which blocks on its result) over `repeats` calls."""
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    c = default.get_config()
    mesh, rng = sharding.make_mesh(), np.random.default_rng(0)
    nets, stages = build_networks(c), build_stages(c)
    size, sel = c.crop_size, c.selection
    states = {
        s.name: sharding.replicate(
            init_state(nets, s, make_optimizer(c, s.name), jax.random.key(i), size), mesh
        )
        for i, s in enumerate(stages)
    }
    params = {n: p for st in jax.device_get(states).values() for n, p in st["params"].items()}
    x = rng.uniform(0, 255, (c.batch_size, size, size, 3)).astype(np.float32)
    x = sharding.global_batch(x, sharding.batch_sharding(mesh))
    held = rng.uniform(0, 255, (sel.max_crops, size, size, 3)).astype(np.float32)
    held = sharding.replicate(held, mesh)
    total_steps = total_sel = 0.0
    for s in stages:
        state = states[s.name]
        teachers = sharding.replicate({t: params[t] for t in s.teachers}, mesh)
        step_fn = make_train_step(nets, s, make_optimizer(c, s.name), mesh)
        box = [state]

        def train_step(step_fn=step_fn, teachers=teachers, box=box) -> None:
            box[0], metrics = step_fn(box[0], teachers, x, True)
            jax.block_until_ready(metrics)

        loss = selection.make_heldout_loss(nets, s, mesh)
        evaluate = lambda loss=loss, teachers=teachers, box=box: float(  # noqa: E731
            loss(box[0]["params"], teachers, held)
        )
        train_step()
        step_s = _seconds(train_step, 6)
        first = _seconds(evaluate, 1)
        eval_s = _seconds(evaluate, 3)
        steps = c.stages[s.name].steps
        evals = -(-steps // sel.every)
        stage_steps, stage_sel = steps * step_s, evals * eval_s + first - eval_s
        total_steps, total_sel = total_steps + stage_steps, total_sel + stage_sel
        print(
            f"{s.name}: train step {step_s * 1e3:.0f} ms, held-out evaluation "
            f"({sel.max_crops} crops) {eval_s * 1e3:.0f} ms, first call {first:.2f} s; "
            f"{evals} evaluations {stage_sel:.1f} s = {100 * stage_sel / stage_steps:.1f}% of "
            f"{stage_steps:.0f} s of steps"
        )
    print(f"run: {total_sel:.1f} s = {100 * total_sel / total_steps:.1f}% of {total_steps:.0f} s")


if __name__ == "__main__":
    main()
