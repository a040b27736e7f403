"""The mean bias of camera sRGB noise, estimated from the noisy photo, and its removal.

Clipping and the sRGB gamma move a noisy photo's local mean away from the clean value. A
camera model without free parameters (linear Gaussian noise, clip, sRGB gamma) gives the bias
from the local mean and noise std, as one precomputed table. Images are on the [0, 255]
scale, float32. Why, model and figures: docs/noise.md#bias.
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
    (len(_X), len(_SIGMA_LIN)) each, by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_NODES)
    weights = weights / weights.sum()
    y = 255.0 * linear_to_srgb(_X[:, None, None] + _SIGMA_LIN[None, :, None] * nodes)
    mean = (y * weights).sum(-1)
    std = np.sqrt(np.maximum((y**2 * weights).sum(-1) - mean**2, 0.0))
    return mean, std


@functools.cache
def bias_table() -> np.ndarray:
    """The model's bias E[y] - clean in levels, deterministic, computed once.

    Returns:
      (256, STD_MAX / STD_STEP + 1) float32, indexed by noisy local mean / MEAN_STEP and
      noise std / STD_STEP (both in 8-bit levels).
    """
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
    """The model's bias at noisy local means and local noise stds: bilinear in
    `bias_table()`, clamped to its range (jnp, jit-friendly).

    Args:
      mean: noisy local mean, any shape, in 8-bit levels ([0, 255]).
      std: local noise std, mean's shape, in levels ([0, STD_MAX]).
    Returns:
      the bias E[noisy] - clean in levels, float32, mean's shape (subtract it to remove it).
    """
    table = jnp.asarray(bias_table())
    i = jnp.clip(mean / MEAN_STEP, 0.0, table.shape[0] - 1.0)
    j = jnp.clip(std / STD_STEP, 0.0, table.shape[1] - 1.0)
    i0 = jnp.minimum(jnp.floor(i), table.shape[0] - 2).astype(jnp.int32)
    j0 = jnp.minimum(jnp.floor(j), table.shape[1] - 2).astype(jnp.int32)
    fi, fj = i - i0, j - j0
    top = table[i0, j0] * (1 - fj) + table[i0, j0 + 1] * fj
    bottom = table[i0 + 1, j0] * (1 - fj) + table[i0 + 1, j0 + 1] * fj
    return top * (1 - fi) + bottom * fi
