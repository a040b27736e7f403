"""The flatness map alpha and the three stage losses of SASL.

All images are NHWC float32 on the [0, 255] scale; alpha is (N, H, W, 1) in (0, 1).
Small alpha = flat region (trust the BNN), large alpha = texture (trust the LAN).
Details: docs/method.md#flatness-map-alpha.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

SIGMA_WINDOW = 7  # 7x7 local window, reflect padding of 3


def local_std(image: jax.Array, window: int = SIGMA_WINDOW) -> jax.Array:
    """Population std of the channel mean over each window x window neighbourhood.

    Args:
      image: (N, H, W, C) on the [0, 255] scale.
      window: odd window size; borders are reflect-padded by window // 2 (edge not repeated).
    Returns:
      sigma, (N, H, W, 1), float32.
    The std is computed in two passes (mean, then mean squared deviation) over the window's
    window^2 shifted views, which stays accurate in float32 where E[x^2] - E[x]^2 would not.
    """
    m = jnp.mean(image.astype(jnp.float32), axis=-1)
    r = window // 2
    padded = jnp.pad(m, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = m.shape[1:]
    views = jnp.stack(
        [padded[:, i : i + h, j : j + w] for i in range(window) for j in range(window)], axis=-1
    )
    mean = jnp.mean(views, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(views - mean), axis=-1)
    return jnp.sqrt(var)[..., None]


def alpha_from_sigma(sigma: jax.Array, lower: float = 1.0, upper: float = 5.0) -> jax.Array:
    """sigmoid(sigma - lower) below `lower`, sigmoid(sigma - upper) above `upper`, else 0.5.

    Args:
      sigma: local std, any shape (here (N, H, W, 1)), on the [0, 255] scale.
      lower, upper: the thresholds on the same scale, lower <= upper.
    Returns:
      alpha in (0, 1), sigma's shape; continuous and non-decreasing in sigma.
    """
    alpha = jnp.where(sigma < lower, jax.nn.sigmoid(sigma - lower), 0.5)
    return jnp.where(sigma > upper, jax.nn.sigmoid(sigma - upper), alpha)


def flatness_alpha(image_nhwc: jax.Array, lower: float = 1.0, upper: float = 5.0) -> jax.Array:
    """Flatness map of an image (the BNN output in SASL).

    Args:
      image_nhwc: (N, H, W, C) on the [0, 255] scale.
      lower, upper: thresholds on the local std (`local_std`), [0, 255] scale; ValueError
        unless lower <= upper.
    Returns:
      alpha, (N, H, W, 1) float32 in (0, 1); a constant (stop_gradient).
    """
    if not lower <= upper:
        raise ValueError(f"flatness thresholds need lower <= upper, got {lower} > {upper}")
    return lax.stop_gradient(alpha_from_sigma(local_std(image_nhwc), lower, upper))


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean absolute difference over every element.

    Args:
      a, b: arrays of one shape (or broadcastable), any float dtype; compared in float32.
    Returns:
      float32 scalar.
    """
    return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def bnn_loss(bnn_out: jax.Array, noisy: jax.Array) -> jax.Array:
    """Stage 1: L1(BNN(x), x).

    Args:
      bnn_out: BNN(x), (N, H, W, 3) on the [0, 255] scale.
      noisy: x, the noisy batch, same shape and scale.
    Returns:
      float32 scalar.
    """
    return l1(bnn_out, noisy)


def lan_loss(lan_out: jax.Array, bnn_out: jax.Array) -> jax.Array:
    """Stage 2: L1(LAN(x), BNN(x)), the BNN frozen (the released code's plain form).

    Args:
      lan_out: LAN(x), (N, H, W, 3) on the [0, 255] scale.
      bnn_out: BNN(x), same shape and scale (stop-gradient'ed here).
    Returns:
      float32 scalar.
    """
    return l1(lan_out, lax.stop_gradient(bnn_out))


def adaptive_loss(
    unet_out: jax.Array, bnn_out: jax.Array, lan_out: jax.Array, alpha: jax.Array
) -> jax.Array:
    """Stage 3: L1(BNN*(1-a), U*(1-a)) + L1(LAN*a, U*a), teachers and a frozen.

    Args:
      unet_out, bnn_out, lan_out: U-Net(x), BNN(x), LAN(x), each (N, H, W, 3) on [0, 255].
      alpha: a, (N, H, W, 1) in (0, 1) (`flatness_alpha` of bnn_out).
    Returns:
      float32 scalar.
    """
    bnn_out, lan_out, alpha = (lax.stop_gradient(t) for t in (bnn_out, lan_out, alpha))
    flat = 1.0 - alpha
    return l1(bnn_out * flat, unet_out * flat) + l1(lan_out * alpha, unet_out * alpha)
