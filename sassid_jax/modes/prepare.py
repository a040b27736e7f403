"""`--mode prepare`: build the config's datasets once (process 0 builds, the others wait)."""

from __future__ import annotations

from typing import Any

from sassid_jax.data import prepare, sources
from sassid_jax.training import sharding


def check_config(config: Any) -> None:
    """ConfigError (naming the field) when `config.dataset` names no known or usable dataset."""
    sources.check_dataset_name(config.dataset.name)
    sources.get_source(*sources.eval_dataset_name(config.dataset))
    prepare.wait_seconds(config.dataset)


def run_prepare(
    config: Any, coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Join the cluster (if any), build the datasets of `config.dataset`, print one line each.

    Args:
      config: a run config (only `config.dataset` is read).
      coordinator_address, num_processes, process_id: as `--coordinator_address` etc.; None
        lets JAX detect the cluster (SLURM, Cloud TPU, ...) or run a single process.
    """
    sharding.initialize_distributed(coordinator_address, num_processes, process_id)
    for prepared in sources.prepare_datasets(config.dataset):
        print(prepared.describe(), flush=True)
