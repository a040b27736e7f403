"""Evaluation metrics of the SASL protocol: its rounding, PSNR, SSIM and the colour shift.

`psnr` and `ssim` round the denoised image as the protocol does (`quantize`; see
docs/method.md#evaluation-protocol), so callers pass raw network outputs on the [0, 255]
scale; the clean image is used as is. Images are (H, W, C) or (N, H, W, C); each metric gives
one value per image, shape (N,). float32 throughout, jittable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any  # np.ndarray | jax.Array

SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def quantize(x: ArrayLike) -> ArrayLike:
    """Round like the published evaluation: ``clip(floor(x + 0.5), 0, 255)``.

    Args:
        x: array of any shape, values on the ``[0, 255]`` scale (any real dtype).

    The input is converted to float32 *before* rounding (network outputs are float32), so a
    float64 value within a float32 rounding step of a half-integer (e.g. ``200.49999999``,
    which becomes ``200.5``) can round differently from a float64 ``floor(x + 0.5)``.

    Returns:
        float32 array of the same shape holding integers in ``[0, 255]``.  A NumPy input
        gives a NumPy output, anything else (JAX arrays, tracers) a JAX array.
    """
    if isinstance(x, np.ndarray | np.generic | int | float):
        xf = np.asarray(x, dtype=np.float32)
        return np.clip(np.floor(xf + np.float32(0.5)), 0.0, 255.0).astype(np.float32)
    xf = jnp.asarray(x, dtype=jnp.float32)
    return jnp.clip(jnp.floor(xf + 0.5), 0.0, 255.0)


def _as_batch(clean: ArrayLike, denoised: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Return float32 ``(N, H, W, C)`` views of a pair, the denoised one quantized."""
    c = jnp.asarray(clean).astype(jnp.float32)
    d = quantize(jnp.asarray(denoised))
    if c.shape != d.shape:
        raise ValueError(f"shape mismatch: clean {c.shape} vs denoised {d.shape}")
    if c.ndim == 3:
        c, d = c[None], d[None]
    if c.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) images, got shape {c.shape}")
    return c, d


def _spatial_mean(x: jax.Array) -> jax.Array:
    """Mean over axes 1 and 2 of ``(N, H, W, C)`` -> ``(N, C)``, summed in two stages.

    Averaging rows first keeps float32 rounding error near ``(H + W) * eps`` instead of
    ``H * W * eps`` for a naive sequential sum.
    """
    return jnp.mean(jnp.mean(x, axis=2), axis=1)


def psnr(clean: ArrayLike, denoised: ArrayLike, data_range: float = 255.0) -> jax.Array:
    """Per-image PSNR in dB after the protocol's rounding of ``denoised``.

    Args:
        clean: ``(H, W, C)`` or ``(N, H, W, C)``, uint8 or float in ``[0, 255]``.
        denoised: same shape, raw output on the ``[0, 255]`` scale; it is passed through
            :func:`quantize` first.
        data_range: peak value, 255 for 8-bit images.

    Returns:
        float32 ``(N,)`` PSNR values.  Identical images (MSE 0) give ``+inf`` (not capped).
    """
    c, d = _as_batch(clean, denoised)
    mse = jnp.mean(_spatial_mean((c - d) ** 2), axis=-1)
    return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def _box_sum_valid(x: jax.Array, win: int) -> jax.Array:
    """Sum over every ``win x win`` window fully inside the image.

    Args:
        x: ``(N, H, W, C)`` float32.
        win: odd window side.

    Returns:
        ``(N, H - win + 1, W - win + 1, C)``; entry ``[n, i, j, c]`` sums rows ``i..i+win-1``
        and columns ``j..j+win-1`` (separable, ``win`` terms per pass).
    """
    h, w = x.shape[1], x.shape[2]
    ho, wo = h - win + 1, w - win + 1
    rows = sum(x[:, k : k + ho] for k in range(win))
    return sum(rows[:, :, k : k + wo] for k in range(win))


def ssim(clean: ArrayLike, denoised: ArrayLike, data_range: float = 255.0) -> jax.Array:
    """Per-image SSIM matching ``skimage.metrics.structural_similarity``.

    Reproduces ``structural_similarity(clean, quantize(denoised), channel_axis=-1,
    data_range=data_range)`` with its defaults: 7x7 uniform window, sample covariance
    (``N / (N - 1)`` with ``N = 49``), ``K1 = 0.01``, ``K2 = 0.03``, the SSIM map averaged
    over the region left after cropping ``(7 - 1) // 2 = 3`` pixels from every border, then
    averaged over channels.  skimage filters with reflected borders before that crop, but
    every kept pixel's window lies fully inside the image, so only those "valid" windows are
    computed here and the border mode plays no part.

    To keep float32 accurate (cancellation in ``E[x^2] - E[x]^2`` on values up to 255),
    local means are computed first and the (co)variances from centred values.

    Args:
        clean: ``(H, W, C)`` or ``(N, H, W, C)``, uint8 or float in ``[0, 255]``; ``H, W >= 7``.
        denoised: same shape, raw output on the ``[0, 255]`` scale; it is passed through
            :func:`quantize` first (the protocol's rounding, as in :func:`psnr`).
        data_range: dynamic range of the images, 255 for 8-bit images.

    Returns:
        float32 ``(N,)`` mean SSIM per image, in ``[-1, 1]``.
    """
    x, y = _as_batch(clean, denoised)
    win = SSIM_WIN_SIZE
    h, w = x.shape[1], x.shape[2]
    if h < win or w < win:
        raise ValueError(f"images must be at least {win}x{win}, got {h}x{w}")
    ho, wo = h - win + 1, w - win + 1
    n_px = float(win * win)

    ux = _box_sum_valid(x, win) / n_px
    uy = _box_sum_valid(y, win) / n_px

    sxx = jnp.zeros_like(ux)
    syy = jnp.zeros_like(ux)
    sxy = jnp.zeros_like(ux)
    for di in range(win):
        for dj in range(win):
            dx = x[:, di : di + ho, dj : dj + wo] - ux
            dy = y[:, di : di + ho, dj : dj + wo] - uy
            sxx = sxx + dx * dx
            syy = syy + dy * dy
            sxy = sxy + dx * dy
    vx = sxx / (n_px - 1.0)
    vy = syy / (n_px - 1.0)
    vxy = sxy / (n_px - 1.0)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s_map = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(_spatial_mean(s_map), axis=-1)


def colour_shift(clean: ArrayLike, denoised: ArrayLike) -> jax.Array:
    """Mean signed error per channel, mean(quantize(denoised) - clean) over each image's pixels.

    Args:
        clean: ``(H, W, C)`` or ``(N, H, W, C)``, uint8 or float in ``[0, 255]``.
        denoised: same shape, raw output on the ``[0, 255]`` scale (quantized first).

    Returns:
        float32 ``(N, C)``, in 8-bit levels (positive: the output is too bright).
    """
    clean = jnp.asarray(clean, jnp.float32)
    diff = quantize(jnp.asarray(denoised, jnp.float32)) - clean
    diff = diff[None] if diff.ndim == 3 else diff
    return jnp.mean(diff, axis=(1, 2))


def evaluate_pairs(pairs: Iterable[tuple[ArrayLike, ArrayLike]]) -> dict[str, Any]:
    """Score a sequence of (clean, denoised) pairs with :func:`psnr` and :func:`ssim`.

    Args:
        pairs: iterable of ``(clean, denoised)``; each element ``(H, W, C)`` or a batch
            ``(N, H, W, C)`` in ``[0, 255]`` (``denoised`` is quantized by the metrics).
            Sizes may differ between pairs.

    Returns:
        ``{"psnr": mean dB, "ssim": mean SSIM, "psnr_list": [...], "ssim_list": [...],
        "shift_list": [[R, G, B] mean signed error per image (:func:`colour_shift`)],
        "shift": [R, G, B] mean over images of the absolute shift, "count": number of
        images}``, all plain Python floats/ints (one list entry per image; means are ``nan``
        when there are no images).
    """
    psnr_fn = jax.jit(psnr)
    ssim_fn = jax.jit(ssim)
    shift_fn = jax.jit(colour_shift)
    psnr_list: list[float] = []
    ssim_list: list[float] = []
    shift_list: list[list[float]] = []
    for clean, denoised in pairs:
        psnr_list.extend(float(v) for v in np.asarray(psnr_fn(clean, denoised)))
        ssim_list.extend(float(v) for v in np.asarray(ssim_fn(clean, denoised)))
        shift_list.extend([float(c) for c in row] for row in np.asarray(shift_fn(clean, denoised)))
    count = len(psnr_list)
    return {
        "psnr": float(np.mean(psnr_list)) if count else float("nan"),
        "ssim": float(np.mean(ssim_list)) if count else float("nan"),
        "psnr_list": psnr_list,
        "ssim_list": ssim_list,
        "shift_list": shift_list,
        "shift": [float(v) for v in np.mean(np.abs(shift_list), axis=0)] if count else [],
        "count": count,
    }
