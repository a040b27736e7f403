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
      input_scale: inputs are multiplied by it inside and outputs divided by it (1 / 255:
        TBSN's distillation U-Net, the same network trained on [0, 1]); 1 leaves them as
        they are.
    Parameters: `trunk` (EncoderDecoder) and `out`, the final 1x1 conv (2C -> 3).
    """

    width: int = 48
    normalize: bool = False
    dtype: jnp.dtype | None = None
    input_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_rgb_batch(x, network="UNet", size_multiple=SIZE_MULTIPLE)
        x = normalize_in(x, self.normalize)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        h = EncoderDecoder(self.width, upward=False, dtype=self.dtype, name="trunk")(x)
        y = Conv2D(3, 1, init_style="he_linear", dtype=self.dtype, name="out")(h)
        y = y.astype(jnp.float32)
        if self.input_scale != 1.0:
            y = y / self.input_scale
        return normalize_out(y, self.normalize)
