"""Locally aware network (LAN): a tiny receptive field (b_L x b_L) plus channel attention.

conv1x1, b_L // 2 3x3 convs, a stack of residual blocks with channel attention (NRB), conv1x1.
The attention's global mean is the one path that reaches beyond the b_L x b_L window.
Details: docs/method.md#lan.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.checks import check_blind_size, check_rgb_batch
from sassid_jax.nn.layers import Conv2D
from sassid_jax.nn.trunk import normalize_in, normalize_out

CA_REDUCTION = 16


def _conv1x1(features: int, name: str, dtype) -> Conv2D:
    return Conv2D(features, 1, init_style="torch_default", dtype=dtype, name=name)


class ChannelAttention(nn.Module):
    """(N, H, W, C) -> same shape, y * sigmoid(conv1x1(ReLU(conv1x1(mean_HW(y))))) per
    channel (C -> max(C // 16, 1) -> C)."""

    dtype: jnp.dtype | None = None

    def global_mean(self, y: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, 1, 1, C): the only non-local path of the LAN."""
        return jnp.mean(y, axis=(1, 2), keepdims=True)

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        c = y.shape[-1]
        s = self.global_mean(y)
        s = nn.relu(_conv1x1(max(c // CA_REDUCTION, 1), "down", self.dtype)(s))
        s = nn.sigmoid(_conv1x1(c, "up", self.dtype)(s))
        return y * s


class ResidualBlock(nn.Module):
    """x + CA(conv1x1(ReLU(conv1x1(x)))); (N, H, W, C) -> same shape."""

    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        y = _conv1x1(c, "conv2", self.dtype)(nn.relu(_conv1x1(c, "conv1", self.dtype)(x)))
        return ChannelAttention(self.dtype, name="ca")(y) + x


class NRB(nn.Module):
    """x + conv1x1(body(x)), body `num_blocks` residual blocks in turn; (N, H, W, C) -> same
    shape."""

    num_blocks: int = 6
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i in range(self.num_blocks):
            h = ResidualBlock(self.dtype, name=f"block_{i}")(h)
        return x + _conv1x1(x.shape[-1], "tail", self.dtype)(h)


class LAN(nn.Module):
    """(N, H, W, 3) sRGB in [0, 255] -> (N, H, W, 3), same scale; any H x W.

    Attributes:
      blind_size: odd b_L >= 1; the conv path sees a b_L x b_L window (b_L // 2 3x3 convs).
      width: feature channels (64).
      num_blocks: residual blocks in the NRB (6).
      normalize: scale inputs to [-0.5, 0.5] inside and outputs back (see BNN).
      dtype: computation dtype; parameters stay float32.
    Parameter names: embed, local_0 .. local_{b_L//2 - 1}, nrb/{block_i/{conv1, conv2,
    ca/{down, up}}, tail}, out.
    """

    blind_size: int = 3
    width: int = 64
    num_blocks: int = 6
    normalize: bool = False
    dtype: jnp.dtype | None = None

    def __post_init__(self) -> None:
        check_blind_size(self.blind_size, "LAN")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_rgb_batch(x, network="LAN")
        h = nn.relu(_conv1x1(self.width, "embed", self.dtype)(normalize_in(x, self.normalize)))
        for i in range(self.blind_size // 2):
            conv = Conv2D(
                self.width, 3, init_style="torch_default", dtype=self.dtype, name=f"local_{i}"
            )
            h = nn.relu(conv(h))
        h = NRB(self.num_blocks, self.dtype, name="nrb")(h)
        y = _conv1x1(3, "out", self.dtype)(h)
        return normalize_out(y.astype(jnp.float32), self.normalize)
