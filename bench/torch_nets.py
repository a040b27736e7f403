"""PyTorch versions of the SASL networks (described in docs/method.md), for benchmarks.

Only the speed benchmark uses them (PyTorch is an optional extra: bench/requirements.txt).
Layout is PyTorch's own NCHW. Submodule names follow the key names of the authors'
checkpoints (e.g. `encode_block_1.2.weight`, `conv.4.body.0.cuca.conv_du.0.weight`), so their
state_dicts and the parity files in ../shared/data/parity load with `load_state_dict`; the
code itself is this project's.

- `TorchUNet(width)`, `TorchBNN(width, blind_size)` (square inputs: the four rotations are
  stacked on the batch axis), `TorchLAN(width, blind_size, num_blocks)`.
- `local_std`, `flatness_alpha`, `adaptive_loss`: the supervision of stage 3.
- `TorchTBSN(dim, num_blocks, ...)`: the peer TBSN, written from sassid_jax/nn/tbsn.py; its
  state_dict has the key layout of the TBSN parity fixture (frozen masks as buffers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

LEAKY_SLOPE = 0.1
CA_REDUCTION = 16


class Conv3x3(nn.Conv2d):
    """3x3 stride-1 conv keeping H x W: zero 'same' padding, or upward (rows <= i only)."""

    def __init__(self, cin: int, cout: int, upward: bool) -> None:
        super().__init__(cin, cout, 3, padding=0 if upward else 1)
        self.upward = upward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upward:  # two zero rows on top, one column each side, then a 'valid' conv
            x = F.pad(x, (1, 1, 2, 0))
        return super().forward(x)


def _act() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def shift_down(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Zeros enter at the top, the last `rows` rows drop (NCHW)."""
    return F.pad(x, (0, 0, rows, -rows)) if rows else x


class Trunk(nn.Module):
    """The five-level encoder-decoder shared by BNN (upward=True) and U-Net."""

    def __init__(self, width: int, upward: bool) -> None:
        super().__init__()
        c, self.upward = width, upward

        def conv(cin: int, cout: int) -> nn.Module:
            return Conv3x3(cin, cout, upward)

        self.encode_block_1 = nn.Sequential(conv(3, c), _act(), conv(c, c), _act())
        for level in (2, 3, 4, 5, 6):
            setattr(self, f"encode_block_{level}", nn.Sequential(conv(c, c), _act()))
        for level in (5, 4, 3, 2, 1):
            cin = {5: 2 * c, 1: 2 * c + 3}.get(level, 3 * c)
            setattr(
                self,
                f"decode_block_{level}",
                nn.Sequential(conv(cin, 2 * c), _act(), conv(2 * c, 2 * c), _act()),
            )

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(shift_down(x, 1) if self.upward else x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        h = self._down(self.encode_block_1(x))
        skips.append(h)
        for level in (2, 3, 4, 5):
            h = self._down(getattr(self, f"encode_block_{level}")(h))
            skips.append(h)
        h = self.encode_block_6(h)
        for level in (5, 4, 3, 2, 1):
            h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skips[level - 1]], 1)
            h = getattr(self, f"decode_block_{level}")(h)
        return h


class TorchUNet(Trunk):
    def __init__(self, width: int = 48) -> None:
        super().__init__(width, upward=False)
        self.output_conv = nn.Conv2d(2 * width, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv(super().forward(x))


class TorchBNN(Trunk):
    """Blind-neighborhood network; square inputs (rotations stacked on the batch axis)."""

    def __init__(self, width: int = 48, blind_size: int = 9) -> None:
        super().__init__(width, upward=True)
        self.final_shift = (blind_size + 1) // 2
        c8 = 8 * width
        self.output_block = nn.Sequential(
            nn.Conv2d(c8, c8, 1),
            _act(),
            nn.Conv2d(c8, 2 * width, 1),
            _act(),
            nn.Conv2d(2 * width, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        stacked = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)], 0)
        y = shift_down(super().forward(stacked), self.final_shift)
        branches = [torch.rot90(y[r * n : (r + 1) * n], -r, dims=(2, 3)) for r in range(4)]
        return self.output_block(torch.cat(branches, 1))

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        state = {k: v for k, v in state.items() if not k.startswith("output_conv.")}  # alias
        return super().load_state_dict(state, strict=strict, assign=assign)


class ChannelAttention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        r = max(c // CA_REDUCTION, 1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(c, r, 1), nn.ReLU(inplace=True), nn.Conv2d(r, c, 1), nn.Sigmoid()
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.conv_du(y.mean(dim=(2, 3), keepdim=True))


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.cuca = ChannelAttention(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cuca(self.conv2(F.relu(self.conv1(x)))) + x


class NRB(nn.Module):
    def __init__(self, c: int, num_blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ResidualBlock(c) for _ in range(num_blocks)])
        self.tail = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(x))


class TorchLAN(nn.Module):
    def __init__(self, width: int = 64, blind_size: int = 3, num_blocks: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 1), nn.ReLU(inplace=True)]
        for _ in range(blind_size // 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [NRB(width, num_blocks), nn.Conv2d(width, 3, 1)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def local_std(image: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Population std of the channel mean over each window (reflect padding); (N,1,H,W)."""
    m = image.mean(1, keepdim=True)
    r = window // 2
    n, _, h, w = m.shape
    patches = F.unfold(F.pad(m, (r, r, r, r), mode="reflect"), window)  # (N, w*w, H*W)
    return patches.var(1, unbiased=False).sqrt().reshape(n, 1, h, w)


def flatness_alpha(image: torch.Tensor, lower: float = 1.0, upper: float = 5.0) -> torch.Tensor:
    sigma = local_std(image)
    alpha = torch.where(sigma < lower, torch.sigmoid(sigma - lower), torch.full_like(sigma, 0.5))
    return torch.where(sigma > upper, torch.sigmoid(sigma - upper), alpha)


def adaptive_loss(
    unet_out: torch.Tensor, bnn_out: torch.Tensor, lan_out: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    flat = 1.0 - alpha
    return F.l1_loss(bnn_out * flat, unet_out * flat) + F.l1_loss(lan_out * alpha, unet_out * alpha)


# ---------------------------------------------------------------------------------------- TBSN

TBSN_NORM_EPS = 1e-5


class Tensors(nn.Module):
    """Named parameters and frozen buffers, no forward: a node of TBSN's state_dict layout."""

    def __init__(
        self,
        params: dict[str, torch.Tensor] | None = None,
        buffers: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (params or {}).items():
            self.register_parameter(name, nn.Parameter(value))
        for name, value in (buffers or {}).items():
            self.register_buffer(name, value)


class CentreMaskedConv(nn.Conv2d):
    """3x3 bias-free 'same' conv whose kernel centre is zeroed by a frozen `mask` buffer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=False)
        mask = torch.ones_like(self.weight)
        mask[:, :, 1, 1] = 0.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        return F.conv2d(x, self.weight * self.mask, padding=1)


class ChannelLayerNorm(nn.Module):
    """Bias-free layer norm over channels: x / sqrt(var_C(x) + 1e-5) * body.weight."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = Tensors({"weight": torch.ones(c)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> same shape."""
        var = x.var(1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + TBSN_NORM_EPS) * self.body.weight[:, None, None]


def _dilated_conv(cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 conv of dilation 2, zero padding 2 (keeps H x W)."""
    return nn.Conv2d(cin, cout, 3, padding=2, dilation=2, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


class TBSNChannelAttention(nn.Module):
    """Per head, the softmax of the L2-normalised q k^T over all pixels (x temperature) mixes
    the channels of v; q, k, v from a 1x1 conv and a dilation-2 depthwise 3x3 conv."""

    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = _conv1x1(c, 3 * c)
        self.qkv_dwconv = _dilated_conv(3 * c, 3 * c, groups=3 * c)
        self.project_out = _conv1x1(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> same shape."""
        n, c, h, w = x.shape
        q, k, v = (
            t.reshape(n, self.heads, c // self.heads, h * w)
            for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        )
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        return self.project_out((attn @ v).reshape(n, c, h, w))


def tbsn_window_mask(window_size: int, key_size: int) -> torch.Tensor:
    """(1, w * w, k * k): 0 where the key pixel is an even offset from the query pixel in both
    directions, -inf elsewhere (queries and keys row-major in their windows)."""
    q, k = torch.arange(window_size), torch.arange(key_size)
    rows = (q[:, None] - k[None, :]) % 2 == 0  # (w, k)
    ok = rows[:, None, :, None] & rows[None, :, None, :]  # (x, y, i, j)
    mask = torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))
    return mask.reshape(1, window_size**2, key_size**2)


class TBSNWindowAttention(nn.Module):
    """Attention of w x w query windows over k x k key windows (k = w (1 + overlap), centred)
    at even offsets, with a relative-position bias q . rel_height[i - x + k - 1] +
    q . rel_width[j - y + k - 1] and the fixed mask of `tbsn_window_mask`."""

    def __init__(
        self, c: int, heads: int, dim_head: int, window_size: int, overlap_ratio: float
    ) -> None:
        super().__init__()
        self.heads, self.dim_head, self.window_size = heads, dim_head, window_size
        self.key_size = int(window_size * overlap_ratio) + window_size
        inner, rows = heads * dim_head, 2 * self.key_size - 1
        self.qkv = _conv1x1(c, 3 * inner)
        self.project_out = _conv1x1(inner, c)
        self.rel_pos_emb = Tensors(
            {
                "rel_height": torch.randn(rows, dim_head) * dim_head**-0.5,
                "rel_width": torch.randn(rows, dim_head) * dim_head**-0.5,
            }
        )
        self.fixed_pos_emb = Tensors(
            buffers={"attention_mask": tbsn_window_mask(window_size, self.key_size)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> same shape; H and W multiples of the window size."""
        n, _, h, w = x.shape
        ws, ks, heads, d = self.window_size, self.key_size, self.heads, self.dim_head
        nh, nw = h // ws, w // ws
        q, k, v = self.qkv(x).chunk(3, dim=1)
        q = q.reshape(n, heads, d, nh, ws, nw, ws).permute(0, 3, 5, 1, 4, 6, 2) * d**-0.5
        k, v = (
            F.unfold(t, ks, stride=ws, padding=(ks - ws) // 2)
            .reshape(n, heads, d, ks * ks, nh, nw)
            .permute(0, 4, 5, 1, 3, 2)
            for t in (k, v)
        )  # (N, nh, nw, heads, k * k, d)
        logits = torch.einsum("...xyd,...kd->...xyk", q, k).reshape(
            n, nh, nw, heads, ws, ws, ks, ks
        )
        rel = torch.arange(ks)[None, :] - torch.arange(ws)[:, None] + ks - 1  # (w, k)
        emb = self.rel_pos_emb
        bias_h = torch.einsum("...xyd,xid->...xyi", q, emb.rel_height[rel.to(x.device)])
        bias_w = torch.einsum("...xyd,yjd->...xyj", q, emb.rel_width[rel.to(x.device)])
        logits = logits + bias_h[..., :, None] + bias_w[..., None, :]
        logits = logits.reshape(n, nh, nw, heads, ws * ws, ks * ks)
        attn = torch.softmax(logits + self.fixed_pos_emb.attention_mask, dim=-1)
        out = (attn @ v).reshape(n, nh, nw, heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5)
        return self.project_out(out.reshape(n, heads * d, h, w))


class TBSNFeedForward(nn.Module):
    """Dilation-2 3x3 conv, exact GELU, dilation-2 3x3 conv (C -> C -> C)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.project_in, self.project_out = _dilated_conv(c, c), _dilated_conv(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> same shape."""
        return self.project_out(F.gelu(self.project_in(x)))


class TBSNBlock(nn.Module):
    """x + channel attention, + feed-forward, + window attention, + feed-forward, each on a
    layer norm of its input."""

    def __init__(
        self,
        c: int,
        channel_heads: int,
        spatial_heads: int,
        dim_head: int,
        window_size: int,
        overlap_ratio: float,
    ) -> None:
        super().__init__()
        for i in (1, 2, 3, 4):
            setattr(self, f"norm{i}", ChannelLayerNorm(c))
        self.channel_attn = TBSNChannelAttention(c, channel_heads)
        self.channel_ffn = TBSNFeedForward(c)
        self.spatial_attn = TBSNWindowAttention(
            c, spatial_heads, dim_head, window_size, overlap_ratio
        )
        self.spatial_ffn = TBSNFeedForward(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> same shape."""
        x = x + self.channel_attn(self.norm1(x))
        x = x + self.channel_ffn(self.norm2(x))
        x = x + self.spatial_attn(self.norm3(x))
        return x + self.spatial_ffn(self.norm4(x))


class ParityShuffle(nn.Module):
    """down: (N, C, H, W) -> (N, 4C, H/2, W/2), out[:, 4c + 2i + j, 2h + a, 2w + b] =
    x[:, c, 4h + 2i + a, 4w + 2j + b] (pixels 2 apart merge, parities kept; H, W multiples
    of 4); up: its inverse, (N, 4C, H, W) -> (N, C, 2H, 2W)."""

    def __init__(self, down: bool) -> None:
        super().__init__()
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.down:
            y = x.reshape(n, c, h // 4, 2, 2, w // 4, 2, 2)  # (n, c, h, i, a, w, j, b)
            return y.permute(0, 1, 3, 6, 2, 4, 5, 7).reshape(n, 4 * c, h // 2, w // 2)
        y = x.reshape(n, c // 4, 2, 2, h // 2, 2, w // 2, 2)  # (n, c, i, j, h, a, w, b)
        return y.permute(0, 1, 4, 2, 5, 6, 3, 7).reshape(n, c // 4, 2 * h, 2 * w)


class Resample(nn.Module):
    """Bias-free 1x1 conv to C/2 then `ParityShuffle` down ((N, C, H, W) -> (N, 2C, H/2,
    W/2)), or to 2C then up ((N, C, H, W) -> (N, C/2, 2H, 2W))."""

    def __init__(self, cin: int, down: bool) -> None:
        super().__init__()
        cout = cin // 2 if down else 2 * cin
        self.body = nn.Sequential(_conv1x1(cin, cout), ParityShuffle(down))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TorchTBSN(nn.Module):
    """TBSN: (N, 3, H, W) on [0, 255] -> same shape and scale; H, W multiples of
    lcm(8, 4 window_size) (32). Defaults: the published network, 12,746,780 parameters.

    Args:
      dim: level-1 width (levels 2 and 3: 2 dim, 4 dim; the decoder's level 1: 2 dim).
      num_blocks: transformer blocks per level, encoder and decoder alike.
      num_refinement_blocks: blocks after the decoder, at level 1.
      channel_heads, spatial_heads, overlap_ratio: per level.
      window_size: query window side; spatial_dim_head: channels per window-attention head.
    No biases, bias-free layer norms, feed-forwards of width C (the authors' defaults).
    """

    def __init__(
        self,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 4, 4),
        num_refinement_blocks: int = 4,
        channel_heads: Sequence[int] = (1, 2, 4),
        spatial_heads: Sequence[int] = (2, 2, 3),
        overlap_ratio: Sequence[float] = (0.5, 0.5, 0.5),
        window_size: int = 8,
        spatial_dim_head: int = 16,
    ) -> None:
        super().__init__()

        def blocks(c: int, level: int, count: int) -> nn.Sequential:
            return nn.Sequential(
                *(
                    TBSNBlock(
                        c,
                        channel_heads[level],
                        spatial_heads[level],
                        spatial_dim_head,
                        window_size,
                        overlap_ratio[level],
                    )
                    for _ in range(count)
                )
            )

        d = dim
        self.patch_embed = nn.ModuleDict({"proj": CentreMaskedConv(3, d)})
        self.encoder_level1 = blocks(d, 0, num_blocks[0])
        self.down1_2 = Resample(d, down=True)
        self.encoder_level2 = blocks(2 * d, 1, num_blocks[1])
        self.down2_3 = Resample(2 * d, down=True)
        self.latent = blocks(4 * d, 2, num_blocks[2])
        self.up3_2 = Resample(4 * d, down=False)
        self.reduce_chan_level2 = _conv1x1(4 * d, 2 * d)
        self.decoder_level2 = blocks(2 * d, 1, num_blocks[1])
        self.up2_1 = Resample(2 * d, down=False)
        self.decoder_level1 = blocks(2 * d, 0, num_blocks[0])
        self.refinement = blocks(2 * d, 0, num_refinement_blocks)
        self.output = _conv1x1(2 * d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, H, W)."""
        enc1 = self.encoder_level1(self.patch_embed["proj"](x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        latent = self.latent(self.down2_3(enc2))
        h = self.reduce_chan_level2(torch.cat([self.up3_2(latent), enc2], 1))
        h = self.decoder_level2(h)
        h = self.decoder_level1(torch.cat([self.up2_1(h), enc1], 1))
        return self.output(self.refinement(h))


NETWORKS = {"bnn": TorchBNN, "lan": TorchLAN, "unet": TorchUNet}
