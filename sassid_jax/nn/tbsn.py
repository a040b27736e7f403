"""TBSN (Li et al., AAAI 2025): a U-shaped transformer whose output never sees its own PD-2 lattice.

A centre-masked 3x3 conv, then three levels of blocks (grouped channel attention with dilation-2
depthwise convs, window attention over 8x8 queries and 12x12 keys restricted to even offsets,
feed-forwards of dilation-2 3x3 convs), joined by parity-keeping down/upsampling. Every path but
the channel attention's global statistics reaches input offsets (a + 2m, b + 2n) with (a, b) != 0,
so the blind region of pixel p is p + 2Z^2. Details: docs/peers.md#tbsn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sassid_jax.nn.checks import check_rgb_batch
from sassid_jax.nn.layers import (
    DIMENSION_NUMBERS,
    bias_initializer,
    centre_mask,
    kernel_initializer,
)

SIZE_MULTIPLE = 32  # at the default window size 8: two downsamplings, then 8x8 windows
LAYER_NORM_EPS = 1e-5
L2_EPS = 1e-12  # torch.nn.functional.normalize's eps


def overlap_window_size(window_size: int, overlap_ratio: float) -> int:
    """Side of the key windows: int(window_size * overlap_ratio) + window_size (8, 0.5 -> 12)."""
    return int(window_size * overlap_ratio) + window_size


def window_mask(window_size: int, key_size: int) -> np.ndarray:
    """The fixed additive mask of the window attention: 0 at even offsets, -inf elsewhere.

    Args:
      window_size: query window side w (8).
      key_size: key window side k (12), centred on the query window.
    Returns:
      (w * w, k * k) float32; entry (query (x, y), key (i, j)) is 0 where i - x and j - y are
      both even (the key pixel is an even offset from the query pixel), else -inf.
    """
    q = np.arange(window_size)
    k = np.arange(key_size)
    rows = (q[:, None] - k[None, :]) % 2 == 0  # (w, k)
    ok = rows[:, None, :, None] & rows[None, :, None, :]  # (x, y, i, j)
    mask = np.where(ok, 0.0, -np.inf).astype(np.float32)
    return mask.reshape(window_size**2, key_size**2)


def _pixel_groups_down(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H/2, W/2, 4C), merging pixels 2 apart and keeping each parity.

    out[n, 2h + a, 2w + b, 4c + 2i + j] = x[n, 4h + 2i + a, 4w + 2j + b, c] (the authors'
    `PatchUnshuffle(2, 2)`); H and W multiples of 4.
    """
    n, h, w, c = x.shape
    y = x.reshape(n, h // 4, 2, 2, w // 4, 2, 2, c)  # (n, h, i, a, w, j, b, c)
    y = y.transpose(0, 1, 3, 4, 6, 7, 2, 5)  # (n, h, a, w, b, c, i, j)
    return y.reshape(n, h // 2, w // 2, 4 * c)


def _pixel_groups_up(x: jax.Array) -> jax.Array:
    """Inverse of `_pixel_groups_down`: (N, H, W, 4C) -> (N, 2H, 2W, C) (`PatchShuffle(2, 2)`)."""
    n, h, w, c4 = x.shape
    c = c4 // 4
    y = x.reshape(n, h // 2, 2, w // 2, 2, c, 2, 2)  # (n, h, a, w, b, c, i, j)
    y = y.transpose(0, 1, 6, 2, 3, 7, 4, 5)  # (n, h, i, a, w, j, b, c)
    return y.reshape(n, 2 * h, 2 * w, c)


def _key_windows(x: jax.Array, window_size: int, key_size: int) -> jax.Array:
    """Overlapping key windows by a gather: (N, H, W, C) -> (N, H/w, W/w, k * k, C).

    Window (a, b) holds the zero-padded x[w a - p : w a - p + k, w b - p : w b - p + k] with
    p = (k - w) / 2, rows then columns (the authors' `nn.Unfold(k, stride=w, padding=p)`).
    """
    n, h, w, c = x.shape
    pad = (key_size - window_size) // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    nh, nw = h // window_size, w // window_size
    rows = window_size * np.arange(nh)[:, None] + np.arange(key_size)[None, :]  # (nh, k)
    cols = window_size * np.arange(nw)[:, None] + np.arange(key_size)[None, :]  # (nw, k)
    y = jnp.take(xp, rows.reshape(-1), axis=1).reshape(n, nh, key_size, w + 2 * pad, c)
    y = jnp.take(y, cols.reshape(-1), axis=3).reshape(n, nh, key_size, nw, key_size, c)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, nh, nw, key_size * key_size, c)


class Conv(nn.Module):
    """k x k stride-1 'same' conv, optionally dilated, depthwise, centre-masked or bias-free.

    Attributes:
      features: output channels.
      kernel_size: odd k.
      dilation: tap spacing d (zero padding d * (k // 2)).
      groups: feature groups (C_in for a depthwise conv).
      use_bias: add a bias (TBSN: none).
      centre_masked: multiply the kernel by `centre_mask` at every call.
      dtype: computation dtype (parameters stay float32).
    (N, H, W, C_in) -> (N, H, W, features); parameters `kernel` (k, k, C_in / groups,
    features), HWIO, and `bias`.
    """

    features: int
    kernel_size: int = 1
    dilation: int = 1
    groups: int = 1
    use_bias: bool = False
    centre_masked: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c_in = self.kernel_size, x.shape[-1] // self.groups
        kernel_init = kernel_initializer("torch_default")  # PyTorch's U(+-1 / sqrt(fan_in))
        kernel = self.param("kernel", kernel_init, (k, k, c_in, self.features))
        if self.centre_masked:
            kernel = kernel * centre_mask(kernel.shape)
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if k == 1 and self.groups == 1:
            y = lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))
        else:
            pad = self.dilation * (k // 2)
            y = lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(1, 1),
                padding=((pad, pad), (pad, pad)),
                rhs_dilation=(self.dilation, self.dilation),
                dimension_numbers=DIMENSION_NUMBERS,
                feature_group_count=self.groups,
            )
        if self.use_bias:
            bias_init = bias_initializer("torch_default", k * k * c_in)
            y = y + self.param("bias", bias_init, (self.features,)).astype(dtype)
        return y


class LayerNorm(nn.Module):
    """Layer norm over channels, (N, H, W, C) -> same shape.

    Attributes:
      with_bias: subtract the mean and add a bias ('WithBias'); False is TBSN's 'BiasFree':
        x / sqrt(var(x) + 1e-5) * scale, the mean kept.
    """

    with_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        x32 = x.astype(jnp.float32)
        var = jnp.var(x32, axis=-1, keepdims=True)
        if not self.with_bias:
            return (x32 * lax.rsqrt(var + LAYER_NORM_EPS) * scale).astype(x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,))
        centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        return (centred * lax.rsqrt(var + LAYER_NORM_EPS) * scale + bias).astype(x.dtype)


class ChannelAttention(nn.Module):
    """Grouped channel attention over the whole image (the authors' `DilatedMDTA`).

    q, k, v = dilation-2 depthwise 3x3 conv of a 1x1 conv; per head, the (C/h x C/h) softmax of
    the L2-normalised q k^T (over all pixels) times a learnt temperature mixes the channels of v.
    Attributes: heads, use_bias, dtype. (N, H, W, C) -> same shape. Parameters: qkv,
    qkv_dwconv, project_out, temperature (heads,).
    """

    heads: int
    use_bias: bool = False
    dtype: jnp.dtype | None = None

    def channel_weights(self, q: jax.Array, k: jax.Array, temperature: jax.Array) -> jax.Array:
        """(N, H * W, heads, c) q and k -> (N, heads, c, c) softmax weights: TBSN's only path
        that spans the image (the blind region included)."""

        def l2_normalise(t: jax.Array) -> jax.Array:
            norm = jnp.sqrt(jnp.sum(jnp.square(t), axis=1, keepdims=True))
            return t / jnp.maximum(norm, L2_EPS)

        attn = jnp.einsum("nphc,nphd->nhcd", l2_normalise(q), l2_normalise(k))
        return jax.nn.softmax(attn * temperature.astype(attn.dtype)[:, None, None], axis=-1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        temperature = self.param("temperature", nn.initializers.ones, (self.heads,))
        qkv = Conv(3 * c, 1, use_bias=self.use_bias, dtype=self.dtype, name="qkv")(x)
        qkv = Conv(
            3 * c, 3, 2, groups=3 * c, use_bias=self.use_bias, dtype=self.dtype, name="qkv_dwconv"
        )(qkv)
        q, k, v = (t.reshape(n, h * w, self.heads, c // self.heads) for t in jnp.split(qkv, 3, -1))

        attn = self.channel_weights(q, k, temperature)
        out = jnp.einsum("nhcd,nphd->nphc", attn, v).reshape(n, h, w, c)
        return Conv(c, 1, use_bias=self.use_bias, dtype=self.dtype, name="project_out")(out)


class WindowAttention(nn.Module):
    """Attention of 8x8 query windows over 12x12 key windows at even offsets (`DilatedOCA`).

    Logits: (q / sqrt(d)) . k plus a relative-position bias (q . rel_height[i - x + k - 1] +
    q . rel_width[j - y + k - 1], query (x, y), key (i, j) in its k x k window) plus the fixed
    mask of `window_mask`. Attributes: heads, dim_head d, window_size, overlap_ratio,
    use_bias, dtype. (N, H, W, C) -> same shape, H and W multiples of window_size.
    Parameters: qkv, project_out, rel_height and rel_width (2k - 1, d).
    """

    heads: int
    dim_head: int
    window_size: int = 8
    overlap_ratio: float = 0.5
    use_bias: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        ws, d, heads = self.window_size, self.dim_head, self.heads
        ks = overlap_window_size(ws, self.overlap_ratio)
        init = nn.initializers.normal(d**-0.5)
        rel_height = self.param("rel_height", init, (2 * ks - 1, d))
        rel_width = self.param("rel_width", init, (2 * ks - 1, d))
        inner = heads * d
        qkv = Conv(3 * inner, 1, use_bias=self.use_bias, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        nh, nw = h // ws, w // ws
        q = q.reshape(n, nh, ws, nw, ws, heads, d).transpose(0, 1, 3, 5, 2, 4, 6)
        q = q * d**-0.5  # (n, nh, nw, heads, x, y, d)
        k, v = (
            _key_windows(t, ws, ks)
            .reshape(n, nh, nw, ks * ks, heads, d)
            .transpose(0, 1, 2, 4, 3, 5)
            for t in (k, v)
        )  # (n, nh, nw, heads, k * k, d)
        logits = jnp.einsum("...xyd,...kd->...xyk", q, k).reshape(n, nh, nw, heads, ws, ws, ks, ks)
        # Relative index (key - query) + ks - 1 along each axis: (query, key) -> table row.
        rel = np.arange(ks)[None, :] - np.arange(ws)[:, None] + ks - 1  # (ws, ks)
        dtype = q.dtype
        bias_h = jnp.einsum("...xyd,xid->...xyi", q, rel_height.astype(dtype)[rel])
        bias_w = jnp.einsum("...xyd,yjd->...xyj", q, rel_width.astype(dtype)[rel])
        logits = logits + bias_h[..., :, None] + bias_w[..., None, :]
        logits = logits.reshape(n, nh, nw, heads, ws * ws, ks * ks)
        logits = logits + jnp.asarray(window_mask(ws, ks), dtype)
        attn = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("...qk,...kd->...qd", attn, v).reshape(n, nh, nw, heads, ws, ws, d)
        out = out.transpose(0, 1, 4, 2, 5, 3, 6).reshape(n, h, w, inner)
        return Conv(c, 1, use_bias=self.use_bias, dtype=self.dtype, name="project_out")(out)


class FeedForward(nn.Module):
    """Dilation-2 3x3 conv to C * expansion, exact GELU, dilation-2 3x3 conv back to C.

    Attributes: expansion, use_bias, dtype. Parameters: project_in, project_out.
    """

    expansion: float = 1.0
    use_bias: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        hidden = int(c * self.expansion)
        h = Conv(hidden, 3, 2, use_bias=self.use_bias, dtype=self.dtype, name="project_in")(x)
        h = jax.nn.gelu(h, approximate=False)
        return Conv(c, 3, 2, use_bias=self.use_bias, dtype=self.dtype, name="project_out")(h)


class TransformerBlock(nn.Module):
    """x + channel attention, + feed-forward, + window attention, + feed-forward, each on a
    layer norm of its input. (N, H, W, C) -> same shape.

    Attributes: channel_heads, spatial_heads, spatial_dim_head, window_size, overlap_ratio,
    ffn_expansion, use_bias, layer_norm_bias, dtype. Parameters: norm1 .. norm4,
    channel_attn, channel_ffn, spatial_attn, spatial_ffn.
    """

    channel_heads: int
    spatial_heads: int
    spatial_dim_head: int
    window_size: int = 8
    overlap_ratio: float = 0.5
    ffn_expansion: float = 1.0
    use_bias: bool = False
    layer_norm_bias: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def norm(name: str) -> LayerNorm:
            return LayerNorm(self.layer_norm_bias, name=name)

        def ffn(name: str) -> FeedForward:
            return FeedForward(self.ffn_expansion, self.use_bias, self.dtype, name=name)

        attn = ChannelAttention(self.channel_heads, self.use_bias, self.dtype, name="channel_attn")
        x = x + attn(norm("norm1")(x))
        x = x + ffn("channel_ffn")(norm("norm2")(x))
        spatial = WindowAttention(
            self.spatial_heads,
            self.spatial_dim_head,
            self.window_size,
            self.overlap_ratio,
            self.use_bias,
            self.dtype,
            name="spatial_attn",
        )
        x = x + spatial(norm("norm3")(x))
        return x + ffn("spatial_ffn")(norm("norm4")(x))


class Downsample(nn.Module):
    """1x1 conv to C / 2, then `_pixel_groups_down`: (N, H, W, C) -> (N, H/2, W/2, 2C)."""

    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _pixel_groups_down(Conv(x.shape[-1] // 2, dtype=self.dtype, name="conv")(x))


class Upsample(nn.Module):
    """1x1 conv to 2C, then `_pixel_groups_up`: (N, H, W, C) -> (N, 2H, 2W, C/2)."""

    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _pixel_groups_up(Conv(2 * x.shape[-1], dtype=self.dtype, name="conv")(x))


class TBSN(nn.Module):
    """TBSN. (N, H, W, 3) in [0, 255] -> (N, H, W, 3), same scale; H, W multiples of 32.

    Attributes (the authors' constructor arguments; defaults the published network, 12.75 M
    parameters):
      dim: width of level 1 (levels 2 and 3: 2 dim, 4 dim; the decoder's level 1: 2 dim).
      num_blocks: transformer blocks per level (encoder and decoder alike).
      num_refinement_blocks: blocks after the decoder, at level 1.
      channel_heads, spatial_heads: heads of the channel / window attention per level.
      overlap_ratio: per level; key windows are window_size * (1 + ratio) wide.
      window_size: query window side.
      spatial_dim_head: channels per window-attention head.
      bias: biases in the blocks', the level-2 reduction's and the output's convolutions (the
        authors: none; their first conv and the down/upsampling convs never have one).
      ffn_expansion_factor: hidden width of the feed-forwards, x C.
      layer_norm_type: 'BiasFree' (the authors') or 'WithBias'.
      dtype: computation dtype; parameters stay float32.
    Parameter names follow the authors' modules: patch_embed, encoder_level1_{i}, down1_2,
    encoder_level2_{i}, down2_3, latent_{i}, up3_2, reduce_chan_level2, decoder_level2_{i},
    up2_1, decoder_level1_{i}, refinement_{i}, output (see `TransformerBlock`).
    """

    dim: int = 48
    num_blocks: Sequence[int] = (4, 4, 4)
    num_refinement_blocks: int = 4
    channel_heads: Sequence[int] = (1, 2, 4)
    spatial_heads: Sequence[int] = (2, 2, 3)
    overlap_ratio: Sequence[float] = (0.5, 0.5, 0.5)
    window_size: int = 8
    spatial_dim_head: int = 16
    bias: bool = False
    ffn_expansion_factor: float = 1.0
    layer_norm_type: str = "BiasFree"
    dtype: jnp.dtype | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 4 or self.dim % 4:
            raise ValueError(f"TBSN: dim must be an integer multiple of 4, got {self.dim!r}")
        if self.layer_norm_type not in ("BiasFree", "WithBias"):
            raise ValueError(
                f"TBSN: layer_norm_type must be 'BiasFree' or 'WithBias', got "
                f"{self.layer_norm_type!r}"
            )
        for field in ("num_blocks", "channel_heads", "spatial_heads", "overlap_ratio"):
            # tuples (hashable) also when a config.json gave lists
            object.__setattr__(self, field, tuple(getattr(self, field)))
            if len(getattr(self, field)) != 3:
                raise ValueError(
                    f"TBSN: {field} needs one value per level (3), got {getattr(self, field)!r}"
                )
        super().__post_init__()

    def _blocks(self, x: jax.Array, level: int, count: int, name: str) -> jax.Array:
        for i in range(count):
            x = TransformerBlock(
                self.channel_heads[level],
                self.spatial_heads[level],
                self.spatial_dim_head,
                self.window_size,
                self.overlap_ratio[level],
                self.ffn_expansion_factor,
                self.bias,
                self.layer_norm_type == "WithBias",
                self.dtype,
                name=f"{name}_{i}",
            )(x)
        return x

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # two downsamplings (H % 8), then windows at a quarter of the size (H % 4 window)
        size_multiple = math.lcm(8, 4 * self.window_size)
        check_rgb_batch(x, network="TBSN", size_multiple=size_multiple)
        d, nb = self.dim, self.num_blocks
        embed = Conv(d, 3, centre_masked=True, dtype=self.dtype, name="patch_embed")
        enc1 = self._blocks(embed(x), 0, nb[0], "encoder_level1")
        enc2 = self._blocks(
            Downsample(self.dtype, name="down1_2")(enc1), 1, nb[1], "encoder_level2"
        )
        latent = self._blocks(Downsample(self.dtype, name="down2_3")(enc2), 2, nb[2], "latent")
        h = jnp.concatenate([Upsample(self.dtype, name="up3_2")(latent), enc2], axis=-1)
        h = Conv(2 * d, use_bias=self.bias, dtype=self.dtype, name="reduce_chan_level2")(h)
        h = self._blocks(h, 1, nb[1], "decoder_level2")
        h = jnp.concatenate([Upsample(self.dtype, name="up2_1")(h), enc1], axis=-1)
        h = self._blocks(h, 0, nb[0], "decoder_level1")
        h = self._blocks(h, 0, self.num_refinement_blocks, "refinement")
        y = Conv(3, use_bias=self.bias, dtype=self.dtype, name="output")(h)
        return y.astype(jnp.float32)
