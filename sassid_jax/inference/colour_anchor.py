"""Colour anchoring: a denoised image keeps the noisy input's local mean colour.

`anchor` computes output + G_sigma * (noisy - output), G_sigma a per-channel Gaussian blur of
std sigma pixels, less the mean bias that the noise gives the input's local mean
(`noise.bias`). Images are (H, W, C) or (N, H, W, C) on [0, 255]; float32 out. Pure jnp, so an
anchored denoiser stays differentiable. Details: docs/inference.md#colour-anchor.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.errors import ConfigError
from sassid_jax.noise import bias

FIELD = "postprocess.colour_sigma"
TRUNCATE = 3.0  # the kernel reaches TRUNCATE * sigma pixels on each side
# Largest sigma accepted: the blur pads each side by TRUNCATE * sigma pixels, so memory and
# work grow with sigma^2; beyond a few hundred pixels the anchor is a global colour shift.
MAX_SIGMA = 256.0


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D Gaussian taps of std `sigma` (> 0) pixels: float32 (2r + 1,), r = max(1,
    round(3 sigma)) (scipy's gaussian_filter's radius), summing to 1."""
    radius = max(1, int(TRUNCATE * sigma + 0.5))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (t / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _blur_axis(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
    """Convolve (N, H, W, C) with `taps` along axis 1 (H) or 2 (W), symmetric borders."""
    radius = len(taps) // 2
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    # numpy's symmetric padding repeats the reflection when the pad exceeds the size
    padded = jnp.pad(x, pad, mode="symmetric")
    channels = x.shape[-1]
    shape = (len(taps), 1) if axis == 1 else (1, len(taps))
    kernel = jnp.broadcast_to(jnp.asarray(taps).reshape(*shape, 1, 1), (*shape, 1, channels))
    return jax.lax.conv_general_dilated(
        padded,
        kernel,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )


def blur(image: Any, sigma: float) -> jax.Array:
    """Gaussian blur per channel, symmetric borders.

    Args:
      image: (H, W, C) or (N, H, W, C), any real dtype and scale.
      sigma: the blur's std in pixels, > 0.
    Returns:
      float32, the shape of `image`.
    """
    x = jnp.asarray(image, jnp.float32)
    single = x.ndim == 3
    x = x[None] if single else x
    taps = gaussian_kernel(sigma)
    x = _blur_axis(_blur_axis(x, taps, 1), taps, 2)
    return x[0] if single else x


def estimate_bias(noisy: Any, output: Any, sigma: float) -> jax.Array:
    """The mean bias that clipping and the sRGB gamma give `noisy`'s local mean (`noise.bias`),
    from the local mean of `noisy` and the local std of `noisy - output`.

    Args:
      noisy: the network's input, (H, W, C) or (N, H, W, C) on [0, 255].
      output: the denoised image, same shape, on [0, 255] (not rounded).
      sigma: std in pixels (> 0) of the Gaussian window of the local means.
    Returns:
      float32, the shape of `noisy`: the bias per pixel and channel, in 8-bit levels.
    """
    noisy = jnp.asarray(noisy, jnp.float32)
    residual = noisy - jnp.asarray(output, jnp.float32)
    variance = blur(residual**2, sigma) - blur(residual, sigma) ** 2
    return bias.bias(blur(noisy, sigma), jnp.sqrt(jnp.maximum(variance, 0.0)))


def anchor(output: Any, noisy: Any, sigma: float, debias: bool = True) -> jax.Array:
    """`output` with the local mean colour of `noisy`: output + G_sigma * (noisy - output),
    less the noise's own mean bias there (`estimate_bias`) when `debias`.

    Args:
      output: the denoised image, (H, W, C) or (N, H, W, C) on [0, 255] (not rounded).
      noisy: the network's input, same shape, on [0, 255].
      sigma: blur std in pixels; 0 returns `output` unchanged (as float32).
      debias: remove the modelled bias (False: keep the input's local mean as it is).
    Returns:
      float32, the shape of `output`.
    """
    out = jnp.asarray(output, jnp.float32)
    if not sigma:
        return out
    noisy = jnp.asarray(noisy, jnp.float32)
    out = out + blur(noisy - out, sigma)
    return out - estimate_bias(noisy, out, sigma) if debias else out


_anchor_jit = jax.jit(anchor, static_argnums=(2, 3))


def anchor_image(
    output: np.ndarray, noisy: np.ndarray, sigma: float, debias: bool = True
) -> np.ndarray:
    """`anchor` for numpy images, jitted (one compiled program per shape).

    Args:
      output, noisy, sigma, debias: as in `anchor`.
    Returns:
      float32 numpy array, the shape of `output`.
    """
    if not sigma:
        return np.asarray(output, np.float32)
    noisy = np.asarray(noisy, np.float32)
    return np.asarray(_anchor_jit(output, noisy, float(sigma), bool(debias)))


def config_sigma(config: Any) -> float:
    """config.postprocess.colour_sigma in pixels, a float >= 0 (0 when the field is absent, as
    in run folders written before it existed).

    Raises:
      ConfigError: naming the field, for anything but a finite number >= 0.
    """
    post = config.get("postprocess") or {}
    return check_sigma(post.get("colour_sigma", 0.0), FIELD)


def check_sigma(value: Any, name: str) -> float:
    """A colour anchor sigma, checked: a finite number of pixels in [0, MAX_SIGMA].

    Args:
      value: the value given.
      name: the config field or flag named in the message.
    Returns:
      the value as a float.
    Raises:
      ConfigError: naming `name`, for anything else (inf and nan included).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of pixels >= 0 (0 = off), got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number of pixels, got {value!r}")
    if not 0 <= value <= MAX_SIGMA:
        raise ConfigError(f"{name} must be between 0 (off) and {MAX_SIGMA:g} pixels, got {value!r}")
    return float(value)


def check_sigma_fits(sigma: float, height: int, width: int) -> str | None:
    """None when `sigma` suits a height x width image (at most its longer side), else why
    not, in words."""
    side = max(height, width)
    if sigma <= side:
        return None
    return f"colour sigma {sigma:g} is larger than the image's longer side ({side} px)"
