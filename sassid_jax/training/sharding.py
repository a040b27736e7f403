"""Device mesh, shardings and multi-process set-up: one SPMD train step from 1 CPU to a pod.

The mesh has one axis, 'data', over every device of every process: batches are split over it,
parameters, optimizer state and teachers replicated. `initialize_distributed` joins the cluster
that the CLI flags or the environment describe. Details:
docs/training.md#sharding-and-multi-process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any

import jax
import numpy as np
from jax._src import clusters as jax_clusters  # JAX's cluster detectors (no public API)
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sassid_jax.errors import ConfigError, UserInputError

DATA_AXIS = "data"


CLUSTER_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")
KNOWN_CLUSTERS = "SLURM, Open MPI, Cloud TPU, Kubernetes"
ESCAPE = f"give {', '.join(CLUSTER_FLAGS)}, or --num_processes=1 for a single process"


class ClusterJoinError(UserInputError):
    """This process could not join the multi-process JAX cluster (one-line message)."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process runs: num_processes == 1 means alone (no jax.distributed).

    Attributes:
      coordinator_address: "host:port" of process 0's coordinator (None when alone).
      num_processes: processes of the run.
      process_id: this process's index, in [0, num_processes).
      source: who said so ("flags", a JAX cluster name such as "slurm", or why alone).
    """

    coordinator_address: str | None
    num_processes: int
    process_id: int
    source: str


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """NHWC batches split over the 'data' axis along N."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def steps_batch_sharding(mesh: Mesh) -> NamedSharding:
    """(K, N, H, W, C) stacks of K steps' batches: N split over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Parameters, optimizer state, teachers, scalars: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(batch_size: int, mesh: Mesh) -> None:
    """Raise ConfigError (a ValueError) unless the global batch of `batch_size` crops splits
    evenly over the devices of `mesh`."""
    if batch_size % mesh.size:
        raise ConfigError(
            f"batch_size: the global batch {batch_size} does not divide over {mesh.size} "
            f"devices ({jax.process_count()} processes); use a multiple of {mesh.size}"
        )


def global_batch(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global batch from this process's slice.

    Args:
      local: (N / processes, H, W, C) (or (K, N / processes, H, W, C)) numpy slice.
      sharding: where the global array lies (`batch_sharding` or `steps_batch_sharding`).
    Returns:
      The global (N, H, W, C) (or (K, N, H, W, C)) jax.Array, local's dtype.
    """
    return jax.make_array_from_process_local_data(sharding, local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """`tree` (a pytree of arrays, identical on every process) as jax.Arrays replicated over
    `mesh`."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda _: np.asarray(x)),
        tree,
    )


def any_process(flag: bool) -> bool:
    """True if `flag` is True on any process. Multi-process: a collective that every process
    must call at the same point of the run."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def initialize_distributed(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    timeout_seconds: int = 300,
) -> ClusterSpec:
    """Join the JAX cluster that the flags or the environment describe; log one runtime line.

    Call before anything touches a JAX device. The rule (`resolve_cluster`): flags win, a
    missing flag comes from the cluster environment (SLURM, Open MPI, Cloud TPU, Kubernetes, as
    JAX detects them); with no flag at all this joins the environment's cluster when it has
    more than one process, and otherwise stays a single process at once (no coordinator,
    no wait). `--num_processes=1` forces a single process anywhere. A process that cannot reach
    the coordinator fails after `timeout_seconds` with a `ClusterJoinError` that names the
    address (no endless hang).

    Args:
      coordinator_address: --coordinator_address, "host:port", or None.
      num_processes: --num_processes, or None.
      process_id: --process_id, or None.
      timeout_seconds: how long to wait for the coordinator.
    Returns:
      The resolved `ClusterSpec`.
    Raises:
      ClusterJoinError: the cluster cannot be resolved or joined.
    """
    spec = resolve_cluster(coordinator_address, num_processes, process_id, timeout_seconds)
    if spec.num_processes > 1:
        _join(spec, timeout_seconds)
    logging.info("%s; cluster: %s", describe_runtime(), spec.source)
    return spec


def resolve_cluster(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    timeout_seconds: float = 300,
) -> ClusterSpec:
    """The cluster this process belongs to, from the three flags and the environment.

    Single process (no jax.distributed) when --num_processes=1, or when no flag is given and
    either no cluster environment is present or it counts one process: a one-task SLURM
    allocation, `mpirun -np 1`, a single-host TPU VM. (JAX's own auto-initialization would
    start a coordinator there and, under SLURM, hide every GPU but the task's first one.)

    Args:
      coordinator_address, num_processes, process_id: the flags, None where not given.
      timeout_seconds: how long a detector may wait for the coordinator's address.
    Returns:
      The `ClusterSpec`; nothing is joined yet.
    Raises:
      ClusterJoinError: missing flags without an environment, an unreadable environment,
        or a process id out of range.
    """
    flags = (coordinator_address, num_processes, process_id)
    if num_processes == 1 and process_id in (None, 0):
        return ClusterSpec(None, 1, 0, "single process (--num_processes=1)")
    env = None if None not in flags else cluster_environment()
    if env is None and None in flags:
        if all(f is None for f in flags):
            return ClusterSpec(None, 1, 0, "single process (no cluster in the environment)")
        missing = [n for n, f in zip(CLUSTER_FLAGS, flags, strict=True) if f is None]
        raise ClusterJoinError(
            f"{', '.join(missing)}: missing, and no cluster environment ({KNOWN_CLUSTERS}) "
            "provides it; give all three flags"
        )
    name = "flags" if env is None else _env_name(env)
    try:
        if num_processes is None:
            num_processes = env.get_process_count()
        if num_processes == 1 and process_id is None:
            return ClusterSpec(None, 1, 0, f"single process ({name} counts one)")
        if process_id is None:
            process_id = env.get_process_id()
        if coordinator_address is None:
            coordinator_address = os.environ.get(
                "JAX_COORDINATOR_ADDRESS"
            ) or env.get_coordinator_address(
                timeout_secs=int(timeout_seconds),
                override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"),
            )
    except Exception as e:  # the detectors raise KeyError, ValueError, RuntimeError, HTTP errors
        raise ClusterJoinError(
            f"could not read the {name} cluster environment ({_one_line(e)}); {ESCAPE}"
        ) from e
    if not 0 <= process_id < num_processes:
        raise ClusterJoinError(
            f"--process_id: {process_id} is not in [0, {num_processes}) ({name})"
        )
    return ClusterSpec(coordinator_address, num_processes, process_id, name)


def cluster_environment() -> type[jax_clusters.ClusterEnv] | None:
    """JAX's first cluster environment present here, in JAX's order (Open MPI, SLURM,
    Cloud TPU on GCE, Cloud TPU on GKE, Kubernetes); None on a plain machine.

    Costs only environment look-ups off Cloud TPU and Kubernetes; on a Cloud TPU VM it asks
    the metadata server, in a Kubernetes pod with the `kubernetes` package it loads the pod's
    service account (what jax.distributed.initialize() itself would do).
    """
    for env in jax_clusters.ClusterEnv._cluster_types:
        if env.opt_in_only_method:  # mpi4py: only when asked for by name
            continue
        try:
            present = env.is_env_present()
        except Exception as e:
            raise ClusterJoinError(
                f"could not inspect the {_env_name(env)} cluster environment "
                f"({_one_line(e)}); {ESCAPE}"
            ) from e
        if present:
            return env
    return None


def describe_runtime() -> str:
    """One line: backend, device kind(s), local / global devices, process index / count.

    Initializes the JAX backend: call it after `initialize_distributed`'s join.
    """
    kinds = ", ".join(sorted({d.device_kind for d in jax.local_devices()}))
    return (
        f"backend {jax.default_backend()} ({kinds}), {jax.local_device_count()} local / "
        f"{jax.device_count()} global devices, process {jax.process_index()} of "
        f"{jax.process_count()}"
    )


def _join(spec: ClusterSpec, timeout_seconds: int) -> None:
    """jax.distributed.initialize with the resolved values; errors become ClusterJoinError."""
    where = (
        f"the JAX cluster at {spec.coordinator_address!r} as process {spec.process_id} of "
        f"{spec.num_processes} ({spec.source})"
    )
    if spec.process_id != 0:
        # JAX aborts the whole process (no exception) when the coordinator never answers:
        # probe it first so the error is ours, clear and bounded in time.
        wait_for_coordinator(spec.coordinator_address, timeout_seconds, where)
    try:
        # local_device_ids stays None: under SLURM / Open MPI JAX then gives each process the
        # GPU of its local rank (one process per GPU); elsewhere every local device.
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
            initialization_timeout=timeout_seconds,
        )
    except Exception as e:  # jax raises various runtime errors here; make them one clear one
        raise ClusterJoinError(
            f"could not join {where} within {timeout_seconds} s: {_one_line(e)}"
        ) from e


def _env_name(env: type[jax_clusters.ClusterEnv]) -> str:
    return env.name or env.__name__


def _one_line(e: BaseException) -> str:
    if isinstance(e, KeyError):  # the detectors read os.environ[NAME]
        return f"{e.args[0]} is not set"
    return " ".join(str(e).split()) or type(e).__name__


def wait_for_coordinator(address: str, timeout_seconds: float, where: str | None = None) -> None:
    """Retry a TCP connection to the coordinator until it answers.

    Args:
      address: "host:port" of the coordinator.
      timeout_seconds: how long to retry.
      where: what is being joined, for the message (default: the address).
    Raises:
      ClusterJoinError: no answer within timeout_seconds.
    """
    where = where or f"the JAX cluster at {address!r}"
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ClusterJoinError(
                    f"could not join {where}: the coordinator (process 0) did not answer "
                    f"within {timeout_seconds} s ({e}); start process 0 and check the address"
                ) from e
            time.sleep(0.5)
