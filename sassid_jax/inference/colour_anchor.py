"""Colour anchoring: a denoised image keeps the noisy input's local mean colour.

Why. Trained networks shift colours that the noisy input does not: on the main job's held-out
photos the U-Net's mean error reached -10.9 R / +5.5 G / +22.1 B levels where the noisy
input's was -2.5 / +0.5 / +9.7, and mild real camera noise showed shifts of 3-5 levels. The
shift is born in the LAN (stage 2) and handed on to the U-Net: the LAN sees a few pixels only
(a 3x3 neighbourhood around its blind centre), so under noise the L1-best guess of the BNN
output from such a small window leans towards the typical colour of the training crops
(shrinkage towards the data's prior), the same way on every block of a photo: on the main
job, the LAN's mean difference from the BNN has the sign of "training photos' mean colour
minus this photo's" in 11 of 12 channels, at about a fifth of its size. The U-Net's
adaptive loss takes the LAN as its target wherever the BNN output is textured (alpha near 1,
which under strong noise is most of the image), so it learns the shift too. The BNN adds a
smaller part: its L1 loss aims at the median of the noisy value, which differs from the mean
where sRGB noise is skewed or clipped.

Fix. Noise averages out over large windows, so the noisy input's local mean colour is an
(almost) unbiased estimate of the clean image's, while a denoiser's value lies in its
details. `anchor` keeps the output's details and replaces its low frequencies by the input's:

    anchored = output + G_sigma * (noisy - output)

(G_sigma: a Gaussian blur of std `sigma` pixels per channel, symmetric borders). The mean
colour of each image then equals the input's (up to the borders and rounding), so the output
adds no mean shift of its own; what stays is the noise that survives the blur (for white
noise of std s, a std of about s / (2 sqrt(pi) sigma)) and the input's own mean bias: sRGB
camera noise is not zero-mean (clipping, the gamma curve). `anchor` removes that bias too
(`debias`, on by default), as a model of camera noise estimates it from the photo's local
mean and noise level (bias.py). It works per region, so an image's overall mean error
can grow where the input's regional biases cancelled (dark regions biased up, mid-tones
down) and only some of them are removed.
On the main job's held-out photos sigma = 8 lifted the U-Net from 22.32 to 23.69 dB (4 to 32
px: 23.45 / 23.69 / 23.65 / 23.53; a per-image global mean shift alone: 23.13).

Images are (..., H, W, C) on the [0, 255] scale; float32 out. Pure jnp, so the anchored
denoiser stays differentiable (quality estimates use it).
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


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D Gaussian taps of std `sigma` (> 0) pixels, radius round(3 sigma) (scipy's
    gaussian_filter's), summing to 1."""
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
    """Gaussian blur of std `sigma` pixels of (H, W, C) or (N, H, W, C), per channel."""
    x = jnp.asarray(image, jnp.float32)
    single = x.ndim == 3
    x = x[None] if single else x
    taps = gaussian_kernel(sigma)
    x = _blur_axis(_blur_axis(x, taps, 1), taps, 2)
    return x[0] if single else x


def estimate_bias(noisy: Any, output: Any, sigma: float) -> jax.Array:
    """The mean bias that clipping and the sRGB gamma give `noisy`'s local mean, in levels,
    per pixel and channel (bias.py): from the local mean of `noisy` and the local std of
    `noisy - output` over the Gaussian window of std `sigma` (> 0) pixels. Shapes as `anchor`."""
    noisy = jnp.asarray(noisy, jnp.float32)
    residual = noisy - jnp.asarray(output, jnp.float32)
    variance = blur(residual**2, sigma) - blur(residual, sigma) ** 2
    return bias.bias(blur(noisy, sigma), jnp.sqrt(jnp.maximum(variance, 0.0)))


def anchor(output: Any, noisy: Any, sigma: float, debias: bool = True) -> jax.Array:
    """`output` with the local mean colour of `noisy`: output + G_sigma * (noisy - output),
    less the noise's own mean bias there (`estimate_bias`) when `debias`.

    Args:
      output: the denoised image, (H, W, C) or (N, H, W, C) on [0, 255] (not rounded).
      noisy: the network's input, same shape.
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
    """`anchor` for numpy images (one compiled program per shape); float32 numpy out."""
    if not sigma:
        return np.asarray(output, np.float32)
    noisy = np.asarray(noisy, np.float32)
    return np.asarray(_anchor_jit(output, noisy, float(sigma), bool(debias)))


def config_sigma(config: Any) -> float:
    """config.postprocess.colour_sigma as a float >= 0 (0 when the field is absent, as in run
    folders written before it existed); ConfigError naming the field for anything else."""
    post = config.get("postprocess") or {}
    value = post.get("colour_sigma", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{FIELD} must be a number of pixels >= 0 (0 = off), got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{FIELD} must be finite, got {value!r}")
    return float(value)
