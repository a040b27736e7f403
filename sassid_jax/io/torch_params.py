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
from sassid_jax.nn.layers import centre_mask
from sassid_jax.nn.tbsn import overlap_window_size, window_mask

PathTuple = tuple[str, ...]
# What a file with unexpected or missing keys most likely is, per architecture.
HINTS = {
    "lan": "wrong network, or a LAN of another blind size?",
    "dbsnl": "wrong network, or a DBSNl of another num_blocks?",
    "tbsn": "wrong network, or a TBSN of other num_blocks or heads?",
}
WINDOW_MASK = ".fixed_pos_emb.attention_mask"  # TBSN's frozen window-attention masks
# TBSN's block sequences (torch `name.i`, ours `name_i`) and the level of each.
TBSN_LEVELS = {
    "encoder_level1": 0,
    "encoder_level2": 1,
    "latent": 2,
    "decoder_level2": 1,
    "decoder_level1": 0,
    "refinement": 0,
}


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


def _atbsn_trunk_path(torch_module: str) -> PathTuple | None:
    """AT-BSN's `unet.*` names (teacher and student) -> our trunk."""
    if torch_module == "unet.intro.conv":
        return ("trunk", "enc1_0")
    m = re.fullmatch(r"unet\.enc(\d)\.conv1\.conv", torch_module)
    if m:
        return ("trunk", "enc1_1" if m[1] == "1" else f"enc{m[1]}")
    m = re.fullmatch(r"unet\.dec(\d)\.conv([12])\.conv", torch_module)
    if m:
        return ("trunk", f"dec{m[1]}_{int(m[2]) - 1}")
    return None


def _atbsn_path(torch_module: str) -> PathTuple | None:
    """AT-BSN's teacher (`ATBSN`): the trunk and the head nin_A, nin_B, nin_C."""
    head = {"nin_A": ("head_0",), "nin_B": ("head_1",), "nin_C": ("head_2",)}
    return head.get(torch_module) or _atbsn_trunk_path(torch_module)


def _dbsnl_path(torch_module: str, num_blocks: int) -> PathTuple | None:
    """AP-BSN's DBSNl names (with or without `bsn.`) -> ours (see `nn.dbsnl.DBSNl`)."""
    torch_module = torch_module.removeprefix("bsn.")
    if torch_module == "head.0":
        return ("head",)
    m = re.fullmatch(r"tail\.([0246])", torch_module)
    if m:
        return (f"tail_{int(m[1]) // 2}",)
    m = re.fullmatch(r"(branch[12])\.body\.(\d+)(?:\.body\.([02]))?", torch_module)
    if not m:
        return None
    branch, index, inner = m[1], int(m[2]), m[3]
    if inner is not None:
        if not 6 <= index < 6 + num_blocks:
            return None
        return (branch, f"block_{index - 6}", "dilated" if inner == "0" else "pointwise")
    fixed = {0: "masked", 2: "conv_0", 4: "conv_1", 6 + num_blocks: "out"}
    return (branch, fixed[index]) if index in fixed else None


def _tbsn_block_path(rest: str) -> PathTuple | None:
    """The inside of one of TBSN's transformer blocks: torch names -> ours, leaf included."""
    weight = {"weight": "kernel", "bias": "bias"}
    m = re.fullmatch(r"norm([1-4])\.body\.(weight|bias)", rest)
    if m:
        return (f"norm{m[1]}", "scale" if m[2] == "weight" else "bias")
    if rest == "channel_attn.temperature":
        return ("channel_attn", "temperature")
    m = re.fullmatch(r"spatial_attn\.rel_pos_emb\.(rel_height|rel_width)", rest)
    if m:
        return ("spatial_attn", m[1])
    m = re.fullmatch(
        r"(channel_attn\.(?:qkv|qkv_dwconv|project_out)|spatial_attn\.(?:qkv|project_out)"
        r"|(?:channel|spatial)_ffn\.project_(?:in|out))\.(weight|bias)",
        rest,
    )
    return (*m[1].split("."), weight[m[2]]) if m else None


def tbsn_param_path(key: str) -> PathTuple | None:
    """TBSN's state_dict key (with or without `bsn.`) -> our path, leaf included (see
    `nn.tbsn.TBSN`); None for a name that has no counterpart."""
    key = key.removeprefix("bsn.")
    if key == "patch_embed.proj.weight":
        return ("patch_embed", "kernel")
    m = re.fullmatch(r"(down1_2|down2_3|up3_2|up2_1)\.body\.0\.weight", key)
    if m:
        return (m[1], "conv", "kernel")
    m = re.fullmatch(r"(reduce_chan_level2|output)\.(weight|bias)", key)
    if m:
        return (m[1], "kernel" if m[2] == "weight" else "bias")
    m = re.fullmatch(r"([a-z_0-9]+)\.(\d+)\.(.+)", key)
    if not m or m[1] not in TBSN_LEVELS:
        return None
    inner = _tbsn_block_path(m[3])
    return (f"{m[1]}_{m[2]}", *inner) if inner else None


def tbsn_sizes(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """TBSN's constructor arguments read from a state_dict's tensor shapes.

    Args:
      state: {torch key: array} (a `bsn.` prefix is optional).
    Returns:
      the `nn.tbsn.TBSN` attributes (dim, num_blocks, num_refinement_blocks, channel_heads,
      spatial_heads, overlap_ratio, window_size, spatial_dim_head, bias,
      ffn_expansion_factor, layer_norm_type), or None when the file is no TBSN (no
      `patch_embed.proj.weight`, or a level without blocks).
    """
    shapes = {k.removeprefix("bsn."): tuple(np.shape(v)) for k, v in state.items()}
    embed = shapes.get("patch_embed.proj.weight")
    if embed is None or len(embed) != 4:
        return None

    def count(seq: str) -> int:
        found = {m[1] for k in shapes if (m := re.fullmatch(rf"{seq}\.(\d+)\..*", k))}
        return len(found)

    levels = ("encoder_level1", "encoder_level2", "latent")
    first = [f"{seq}.0" for seq in levels]
    needed = [
        f"{b}.{leaf}"
        for b in first
        for leaf in (
            "channel_attn.temperature",
            "spatial_attn.qkv.weight",
            "spatial_attn.rel_pos_emb.rel_height",
        )
    ]
    if not all(k in shapes for k in needed):
        return None
    dim_head = shapes[f"{first[0]}.spatial_attn.rel_pos_emb.rel_height"][1]
    mask = shapes.get(f"{first[0]}{WINDOW_MASK}", (1, 64, 144))
    window = round(mask[1] ** 0.5)
    keys = [(shapes[f"{b}.spatial_attn.rel_pos_emb.rel_height"][0] + 1) // 2 for b in first]
    dim = embed[0]
    return {
        "dim": dim,
        "num_blocks": tuple(count(seq) for seq in levels),
        "num_refinement_blocks": count("refinement"),
        "channel_heads": tuple(shapes[f"{b}.channel_attn.temperature"][0] for b in first),
        "spatial_heads": tuple(
            shapes[f"{b}.spatial_attn.qkv.weight"][0] // (3 * dim_head) for b in first
        ),
        "overlap_ratio": tuple((k - window) / window for k in keys),
        "window_size": window,
        "spatial_dim_head": dim_head,
        "bias": "output.bias" in shapes,
        "ffn_expansion_factor": shapes[f"{first[0]}.channel_ffn.project_in.weight"][0] / dim,
        "layer_norm_type": "WithBias" if f"{first[0]}.norm1.body.bias" in shapes else "BiasFree",
    }


def _check_tbsn_buffers(
    state: dict[str, np.ndarray], module: nn.Module, path: str
) -> dict[str, np.ndarray]:
    """TBSN's frozen buffers checked against ours and dropped: the centre mask of
    `patch_embed.proj` and every window attention's `fixed_pos_emb.attention_mask` (0 at even
    offsets, -inf elsewhere: `nn.tbsn.window_mask`). Keys lose an optional `bsn.` prefix."""
    state = _check_masks({k.removeprefix("bsn."): v for k, v in state.items()}, path)
    for key in [k for k in state if k.endswith(WINDOW_MASK)]:
        mask = np.asarray(state.pop(key))
        level = TBSN_LEVELS.get(key.split(".")[0])
        if level is None:
            raise CheckpointMismatchError(
                f"{path}: unexpected key '{key}' with shape {mask.shape} for a TBSN"
            )
        ws = module.window_size
        ours = window_mask(ws, overlap_window_size(ws, module.overlap_ratio[level]))[None]
        if mask.shape != ours.shape or not np.array_equal(mask, ours):
            raise CheckpointMismatchError(
                f"{path}: buffer '{key}' (shape {mask.shape}) is not the window mask of "
                f"window_size={ws}, overlap_ratio={module.overlap_ratio[level]} (shape "
                f"{ours.shape}; 0 at even offsets, -inf elsewhere)"
            )
    return state


def _is_atbsn(state: Mapping[str, Any]) -> bool:
    """Whether a state_dict uses AT-BSN's names (`unet.intro.conv.weight`, ...)."""
    return "unet.intro.conv.weight" in state


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
      network: the architecture: 'bnn' (SASL's names, or AT-BSN's teacher's `unet.*` and
        `nin_*`), 'lan', 'unet', 'atbsn_student' or 'dbsnl' (ValueError otherwise; TBSN's
        keys, whose leaves differ, map through `tbsn_param_path`).
      torch_module: a state_dict key without its leaf, e.g. 'encode_block_1.0'.
      module: our module (the LAN's blind size, DBSNl's block count decide layer indices).
    Returns:
      the path without the leaf name, e.g. ('trunk', 'enc1_0'), or None for a name that has
      no counterpart.
    """
    if network == "bnn":
        if torch_module.startswith(("unet.", "nin_")):
            return _atbsn_path(torch_module)
        return _bnn_path(torch_module)
    if network == "unet":
        return _unet_path(torch_module)
    if network == "lan":
        return _lan_path(torch_module, module.blind_size)
    if network == "atbsn_student":
        return _atbsn_trunk_path(torch_module)
    if network == "dbsnl":
        return _dbsnl_path(torch_module, module.num_blocks)
    raise ValueError(
        f"unknown network {network!r}; expected 'bnn', 'lan', 'unet', 'atbsn_student', 'dbsnl' "
        "or 'tbsn'"
    )


def _target(network: str, key: str, module: nn.Module) -> PathTuple | None:
    """Our full parameter path (leaf included) for a state_dict key, None if it has none."""
    if network == "tbsn":
        return tbsn_param_path(key)
    torch_module, _, torch_leaf = key.rpartition(".")
    prefix = torch_module_to_path(network, torch_module, module)
    leaf = {"weight": "kernel", "bias": "bias"}.get(torch_leaf)
    return (*prefix, leaf) if prefix is not None and leaf else None


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
    if leaf == "temperature":
        return array.reshape(-1)  # TBSN's (heads, 1, 1) -> (heads,)
    return array


def _atbsn_head_order(weight: np.ndarray) -> np.ndarray:
    """AT-BSN's nin_A (O, 4 * B, 1, 1) with its input blocks in our rotation order.

    AT-BSN concatenates its branches as 0, 90 clockwise, 180, 270 clockwise; ours
    (`nn.bnn.ROTATIONS`, numpy's rot90) are counter-clockwise, so blocks 1 and 3 swap.
    """
    blocks = np.split(weight, 4, axis=1)
    return np.concatenate([blocks[0], blocks[3], blocks[2], blocks[1]], axis=1)


def _check_masks(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """DBSNl's frozen `mask` buffers, each checked to be our centre mask, then dropped."""
    for key in [k for k in state if k.endswith(".mask")]:
        mask = np.asarray(state.pop(key))
        weight = state.get(key.removesuffix("mask") + "weight")
        if weight is None or mask.shape != np.shape(weight) or mask.ndim != 4:
            raise CheckpointMismatchError(
                f"{path}: mask buffer '{key}' with shape {mask.shape} belongs to no kernel of "
                "that shape"
            )
        ours = np.transpose(np.asarray(centre_mask(_to_flax(mask, "kernel").shape)), (3, 2, 0, 1))
        if not np.array_equal(mask, ours):
            raise CheckpointMismatchError(
                f"{path}: mask buffer '{key}' is not a centre mask (ones, 0 at the centre tap "
                f"of every channel; {int((mask != ours).sum())} entries differ)"
            )
    return state


def _doublenet_part(state: dict[str, np.ndarray], network: str) -> dict[str, np.ndarray]:
    """Of AT-BSN(D)'s saved `DoubleNet` (student `nbsn.*`, teacher `bsn.*`), the part for
    `network` ('atbsn_student' or 'bnn'); any other state_dict unchanged."""
    prefix = {"atbsn_student": "nbsn.", "bnn": "bsn."}.get(network)
    if prefix is None or "nbsn.unet.intro.conv.weight" not in state:
        return state
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _drop_aliases(state: dict[str, np.ndarray], network: str, path: str) -> dict[str, np.ndarray]:
    state = _doublenet_part({k.removeprefix("module."): v for k, v in state.items()}, network)
    if network == "dbsnl":
        state = _check_masks(state, path)
    if network == "bnn" and _is_atbsn(state) and "nin_A.weight" in state:
        state["nin_A.weight"] = _atbsn_head_order(np.asarray(state["nin_A.weight"]))
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
      state: {torch key: array}, OIHW kernels (a `module.` prefix is stripped; for 'dbsnl'
        AP-BSN's `bsn.` prefix is optional and its `mask` buffers are checked against ours
        and dropped; of AT-BSN(D)'s `DoubleNet`, 'atbsn_student' takes `nbsn.*`, 'bnn' `bsn.*`;
        for 'tbsn' `bsn.` is optional, the centre mask and the window masks are checked and
        dropped).
      network: the architecture (see `torch_module_to_path`).
      module: the module the parameters are for.
      source: the file named in messages.
    Returns:
      nested dict of float32 numpy arrays (HWIO kernels), as `module.init` would build.
    Raises:
      NonFiniteWeightsError: a weight holds NaN or Inf (names the key).
      CheckpointMismatchError: an unexpected key, a missing parameter or a shape mismatch
        (names the key and shapes). Both are UserInputErrors.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if network == "tbsn":  # first: the window masks hold -inf by design
        state = _check_tbsn_buffers(state, module, source)
    # TBSN's window masks left in a file given for another network are unexpected keys below.
    check_finite({k: v for k, v in state.items() if not k.endswith(WINDOW_MASK)}, source)
    state = _drop_aliases(state, network, source)
    expected = expected_shapes(module)
    desc = f"{type(module).__name__}({_module_summary(module)})"
    hint = HINTS.get(network, "wrong network?")
    converted: dict[PathTuple, np.ndarray] = {}
    for key, array in state.items():
        target = _target(network, key, module)
        if target not in expected:
            raise CheckpointMismatchError(
                f"{source}: unexpected key '{key}' with shape {tuple(array.shape)} for {desc}: "
                f"{hint}"
            )
        value = _to_flax(np.asarray(array, dtype=np.float32), target[-1])
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
            f"(first: {names}): {hint}"
        )
    return flax.traverse_util.unflatten_dict(converted)


def _module_summary(module: nn.Module) -> str:
    fields = ("blind_size", "width", "dim", "num_blocks")
    return ", ".join(f"{f}={getattr(module, f)}" for f in fields if hasattr(module, f))


def load_torch_params(path: str | Path, network: str, module: nn.Module | None = None) -> dict:
    """Parameters for `module.apply({'params': params}, x)` from an authors' `.pth` file.

    Args:
      path: a zip-format PyTorch state_dict (read without PyTorch; no pickled code runs), or
        a checkpoint wrapping one (see `torch_format.read_state_dict`).
      network: the architecture (see `torch_module_to_path`).
      module: the module the parameters are for; default: the network with the papers'
        defaults (BNN(9, 48), LAN(3, 64, 6), UNet(48), ATBSNStudent(48), DBSNl(128, 9),
        TBSN(48), the published 12.75 M-parameter network).
    Returns:
      nested dict of float32 numpy arrays (HWIO kernels).
    """
    module = module if module is not None else make_network(network)
    return convert_state_dict(read_state_dict(path), network, module, source=str(path))
