"""DBSNl, AP-BSN's blind-spot network: output pixel p never sees input pixel p.

A 1x1 head, two branches (a centre-masked 3x3 / 5x5 conv, then residual blocks of 3x3 convs
dilated by 2 / 3) and a 1x1 tail. A centre-masked k x k conv reaches offsets a with
0 < max|a| <= k // 2, a dilated conv adds multiples of its dilation d = k // 2 + 1, so no sum
returns to offset 0: the blind spot is the pixel itself. Details: docs/peers.md#dbsnl.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.checks import check_rgb_batch
from sassid_jax.nn.layers import Conv2D
from sassid_jax.nn.trunk import normalize_in, normalize_out

BRANCH_DILATIONS = (2, 3)  # branch1: masked 3x3, dilation 2; branch2: masked 5x5, dilation 3


def _conv(features: int, kernel_size: int, name: str, dtype, **kwargs) -> Conv2D:
    return Conv2D(
        features, kernel_size, init_style="torch_default", dtype=dtype, name=name, **kwargs
    )


class DilatedBlock(nn.Module):
    """x + conv1x1(ReLU(dilated 3x3 conv(x))); (N, H, W, C) -> same shape.

    Attributes:
      dilation: tap spacing of the 3x3 conv.
      dtype: computation dtype.
    """

    dilation: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = nn.relu(_conv(c, 3, "dilated", self.dtype, dilation=self.dilation)(x))
        return x + _conv(c, 1, "pointwise", self.dtype)(h)


class Branch(nn.Module):
    """Centre-masked (2d - 1) x (2d - 1) conv, two 1x1 convs, `num_blocks` dilated blocks, a
    1x1 conv, each followed by ReLU (the blocks excepted); (N, H, W, C) -> same shape.

    Attributes:
      dilation: d, the dilation of the blocks (2 or 3); the masked conv has k = 2d - 1.
      num_blocks: dilated residual blocks.
      dtype: computation dtype.
    Parameter names: masked, conv_0, conv_1, block_0 .. block_{n-1}/{dilated, pointwise}, out.
    """

    dilation: int
    num_blocks: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        k = 2 * self.dilation - 1
        h = nn.relu(_conv(c, k, "masked", self.dtype, centre_masked=True)(x))
        h = nn.relu(_conv(c, 1, "conv_0", self.dtype)(h))
        h = nn.relu(_conv(c, 1, "conv_1", self.dtype)(h))
        for i in range(self.num_blocks):
            h = DilatedBlock(self.dilation, self.dtype, name=f"block_{i}")(h)
        return nn.relu(_conv(c, 1, "out", self.dtype)(h))


class DBSNl(nn.Module):
    """AP-BSN's DBSNl. (N, H, W, 3) in [0, 255] -> (N, H, W, 3), same scale; any H x W.

    Attributes:
      width: base width C, even (AP-BSN: 128; 3.66 M parameters with 9 blocks).
      num_blocks: dilated residual blocks per branch (AP-BSN's `num_module`, 9).
      normalize: scale inputs to [-0.5, 0.5] inside and outputs back (see BNN); False is
        the authors' form.
      dtype: computation dtype; parameters stay float32.
    Parameter names: head, branch1, branch2 (see `Branch`), tail_0 .. tail_3 (1x1 convs
    2C -> C -> C/2 -> C/2 -> 3, ReLU between).
    """

    width: int = 128
    num_blocks: int = 9
    normalize: bool = False
    dtype: jnp.dtype | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 2 or self.width % 2:
            raise ValueError(f"DBSNl: width must be an even integer >= 2, got {self.width!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_rgb_batch(x, network="DBSNl")
        c = self.width
        h = nn.relu(_conv(c, 1, "head", self.dtype)(normalize_in(x, self.normalize)))
        branches = [
            Branch(d, self.num_blocks, self.dtype, name=f"branch{i + 1}")(h)
            for i, d in enumerate(BRANCH_DILATIONS)
        ]
        h = jnp.concatenate(branches, axis=-1)
        for i, features in enumerate((c, c // 2, c // 2)):
            h = nn.relu(_conv(features, 1, f"tail_{i}", self.dtype)(h))
        y = _conv(3, 1, "tail_3", self.dtype)(h)
        return normalize_out(y.astype(jnp.float32), self.normalize)
