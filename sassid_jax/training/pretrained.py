"""Networks a run takes from trained weights (config.pretrained) instead of from scratch.

config.pretrained.<network> is a run folder, checkpoint or authors' `.pth` ("" = none); such a
network is a frozen teacher of the stages that read it before any stage trains it, and the
starting weights of the first stage that trains it. Every path is loaded and checked before
training starts. Details: docs/training.md#pretrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.io import checkpoints
from sassid_jax.io.atomic_files import write_json
from sassid_jax.io.torch_params import expected_shapes
from sassid_jax.methods.stages import Stage
from sassid_jax.nn import NETWORK_NAMES, network_for_role, role_architecture

RECORD = "pretrained.json"
ARCHITECTURE = ("blind_size", "width", "num_blocks", "normalize")  # module fields compared


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One network's loaded weights.

    Attributes:
      network: 'bnn', 'lan' or 'unet'.
      path: config.pretrained.<network> as given.
      source: where the weights come from, for logs and results ("authors' .pth" or
        "stage 'lan' step 150 of run folder ...").
      params: nested dict of float32 numpy arrays (HWIO kernels), the module's parameters.
      sha256: digest of the parameter names and values.
    """

    network: str
    path: str
    source: str
    params: Any
    sha256: str


def paths(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{network: path} of the non-empty config.pretrained entries ({} for a config without
    the field, e.g. an old run's)."""
    given = config.get("pretrained") or {}
    return {n: given[n] for n in NETWORK_NAMES if given.get(n)}


def first_trainer(config: ml_collections.ConfigDict, network: str) -> int | None:
    """Index in config.stage_order of the first stage whose learners include `network`
    ('bnn', 'lan' or 'unet'), or None."""
    order = list(config.stage_order)
    return next((i for i, s in enumerate(order) if network in config.stages[s].learners), None)


def check_fields(config: ml_collections.ConfigDict) -> None:
    """Config-only checks of config.pretrained (no file is read); ConfigError naming the field:
    known network names, string paths, each network used by some stage, no 'auto' BNN blind
    size with a pretrained BNN."""
    given = config.get("pretrained") or {}
    for name, value in given.items():
        if name not in NETWORK_NAMES:
            raise ConfigError(f"pretrained.{name}: unknown network; known: {NETWORK_NAMES}")
        if not isinstance(value, str):
            raise ConfigError(f"pretrained.{name} must be a path (a string), got {value!r}")
    stages = [config.stages[s] for s in config.stage_order]
    read = {n for sc in stages for n in Stage("", tuple(sc.learners), tuple(sc.losses)).uses}
    for name in paths(config):
        if name not in read:
            raise ConfigError(
                f"pretrained.{name}: no stage of stage_order {tuple(config.stage_order)} "
                f"trains or reads the {checkpoints.LABELS[name]}; remove it "
                f"(--config.pretrained.{name}='')"
            )
    if "bnn" in paths(config) and config.networks.bnn.get("blind_size") == "auto":
        raise ConfigError(
            "networks.bnn.blind_size: 'auto' measures the noise for a BNN to train, but "
            "pretrained.bnn gives one already; set its blind size (the authors' BNN: "
            "--config.networks.bnn.blind_size=9)"
        )


def _architecture(module: nn.Module) -> dict[str, Any]:
    return {f: getattr(module, f) for f in ARCHITECTURE if hasattr(module, f)}


def _check_architecture(
    name: str, path: str, got: nn.Module, params: Any, config: ml_collections.ConfigDict
) -> None:
    """ConfigError when the loaded network differs from config.networks.<name>."""
    want = network_for_role(name, config.networks[name].to_dict())
    if type(got) is not type(want):
        arch = role_architecture(name, config.networks[name])
        raise ConfigError(
            f"pretrained.{name}: {path} holds a {type(got).__name__}, but networks.{name}.arch "
            f"is {arch!r} ({type(want).__name__})"
        )
    pth = not epath.Path(path).is_dir()
    have = _architecture(got)
    if pth and name == "bnn":
        have.pop("blind_size", None)  # not stored in the authors' file: the config's is used
    label = checkpoints.LABELS[name]
    kind = f"an authors' {label} (.pth: raw [0, 255] inputs)" if pth else f"a {label}"
    shown = ", ".join(f"{k}={v}" for k, v in have.items())
    for field, value in have.items():
        if getattr(want, field) != value:
            raise ConfigError(
                f"pretrained.{name}: {path} is {kind} with {shown}, but networks.{name}.{field} "
                f"is {getattr(want, field)!r}; set --config.networks.{name}.{field}={value!r}"
            )
    shapes = {k: v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
    if shapes != expected_shapes(want):
        raise ConfigError(
            f"pretrained.{name}: {path} holds {label} parameters of other shapes than "
            f"networks.{name} ({shown}) builds"
        )


def _digest(params: Any) -> str:
    h = hashlib.sha256()
    for key, value in sorted(flax.traverse_util.flatten_dict(params).items()):
        h.update("/".join(key).encode())
        h.update(np.ascontiguousarray(value, np.float32).tobytes())
    return h.hexdigest()


def _source(path: str, name: str, config: ml_collections.ConfigDict) -> str:
    if not epath.Path(path).is_dir():
        if name == "bnn" and "blind_size" in config.networks.bnn:  # a BNN (not DBSNl, TBSN)
            blind = config.networks.bnn.blind_size
            return f"authors' .pth; blind size not stored, networks.bnn.blind_size={blind} used"
        return "authors' .pth"
    item = checkpoints.checkpoint_item(path, name)
    step, stage = item.parent, item.parent.parent
    return f"stage {stage.name!r} step {step.name} of run folder {stage.parent.parent}"


def load_one(config: ml_collections.ConfigDict, name: str, path: str) -> Pretrained:
    """Load and check one pretrained network.

    Args:
      config: the run's config (its networks.<name> is compared with the weights).
      name: 'bnn', 'lan' or 'unet'.
      path: config.pretrained.<name>.
    Returns:
      The checked `Pretrained`.
    Raises:
      ConfigError: naming pretrained.<name>: missing, unreadable, non-finite, another
        network, or another architecture than networks.<name>.
    """
    try:
        arch = role_architecture(name, config.networks[name])
        module, params = checkpoints.load_network(path, name, arch)  # refuses NaN / inf weights
        source = _source(path, name, config)
    except UserInputError as e:  # missing, unreadable, wrong network, non-finite: one line
        raise ConfigError(f"pretrained.{name}: {e}") from e
    _check_architecture(name, path, module, params, config)
    return Pretrained(name, path, source, params, _digest(params))


def role(config: ml_collections.ConfigDict, name: str) -> str:
    """How the run uses pretrained network `name` ('bnn', 'lan' or 'unet') of `config`, in
    words (for logs and results)."""
    first = first_trainer(config, name)
    order = list(config.stage_order)
    readers = [
        s
        for s in order[: len(order) if first is None else first]
        if name not in config.stages[s].learners
    ]
    uses = [f"frozen teacher of stages {readers}"] if readers else []
    if first is not None:
        uses.append(f"initial weights of stage {order[first]!r}")
    return " and ".join(uses)


def load_all(config: ml_collections.ConfigDict) -> dict[str, Pretrained]:
    """{network: Pretrained} for every path in config.pretrained, each checked by `load_one`,
    with one log line per network."""
    loaded = {}
    for name, path in paths(config).items():
        loaded[name] = load_one(config, name, path)
        logging.info(
            "pretrained %s: %s, from %s (%s), sha256 %s",
            name,
            role(config, name),
            path,
            loaded[name].source,
            loaded[name].sha256[:12],
        )
    return loaded


def start_from(
    loaded: dict[str, Pretrained],
    config: ml_collections.ConfigDict,
    stage_index: int,
    state: dict[str, Any],
    tx: optax.GradientTransformation,
) -> dict[str, Any]:
    """A fresh stage state whose learners first trained by this stage start from their
    pretrained weights.

    Args:
      loaded: `load_all`'s networks.
      config: the run's config.
      stage_index: the stage's index in config.stage_order.
      state: the fresh state {"step", "params", "opt_state"}.
      tx: the stage's optimizer, to initialise the optimizer state for the new parameters.
    Returns:
      The state with those parameters and a fresh optimizer state, or `state` itself when
      no learner of the stage is pretrained.
    """
    params = dict(state["params"])
    for name in params:
        if name in loaded and first_trainer(config, name) == stage_index:
            params[name] = jax.tree.map(jnp.asarray, loaded[name].params)
            logging.info(
                "stage %s: %s starts from %s",
                config.stage_order[stage_index],
                name,
                loaded[name].source,
            )
    if all(params[n] is state["params"][n] for n in params):
        return state
    return {**state, "params": params, "opt_state": tx.init(params)}


def summary(loaded: dict[str, Pretrained], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{network: {"path", "source", "use", "sha256"}} of `loaded` for results.json (the use
    as `role` words it for `config`)."""
    return {
        n: {"path": p.path, "source": p.source, "use": role(config, n), "sha256": p.sha256}
        for n, p in loaded.items()
    }


def check_unchanged(
    workdir: epath.Path,
    loaded: dict[str, Pretrained],
    config: ml_collections.ConfigDict,
    allow_change: bool,
) -> None:
    """Compare the weights with those recorded in workdir/pretrained.json by an earlier run of
    this workdir, then record them (process 0).

    Args:
      workdir: the run folder.
      loaded: `load_all`'s networks.
      config: the run's config.
      allow_change: accept weights that changed under the same path.
    Raises:
      ConfigError: naming pretrained.<network> whose weights changed, unless allow_change.
    """
    path = workdir / RECORD
    if path.exists() and not allow_change:
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = {}
        for name, p in loaded.items():
            before = saved.get(name, {}).get("sha256") if isinstance(saved, dict) else None
            if before and before != p.sha256:
                raise ConfigError(
                    f"pretrained.{name}: the weights at {p.path} changed since this run started "
                    f"(sha256 {before[:12]} -> {p.sha256[:12]}, see {path}); restore them, use "
                    "another --workdir, or pass --allow_config_change"
                )
    if jax.process_index() == 0 and (loaded or path.exists()):
        write_json(path, summary(loaded, config))
