"""Cluster auto-detection: SLURM variables alone make one cluster, a plain machine stays alone.

Also checks the launch recipe examples/slurm/train.sbatch: valid bash, and its srun command is
the one the loopback SLURM test runs.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import socket
import subprocess
import sys
import time

import jax
import pytest

from sassid_jax.errors import UserInputError
from sassid_jax.training import sharding
from tests.conftest import REPO_ROOT
from tests.test_sharding import (
    CLUSTER_VARIABLES,
    TWO_PROCESS_STEPS,
    _env,
    assert_ends_like_single,
    run_together,
)
from tests.test_train import tiny_config

SBATCH = REPO_ROOT / "examples" / "slurm" / "train.sbatch"
# JAX's SLURM detector puts the coordinator on port SLURM_PORT_BASE + SLURM_JOB_ID % 4096.
SLURM_PORT_BASE = 65536 - 4096


@pytest.fixture
def plain_env(monkeypatch):
    """This process's environment without any variable that describes a cluster."""
    for key in list(os.environ):
        if key.startswith(CLUSTER_VARIABLES):
            monkeypatch.delenv(key)
    return monkeypatch


def slurm_variables(job_id: int, ntasks: int, procid: int, nodes: str) -> dict[str, str]:
    """What srun gives every task of a one-node step (the ones JAX reads, and neighbours)."""
    return {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": nodes,
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid),
        "SLURM_NODEID": "0",
    }


def free_slurm_job_id() -> int:
    """A job id whose coordinator port (SLURM_PORT_BASE + id % 4096) is free on 127.0.0.1."""
    for _ in range(200):
        port = random.randrange(SLURM_PORT_BASE, 65536)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return 4096 * random.randrange(1, 1000) + port - SLURM_PORT_BASE
    raise RuntimeError("no free port in the SLURM coordinator range")


def sbatch_command(config: str, workdir: str) -> list[str]:
    """The python part of the sbatch script's srun line, its variables filled in.

    ["launch.py", "--config", config, "--workdir", workdir]; the interpreter and the script's
    own arguments ("$@", config overrides) are left out."""
    text = SBATCH.read_text().replace("\\\n", " ")
    [line] = [ln for ln in text.splitlines() if ln.startswith("srun ")]
    words = shlex.split(line)
    start = words.index("launch.py")
    assert words[start - 1] == "$PYTHON", line
    values = {"$CONFIG": config, "$WORKDIR": workdir}
    return [values.get(w, w) for w in words[start:] if w not in ("$@", "&")]


def test_plain_environment_stays_single_process_at_once(plain_env):
    jax.devices()  # the backend's start-up is not what is timed
    start = time.perf_counter()
    spec = sharding.initialize_distributed(None, None, None)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert spec == sharding.ClusterSpec(
        None, 1, 0, "single process (no cluster in the environment)"
    )
    assert not jax.distributed.is_initialized()
    assert jax.process_count() == 1


@pytest.mark.parametrize(
    ("ntasks", "procid", "flags", "expected"),
    [
        (4, 2, (None, None, None), ("gpu003:61497", 4, 2, "slurm")),
        (1, 0, (None, None, None), (None, 1, 0, "single process (slurm counts one)")),
        (4, 2, (None, 1, None), (None, 1, 0, "single process (--num_processes=1)")),
        (4, 2, ("h:1", 2, 1), ("h:1", 2, 1, "flags")),
        (4, 2, ("h:1", None, None), ("h:1", 4, 2, "slurm")),
    ],
)
def test_slurm_variables_resolve_by_the_rule(plain_env, ntasks, procid, flags, expected):
    for key, value in slurm_variables(12345, ntasks, procid, "gpu[003-004],cpu1").items():
        plain_env.setenv(key, value)
    assert sharding.resolve_cluster(*flags) == sharding.ClusterSpec(*expected)


@pytest.mark.parametrize(
    ("variables", "flags", "message"),
    [
        ({}, ("h:1", 2, None), "--process_id: missing, and no cluster environment"),
        ({}, ("h:1", 2, 5), "--process_id: 5 is not in [0, 2) (flags)"),
        (
            {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1:34911"},
            (None, None, None),
            "could not read the ompi cluster environment (OMPI_COMM_WORLD_SIZE is not set)",
        ),
    ],
)
def test_bad_cluster_descriptions_are_user_errors(plain_env, variables, flags, message):
    for key, value in variables.items():
        plain_env.setenv(key, value)
    with pytest.raises(UserInputError) as info:
        sharding.resolve_cluster(*flags)
    assert isinstance(info.value, sharding.ClusterJoinError)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_describe_runtime_is_one_line_with_the_counts():
    line = sharding.describe_runtime()
    assert "\n" not in line
    assert line.startswith(f"backend {jax.default_backend()} (")
    assert f"{jax.local_device_count()} local / {jax.device_count()} global devices" in line
    assert line.endswith(f"process {jax.process_index()} of {jax.process_count()}")


def test_sbatch_recipe_is_bash_and_launches_without_cluster_flags():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    command = sbatch_command("C.py", "W")
    assert command == ["launch.py", "--config", "C.py", "--workdir", "W"]
    assert re.search(r"^#SBATCH --requeue$", SBATCH.read_text(), re.M)


@pytest.mark.parametrize("recipe", ["slurm/train.sbatch", "cloud_tpu.md"])
def test_recipes_name_existing_configs_and_no_cluster_flags(recipe):
    text = (REPO_ROOT / "examples" / recipe).read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if "launch.py --" in line]
    assert commands
    for command in commands:
        assert not re.search(r"--(coordinator_address|num_processes|process_id)\b", command)
    configs = re.findall(r"(configs/\w+\.py)", text)
    assert "configs/sasl_paper.py" in configs
    for config in configs:
        assert (REPO_ROOT / config).is_file(), config


@pytest.mark.slow
def test_slurm_variables_alone_make_one_cluster(data_dir, single_process_run, tmp_path):
    """Two loopback processes with srun's variables and the sbatch script's command line (no
    cluster flags) join one cluster and end at the single-process parameters."""
    config = tiny_config(data_dir, TWO_PROCESS_STEPS)
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(
        "from pathlib import Path\n"
        "from tests.test_train import tiny_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_config(Path({str(data_dir)!r}), {TWO_PROCESS_STEPS!r})\n"
    )
    multi = tmp_path / "multi"
    command = [sys.executable, *sbatch_command(str(config_file), str(multi))]
    job_id = free_slurm_job_id()
    envs = [_env(1) | slurm_variables(job_id, 2, pid, "127.0.0.1") for pid in (0, 1)]
    outs = run_together([command, command], envs)
    for pid, (_out, err) in enumerate(outs):
        assert f"1 local / 2 global devices, process {pid} of 2; cluster: slurm" in err, err[-3000:]
    assert_ends_like_single(multi, single_process_run, config)
