"""AP-BSN (Lee et al., CVPR 2022): PD-wrapped blind-spot forward and random-replacing refinement.

Training runs the blind-spot network on the PD mosaic of factor 5 (2 px of zeros between the
sub-images) and inverts the PD; at test time the factor is 2, and R3 averages passes at full
resolution whose inputs are the PD output with a random 16% of pixels reset to the noisy
value. All images are NHWC float32 on the [0, 255] scale. Details: docs/peers.md#ap-bsn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sassid_jax.nn.pd import pd_mosaic, pd_unmosaic

Denoiser = Callable[[jax.Array], jax.Array]  # (N, H, W, 3) -> (N, H, W, 3), e.g. DBSNl bound

TRAIN_PD_FACTOR = 5
TEST_PD_FACTOR = 2
PD_PAD = 2
R3_REPEATS = 8
R3_PROB = 0.16


def pd_forward(bsn: Denoiser, x: jax.Array, factor: int, pad: int = PD_PAD) -> jax.Array:
    """The blind-spot network run on the PD mosaic of x, PD inverted.

    Args:
      bsn: the network, (N, H', W', 3) -> same shape.
      x: (N, H, W, 3), H and W multiples of `factor`.
      factor: PD factor (1: x zero-padded by `pad` only).
      pad: zeros around each sub-image.
    Returns:
      (N, H, W, 3).
    """
    return pd_unmosaic(bsn(pd_mosaic(x, factor, pad)), factor, pad)


def r3_uniforms(key: jax.Array, shape: tuple[int, ...], repeats: int = R3_REPEATS) -> jax.Array:
    """The uniform fields R3 draws: one U[0, 1) value per pass and element.

    Args:
      key: a PRNG key.
      shape: (N, H, W, 3), the shape of the (padded) noisy image.
      repeats: passes T.
    Returns:
      (T, N, H, W, 3) float32; pass t resets the elements where it is below the probability.
    """
    return jax.random.uniform(key, (repeats, *shape), jnp.float32)


def r3_refine(
    bsn: Denoiser,
    noisy: jax.Array,
    first: jax.Array,
    uniforms: jax.Array,
    prob: float = R3_PROB,
    pad: int = PD_PAD,
) -> jax.Array:
    """Random-replacing refinement with given uniform fields (replays a drawn set of masks).

    Pass t: the elements of `first` where uniforms[t] < prob are reset to `noisy`, the result
    is reflect-padded by `pad`, denoised by `bsn` at full resolution and cropped; the passes
    are averaged (one at a time, `lax.map`, so memory is that of one pass).

    Args:
      bsn: the blind-spot network.
      noisy: x, (N, H, W, 3).
      first: the PD output for x, same shape.
      uniforms: (T, N, H, W, 3) in [0, 1).
      prob: reset probability p.
      pad: reflect padding of each pass (0: none).
    Returns:
      (N, H, W, 3), the mean of the T passes.
    """

    def one_pass(u: jax.Array) -> jax.Array:
        z = jnp.where(u < prob, noisy, first)
        z = jnp.pad(z, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        y = bsn(z)
        return y[:, pad : y.shape[1] - pad, pad : y.shape[2] - pad]

    return jnp.mean(lax.map(one_pass, uniforms), axis=0)


def denoise(
    bsn: Denoiser,
    x: jax.Array,
    *,
    factor: int = TEST_PD_FACTOR,
    pad: int = PD_PAD,
    r3_repeats: int = R3_REPEATS,
    r3_prob: float = R3_PROB,
    key: jax.Array | None = None,
    uniforms: jax.Array | None = None,
) -> jax.Array:
    """AP-BSN's test-time procedure: PD with `factor`, then R3 (unless r3_repeats is 0).

    x is zero-padded at the bottom and right to multiples of `factor` and the result cropped
    back (the authors' R3 branch returns the padded size; the crop is its top-left H x W).

    Args:
      bsn: the blind-spot network.
      x: (N, H, W, 3) noisy images, any H and W.
      factor: PD factor at test time (2).
      pad: zeros between PD sub-images, and R3's reflect padding.
      r3_repeats: R3 passes T; 0 switches R3 off (a deterministic output).
      r3_prob: R3's reset probability.
      key: PRNG key of R3's masks (needed when R3 is on and `uniforms` is not given).
      uniforms: (T, N, H', W', 3) fields to replay instead of drawing them, H' and W' the
        padded size (T then overrides r3_repeats).
    Returns:
      (N, H, W, 3).
    """
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (0, -h % factor), (0, -w % factor), (0, 0)))
    first = pd_forward(bsn, padded, factor, pad)
    if uniforms is None and r3_repeats == 0:
        return first[:, :h, :w]
    if uniforms is None:
        if key is None:
            raise ValueError("AP-BSN denoise: R3 is on (r3_repeats > 0) but no PRNG key is given")
        uniforms = r3_uniforms(key, padded.shape, r3_repeats)
    return r3_refine(bsn, padded, first, uniforms, r3_prob, pad)[:, :h, :w]


def train_forward(bsn: Denoiser, x: jax.Array) -> jax.Array:
    """The training forward: PD factor 5 with 2 px between sub-images, network, inverse PD.

    Args:
      bsn: the blind-spot network.
      x: (N, H, W, 3), H and W multiples of 5.
    Returns:
      (N, H, W, 3); the loss is L1 to x.
    """
    return pd_forward(bsn, x, TRAIN_PD_FACTOR, PD_PAD)


def train_apply(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
    """`train_forward` of a network and its parameters (AP-BSN's stage runs its network so).

    Args:
      module: the blind-spot network (e.g. `DBSNl`).
      params: its parameters.
      x: (N, H, W, 3) on [0, 255], H and W multiples of 5.
    Returns:
      (N, H, W, 3).
    """
    return train_forward(lambda z: module.apply({"params": params}, z), x)
