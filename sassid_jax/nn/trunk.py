"""The encoder-decoder shared by the BNN and the U-Net, and the [0, 255] <-> [-0.5, 0.5] scaling.

The two networks differ only in their 3x3 convolutions: the U-Net uses ordinary 'same' convs,
the BNN "upward" shift convs plus a one-row `shift_down` before each max pool (so that pooling
never lets row i see a row below it). Everything else (five poolings, nearest upsampling,
skip concatenation order [upsampled, skip], widths C and 2C) is one definition here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.layers import Conv2D, leaky_relu, max_pool_2x2, shift_down, upsample_nearest_2x

SIZE_MULTIPLE = 32  # five 2x2 poolings


def normalize_in(x: jax.Array, enabled: bool) -> jax.Array:
    """[0, 255] -> [-0.5, 0.5] when enabled (the `normalize` switch), else unchanged.

    Args:
      x: network input, any shape, on the [0, 255] scale.
      enabled: the network's `normalize` attribute.
    Returns:
      x / 255 - 0.5 when enabled, else x.
    """
    return x / 255.0 - 0.5 if enabled else x


def normalize_out(y: jax.Array, enabled: bool) -> jax.Array:
    """Inverse of `normalize_in`: network output back to the [0, 255] scale when enabled.

    Args:
      y: network output, any shape.
      enabled: the network's `normalize` attribute.
    Returns:
      (y + 0.5) * 255 when enabled, else y.
    """
    return (y + 0.5) * 255.0 if enabled else y


class EncoderDecoder(nn.Module):
    """Five-level encoder-decoder; (N, H, W, C_in) -> (N, H, W, 2 * width or out_features),
    H, W % 32 == 0.

    Attributes:
      width: base width C (48 in the paper).
      upward: BNN mode (shift convs + shift_down(1) before each pool); False is the U-Net.
      dtype: computation dtype.
      out_features: channels of the last conv, dec1_1 (None: 2C; 3 for AT-BSN's student,
        whose output is that conv's LeakyReLU).
    Parameter names: enc1_0, enc1_1, enc2 .. enc6, dec5_0, dec5_1, ..., dec1_0, dec1_1.
    """

    width: int = 48
    upward: bool = False
    dtype: jnp.dtype | None = None
    out_features: int | None = None

    def _conv(self, features: int, name: str) -> Conv2D:
        return Conv2D(
            features, 3, upward=self.upward, init_style="he_leaky", dtype=self.dtype, name=name
        )

    def _down(self, x: jax.Array) -> jax.Array:
        if self.upward:
            x = shift_down(x, 1)
        return max_pool_2x2(x)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.width
        skips = [x]
        h = leaky_relu(self._conv(c, "enc1_0")(x))
        h = self._down(leaky_relu(self._conv(c, "enc1_1")(h)))
        skips.append(h)
        for level in (2, 3, 4, 5):
            h = self._down(leaky_relu(self._conv(c, f"enc{level}")(h)))
            skips.append(h)
        h = leaky_relu(self._conv(c, "enc6")(h))
        # skips = [input, enc1, enc2, enc3, enc4, enc5]; dec5 joins enc4, ..., dec1 the input.
        for level in (5, 4, 3, 2, 1):
            h = jnp.concatenate([upsample_nearest_2x(h), skips[level - 1]], axis=-1)
            h = leaky_relu(self._conv(2 * c, f"dec{level}_0")(h))
            last = self.out_features if level == 1 and self.out_features else 2 * c
            h = leaky_relu(self._conv(last, f"dec{level}_1")(h))
        return h
