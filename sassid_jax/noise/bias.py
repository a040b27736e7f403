"""The mean bias of camera sRGB noise, estimated from the noisy photo, and its removal.

Why. Camera noise is zero-mean in the sensor's linear space, but a photo's sRGB values are
the linear values clipped at 0 and 1 and passed through the concave sRGB gamma, so the noisy
values' local mean is not the clean value's: Jensen's inequality pulls it down where the
gamma bends (mid-tones and highlights) and clipping at black pushes it up in the shadows.
Under strong noise this bias is large: on the real SIDD validation block, noisy minus ground
truth averages -10.1 R / -6.4 G / -9.5 B levels, and a denoiser that keeps the input's local
mean colour (colour_anchor.py) keeps that bias too (it was 43% of the U-Net's squared error
there).

Model. y = g(clip(x + sigma_lin * n, 0, 1)): clean linear value x, Gaussian noise n of the
unknown linear std sigma_lin, g the sRGB transfer function. For a noisy local mean m and
local noise std s (both in sRGB levels, both measured on the photo), the pair (x, sigma_lin)
with E[y] = m and std[y] = s is solved for (a table over m = 0..255, s = 0..80, computed once
by Gauss-Hermite quadrature), and the bias is m - 255 g(x). The model has no free parameter;
it does not know a camera's own tone curve (on top of the sRGB gamma), which changes the bias
somewhat.

Where the numbers come from. m is the noisy photo's local mean and s the local std of noisy
minus the denoised output (the noise the network removed), both over the colour anchor's
Gaussian window (`colour_anchor.estimate_bias`). On the U-Net trained on five SIDD blocks
(scored on the SIDD pair) it lifted 25.52 dB to 27.90; on the main job's held-out photos
23.63 to 24.01 (bench/OWN_PHOTOS.md).

Images are (..., H, W, 3) on the [0, 255] scale, float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.noise.simulator import linear_to_srgb  # the simulator's sRGB gamma

MEAN_STEP = 1.0  # table grid: noisy local mean 0..255 in steps of 1 level
STD_STEP = 0.5  # noise std 0..STD_MAX in steps of 0.5 level
STD_MAX = 80.0
_NODES = 41  # Gauss-Hermite nodes
_X = np.linspace(-0.6, 1.3, 768)  # clean linear values tried (below 0: black with noise)
_SIGMA_LIN = np.linspace(0.0, 1.0, 201)  # linear noise stds tried


def _moments() -> tuple[np.ndarray, np.ndarray]:
    """E[y] and std[y] in levels for every clean linear x and linear noise std:
    (len(_X), len(_SIGMA_LIN)) each."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_NODES)
    weights = weights / weights.sum()
    y = 255.0 * linear_to_srgb(_X[:, None, None] + _SIGMA_LIN[None, :, None] * nodes)
    mean = (y * weights).sum(-1)
    std = np.sqrt(np.maximum((y**2 * weights).sum(-1) - mean**2, 0.0))
    return mean, std


@functools.cache
def bias_table() -> np.ndarray:
    """(256, STD_MAX / STD_STEP + 1) float32: the model's bias E[y] - clean in levels, indexed
    by noisy local mean (levels) and noise std / STD_STEP. Deterministic; computed once."""
    mean, std = _moments()
    clean = 255.0 * linear_to_srgb(_X)
    means = np.arange(0.0, 256.0, MEAN_STEP)
    stds = np.arange(0.0, STD_MAX + STD_STEP / 2, STD_STEP)
    std_at = np.full((len(_SIGMA_LIN), len(means)), np.nan)
    bias_at = np.zeros_like(std_at)
    ramp = 1e-9 * np.arange(len(_X))  # E[y] rises with x; the ramp makes it strictly rising
    for k in range(len(_SIGMA_LIN)):
        e = np.maximum.accumulate(mean[:, k]) + ramp
        x = np.interp(means, e, _X)
        reachable = (means >= e[0]) & (means <= e[-1])
        std_at[k, reachable] = np.interp(x, _X, std[:, k])[reachable]
        bias_at[k] = means - np.interp(x, _X, clean)
    table = np.zeros((len(means), len(stds)))
    for i in range(len(means)):
        ok = np.isfinite(std_at[:, i])  # the std grows with sigma_lin at a fixed mean
        rising = np.maximum.accumulate(std_at[ok, i]) + 1e-9 * np.arange(ok.sum())
        table[i] = np.interp(stds, rising, bias_at[ok, i])
    return table.astype(np.float32)


def bias(mean: jax.Array, std: jax.Array) -> jax.Array:
    """The model's bias in levels at noisy local means and local noise stds (levels, any
    equal shapes): bilinear in `bias_table()`, clamped to its range. jnp, jit-friendly."""
    table = jnp.asarray(bias_table())
    i = jnp.clip(mean / MEAN_STEP, 0.0, table.shape[0] - 1.0)
    j = jnp.clip(std / STD_STEP, 0.0, table.shape[1] - 1.0)
    i0 = jnp.minimum(jnp.floor(i), table.shape[0] - 2).astype(jnp.int32)
    j0 = jnp.minimum(jnp.floor(j), table.shape[1] - 2).astype(jnp.int32)
    fi, fj = i - i0, j - j0
    top = table[i0, j0] * (1 - fj) + table[i0, j0 + 1] * fj
    bottom = table[i0 + 1, j0] * (1 - fj) + table[i0 + 1, j0 + 1] * fj
    return top * (1 - fi) + bottom * fi
