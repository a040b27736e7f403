"""Building blocks of the networks as pure `lax` ops, and one small Linen conv (`Conv2D`).

All arrays are NHWC; values are whatever the network carries (sRGB in [0, 255] float32 at its
input), nothing here rescales. `conv2d` is 'same' or "upward" (the BNN's shift convolution),
`shift_down` moves a map down by whole rows. Details:
docs/method.md#shift-convolutions-and-the-blind-region.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

LEAKY_SLOPE = 0.1
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

InitStyle = Literal["he_leaky", "he_linear", "torch_default"]


def conv_padding(kernel_size: int, upward: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding ((top, bottom), (left, right)) of a stride-1 conv that keeps H and W.

    'same' pads k // 2 on every side; 'upward' pads 2 * (k // 2) rows on top and none at the
    bottom, so output row i only sees input rows i - 2 * (k // 2) .. i.

    Args:
      kernel_size: odd k.
      upward: the shift convolution's padding instead of 'same'.
    Returns:
      ((top, bottom), (left, right)) in pixels, for `lax.conv_general_dilated`.
    """
    half = kernel_size // 2
    rows = (2 * half, 0) if upward else (half, half)
    return rows, (half, half)


def conv2d(x: jax.Array, kernel: jax.Array, *, upward: bool = False) -> jax.Array:
    """Stride-1 convolution keeping the spatial size, 'same' or upward (shift) padding.

    Args:
      x: (N, H, W, C_in).
      kernel: (k, k, C_in, C_out), HWIO, k odd.
      upward: shift convolution (output row i depends on input rows <= i only).
    Returns:
      (N, H, W, C_out) in x's dtype.
    k = 1 is a matrix product over channels. For k > 1 forward and input gradient are XLA's
    convolutions; the kernel gradient may take the per-tap form of `tap_kernel_grad` (see
    `_conv_vjp`), the same values on every backend.
    """
    if kernel.shape[0] == 1:  # a matrix product over channels (XLA:CPU's 1x1-conv kernel
        # gradient is ~20x slower than this dot's; bench/NOTES.md)
        return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))
    return _conv_tapgrad(x, kernel, conv_padding(kernel.shape[0], upward))


def dilated_conv2d(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Stride-1 'same' convolution with a dilated kernel (taps `dilation` pixels apart).

    Args:
      x: (N, H, W, C_in).
      kernel: (k, k, C_in, C_out), HWIO, k odd.
      dilation: spacing d >= 1 of the taps; the zero padding is d * (k // 2) on every side.
    Returns:
      (N, H, W, C_out) in x's dtype; out[i, j] sees x[i + d * a, j + d * b] for |a|, |b| <= k // 2.
    """
    pad = dilation * (kernel.shape[0] // 2)
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding=((pad, pad), (pad, pad)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=DIMENSION_NUMBERS,
    )


def centre_mask(kernel_shape: tuple[int, ...]) -> jax.Array:
    """The mask of a centre-masked convolution: ones except the centre tap of every channel.

    Args:
      kernel_shape: (k, k, C_in, C_out), HWIO, k odd.
    Returns:
      float32 array of that shape, 0 at [k // 2, k // 2, :, :], else 1 (out[i, j] of the masked
      conv never sees x[i, j]).
    """
    k = kernel_shape[0]
    taps = jnp.ones((k, k), jnp.float32).at[k // 2, k // 2].set(0.0)
    return jnp.broadcast_to(taps[:, :, None, None], kernel_shape)


Padding = tuple[tuple[int, int], tuple[int, int]]
# XLA:CPU computes the kernel gradient of a 3x3 conv over many pixels 2-4x slower than the
# equivalent per-tap matrix products (bench/NOTES.md); from this many output pixels
# (N * H * W) on, the CPU backend uses `tap_kernel_grad` instead.
TAP_GRAD_MIN_PIXELS = 65536


def _conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=padding, dimension_numbers=DIMENSION_NUMBERS
    )


def tap_kernel_grad(
    x: jax.Array, dy: jax.Array, kernel_shape: tuple[int, ...], padding: Padding
) -> jax.Array:
    """Gradient of sum(dy * conv(x, k)) w.r.t. k as kh * kw matrix products.

    Tap (i, j) of the kernel gradient is dy^T @ x_pad[:, i:i+H, j:j+W] over all N*H*W
    pixels: one transpose of dy shared by every tap, then plain (O x M) @ (M x C) products.

    Args:
      x: (N, H, W, C) input of the convolution.
      dy: (N, H, W, O) cotangent of its output.
      kernel_shape: (kh, kw, C, O).
      padding: ((top, bottom), (left, right)) of the convolution (see `conv_padding`).
    Returns:
      (kh, kw, C, O) float32 (float32 accumulation).
    """
    kh, kw, c, o = kernel_shape
    n, h, w, _ = dy.shape
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    dyt = dy.reshape(n * h * w, o).T
    taps = [
        lax.dot(
            dyt,
            xp[:, i : i + h, j : j + w].reshape(n * h * w, c),
            preferred_element_type=jnp.float32,
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(kh, kw, o, c).transpose(0, 1, 3, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_tapgrad(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    return _conv(x, kernel, padding)


def _conv_fwd(x: jax.Array, kernel: jax.Array, padding: Padding):
    return _conv(x, kernel, padding), (x, kernel)


def _conv_vjp(padding: Padding, residuals, dy: jax.Array):
    """Input gradient: XLA's. Kernel gradient: per tap on CPU for large inputs, else XLA's."""
    x, kernel = residuals
    dx = jax.vjp(lambda x_: _conv(x_, kernel, padding), x)[1](dy)[0]

    def xla_grad(x, dy):
        return jax.vjp(lambda k: _conv(x, k, padding), kernel)[1](dy)[0]

    def tap_grad(x, dy):
        return tap_kernel_grad(x, dy, kernel.shape, padding).astype(kernel.dtype)

    if dy.shape[0] * dy.shape[1] * dy.shape[2] < TAP_GRAD_MIN_PIXELS:
        return dx, xla_grad(x, dy)
    return dx, lax.platform_dependent(x, dy, cpu=tap_grad, default=xla_grad)


_conv_tapgrad.defvjp(_conv_fwd, _conv_vjp)


def shift_down(x: jax.Array, rows: int) -> jax.Array:
    """Shift an NHWC image down by `rows`: zeros enter at the top, the last rows drop.

    One `lax.pad` (high padding negative).

    Args:
      x: (N, H, W, C), any dtype.
      rows: 0 <= rows <= H; 0 returns x unchanged.
    Returns:
      (N, H, W, C) in x's dtype.
    """
    if rows == 0:
        return x
    zero = jnp.zeros((), x.dtype)
    return lax.pad(x, zero, ((0, 0, 0), (rows, -rows, 0), (0, 0, 0), (0, 0, 0)))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on (N, H, W, C), H and W even -> (N, H/2, W/2, C)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling (N, H, W, C) -> (N, 2H, 2W, C)."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


def rot90(x: jax.Array, k: int) -> jax.Array:
    """numpy's rot90 over (H, W) of an NHWC array.

    Args:
      x: (N, H, W, C).
      k: quarter turns counter-clockwise (any int, taken mod 4); k = 1 gives
        out[i, j] = x[j, W - 1 - i].
    Returns:
      (N, W, H, C) for odd k, else (N, H, W, C).
    """
    return jnp.rot90(x, k=k % 4, axes=(1, 2))


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with the authors' slope 0.1."""
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def kernel_initializer(style: InitStyle) -> Callable:
    """Kernel initializer (untruncated) for an init style; fan_in = k * k * C_in.

    he_leaky: He normal for LeakyReLU(0.1), std = sqrt(2 / (1 + 0.1^2) / fan_in).
    he_linear: He normal with gain 1, std = sqrt(1 / fan_in) (the last conv of BNN / U-Net).
    torch_default: PyTorch's kaiming_uniform(a = sqrt(5)) = U(+-1 / sqrt(fan_in)).
    """
    if style == "he_leaky":
        return nn.initializers.variance_scaling(2.0 / (1.0 + LEAKY_SLOPE**2), "fan_in", "normal")
    if style == "he_linear":
        return nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    if style == "torch_default":
        return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    raise ValueError(f"unknown init style {style!r}")


def bias_initializer(style: InitStyle, fan_in: int) -> Callable:
    """Bias initializer: zeros for the He styles; PyTorch's U(+-1 / sqrt(fan_in)) for
    torch_default.

    Args:
      style: the init style (see `kernel_initializer`).
      fan_in: k * k * C_in of the convolution.
    Returns:
      init(key, shape, dtype) -> array, as Linen's `param` takes it.
    """
    if style != "torch_default":
        return nn.initializers.zeros
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv2D(nn.Module):
    """k x k stride-1 convolution with bias, 'same' or upward padding (see `conv2d`).

    Attributes:
      features: output channels.
      kernel_size: odd k (1 gives a 1x1 conv; padding is then irrelevant).
      upward: shift convolution (BNN); False is an ordinary zero-padded 'same' conv.
      init_style: initializer family (see `kernel_initializer`).
      dtype: computation dtype (parameters stay float32).
      dilation: tap spacing of a 'same' conv (`dilated_conv2d`; 1: an ordinary conv).
      centre_masked: multiply the kernel by `centre_mask` at every call, so the output never
        sees the input pixel at its own position (the stored kernel keeps its centre).
    Input (N, H, W, C_in) -> output (N, H, W, features).
    """

    features: int
    kernel_size: int = 3
    upward: bool = False
    init_style: InitStyle = "he_leaky"
    dtype: jnp.dtype | None = None
    dilation: int = 1
    centre_masked: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        fan_in = k * k * x.shape[-1]
        kernel = self.param(
            "kernel", kernel_initializer(self.init_style), (k, k, x.shape[-1], self.features)
        )
        bias = self.param("bias", bias_initializer(self.init_style, fan_in), (self.features,))
        if self.centre_masked:
            kernel = kernel * centre_mask(kernel.shape)
        dtype = self.dtype or x.dtype
        if self.dilation > 1:
            y = dilated_conv2d(x.astype(dtype), kernel.astype(dtype), self.dilation)
        else:
            y = conv2d(x.astype(dtype), kernel.astype(dtype), upward=self.upward)
        return y + bias.astype(dtype)
