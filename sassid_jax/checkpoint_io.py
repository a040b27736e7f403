"""Read one orbax checkpoint item on this process alone, whatever topology wrote it."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def restore_local(item_dir: str | os.PathLike) -> Any:
    """The pytree saved in an orbax item folder (the one holding _METADATA), as numpy arrays.

    Checkpoints written by several devices or processes restore onto this process's first
    device (orbax refuses a restore without a target when the topology differs).
    """
    checkpointer = ocp.StandardCheckpointer()
    path = os.path.abspath(item_dir)
    tree = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree
    )
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))
