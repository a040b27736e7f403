"""AT-BSN(D)'s student: the BNN trunk with ordinary convs (no shifts, no rotations, no head).

As the authors' `N_BSN`: the encoder-decoder's last 3x3 conv gives the 3 output channels
directly, followed like every conv by LeakyReLU(0.1). All other weights have the shapes of the
teacher's trunk, which distillation starts from. Details: docs/peers.md#at-bsn-student.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.checks import check_rgb_batch
from sassid_jax.nn.trunk import SIZE_MULTIPLE, EncoderDecoder, normalize_in, normalize_out


class ATBSNStudent(nn.Module):
    """(N, H, W, 3) sRGB in [0, 255] -> (N, H, W, 3) on the same scale; H, W multiples of 32.

    Attributes:
      width: base width C (the authors: 48; 1.00 M parameters).
      normalize: scale inputs to [-0.5, 0.5] inside and outputs back (see BNN); the final
        LeakyReLU then acts on the scaled output. False is the authors' form.
      dtype: computation dtype; parameters stay float32.
    Parameters: `trunk` (EncoderDecoder, dec1_1 with 3 outputs).
    """

    width: int = 48
    normalize: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_rgb_batch(x, network="ATBSNStudent", size_multiple=SIZE_MULTIPLE)
        trunk = EncoderDecoder(
            self.width, upward=False, dtype=self.dtype, out_features=3, name="trunk"
        )
        y = trunk(normalize_in(x, self.normalize))
        return normalize_out(y.astype(jnp.float32), self.normalize)
