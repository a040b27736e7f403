"""SPMD training over a device mesh: 4 devices = 1 device, two processes = one, bf16, errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sassid_jax import train
from sassid_jax.methods.stages import make_stage
from sassid_jax.training import sharding
from tests.conftest import REPO_ROOT
from tests.test_train import run_params, tiny_config

WORKER = str(REPO_ROOT / "tests" / "sharding_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Variables by which JAX recognizes a cluster (SLURM, Open MPI, Cloud TPU, Kubernetes, its own).
CLUSTER_VARIABLES = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "KUBERNETES_", "JAX_COORDINATOR")


def plain_environ() -> dict[str, str]:
    """os.environ without any variable that describes a cluster (tests may run under SLURM)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARIABLES)}


def _env(devices: int = 1) -> dict[str, str]:
    env = plain_environ()
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_four_devices_equal_one_device_for_every_stage():
    proc = subprocess.run(
        [sys.executable, WORKER, "equal_steps"],
        env=_env(4),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _last_json(proc.stdout)
    assert result["devices"] == 4
    for stage in ("bnn", "lan", "unet"):
        assert result[stage]["max_rel_param_diff"] <= 1e-6, (stage, result[stage])
        np.testing.assert_allclose(result[stage]["loss_1"], result[stage]["loss_4"], rtol=1e-6)


def test_global_batch_must_divide_over_devices():
    mesh = sharding.make_mesh(jax.devices()[:1])
    sharding.check_global_batch(3, mesh)  # one device: anything divides
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sassid_jax.training import sharding;"
            "sharding.check_global_batch(6, sharding.make_mesh())",
        ],
        env=_env(4),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "the global batch 6 does not divide over 4 devices" in proc.stderr


TWO_PROCESS_STEPS = {"bnn": 3, "lan": 2, "unet": 2}


def run_together(commands: list[list[str]], envs: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Start the commands at once (from the repo root), wait, assert each exited 0.

    Returns each one's (stdout, stderr)."""
    procs = [
        subprocess.Popen(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command, env in zip(commands, envs, strict=True)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return outs


def assert_ends_like_single(multi: Path, single: Path, config) -> None:
    """The multi-process run's final parameters are the single-process run's."""
    a, b = run_params(multi, config), run_params(single, config)
    # Two processes sum gradients in another order; Adam divides by sqrt(v), which turns the
    # float32 rounding of near-zero gradients into parameter differences of up to ~1e-5
    # (1.4e-5 seen). atol 5e-5 is 2% of the largest change lr * steps = 3e-3 that 3 steps can
    # make, so a wrong split of the batch (changes of order 1e-3) still fails.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=5e-5)
    assert (multi / "results.json").exists()


@pytest.mark.slow
def test_two_processes_end_like_one(data_dir, single_process_run, tmp_path):
    config = tiny_config(data_dir, TWO_PROCESS_STEPS)
    multi = tmp_path / "multi"
    port = _free_port()
    outs = run_together(
        [
            [sys.executable, WORKER, "train", str(port), str(pid), "2", str(multi), str(data_dir)]
            for pid in (0, 1)
        ],
        [_env(1)] * 2,
    )
    results = [_last_json(out) for out, _ in outs]
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["count"] == 2 and r["devices"] == 2 for r in results)
    assert_ends_like_single(multi, single_process_run, config)


def test_unreachable_coordinator_fails_fast_and_clearly():
    start = time.time()
    proc = subprocess.run(
        [sys.executable, WORKER, "unreachable", str(_free_port())],
        env=_env(1),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode != 0
    assert "could not join the JAX cluster at '127.0.0.1:" in proc.stderr
    assert time.time() - start < 120


@pytest.mark.parametrize("name", ["bnn", "lan", "unet"])
def test_bf16_loss_within_one_percent_of_f32(name, data_dir):
    config = tiny_config(data_dir)
    f32 = train.build_networks(config)
    config.compute_dtype = "bfloat16"
    bf16 = train.build_networks(config)
    stage = make_stage(name, (name,), (name,))
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    params = {
        n: jax.jit(f32[n].init)(jax.random.key(i), x)["params"] for i, n in enumerate(stage.uses)
    }

    def loss(nets):
        # jitted: one compiled program instead of op-by-op dispatch (several times faster)
        outs = {n: jax.jit(nets[n].apply)({"params": params[n]}, x) for n in stage.uses}
        return float(stage.loss(outs, x))

    assert abs(loss(bf16) - loss(f32)) <= 0.01 * loss(f32)
