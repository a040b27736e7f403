"""Map the authors' PyTorch state_dicts onto our Flax parameter trees.

`load_torch_params(path, network, module)` reads a `.pth` without PyTorch, renames every key to
our parameter path, transposes conv kernels OIHW -> HWIO and checks names and shapes against
the module's own, so a wrong network, width or LAN blind size fails with the key and both
shapes. `check_finite` refuses NaN or Inf weights in any pytree. Details: docs/io.md#key-mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.errors import UserInputError
from sassid_jax.io.torch_format import read_state_dict
from sassid_jax.nn import make_network

PathTuple = tuple[str, ...]


class CheckpointMismatchError(UserInputError, ValueError):
    """A checkpoint whose keys or shapes do not fit the requested network."""


class NonFiniteWeightsError(UserInputError, ValueError):
    """A checkpoint whose weights hold NaN or Inf; str() names the file and the key."""


def check_finite(tree: Any, source: str) -> None:
    """Raise NonFiniteWeightsError naming `source` and the first leaf holding NaN or Inf.

    Args:
      tree: any pytree of arrays: a flat state_dict {torch key: array} or nested Flax params
        (numpy or jax arrays); leaves that are not floating point are skipped.
      source: the file or folder the tree was read from (named in the message).
    """
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        if not jnp.issubdtype(array.dtype, jnp.inexact):
            continue
        if not np.isfinite(array).all():
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            name = jax.tree_util.keystr(key_path, simple=True, separator="/")
            raise NonFiniteWeightsError(
                f"{source}: weight {name!r} holds {nan} NaN and {inf} infinite values (of "
                f"{array.size}): a diverged or corrupt checkpoint"
            )


def _trunk_path(torch_module: str) -> PathTuple | None:
    m = re.fullmatch(r"encode_block_(\d)\.(\d)", torch_module)
    if m:
        level, idx = int(m[1]), int(m[2])
        if level == 1:
            return ("trunk", f"enc1_{idx // 2}")
        return ("trunk", f"enc{level}") if idx == 0 else None
    m = re.fullmatch(r"decode_block_(\d)\.(\d)", torch_module)
    if m:
        return ("trunk", f"dec{m[1]}_{int(m[2]) // 2}")
    return None


def _bnn_path(torch_module: str) -> PathTuple | None:
    m = re.fullmatch(r"output_block\.(\d)", torch_module)
    if m:
        return (f"head_{int(m[1]) // 2}",)
    return _trunk_path(torch_module)


def _unet_path(torch_module: str) -> PathTuple | None:
    return ("out",) if torch_module == "output_conv" else _trunk_path(torch_module)


def _lan_path(torch_module: str, blind_size: int) -> PathTuple | None:
    n_local = blind_size // 2
    nrb_index, out_index = 2 + 2 * n_local, 3 + 2 * n_local
    m = re.fullmatch(r"conv\.(\d+)(?:\.(.*))?", torch_module)
    if not m:
        return None
    index, rest = int(m[1]), m[2]
    if rest is None:
        if index == 0:
            return ("embed",)
        if index == out_index:
            return ("out",)
        if index % 2 == 0 and 2 <= index < nrb_index:
            return (f"local_{(index - 2) // 2}",)
        return None
    if index != nrb_index:
        return None
    if rest == "tail":
        return ("nrb", "tail")
    m = re.fullmatch(r"body\.(\d+)\.(conv1|conv2|cuca\.conv_du\.0|cuca\.conv_du\.2)", rest)
    if not m:
        return None
    leaf = {
        "conv1": ("conv1",),
        "conv2": ("conv2",),
        "cuca.conv_du.0": ("ca", "down"),
        "cuca.conv_du.2": ("ca", "up"),
    }[m[2]]
    return ("nrb", f"block_{m[1]}", *leaf)


def torch_module_to_path(network: str, torch_module: str, module: nn.Module) -> PathTuple | None:
    """Our parameter path for an authors' module name.

    Args:
      network: 'bnn', 'lan' or 'unet' (ValueError otherwise).
      torch_module: a state_dict key without its leaf, e.g. 'encode_block_1.0'.
      module: our module (the LAN's blind size decides its layer indices).
    Returns:
      the path without the leaf name, e.g. ('trunk', 'enc1_0'), or None for a name that has
      no counterpart.
    """
    if network == "bnn":
        return _bnn_path(torch_module)
    if network == "unet":
        return _unet_path(torch_module)
    if network == "lan":
        return _lan_path(torch_module, module.blind_size)
    raise ValueError(f"unknown network {network!r}; expected 'bnn', 'lan' or 'unet'")


def expected_shapes(module: nn.Module, size: int = 64) -> dict[PathTuple, tuple[int, ...]]:
    """Flattened {path: shape} of the module's parameters (no FLOPs spent: eval_shape).

    Args:
      module: a network of `sassid_jax.nn`.
      size: side of the (1, size, size, 3) input traced (a multiple of 32); shapes do not
        depend on it.
    Returns:
      {(name, ..., 'kernel' | 'bias'): shape}.
    """
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    flat = flax.traverse_util.flatten_dict(variables["params"])
    return {k: tuple(v.shape) for k, v in flat.items()}


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        return np.ascontiguousarray(np.transpose(array, (2, 3, 1, 0)))  # OIHW -> HWIO
    return array


def _drop_aliases(state: dict[str, np.ndarray], network: str, path: str) -> dict[str, np.ndarray]:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if network == "bnn" and "output_conv.weight" in state:
        for leaf in ("weight", "bias"):
            alias, real = state.get(f"output_conv.{leaf}"), state.get(f"output_block.4.{leaf}")
            if real is None or alias is None or not np.array_equal(alias, real):
                raise CheckpointMismatchError(
                    f"{path}: 'output_conv.{leaf}' is not an alias of 'output_block.4.{leaf}': "
                    "this looks like a U-Net checkpoint, not a BNN"
                )
            del state[f"output_conv.{leaf}"]
    return state


def convert_state_dict(
    state: Mapping[str, np.ndarray], network: str, module: nn.Module, source: str = "<dict>"
) -> dict:
    """Authors' state_dict -> our nested params dict for `module`.

    Args:
      state: {torch key: array}, OIHW kernels (a `module.` prefix is stripped).
      network: 'bnn', 'lan' or 'unet'.
      module: the module the parameters are for.
      source: the file named in messages.
    Returns:
      nested dict of float32 numpy arrays (HWIO kernels), as `module.init` would build.
    Raises:
      NonFiniteWeightsError: a weight holds NaN or Inf (names the key).
      CheckpointMismatchError: an unexpected key, a missing parameter or a shape mismatch
        (names the key and shapes). Both are UserInputErrors.
    """
    check_finite(dict(state), source)
    state = _drop_aliases(dict(state), network, source)
    expected = expected_shapes(module)
    desc = f"{type(module).__name__}({_module_summary(module)})"
    converted: dict[PathTuple, np.ndarray] = {}
    for key, array in state.items():
        torch_module, _, torch_leaf = key.rpartition(".")
        prefix = torch_module_to_path(network, torch_module, module)
        leaf = {"weight": "kernel", "bias": "bias"}.get(torch_leaf)
        target = (*prefix, leaf) if prefix is not None and leaf else None
        if target not in expected:
            raise CheckpointMismatchError(
                f"{source}: unexpected key '{key}' with shape {tuple(array.shape)} for {desc}: "
                "wrong network, or a LAN of another blind size?"
            )
        value = _to_flax(np.asarray(array, dtype=np.float32), leaf)
        if value.shape != expected[target]:
            torch_shape = tuple(array.shape)
            raise CheckpointMismatchError(
                f"{source}: key '{key}' has shape {torch_shape} (as HWIO {value.shape}), but "
                f"{desc} expects {expected[target]} at {'/'.join(target)}: wrong width?"
            )
        converted[target] = value
    missing = [p for p in expected if p not in converted]
    if missing:
        names = ", ".join("/".join(p) for p in missing[:6])
        raise CheckpointMismatchError(
            f"{source}: {len(missing)} parameters of {desc} are missing from the checkpoint "
            f"(first: {names}): wrong network, or a LAN of another blind size?"
        )
    return flax.traverse_util.unflatten_dict(converted)


def _module_summary(module: nn.Module) -> str:
    fields = ("blind_size", "width", "num_blocks")
    return ", ".join(f"{f}={getattr(module, f)}" for f in fields if hasattr(module, f))


def load_torch_params(path: str | Path, network: str, module: nn.Module | None = None) -> dict:
    """Parameters for `module.apply({'params': params}, x)` from an authors' `.pth` file.

    Args:
      path: a zip-format PyTorch state_dict (read without PyTorch; no pickled code runs).
      network: 'bnn', 'lan' or 'unet'.
      module: the module the parameters are for; default: the network with the paper's
        defaults (BNN(9, 48), LAN(3, 64, 6), UNet(48)).
    Returns:
      nested dict of float32 numpy arrays (HWIO kernels).
    """
    module = module if module is not None else make_network(network)
    return convert_state_dict(read_state_dict(path), network, module, source=str(path))
