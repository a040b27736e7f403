"""TBSN (Li et al., AAAI 2025): trained on one PD-5 sub-image, denoising with PD 2 and R3.

Training feeds the network the first sub-image x[:, 0::5, 0::5] of each crop (L1 to itself); at
test time the four PD-2 sub-images go through the network on the batch axis (no gaps between
them: the network's blind region is its own PD-2 lattice), then R3 averages 8 full-resolution
passes with 16% of the pixels reset to the noisy value. The distillation U-Net learns the
PD-2 output followed by one full-resolution pass (`distill_target`). NHWC float32 on [0, 255].
Details: docs/peers.md#tbsn.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.methods import apbsn
from sassid_jax.nn.pd import pd_stack, pd_unstack
from sassid_jax.nn.tbsn import SIZE_MULTIPLE

TRAIN_PD_FACTOR = 5
TEST_PD_FACTOR = 2
R3_REPEATS = 8
R3_PROB = 0.16
CROP_MULTIPLE = TRAIN_PD_FACTOR * SIZE_MULTIPLE  # the PD-5 sub-image a multiple of 32
# The reduced TBSN of the parity fixture and of the short CPU recipe (configs/tbsn.py):
# 368,747 parameters against the published 12.75 M.
SMALL_SIZE = {
    "dim": 16,
    "num_blocks": (1, 1, 1),
    "num_refinement_blocks": 1,
    "channel_heads": (1, 2, 4),
    "spatial_heads": (1, 1, 2),
    "spatial_dim_head": 8,
}


def train_input(x: jax.Array, factor: int = TRAIN_PD_FACTOR) -> jax.Array:
    """The first PD sub-image of each crop, as TBSN trains (the loss is L1 to it).

    Args:
      x: (N, H, W, C), H and W multiples of `factor`.
      factor: PD factor (5).
    Returns:
      (N, H / factor, W / factor, C): x[:, 0::factor, 0::factor].
    """
    return x[:, ::factor, ::factor]  # sub-image 0 of pd_stack, without building the others


def train_apply(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
    """The training forward: the network on `train_input(x)` (TBSN's stage runs it so).

    Args:
      module: the blind-spot network (`TBSN`).
      params: its parameters.
      x: (N, H, W, 3) on [0, 255], H and W multiples of 160 (`CROP_MULTIPLE`).
    Returns:
      (N, H / 5, W / 5, 3); the loss is L1 to `train_input(x)`.
    """
    return module.apply({"params": params}, train_input(x))


def pd_forward(bsn: apbsn.Denoiser, x: jax.Array, factor: int = TEST_PD_FACTOR) -> jax.Array:
    """The network on the PD sub-images stacked on the batch axis, PD inverted.

    Args:
      bsn: the network, (N', h, w, 3) -> same shape.
      x: (N, H, W, 3), H and W multiples of `factor` (of 64 for TBSN at factor 2).
    Returns:
      (N, H, W, 3).
    """
    return pd_unstack(bsn(pd_stack(x, factor)), factor)


def _pad(x: jax.Array, multiple: int) -> jax.Array:
    """x reflect-padded at the bottom and right to multiples of `multiple`."""
    _, h, w, _ = x.shape
    return jnp.pad(x, ((0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)), mode="reflect")


def denoise(
    bsn: apbsn.Denoiser,
    x: jax.Array,
    *,
    factor: int = TEST_PD_FACTOR,
    r3_repeats: int = R3_REPEATS,
    r3_prob: float = R3_PROB,
    key: jax.Array | None = None,
    uniforms: jax.Array | None = None,
) -> jax.Array:
    """TBSN's test-time procedure: `pd_forward`, then R3 without padding (r3_repeats 0: off).

    x is reflect-padded at the bottom and right to multiples of 32 * factor and the result
    cropped back (the authors' code takes only such sizes; there the padding is none).

    Args:
      bsn: the blind-spot network.
      x: (N, H, W, 3) noisy images, H and W > the padding needed.
      factor: PD factor (2).
      r3_repeats: R3 passes T; 0 switches R3 off.
      r3_prob: R3's reset probability.
      key: PRNG key of R3's masks (needed when R3 is on and `uniforms` is not given).
      uniforms: (T, N, H', W', 3) fields to replay, H' and W' the padded size.
    Returns:
      (N, H, W, 3).
    """
    _, h, w, _ = x.shape
    padded = _pad(x, SIZE_MULTIPLE * factor)
    first = pd_forward(bsn, padded, factor)
    if uniforms is None and r3_repeats == 0:
        return first[:, :h, :w]
    if uniforms is None:
        if key is None:
            raise ValueError("TBSN denoise: R3 is on (r3_repeats > 0) but no PRNG key is given")
        uniforms = apbsn.r3_uniforms(key, padded.shape, r3_repeats)
    return apbsn.r3_refine(bsn, padded, first, uniforms, r3_prob, pad=0)[:, :h, :w]


def distill_target(bsn: apbsn.Denoiser, x: jax.Array, factor: int = TEST_PD_FACTOR) -> jax.Array:
    """The target of TBSN's distillation U-Net: `pd_forward`, then one full-resolution pass.

    The authors' R3 with T = 1 and p = 0 (no pixel reset to the noisy value). x is
    reflect-padded at the bottom and right to multiples of 32 * factor, as in `denoise`.

    Args:
      bsn: the frozen TBSN.
      x: (N, H, W, 3) noisy images on [0, 255].
      factor: PD factor (2).
    Returns:
      (N, H, W, 3) on [0, 255].
    """
    _, h, w, _ = x.shape
    padded = _pad(x, SIZE_MULTIPLE * factor)
    return bsn(pd_forward(bsn, padded, factor))[:, :h, :w]


def teacher_forward(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
    """The frozen TBSN as its U-Net's distillation stage runs it (`distill_target`).

    Args:
      module: the TBSN.
      params: its parameters.
      x: (N, H, W, 3) noisy crops (or whole images) on [0, 255].
    Returns:
      (N, H, W, 3), the U-Net's L1 target.
    """
    return distill_target(lambda y: module.apply({"params": params}, y), x)
