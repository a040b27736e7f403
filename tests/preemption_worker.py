"""Subprocess worker for test_preemption.py: one process of a two-process loopback run.

  python tests/preemption_worker.py PORT PID WORKDIR DATA_DIR
Trains the BNN stage of a tiny config (STEPS steps) with log lines on stderr; exits 143 when
preempted (SIGTERM to any of the processes), 0 when finished.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

STEPS = 60


def main(port: str, pid: str, workdir: str, data_dir: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s", force=True)
    from sassid_jax import train
    from sassid_jax.training import sharding
    from tests.test_train import tiny_config

    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, int(pid), 60)
    config = tiny_config(Path(data_dir), {"bnn": STEPS})
    config.stage_order = ("bnn",)
    config.train.checkpoint_every = 1000  # only SIGTERM and the end checkpoint
    config.eval.save_panels = False
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
