"""Frozen teachers computed once per training image instead of once per training step.

In stages 2 and 3 the teachers (BNN, LAN) are frozen, so the paper-faithful "online" step,
which runs them forward on every batch, spends most of its time recomputing outputs of fixed
functions (at 256^2 the BNN forward alone costs more than the U-Net's training step). With
`config.train.teachers = "precomputed"` each teacher runs once over every training image
(`precompute`: the BNN on crop-sized blocks, the LAN on the whole image), its outputs
ride along as extra float32 channels of the image, and the data pipeline crops and flips them
together with the noisy pixels (`pipeline.train_dataset(aux=...)`), so the step only trains
the student.

What differs from the online mode (the noisy crops are bit-identical, only the targets move):
- context: the BNN runs on isolated crop-sized blocks of the image (the training code passes
  `bnn_block = crop_size`), so a training crop's target is a patchwork of up to four block
  outputs instead of the BNN's output on that crop; the LAN sees the whole image (its channel
  attention averages over its input). Whole-image BNN targets (`bnn_block = 0`) were measured
  to wreck the main job: a BNN trained on 64x64 crops gives meaningless output on a whole
  photo, and LAN and U-Net learnt from it scored 4.1 dB (online: 21.7 / 22.0 dB; bench/NOTES.md);
- augmentation order: online computes teacher(flip(crop)), precomputed flip(teacher(crop));
  the networks are not equivariant to flips and transposes, so these differ slightly;
- alpha is still computed inside the step from the cropped BNN output (same function).
Measured on the main job (configs/default.py, same stage-1 BNN): LAN 22.10 dB in both modes,
U-Net 22.41 dB precomputed against 22.32 online (bench/NOTES.md, section 5).
Memory: 3 float32 channels per teacher and training pixel (the embedded default set: a few
MB; SIDD-Medium, ~5e9 pixels, would need ~120 GB for two teachers: large sets stay online).

A precomputed batch is (N, H, W, 3 + 3 * T): the noisy image, then each teacher's output in
`stage.teachers` order; `split_batch` takes it apart inside the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sassid_jax.inference import predict
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
) -> list[np.ndarray]:
    """Teacher outputs of every training image: a list of float32 (H, W, 3T) arrays.

    Args:
      networks: modules by name; params: the frozen teachers' parameters by name.
      teachers: names, in the channel order of the result (a stage's `teachers`).
      images: (H, W, 3) uint8 training images.
      bnn_block: > 0: the BNN runs on isolated bnn_block x bnn_block blocks (the crop size it
        was trained on); 0: on the whole image.
    """
    if not isinstance(images, Sequence):
        raise ValueError(
            "train.teachers='precomputed' needs training images held in memory "
            f"(a list of arrays), got {type(images).__name__}; use 'online'"
        )
    fns = {t: predict.jit_apply(networks[t], params[t]) for t in teachers}

    def run(t: str, image: np.ndarray) -> np.ndarray:
        if t == "bnn" and bnn_block:  # isolated blocks: the context size it was trained at
            return predict.predict_blocks(fns[t], image, bnn_block)
        # The LAN takes any H x W: no padding, so its channel attention averages the image.
        return predict.denoise(fns[t], image, multiple=1 if t == "lan" else SIZE_MULTIPLE)

    return [np.concatenate([run(t, image) for t in teachers], axis=-1) for image in images]
