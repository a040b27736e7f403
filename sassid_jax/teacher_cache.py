"""Frozen teachers computed once per training image instead of once per training step.

In stages 2 and 3 the teachers (BNN, LAN) are frozen, so the paper-faithful "online" step,
which runs them forward on every batch, spends most of its time recomputing outputs of fixed
functions (at 256^2 the BNN forward alone costs more than the U-Net's training step). With
`config.train.teachers = "precomputed"` each teacher runs once over every whole training
image (`precompute`, through `inference.denoise`: whole images up to its 1024^2 tiles; the
BNN sees the image reflect-padded to multiples of 32, the LAN the image itself), its outputs
ride along as extra float32 channels of the image, and the data pipeline crops and flips them
together with the noisy pixels (`pipeline.train_dataset(aux=...)`), so the step only trains
the student.

What differs from the online mode (the noisy crops are bit-identical, only the targets move):
- context: a teacher sees the whole image instead of the training crop alone. The BNN's
  receptive field spans the whole crop and the LAN's channel attention averages over its
  input, so outputs differ inside the crop too, most near its borders;
- augmentation order: online computes teacher(flip(crop)), precomputed flip(teacher(crop));
  the networks are not equivariant to flips and transposes, so these differ slightly;
- alpha is still computed inside the step from the cropped BNN output (same function).
Memory: 3 float32 channels per teacher and training pixel (the embedded default set: a few
MB; SIDD-Medium would need ~40 GB, so large sets must stay online).

A precomputed batch is (N, H, W, 3 + 3 * T): the noisy image, then each teacher's output in
`stage.teachers` order; `split_batch` takes it apart inside the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sassid_jax import inference
from sassid_jax.nn.trunk import SIZE_MULTIPLE

MODES = ("online", "precomputed")
RGB = 3


def check_mode(mode: Any, field: str = "train.teachers") -> None:
    if mode not in MODES:
        raise ValueError(f"{field} must be one of {MODES}, got {mode!r}")


def split_batch(x: jax.Array, teachers: Sequence[str]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(N, H, W, 3 + 3T) -> (noisy (N, H, W, 3), {teacher: (N, H, W, 3)})."""
    expected = RGB * (1 + len(teachers))
    if x.shape[-1] != expected:
        raise ValueError(f"a batch with precomputed teachers {tuple(teachers)} needs "
                         f"{expected} channels, got shape {x.shape}")
    outputs = {t: x[..., RGB * (i + 1):RGB * (i + 2)] for i, t in enumerate(teachers)}
    return x[..., :RGB], outputs


def precompute(
    networks: Mapping[str, nn.Module],
    params: Mapping[str, Any],
    teachers: Sequence[str],
    images: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Teacher outputs of every whole image: a list of float32 (H, W, 3T) arrays.

    Args:
      networks: modules by name; params: the frozen teachers' parameters by name.
      teachers: names, in the channel order of the result (a stage's `teachers`).
      images: (H, W, 3) uint8 training images.
    """
    if not isinstance(images, Sequence):
        raise ValueError("train.teachers='precomputed' needs training images held in memory "
                         f"(a list of arrays), got {type(images).__name__}; use 'online'")
    fns = {t: inference.jit_apply(networks[t], params[t]) for t in teachers}
    # The LAN takes any H x W: no padding, so its channel attention averages the image only.
    multiple = {t: 1 if t == "lan" else SIZE_MULTIPLE for t in teachers}
    return [
        np.concatenate([inference.denoise(fns[t], image, multiple=multiple[t])
                        for t in teachers], axis=-1)
        for image in images
    ]
