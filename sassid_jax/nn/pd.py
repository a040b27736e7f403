"""Pixel-shuffle downsampling (PD) and its inverse, with zero padding around each sub-image.

PD with factor f splits an image into its f * f sub-images x[i::f, j::f]. `pd_stack` puts them
on the batch axis, `pd_mosaic` tiles them into one image as AP-BSN does (sub-image (i, j) in
row block i, column block j, each padded by `pad` zeros, so a network run on the mosaic sees
2 * pad zeros between neighbouring sub-images). `pd_unstack` and `pd_unmosaic` invert them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _check_divisible(x: jax.Array, factor: int) -> None:
    if factor < 1 or x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(
            f"PD: height and width must be multiples of the factor {factor}, got shape {x.shape}"
        )


@functools.partial(jax.jit, static_argnames=("factor", "pad"))
def pd_stack(x: jax.Array, factor: int, pad: int = 0) -> jax.Array:
    """The f * f sub-images of each image on the batch axis, each zero-padded by `pad`.

    Args:
      x: (N, H, W, C), any values; H and W multiples of `factor`.
      factor: f >= 1 (1: the image itself, padded).
      pad: zero pixels added on every side of each sub-image.
    Returns:
      (f * f * N, H / f + 2 pad, W / f + 2 pad, C): index (i * f + j) * N + n holds
      x[n, i::f, j::f] (inside its padding).
    """
    _check_divisible(x, factor)
    n, h, w, c = x.shape
    f = factor
    y = x.reshape(n, h // f, f, w // f, f, c).transpose(2, 4, 0, 1, 3, 5)
    y = y.reshape(f * f * n, h // f, w // f, c)
    return jnp.pad(y, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


@functools.partial(jax.jit, static_argnames=("factor", "pad"))
def pd_unstack(y: jax.Array, factor: int, pad: int = 0) -> jax.Array:
    """Inverse of `pd_stack`: padding cropped, sub-images interleaved back.

    Args:
      y: (f * f * N, h + 2 pad, w + 2 pad, C), as `pd_stack` returns.
      factor: f, as given to `pd_stack`.
      pad: the padding to crop.
    Returns:
      (N, f * h, f * w, C).
    """
    f = factor
    total, hp, wp, c = y.shape
    n, h, w = total // (f * f), hp - 2 * pad, wp - 2 * pad
    y = y[:, pad : pad + h, pad : pad + w].reshape(f, f, n, h, w, c)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, h * f, w * f, c)


@functools.partial(jax.jit, static_argnames=("factor", "pad"))
def pd_mosaic(x: jax.Array, factor: int, pad: int = 0) -> jax.Array:
    """AP-BSN's PD: the padded sub-images of `pd_stack` tiled into one image per input.

    Args:
      x: (N, H, W, C); H and W multiples of `factor`.
      factor: f >= 1 (1: x zero-padded by `pad`).
      pad: zero pixels around each sub-image.
    Returns:
      (N, f * (H / f + 2 pad), f * (W / f + 2 pad), C); sub-image (i, j) fills row block i,
      column block j.
    """
    n = x.shape[0]
    s = pd_stack(x, factor, pad)
    _, hp, wp, c = s.shape
    f = factor
    s = s.reshape(f, f, n, hp, wp, c).transpose(2, 0, 3, 1, 4, 5)
    return s.reshape(n, f * hp, f * wp, c)


@functools.partial(jax.jit, static_argnames=("factor", "pad"))
def pd_unmosaic(y: jax.Array, factor: int, pad: int = 0) -> jax.Array:
    """Inverse of `pd_mosaic`: each block's padding cropped, sub-images interleaved back.

    Args:
      y: (N, f * (h + 2 pad), f * (w + 2 pad), C), as `pd_mosaic` returns (or a network's
        output on it).
      factor: f, as given to `pd_mosaic`.
      pad: the padding to crop.
    Returns:
      (N, f * h, f * w, C).
    """
    f = factor
    n, hm, wm, c = y.shape
    hp, wp = hm // f, wm // f
    s = y.reshape(n, f, hp, f, wp, c).transpose(1, 3, 0, 2, 4, 5).reshape(f * f * n, hp, wp, c)
    return pd_unstack(s, factor, pad)
