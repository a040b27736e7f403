"""Run folders (their one layout) and loading trained networks from them or from `.pth` files.

A run folder holds config.json and the orbax checkpoints `checkpoints/<stage>/<step>/default`
of every stage. `load_network` takes a run folder, a folder inside its checkpoints/ or an
authors' `.pth`, local or a bucket URL; every failure is a one-line `CheckpointInputError`
naming the path. Details: docs/io.md#run-folders-and-checkpoints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sassid_jax.errors import UserInputError
from sassid_jax.io.paths import PathLike, absolute
from sassid_jax.io.torch_format import read_state_dict
from sassid_jax.io.torch_params import (
    check_finite,
    convert_state_dict,
    expected_shapes,
    tbsn_sizes,
)
from sassid_jax.nn import NETWORK_NAMES, make_network, network_for_role

LABELS = {"bnn": "BNN", "lan": "LAN", "unet": "U-Net"}
CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
ITEM = "default"  # the item folder of a step saved with ocp.args.StandardSave


class CheckpointInputError(UserInputError):
    """A checkpoint path that cannot give the requested network; str() names the path."""


# ----------------------------------------------------------------------------- run folders


def stage_dir(workdir: PathLike, stage: str) -> epath.Path:
    """workdir/checkpoints/<stage>: the step folders of one stage (local: absolute).

    Args:
      workdir: the run folder, local or a bucket URL.
      stage: the stage's name.
    """
    return absolute(workdir) / CHECKPOINTS / stage


def stage_manager(workdir: PathLike, stage: str, keep: int | None = None) -> ocp.CheckpointManager:
    """The orbax manager of one stage's checkpoints (the folder created if missing). Use it
    as a context manager so that it is closed.

    Args:
      workdir: the run folder, local or a bucket URL.
      stage: the stage's name.
      keep: how many steps to keep; None keeps all.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(stage_dir(workdir, stage), options=options)


def abstract_state(init: Callable[[], Any], sharding: jax.sharding.Sharding) -> Any:
    """The restore target of a stage's state: what `init()` would build, without building it.

    Args:
      init: builds the state pytree (traced with jax.eval_shape, not run).
      sharding: the sharding every leaf is restored with.
    Returns:
      the pytree of jax.ShapeDtypeStruct (shape, dtype, `sharding`).
    """
    shapes = jax.eval_shape(init)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def restore_stage(
    workdir: PathLike,
    stage: str,
    step: int,
    target: Any,
    mgr: ocp.CheckpointManager | None = None,
) -> Any:
    """The state of `stage` at `step`, laid out as `target`.

    Args:
      workdir: the run folder.
      stage: the stage's name.
      step: a saved step of it.
      target: the restore target (`abstract_state`).
      mgr: the stage's open manager (`stage_manager`); None opens one for this call.
    Returns:
      the restored pytree, with target's shapes, dtypes and shardings.
    """
    args = ocp.args.StandardRestore(target)
    if mgr is not None:
        return mgr.restore(step, args=args)
    with stage_manager(workdir, stage) as own:
        return own.restore(step, args=args)


def training_stage(
    config: Mapping[str, Any], network: str, before: int | None = None
) -> str | None:
    """The last stage among config["stage_order"][:before] whose learners include `network`.

    Args:
      config: a run's ConfigDict or its config.json as a dict.
      network: 'bnn', 'lan' or 'unet'.
      before: look only at the stages before this index of stage_order (None: all).
    Returns:
      the stage's name, or None when no such stage trains `network`.
    """
    order = list(config["stage_order"])[:before]
    names = [s for s in order if network in config["stages"][s]["learners"]]
    return names[-1] if names else None


def final_checkpoint(
    config: Mapping[str, Any], network: str, before: int | None = None
) -> tuple[str, int]:
    """The checkpoint holding the final parameters of `network`: the last stage that trains
    it (`training_stage`), at its last step.

    Args:
      config: a run's ConfigDict or its config.json as a dict.
      network: 'bnn', 'lan' or 'unet'.
      before: look only at the stages before this index of stage_order (None: all).
    Returns:
      (stage, step). CheckpointInputError when no stage trains `network`.
    """
    stage = training_stage(config, network, before)
    if stage is None:
        raise CheckpointInputError(f"stage_order: no stage trains the {LABELS[network]}")
    return stage, int(config["stages"][stage]["steps"])


def read_run_config(workdir: PathLike) -> dict[str, Any]:
    """workdir/config.json (the run's config) as a dict: the one reader of that file.

    Raises CheckpointInputError (one line naming the file) when it is missing or unreadable,
    or when it is not a JSON object (empty or damaged)."""
    path = epath.Path(workdir) / CONFIG_FILE
    try:
        text = path.read_text()
    except OSError as e:
        raise CheckpointInputError(f"{path}: cannot read the run config ({e})") from e
    try:
        saved = json.loads(text)
    except ValueError as e:
        saved = e
    if not isinstance(saved, dict):
        raise CheckpointInputError(f"{path}: not a run config (empty or damaged: {saved})")
    return saved


def final_params(workdir: PathLike, network: str) -> Any:
    """The final parameters of `network` trained in a run folder (`final_checkpoint`).

    Args:
      workdir: the run folder, local or a bucket URL.
      network: 'bnn', 'lan' or 'unet'.
    Returns:
      the network's params pytree of numpy arrays. CheckpointInputError when the run does
      not train it or that stage has not finished.
    """
    config = read_run_config(workdir)
    try:
        stage, step = final_checkpoint(config, network)
    except CheckpointInputError as e:
        raise CheckpointInputError(f"{epath.Path(workdir) / CONFIG_FILE}: {e}") from e
    item = stage_dir(workdir, stage) / str(step) / ITEM
    if not (item / "_METADATA").is_file():
        raise CheckpointInputError(f"{item}: missing (stage {stage!r} has not finished)")
    return restore_local(item)["params"][network]


# ----------------------------------------------------------------------------- loading


def restore_local(item_dir: PathLike) -> Any:
    """The pytree saved in an orbax item folder (the one holding _METADATA), as numpy arrays.

    Checkpoints written by several devices or processes restore onto this process's first
    device (orbax refuses a restore without a target when the topology differs).
    """
    checkpointer = ocp.StandardCheckpointer()
    path = absolute(item_dir)
    tree = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def _first(state: dict[str, np.ndarray], *keys: str) -> np.ndarray | None:
    return next((state[k] for k in keys if k in state), None)


def _peer_pth_module(state: dict[str, np.ndarray], arch: str, path: epath.Path) -> nn.Module:
    """The peers' module (AT-BSN's teacher or student, AP-BSN's DBSNl, TBSN) a state_dict
    fits."""
    if arch == "tbsn":
        sizes = tbsn_sizes(state)
        if sizes is None:
            raise CheckpointInputError(
                f"{path}: not a TBSN checkpoint (no 'patch_embed.proj.weight' or a level "
                "without blocks)"
            )
        return make_network("tbsn", **sizes)
    if arch == "dbsnl":
        head = _first(state, "bsn.head.0.weight", "head.0.weight")
        blocks = {
            m[1]
            for k in state
            if (m := re.fullmatch(r"(?:bsn\.)?branch1\.body\.(\d+)\.body\.0\.weight", k))
        }
        if head is None or head.ndim != 4:
            raise CheckpointInputError(f"{path}: not a DBSNl checkpoint (no 'bsn.head.0.weight')")
        return make_network("dbsnl", width=int(head.shape[0]), num_blocks=len(blocks))
    prefix = {"bnn": "bsn.", "atbsn_student": "nbsn."}[arch]  # AT-BSN(D)'s DoubleNet
    first = _first(state, "unet.intro.conv.weight", f"{prefix}unet.intro.conv.weight")
    if first is None or first.ndim != 4:
        raise CheckpointInputError(
            f"{path}: not an AT-BSN checkpoint (no 'unet.intro.conv.weight')"
        )
    return make_network(arch, width=int(first.shape[0]), normalize=False)


def _pth_module(
    state: dict[str, np.ndarray], network: str, path: epath.Path, arch: str | None = None
) -> nn.Module:
    """The module an authors' state_dict fits, its sizes read from the tensor shapes.

    Args:
      state: the file's state_dict.
      network: the role it is loaded for ('bnn', 'lan', 'unet').
      path: the file, for messages.
      arch: the architecture (None: the role's own). The BNN takes SASL's or AT-BSN's form.
    Returns:
      the unbound module.
    """
    arch = arch or network
    atbsn_teacher = arch == "bnn" and any(k.endswith("unet.intro.conv.weight") for k in state)
    if arch in ("dbsnl", "atbsn_student", "tbsn") or atbsn_teacher:
        return _peer_pth_module(state, arch, path)
    label = LABELS[network]
    if arch != network:
        raise CheckpointInputError(
            f"{path}: no authors' form of a {arch!r} network is known for the {label}"
        )
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


def _read_pth(path: epath.Path) -> dict[str, np.ndarray]:
    try:
        return {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    except OSError as e:
        raise CheckpointInputError(f"{path}: cannot read ({e.strerror or e})") from e
    except UserInputError as e:  # the reader's messages name the file and the key
        raise CheckpointInputError(str(e)) from e


def _load_pth(
    path: epath.Path, network: str, arch: str | None, attributes: Mapping[str, Any]
) -> tuple[nn.Module, Any]:
    state = _read_pth(path)
    module = _pth_module(state, network, path, arch).clone(**attributes)
    try:
        params = convert_state_dict(state, arch or network, module, source=str(path))
    except UserInputError as e:  # mismatched keys/shapes, non-finite weights: named
        raise CheckpointInputError(str(e)) from e
    return module, params


def run_config_of(checkpoint: PathLike) -> dict[str, Any] | None:
    """The run config (config.json) of the run folder holding `checkpoint`; None for an
    authors' `.pth` or a folder outside any run."""
    path = absolute(checkpoint)
    found = _find_config(path) if path.is_dir() else None
    return read_run_config(found.parent) if found is not None else None


def _find_config(start: epath.Path) -> epath.Path | None:
    for folder in (start, *start.parents):  # (a URL's parents end with gs:// and /: no file)
        if (folder / CONFIG_FILE).is_file() and (folder / CHECKPOINTS).is_dir():
            return folder / CONFIG_FILE
    return None


def _latest_step(stage_dir: epath.Path) -> epath.Path | None:
    steps = [p for p in stage_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps, key=lambda p: int(p.name)) if steps else None


def _item_dir(
    path: epath.Path, config: dict[str, Any], workdir: epath.Path, network: str
) -> epath.Path:
    """The orbax item folder (holding _METADATA) for a workdir / stage / step / item path."""
    label = LABELS[network]
    if path == workdir or path == workdir / CHECKPOINTS:
        stage = training_stage(config, network)
        if stage is None:
            given = (config.get("pretrained") or {}).get(network)  # the run took it from there
            hint = f" (it used the {label} of {given})" if given else ""
            raise CheckpointInputError(f"{workdir}: no stage of this run trains the {label}{hint}")
        path = stage_dir(workdir, stage)
        if not path.is_dir():
            raise CheckpointInputError(f"{workdir}: no {label} checkpoint yet ({path} is missing)")
    if path.parent == workdir / CHECKPOINTS:  # a stage folder: its latest step
        step = _latest_step(path)
        if step is None:
            raise CheckpointInputError(f"{path}: no checkpoint step in this folder")
        path = step
    for candidate in (path, path / ITEM):
        if (candidate / "_METADATA").is_file():
            return candidate
    raise CheckpointInputError(f"{path}: not an orbax checkpoint (no _METADATA)")


def _locate(path: epath.Path, network: str) -> tuple[epath.Path, dict[str, Any], epath.Path]:
    """(orbax item folder, run config, its config.json) for a run folder or a folder in it."""
    config_path = _find_config(path)
    if config_path is None:
        raise CheckpointInputError(
            f"{path}: not a checkpoint (expected a run folder with "
            "config.json and checkpoints/, a folder inside it, or a .pth)"
        )
    config = read_run_config(config_path.parent)
    return _item_dir(path, config, config_path.parent, network), config, config_path


def checkpoint_item(checkpoint: PathLike, network: str) -> epath.Path:
    """The orbax item folder that `load_network` reads `network` from.

    Args:
      checkpoint: a run folder or a folder inside its checkpoints/.
      network: 'bnn', 'lan' or 'unet'.
    Returns:
      `<run>/checkpoints/<stage>/<step>/default` (the folder holding _METADATA).
    """
    return _locate(absolute(checkpoint), network)[0]


def _load_orbax(path: epath.Path, network: str) -> tuple[nn.Module, Any]:
    item, config, config_path = _locate(path, network)
    try:
        state = restore_local(item)
    except Exception as e:  # orbax raises many types for damaged folders
        raise CheckpointInputError(f"{item}: cannot restore checkpoint: {e}") from e
    params = state.get("params", {}).get(network) if isinstance(state, dict) else None
    if params is None:
        raise CheckpointInputError(f"{item}: this checkpoint holds no {LABELS[network]} parameters")
    try:
        check_finite(params, str(item))
    except UserInputError as e:
        raise CheckpointInputError(str(e)) from e
    module = network_for_role(network, config.get("networks", {}).get(network, {}))
    params = flax.traverse_util.unflatten_dict(
        {k: np.asarray(v, np.float32) for k, v in flax.traverse_util.flatten_dict(params).items()}
    )
    got = {k: v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
    want = expected_shapes(module)
    if got != want:
        raise CheckpointInputError(
            f"{item}: {LABELS[network]} parameters do not match {config_path} "
            f"({_first_difference(got, want, network)})"
        )
    return module, params


def _first_difference(
    got: dict[tuple[str, ...], tuple[int, ...]],
    want: dict[tuple[str, ...], tuple[int, ...]],
    network: str,
) -> str:
    """The first layer whose shape differs between a checkpoint and a config, in words."""
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            name = "/".join(key)
            here = got.get(key, "absent")
            there = want.get(key, "absent")
            return f"{name}: {here} in the checkpoint, {there} for its networks.{network}"
    return "same shapes"


def _holds(state: dict[str, np.ndarray], network: str, path: epath.Path) -> bool:
    try:
        convert_state_dict(state, network, _pth_module(state, network, path), source=str(path))
    except UserInputError:
        return False
    return True


def _has_saved(path: epath.Path, network: str) -> bool:
    try:
        item = _locate(path, network)[0]
    except CheckpointInputError:
        return False
    tree = ocp.StandardCheckpointer().metadata(item).item_metadata
    return network in (tree.get("params") or {})


def networks_in(checkpoint: PathLike) -> tuple[str, ...]:
    """The networks ('bnn', 'lan', 'unet') that `load_network` can find in `checkpoint` (a
    run folder, a folder inside its checkpoints/ or an authors' `.pth`), judged by the saved
    items or the tensor names without restoring them; () when it holds none or is unreadable."""
    path = epath.Path(checkpoint)
    try:
        if path.is_dir():
            return tuple(n for n in NETWORK_NAMES if _has_saved(absolute(path), n))
        state = _read_pth(path)
    except (UserInputError, OSError, ValueError):
        return ()
    return tuple(n for n in NETWORK_NAMES if _holds(state, n, path))


def load_network(
    checkpoint: PathLike,
    network: str = "unet",
    arch: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Any]:
    """A trained network from a run folder, a folder inside its checkpoints/, or an authors'
    `.pth`.

    Args:
      checkpoint: that path, local or a bucket URL.
      network: 'bnn', 'lan' or 'unet'.
      arch: for a `.pth`, the architecture the file holds (None: the role's own; 'bnn' reads
        SASL's and AT-BSN's forms, 'atbsn_student', 'dbsnl' and 'tbsn' the peers'). A run folder
        records its own (`networks.<role>.arch` of its config.json).
      attributes: for a `.pth`, module attributes its tensors do not tell (e.g. input_scale,
        `inference.procedure.pth_attributes`); a run folder records its own.
    Returns:
      (module, params): the Linen module built as it was trained (a `.pth`: sizes from the
      tensor shapes, normalize=False) and its params, nested float32 numpy arrays, for
      `module.apply({'params': params}, x)` with x (N, H, W, 3) on [0, 255].
    Raises:
      CheckpointInputError: one line naming the path.
    """
    if network not in NETWORK_NAMES:
        raise CheckpointInputError(f"network {network!r}: expected one of {NETWORK_NAMES}")
    path = epath.Path(checkpoint)
    if not path.exists():
        raise CheckpointInputError(f"{path}: checkpoint not found")
    if path.is_dir():
        return _load_orbax(absolute(path), network)
    return _load_pth(path, network, arch, attributes or {})


def load_network_or_hint(
    checkpoint: PathLike,
    network: str,
    flag: str,
    arch: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Any]:
    """`load_network`, whose error, when `checkpoint` holds other networks but not `network`,
    ends with the option that picks them.

    Args:
      checkpoint: a run folder, a folder inside its checkpoints/ or an authors' `.pth`.
      network: 'bnn', 'lan' or 'unet'.
      flag: how the user names the network, e.g. "--network " or "--config.eval.network=".
      arch: for a `.pth`, the architecture it holds (`load_network`; None: the role's own).
      attributes: for a `.pth`, attributes its tensors do not tell (`load_network`).
    Raises:
      CheckpointInputError: one line naming the path (and the fix).
    """
    try:
        return load_network(checkpoint, network, arch, attributes)
    except CheckpointInputError as e:
        held = networks_in(checkpoint)[::-1]  # the last trained (the better denoiser) first
        if not held or network in held:
            raise
        names = " and ".join(f"a {LABELS[n]}" for n in held)
        use = " or ".join(f"{flag}{n}" for n in held)
        if epath.Path(checkpoint).is_dir():  # the reason (e.g. no U-Net stage yet), then the fix
            raise CheckpointInputError(f"{e}; this checkpoint holds {names}: add {use}") from e
        raise CheckpointInputError(
            f"{checkpoint}: this .pth holds {names}, not a {LABELS[network]}; add {use}"
        ) from e
