"""Device mesh, shardings and multi-process set-up: one SPMD train step from 1 CPU to a pod.

The mesh has one axis, 'data', over every device of every process. Batches are split over it
(PartitionSpec('data')); parameters, optimizer state and frozen teachers are replicated
(PartitionSpec()): SASL's networks have ~1.3 M parameters, so replication costs nothing and
keeps the step a plain data-parallel program (XLA inserts the gradient all-reduce).
Each process feeds only its own slice of the global batch (`sassid_jax.data.pipeline`), and
`global_batch` assembles the global jax.Array from the process-local pieces.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


class ClusterJoinError(RuntimeError):
    """This process could not join the multi-process JAX cluster."""


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
    """Raise ValueError unless the global batch splits evenly over the mesh's devices."""
    if batch_size % mesh.size:
        raise ValueError(
            f"batch_size: the global batch {batch_size} does not divide over {mesh.size} "
            f"devices ({jax.process_count()} processes); use a multiple of {mesh.size}"
        )


def global_batch(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global (N, H, W, C) array from this process's (N / processes, H, W, C) slice."""
    return jax.make_array_from_process_local_data(sharding, local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (identical on every process) replicated over the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda _: np.asarray(x)),
        tree,
    )


def initialize_distributed(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    timeout_seconds: int = 300,
) -> None:
    """jax.distributed.initialize from flags; with no flags JAX reads the environment
    (SLURM, Open MPI, Cloud TPU, ...) where it can, else this stays a single process.

    A process that cannot reach the coordinator fails after `timeout_seconds` with an error
    that names the address (no endless hang).
    """
    if coordinator_address is None and num_processes is None and process_id is None:
        return
    if coordinator_address is not None and process_id not in (None, 0):
        # JAX aborts the whole process (no exception) when the coordinator never answers:
        # probe it first so the error is ours, clear and bounded in time.
        wait_for_coordinator(coordinator_address, timeout_seconds)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_seconds,
        )
    except Exception as e:  # jax raises various runtime errors here; make them one clear one
        raise ClusterJoinError(
            f"could not join the JAX cluster at {coordinator_address!r} as process "
            f"{process_id} of {num_processes} within {timeout_seconds} s: {e}"
        ) from e
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def wait_for_coordinator(address: str, timeout_seconds: float) -> None:
    """Retry a TCP connection to host:port until it succeeds or raise after the timeout."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ClusterJoinError(
                    f"could not join the JAX cluster at {address!r}: the coordinator (process "
                    f"0) did not answer within {timeout_seconds} s ({e}); start process 0 "
                    "first and check --coordinator_address"
                ) from e
            time.sleep(0.5)
