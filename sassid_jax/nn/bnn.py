"""Blind-neighborhood network (BNN): output pixel p never sees the b x b window around p.

Four rotations of the input share one upward trunk; each branch is shifted down by
k = (b + 1) // 2 rows and rotated back, and a 1x1 head fuses them to RGB. Rotations of equal
shape share one trunk call, so any H x W that are multiples of 32 work. The blind size changes
no weight, so one parameter set serves every b, chosen per call (AT-BSN's teacher). Details:
docs/method.md#bnn.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.nn.checks import check_blind_size, check_rgb_batch
from sassid_jax.nn.layers import Conv2D, leaky_relu, rot90, shift_down
from sassid_jax.nn.trunk import SIZE_MULTIPLE, EncoderDecoder, normalize_in, normalize_out

ROTATIONS = (0, 1, 2, 3)  # multiples of 90 degrees, in the channel order of the head's input


def branch_shift(blind_size: int) -> int:
    """Rows each branch is shifted down after the trunk: k = (b + 1) // 2 (0 for b = 0)."""
    return (blind_size + 1) // 2


def _run_branches(trunk: nn.Module, x: jax.Array) -> list[jax.Array]:
    """trunk(rot90(x, r)) for every r in ROTATIONS, equal shapes batched into one call
    (0 with 180, 90 with 270; a square x runs all four at once)."""
    rotated = [rot90(x, r) for r in ROTATIONS]
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, xr in zip(ROTATIONS, rotated, strict=True):
        groups.setdefault(xr.shape, []).append(r)
    outputs: dict[int, jax.Array] = {}
    for members in groups.values():
        y = trunk(jnp.concatenate([rotated[r] for r in members], axis=0))
        for r, yr in zip(members, jnp.split(y, len(members), axis=0), strict=True):
            outputs[r] = yr
    return [outputs[r] for r in ROTATIONS]


class BNN(nn.Module):
    """Blind-neighborhood network. (N, H, W, 3) in [0, 255] -> (N, H, W, 3), same scale.

    Attributes:
      blind_size: the default b, 0 or odd >= 1; the output at (i, j) is independent of inputs
        with |di| <= b // 2 and |dj| <= b // 2 (b = 1: the classic blind-spot network; b = 0:
        no blind spot, the output sees its own pixel). A call may name another b.
      width: base width C (the paper: 48; 1,269k parameters).
      normalize: scale inputs to [-0.5, 0.5] inside the network and outputs back to
        [0, 255] (better conditioned for short runs); False is the authors' form.
      dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    H and W must be multiples of 32.
    """

    blind_size: int = 9
    width: int = 48
    normalize: bool = False
    dtype: jnp.dtype | None = None

    def __post_init__(self) -> None:
        check_blind_size(self.blind_size, "BNN", allow_zero=True)
        super().__post_init__()

    @property
    def final_shift(self) -> int:
        """Rows each branch is shifted down after the trunk at the default blind size."""
        return branch_shift(self.blind_size)

    @nn.compact
    def __call__(self, x: jax.Array, blind_size: int | None = None) -> jax.Array:
        """The output at blind size `blind_size` (None: the attribute's).

        Args:
          x: (N, H, W, 3) on [0, 255], H and W multiples of 32.
          blind_size: 0 or odd >= 1 (a Python int: each value traces its own program).
        Returns:
          (N, H, W, 3) float32 on [0, 255].
        """
        check_rgb_batch(x, network="BNN", size_multiple=SIZE_MULTIPLE)
        b = self.blind_size if blind_size is None else blind_size
        check_blind_size(b, "BNN", allow_zero=True)
        trunk = EncoderDecoder(self.width, upward=True, dtype=self.dtype, name="trunk")
        h = normalize_in(x, self.normalize)
        branches = _run_branches(trunk, h)
        fused = jnp.concatenate(
            [
                rot90(shift_down(y, branch_shift(b)), -r)
                for r, y in zip(ROTATIONS, branches, strict=True)
            ],
            axis=-1,
        )
        c8 = 8 * self.width
        y = leaky_relu(Conv2D(c8, 1, init_style="he_leaky", dtype=self.dtype, name="head_0")(fused))
        y = leaky_relu(
            Conv2D(2 * self.width, 1, init_style="he_leaky", dtype=self.dtype, name="head_1")(y)
        )
        y = Conv2D(3, 1, init_style="he_linear", dtype=self.dtype, name="head_2")(y)
        return normalize_out(y.astype(jnp.float32), self.normalize)
