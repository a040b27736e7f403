"""U-Net: the denoiser used at test time (the BNN trunk with ordinary convs, no rotations)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.checks import check_rgb_batch
from sassid_jax.nn.layers import Conv2D
from sassid_jax.nn.trunk import SIZE_MULTIPLE, EncoderDecoder, normalize_in, normalize_out


class UNet(nn.Module):
    """(N, H, W, 3) sRGB in [0, 255] -> (N, H, W, 3) on the same scale; H, W multiples of 32.

    Attributes:
      width: base width C (the paper: 48; 1,084k parameters).
      normalize: scale inputs to [-0.5, 0.5] inside and outputs back (see BNN).
      dtype: computation dtype; parameters stay float32.
    Parameters: `trunk` (EncoderDecoder) and `out`, the final 1x1 conv (2C -> 3).
    """

    width: int = 48
    normalize: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_rgb_batch(x, network="UNet", size_multiple=SIZE_MULTIPLE)
        h = EncoderDecoder(self.width, upward=False, dtype=self.dtype, name="trunk")(
            normalize_in(x, self.normalize)
        )
        y = Conv2D(3, 1, init_style="he_linear", dtype=self.dtype, name="out")(h)
        return normalize_out(y.astype(jnp.float32), self.normalize)
