"""U-Net stage steps/s on 1, 2 and 4 simulated CPU devices (a regression guard for sharding).

  python bench/scaling.py [--batch 8] [--crop 64] [--width 32] [--repeats 7]

Each device count runs in its own process (XLA_FLAGS=--xla_force_host_platform_device_count=N)
with the real SPMD step of `sassid_jax.train` (frozen BNN and LAN teachers, adaptive loss).
Prints a table and writes bench/results/scaling.json. On a 2-core machine no speed-up is
expected: simulated devices share the same cores.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import common

common.on_path()


def measure(batch: int, crop: int, width: int, repeats: int) -> dict:
    import jax
    import numpy as np
    from speed import random_init

    from configs import default
    from sassid_jax.methods.stages import make_stage
    from sassid_jax.training import sharding
    from sassid_jax.training import train_step as train

    config = default.get_config()
    config.networks.bnn.width = config.networks.unet.width = width
    networks = train.build_networks(config)
    mesh = sharding.make_mesh()
    stage = make_stage("unet", ("unet",), ("unet",))
    tx = train.make_optimizer(config, "unet")
    x0 = np.zeros((1, crop, crop, 3), np.float32)
    # Random parameters of the right shapes (speed.random_init): an eager init compiles op by op
    shapes = {n: jax.eval_shape(networks[n].init, jax.random.key(0), x0) for n in ("bnn", "lan")}
    teachers = {n: random_init(shapes[n], i + 1)["params"] for i, n in enumerate(shapes)}
    teachers = sharding.replicate(teachers, mesh)
    init = functools.partial(train.init_state, networks, stage, tx, crop=crop)
    state = sharding.replicate(random_init(jax.eval_shape(init, jax.random.key(0))), mesh)
    step = train.make_train_step(networks, stage, tx, mesh)
    x = np.random.default_rng(0).uniform(0, 255, (batch, crop, crop, 3)).astype(np.float32)
    xs = sharding.global_batch(x, sharding.batch_sharding(mesh))
    state, m = step(state, teachers, xs, True)  # compile
    jax.block_until_ready(m)
    box = {"state": state}

    def run() -> None:
        box["state"], metrics = step(box["state"], teachers, xs, True)
        jax.block_until_ready(metrics)

    median = statistics.median(common.repeat(run, repeats))
    return {"devices": jax.device_count(), "median_step_s": median, "steps_per_s": 1 / median}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        common.print_json_line(measure(args.batch, args.crop, args.width, args.repeats))
        return
    flags = ["--child", "--batch", str(args.batch), "--crop", str(args.crop)]
    flags += ["--width", str(args.width), "--repeats", str(args.repeats)]
    rows = [
        common.run_child(
            __file__,
            flags,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
            JAX_PLATFORMS="cpu",
        )
        for n in (1, 2, 4)
    ]
    base = rows[0]["median_step_s"]
    print(f"U-Net stage step, global batch {args.batch} x {args.crop}^2, width {args.width}")
    table = [
        (r["devices"], f"{1000 * r['median_step_s']:.1f}", f"{r['steps_per_s']:.2f}",
         f"{base / r['median_step_s']:.2f}x")
        for r in rows
    ]  # fmt: skip
    print(common.text_table(("devices", "step (ms)", "steps/s", "vs 1 dev"), table, rule=False))
    common.write_record(
        common.RESULTS / "scaling.json",
        {"args": vars(args), "machine": common.machine_info(), "rows": rows},
    )


if __name__ == "__main__":
    main()
