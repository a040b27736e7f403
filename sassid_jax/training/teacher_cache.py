"""Frozen teachers computed once per training image instead of once per training step.

With train.teachers = "precomputed" each teacher runs once over every training image and its
outputs ride along as extra channels of the image: a batch is (N, H, W, 3 + 3T) float32, the
noisy image, then each teacher's output in `stage.teachers` order (`split_batch` takes it
apart inside the step). Details: docs/training.md#teacher-cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.inference import predict
from sassid_jax.methods.stages import Forward
from sassid_jax.nn.trunk import SIZE_MULTIPLE

MODES = ("online", "precomputed")
RGB = 3


def check_mode(mode: Any, field: str = "train.teachers") -> None:
    """Raise ValueError naming `field` unless `mode` is "online" or "precomputed"."""
    if mode not in MODES:
        raise ValueError(f"{field} must be one of {MODES}, got {mode!r}")


def split_batch(x: jax.Array, teachers: Sequence[str]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Take a precomputed batch apart.

    Args:
      x: (N, H, W, 3 + 3T): the noisy crops, then one output per teacher, on [0, 255].
      teachers: the T teachers' names, in channel order.
    Returns:
      (noisy (N, H, W, 3), {teacher: (N, H, W, 3)}), x's dtype.
    Raises:
      ValueError: x does not have 3 + 3T channels.
    """
    expected = RGB * (1 + len(teachers))
    if x.shape[-1] != expected:
        raise ValueError(
            f"a batch with precomputed teachers {tuple(teachers)} needs "
            f"{expected} channels, got shape {x.shape}"
        )
    outputs = {t: x[..., RGB * (i + 1) : RGB * (i + 2)] for i, t in enumerate(teachers)}
    return x[..., :RGB], outputs


def precompute(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    teachers: Sequence[str],
    images: Sequence[np.ndarray],
    bnn_block: int = 0,
    forwards: Mapping[str, Forward] | None = None,
    progress: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """Teacher outputs of every training image.

    Args:
      networks: modules by name.
      params: the frozen teachers' parameters by name.
      teachers: names, in the channel order of the result (a stage's `teachers`).
      images: (H, W, 3) uint8 training images, held in memory (a sequence, not tiles).
      bnn_block: > 0: the BNN runs on isolated bnn_block x bnn_block blocks (the crop size it
        was trained on); 0: on the whole image.
      forwards: {teacher: an image-wise forward (`stages.Loss.image_forwards`, e.g. TBSN's
        distillation target)}, run once on each whole image (any H x W, no tiling); the
        other teachers run plainly.
      progress: called after each image, if given (e.g. `logs.ProgressLog.advance`).
    Returns:
      One (H, W, 3T) float32 array on [0, 255] per image, teachers in `teachers` order.
    Raises:
      ValueError: images is not a sequence of arrays (use train.teachers = "online").
    """
    if not isinstance(images, Sequence):
        raise ValueError(
            "train.teachers='precomputed' needs training images held in memory "
            f"(a list of arrays), got {type(images).__name__}; use 'online'"
        )
    forwards = forwards or {}
    fns = {t: predict.jit_apply(networks[t], params[t]) for t in teachers if t not in forwards}
    procedures = {
        t: jax.jit(functools.partial(forwards[t], networks[t])) for t in teachers if t in forwards
    }

    def run(t: str, image: np.ndarray) -> np.ndarray:
        if t in procedures:
            x = jnp.asarray(image, jnp.float32)[None]
            return np.asarray(procedures[t](params[t], x)[0], np.float32)
        if t == "bnn" and bnn_block:  # isolated blocks: the context size it was trained at
            return predict.predict_blocks(fns[t], image, bnn_block)
        # The LAN takes any H x W: no padding, so its channel attention averages the image.
        return predict.denoise(fns[t], image, multiple=1 if t == "lan" else SIZE_MULTIPLE)

    outputs = []
    for image in images:
        outputs.append(np.concatenate([run(t, image) for t in teachers], axis=-1))
        if progress:
            progress()
    return outputs
