"""Config checks that run before any work: bad values fail with the field and the value.

`validate_config` checks a training config, `validate_eval_config` one for --mode eval or
submit. Both raise `ConfigError` (a `UserInputError`: one line naming the dotted field).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import ml_collections

from sassid_jax.data.sources import SUBMIT_DATASETS, check_dataset_name, check_evaluable
from sassid_jax.errors import ConfigError
from sassid_jax.inference import procedure
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.inference.safeguard import config_mode
from sassid_jax.methods.stages import Stage, check_order, make_stage
from sassid_jax.nn import ARCHITECTURES, NETWORK_NAMES, role_architecture
from sassid_jax.nn.trunk import SIZE_MULTIPLE
from sassid_jax.noise.blind_size import blind_size_value
from sassid_jax.training import pretrained
from sassid_jax.training.selection import check_config as check_selection
from sassid_jax.training.teacher_cache import check_mode as check_teacher_mode

# Architectures with five 2x2 poolings: their inputs are multiples of SIZE_MULTIPLE.
POOLING_ARCHITECTURES = {"bnn", "unet", "atbsn_student"}
# Fields that may differ between a run and its resumption (they change no result).
RESUMABLE_FIELDS = (
    "dataset.max_pixels",
    "dataset.prepare_timeout",
    "train.log_every",
    "train.eval_every",
    "train.keep_checkpoints",
    "train.steps_per_call",
    "train.tensorboard",
    "eval.max_images",
    "eval.save_panels",
    "eval.bnn_block",
    "eval.network",
    "eval.ensemble",
    "eval.batch",
    "postprocess.colour_sigma",
    "postprocess.safeguard",
    "inference.blind_size",
    "inference.pd_factor",
    "inference.r3_repeats",
    "inference.r3_prob",
)
# Config blocks added later: a run folder whose config.json lacks them resumes with them.
NEW_BLOCKS = ("selection", "inference")

# Fields that configs written before they existed lack: absent means this value.
ABSENT_DEFAULTS = {f"pretrained.{name}": "" for name in NETWORK_NAMES} | {
    f"networks.{name}.arch": name for name in NETWORK_NAMES
}


def _positive_int(value: Any, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")


MAX_SEED = 2**32 - 1  # jax.random.key takes 32-bit seeds; the data seeds multiply it by 1000


def _seed(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {value!r}")


def _odd_blind_size(value: Any, field: str) -> None:
    if not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ConfigError(f"{field} must be an odd integer >= 1, got {value!r}")


@contextlib.contextmanager
def _as_config_error() -> Iterator[None]:
    """Re-raise the ValueError of a check living elsewhere (stages, teacher modes) as the
    ConfigError it is (its message already names the field)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def check_finite(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the first float field (or tuple item) that is inf or nan."""
    for field, value in _flatten(config.to_dict()).items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{field} must be a finite number, got {value!r}")


def _check_eval_fields(config: ml_collections.ConfigDict) -> None:
    """eval.network, eval.batch, eval.max_images (ConfigDict keeps eval.ensemble a bool)."""
    network = config.eval.get("network", "unet")
    if network not in NETWORK_NAMES:
        raise ConfigError(f"eval.network must be one of {NETWORK_NAMES}, got {network!r}")
    _positive_int(config.eval.get("batch", 1), "eval.batch")
    max_images = config.eval.get("max_images", 0)
    if not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 0:
        raise ConfigError(f"eval.max_images must be an integer >= 0, got {max_images!r}")


def validate_eval_config(config: ml_collections.ConfigDict, mode: str = "eval") -> None:
    """Check a config for --mode eval or submit; raise ConfigError naming the first bad field.

    Args:
      config: the full config.
      mode: 'eval' (needs a dataset that can be scored) or 'submit' (a benchmark with
        submissions, SUBMIT_DATASETS).
    """
    check_finite(config)
    if mode == "submit":
        check_dataset_name(config.dataset.name)
        if config.dataset.name not in SUBMIT_DATASETS:
            raise ConfigError(
                f"dataset.name: --mode submit needs one of {SUBMIT_DATASETS}, "
                f"got {config.dataset.name!r}"
            )
    else:
        check_evaluable(config.dataset)
    _check_eval_fields(config)
    check_inference(config)
    config_sigma(config)


def _check_crop_multiple(config: ml_collections.ConfigDict, stages: list[Stage]) -> None:
    """crop_size: a multiple of 32 when a stage runs a network with five 2x2 poolings (BNN,
    U-Net, AT-BSN's student), and of each stage's own multiple (AP-BSN: its PD factor 5)."""
    archs = {role_architecture(n, config.networks[n]) for s in stages for n in s.uses}
    if archs & POOLING_ARCHITECTURES and config.crop_size % SIZE_MULTIPLE:
        raise ConfigError(
            f"crop_size must be a multiple of {SIZE_MULTIPLE} (five 2x2 poolings), "
            f"got {config.crop_size}"
        )
    for stage in stages:
        if config.crop_size % stage.crop_multiple:
            raise ConfigError(
                f"crop_size must be a multiple of {stage.crop_multiple} for stage "
                f"{stage.name!r} (losses {list(stage.losses)}), got {config.crop_size}"
            )


def _check_schedule(sc: ml_collections.ConfigDict, name: str) -> None:
    """stages.<name>.schedule: "cosine" (absent: that) or "step" with decay_every and decay."""
    schedule = sc.get("schedule", "cosine")
    if schedule not in ("cosine", "step"):
        raise ConfigError(f"stages.{name}.schedule must be 'cosine' or 'step', got {schedule!r}")
    if schedule == "step":
        _positive_int(sc.get("decay_every"), f"stages.{name}.decay_every")
        decay = sc.get("decay")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ConfigError(f"stages.{name}.decay must be in (0, 1], got {decay!r}")


def check_inference(config: ml_collections.ConfigDict) -> None:
    """config.inference (`inference.procedure.check`), ConfigError naming the field."""
    procedure.check(config)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check a training config; raise ConfigError naming the first bad field and its value."""
    check_finite(config)
    _seed(config.get("seed", 0))
    check_dataset_name(config.dataset.name)
    config_sigma(config)
    config_mode(config)
    if config.dataset.get("eval_name"):
        check_dataset_name(config.dataset.eval_name, "dataset.eval_name")
    _positive_int(config.crop_size, "crop_size")
    check_inference(config)
    _positive_int(config.batch_size, "batch_size")
    if "blind_size" in config.networks.bnn:  # odd int or "auto" (from the noise)
        blind_size_value(config.networks.bnn.blind_size)
    _odd_blind_size(config.networks.lan.blind_size, "networks.lan.blind_size")
    for name in NETWORK_NAMES:
        arch = role_architecture(name, config.networks[name])
        if arch not in ARCHITECTURES:
            raise ConfigError(
                f"networks.{name}.arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}"
            )
        size = "dim" if arch == "tbsn" else "width"  # TBSN keeps its authors' name
        _positive_int(config.networks[name].get(size), f"networks.{name}.{size}")
    if config.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(
            f"compute_dtype must be 'float32' or 'bfloat16', got {config.compute_dtype!r}"
        )
    jnp.dtype(config.compute_dtype)
    if not config.alpha.lower <= config.alpha.upper:
        raise ConfigError(
            f"alpha.lower ({config.alpha.lower}) must not exceed alpha.upper ({config.alpha.upper})"
        )
    if not config.stage_order:
        raise ConfigError("stage_order is empty: name at least one stage")
    stages = []
    for name in config.stage_order:
        if name not in config.stages:
            raise ConfigError(
                f"stage_order: unknown stage name {name!r}; defined: {list(config.stages)}"
            )
        sc = config.stages[name]
        _positive_int(sc.steps, f"stages.{name}.steps")
        if not sc.lr > 0:
            raise ConfigError(f"stages.{name}.lr must be positive, got {sc.lr!r}")
        _check_schedule(sc, name)
        with _as_config_error():
            stages.append(make_stage(name, sc.learners, sc.losses))
    _check_crop_multiple(config, stages)
    pretrained.check_fields(config)
    with _as_config_error():
        check_order(stages, pretrained.paths(config))
        check_teacher_mode(config.train.get("teachers", "online"))
    precomputed = config.train.get("teachers") == "precomputed"
    for stage in stages:
        if precomputed and stage.teachers and not stage.precomputable_teachers:
            raise ConfigError(
                f"train.teachers='precomputed': stage {stage.name!r} runs its teachers "
                f"{list(stage.teachers)} other than plainly or image-wise (several blind "
                "sizes, AP-BSN's PD); use 'online'"
            )
    if config.train.get("teachers") == "precomputed" and config.dataset.name == "sidd_medium_srgb":
        raise ConfigError(
            "train.teachers='precomputed' keeps teacher outputs of every training "
            "pixel in memory: not for sidd_medium_srgb (use 'online')"
        )
    for field in ("log_every", "checkpoint_every", "keep_checkpoints"):
        _positive_int(config.train[field], f"train.{field}")
    block = config.eval.bnn_block
    if not isinstance(block, int) or block < 0 or block % SIZE_MULTIPLE:
        raise ConfigError(f"eval.bnn_block must be 0 or a multiple of 32, got {block!r}")
    _check_eval_fields(config)
    if not isinstance(config.train.eval_every, int) or config.train.eval_every < 0:
        raise ConfigError(f"train.eval_every must be >= 0, got {config.train.eval_every!r}")
    tensorboard = config.train.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        raise ConfigError(f"train.tensorboard must be True or False, got {tensorboard!r}")
    per_call = config.train.get("steps_per_call", 1)
    _positive_int(per_call, "train.steps_per_call")
    for field in ("log_every", "checkpoint_every", "eval_every"):
        if config.train[field] % per_call:
            raise ConfigError(
                f"train.{field} ({config.train[field]}) must be a multiple of "
                f"train.steps_per_call ({per_call}): logs, checkpoints and "
                "evaluations happen between calls"
            )
    check_selection(config)  # after train.steps_per_call: selection.every is a multiple of it


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields whose values differ between a run's saved config and the current one.

    RESUMABLE_FIELDS are ignored, and so are the NEW_BLOCKS that `saved` lacks (an older run
    resumes with them); a field of ABSENT_DEFAULTS missing from an older config counts as its
    default.

    Args:
      saved, current: configs as nested dicts (config.json, `ConfigDict.to_dict()`).
    Returns:
      one "field: saved -> current" line per difference, sorted by dotted field name.
    """
    new = [block for block in NEW_BLOCKS if block not in saved]
    a = ABSENT_DEFAULTS | _flatten(saved)
    b = ABSENT_DEFAULTS | {k: v for k, v in _flatten(current).items() if k.split(".")[0] not in new}
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in keys
        if k not in RESUMABLE_FIELDS and a.get(k) != b.get(k)
    ]


def check_resume_compatible(
    saved: dict[str, Any], current: dict[str, Any], path: str | os.PathLike[str], allow_change: bool
) -> None:
    """Refuse (ConfigError) to resume a run made with a different config, unless allowed.

    Args:
      saved: the run's config.json as a dict (read by the caller through etils.epath: the
        workdir may be a bucket URL).
      current: the current config as a dict.
      path: where `saved` was read, for the message.
      allow_change: --allow_config_change: resume despite differences.
    """
    diffs = config_differences(saved, current)
    if diffs and not allow_change:
        shown = "; ".join(diffs[:8])
        raise ConfigError(
            f"{path} holds a run made with a different config ({shown}). Use another "
            "--workdir, or pass --allow_config_change to resume anyway."
        )
