"""PyTorch versions of the SASL networks (described in docs/method.md), for benchmarks.

Only the speed benchmark uses them (PyTorch is an optional extra: bench/requirements.txt).
Layout is PyTorch's own NCHW. Submodule names follow the key names of the authors'
checkpoints (e.g. `encode_block_1.2.weight`, `conv.4.body.0.cuca.conv_du.0.weight`), so their
state_dicts and the parity files in ../shared/data/parity load with `load_state_dict`; the
code itself is this project's.

- `TorchUNet(width)`, `TorchBNN(width, blind_size)` (square inputs: the four rotations are
  stacked on the batch axis), `TorchLAN(width, blind_size, num_blocks)`.
- `local_std`, `flatness_alpha`, `adaptive_loss`: the supervision of stage 3.
"""

from __future__ import annotations

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


NETWORKS = {"bnn": TorchBNN, "lan": TorchLAN, "unet": TorchUNet}
