"""Load trained networks: our orbax run folders (any topology) and the authors' `.pth` files.

`load_network(checkpoint, network)` accepts
- a run folder (workdir with config.json and checkpoints/): the last stage training
  `network`, its latest step;
- any folder inside its checkpoints/ (a stage, a step, or the step's item folder);
- an authors' PyTorch state_dict (`.pth`, read without PyTorch, no pickled code runs): the
  width (and for the LAN the blind size and block count) is read from the tensor shapes, and
  inputs are raw [0, 255] (normalize=False) as in their code.
Every failure is a CheckpointInputError whose message is one line naming the path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

NETWORKS = ("bnn", "lan", "unet")
LABELS = {"bnn": "BNN", "lan": "LAN", "unet": "U-Net"}


class CheckpointInputError(Exception):
    """A checkpoint path that cannot give the requested network; str() names the path."""


def restore_local(item_dir: str | os.PathLike) -> Any:
    """The pytree saved in an orbax item folder (the one holding _METADATA), as numpy arrays.

    Checkpoints written by several devices or processes restore onto this process's first
    device (orbax refuses a restore without a target when the topology differs).
    """
    checkpointer = ocp.StandardCheckpointer()
    path = os.path.abspath(item_dir)
    tree = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def _pth_module(state: dict[str, np.ndarray], network: str, path: Path) -> nn.Module:
    """The module an authors' state_dict fits, its sizes read from the tensor shapes."""
    from sassid_jax.nn import make_network

    label = LABELS[network]
    if network in ("unet", "bnn"):
        first = state.get("encode_block_1.0.weight")
        marker = "output_block.0.weight" if network == "bnn" else "output_conv.weight"
        if first is None or first.ndim != 4 or marker not in state:
            raise CheckpointInputError(f"{path}: not a {label} checkpoint (no {marker!r})")
        return make_network(network, width=int(first.shape[0]), normalize=False)
    convs = [int(m[1]) for k in state if (m := re.fullmatch(r"conv\.(\d+)\.weight", k))]
    blocks = {int(m[1]) for k in state if (m := re.fullmatch(r"conv\.\d+\.body\.(\d+)\..*", k))}
    if "conv.0.weight" not in state or not convs or (max(convs) - 3) % 2:
        raise CheckpointInputError(f"{path}: not a LAN checkpoint (no 'conv.<i>.weight' chain)")
    width = int(state["conv.0.weight"].shape[0])
    return make_network(
        "lan", blind_size=max(convs) - 2, width=width, num_blocks=len(blocks), normalize=False
    )


def _load_pth(path: Path, network: str) -> tuple[nn.Module, Any]:
    from sassid_jax.convert import convert_state_dict
    from sassid_jax.torch_format import TorchFormatError, read_state_dict

    try:
        state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    except (TorchFormatError, OSError) as e:
        raise CheckpointInputError(f"not a checkpoint: {e}") from e
    module = _pth_module(state, network, path)
    try:
        params = convert_state_dict(state, network, module, source=str(path))
    except ValueError as e:
        raise CheckpointInputError(f"not a {LABELS[network]} checkpoint: {e}") from e
    return module, params


def _find_config(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / "config.json").is_file() and (folder / "checkpoints").is_dir():
            return folder / "config.json"
    return None


def _latest_step(stage_dir: Path) -> Path | None:
    steps = [p for p in stage_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps, key=lambda p: int(p.name)) if steps else None


def _training_stage(config: dict[str, Any], network: str) -> str | None:
    """The last stage of a run config whose learners include `network`."""
    stages = config.get("stages", {})
    names = [
        s for s in config.get("stage_order", []) if network in stages.get(s, {}).get("learners", [])
    ]
    return names[-1] if names else None


def _item_dir(path: Path, config: dict[str, Any], workdir: Path, network: str) -> Path:
    """The orbax item folder (holding _METADATA) for a workdir / stage / step / item path."""
    label = LABELS[network]
    if path == workdir or path == workdir / "checkpoints":
        stage = _training_stage(config, network)
        if stage is None:
            raise CheckpointInputError(f"{workdir}: no stage of this run trains the {label}")
        path = workdir / "checkpoints" / stage
        if not path.is_dir():
            raise CheckpointInputError(f"{workdir}: no {label} checkpoint yet ({path} is missing)")
    if path.parent == workdir / "checkpoints":  # a stage folder: its latest step
        step = _latest_step(path)
        if step is None:
            raise CheckpointInputError(f"{path}: no checkpoint step in this folder")
        path = step
    for candidate in (path, path / "default"):
        if (candidate / "_METADATA").is_file():
            return candidate
    raise CheckpointInputError(f"{path}: not an orbax checkpoint (no _METADATA)")


def _load_orbax(path: Path, network: str) -> tuple[nn.Module, Any]:
    from sassid_jax.convert import expected_shapes
    from sassid_jax.nn import make_network

    config_path = _find_config(path)
    if config_path is None:
        raise CheckpointInputError(
            f"{path}: not a checkpoint (expected a run folder with "
            "config.json and checkpoints/, a folder inside it, or a .pth)"
        )
    config = json.loads(config_path.read_text())
    item = _item_dir(path, config, config_path.parent, network)
    try:
        state = restore_local(item)
    except Exception as e:  # orbax raises many types for damaged folders
        raise CheckpointInputError(f"{item}: cannot restore checkpoint: {e}") from e
    params = state.get("params", {}).get(network) if isinstance(state, dict) else None
    if params is None:
        raise CheckpointInputError(f"{item}: this checkpoint holds no {LABELS[network]} parameters")
    module = make_network(network, **config.get("networks", {}).get(network, {}))
    params = flax.traverse_util.unflatten_dict(
        {k: np.asarray(v, np.float32) for k, v in flax.traverse_util.flatten_dict(params).items()}
    )
    got = {k: v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
    if got != expected_shapes(module):
        raise CheckpointInputError(
            f"{item}: {LABELS[network]} parameters do not match {config_path}"
        )
    return module, params


def load_network(checkpoint: str | os.PathLike, network: str = "unet") -> tuple[nn.Module, Any]:
    """(module, params) of `network` ('bnn', 'lan' or 'unet') from a run folder, a folder
    inside its checkpoints/, or an authors' `.pth` (see the module docstring)."""
    if network not in NETWORKS:
        raise CheckpointInputError(f"network {network!r}: expected one of {NETWORKS}")
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointInputError(f"{path}: checkpoint not found")
    if path.is_dir():
        return _load_orbax(path.absolute(), network)
    return _load_pth(path, network)
