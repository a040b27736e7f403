"""Subprocess worker for test_sharding.py (needs its own XLA_FLAGS / distributed set-up).

  python tests/sharding_worker.py equal_steps            (run with 4 host devices)
  python tests/sharding_worker.py train PORT PID NPROC WORKDIR DATA_DIR
  python tests/sharding_worker.py unreachable PORT
Prints one JSON line with the result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def equal_steps() -> dict:
    """One step of every stage on a 4-device mesh vs a 1-device mesh: max relative diff."""
    from sassid_jax import train
    from sassid_jax.methods.stages import make_stage
    from sassid_jax.training import sharding
    from tests.test_train import tiny_config

    config = tiny_config(Path("unused"))
    networks = train.build_networks(config)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    dummy = np.zeros((1, 32, 32, 3), np.float32)
    teachers = {
        n: networks[n].init(jax.random.key(i + 10), dummy)["params"]
        for i, n in enumerate(("bnn", "lan"))
    }
    out = {"devices": jax.device_count()}
    for name in ("bnn", "lan", "unet"):
        stage = make_stage(name, (name,), (name,))
        tx = train.make_optimizer(config, name)
        results = []
        for mesh in (sharding.make_mesh(jax.devices()[:1]), sharding.make_mesh()):
            state = sharding.replicate(
                train.init_state(networks, stage, tx, jax.random.key(0), 32), mesh
            )
            step = train.make_train_step(networks, stage, tx, mesh)
            t = sharding.replicate({k: teachers[k] for k in stage.teachers}, mesh)
            batch = sharding.global_batch(x, sharding.batch_sharding(mesh))
            state, metrics = step(state, t, batch, True)
            results.append((jax.device_get(state["params"]), float(metrics["loss"])))
        (p1, l1), (p4, l4) = results
        rel = max(
            float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
            for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True)
        )
        out[name] = {"max_rel_param_diff": rel, "loss_1": l1, "loss_4": l4}
    return out


def train_run(port: str, pid: str, nproc: str, workdir: str, data_dir: str) -> dict:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from sassid_jax import train
    from sassid_jax.training import sharding
    from tests.test_train import tiny_config

    sharding.initialize_distributed(f"127.0.0.1:{port}", int(nproc), int(pid), 60)
    config = tiny_config(Path(data_dir), {"bnn": 3, "lan": 2, "unet": 2})
    results = train.train_and_evaluate(config, workdir)
    return {
        "process": jax.process_index(),
        "count": jax.process_count(),
        "devices": jax.device_count(),
        "psnr_unet": results["table"]["unet"]["psnr"],
    }


def unreachable(port: str) -> dict:
    from sassid_jax.training import sharding

    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, 1, timeout_seconds=5)
    return {"joined": True}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    result = {"equal_steps": equal_steps, "train": train_run, "unreachable": unreachable}[mode](
        *args
    )
    print(json.dumps(result), flush=True)
