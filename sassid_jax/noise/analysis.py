"""Noise statistics of noisy photos alone (no clean reference) and the BNN blind size they imply.

Flat 32x32 blocks minus a plane per channel, the flattest quarter kept per brightness bin,
give the noise std, its 2-D and cross-channel correlation and the ring correlations of the
blind-size rule. Photos are HWC uint8 RGB, 8-bit levels. Method, limits and validation:
docs/noise.md#noise-analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from sassid_jax.errors import UserInputError

BLOCK = 32  # block side in pixels (smaller when a photo is smaller, down to MIN_BLOCK)
MIN_BLOCK = 24
BINS = 4  # brightness bins
KEEP = 0.25  # fraction of each bin's blocks kept (the flattest)
MAX_KEPT = 1024  # at most this many blocks per bin (evenly spaced among the flattest)
MAX_CLIPPED = 0.5  # a block is dropped when more than this fraction of a channel is 0 or 255
MAX_LAG = 6  # reported lags 0..MAX_LAG; largest blind size 2 * MAX_LAG + 1
WINDOW = 2 * MAX_LAG  # the 2-D autocorrelation is estimated for |dy|, |dx| <= WINDOW
LEAK_THRESHOLD = 0.1  # ring correlation that "matters" (see blind_size_from_acf)
MIN_BLIND_SIZE = 3
TEXTURE_WARNING = 0.05  # |long-range correlation| above which texture leaks into the estimate
NO_NOISE_STD = 0.05  # 8-bit levels: flat blocks this smooth in every channel hold no noise


class NoiseAnalysisError(UserInputError, ValueError):
    """Photos that cannot be analysed (too small, all clipped); one line."""


@dataclasses.dataclass(frozen=True)
class NoiseAnalysis:
    """Noise statistics estimated from noisy photos alone.

    Attributes:
      std: per channel (R, G, B) noise std in 8-bit levels.
      horizontal, vertical: correlation at lags 0..MAX_LAG along rows / columns (lag 0 = 1).
      cross_channel: 3x3 correlation of the R, G, B noise at the same pixel.
      ring: correlation of a pixel's noise with the mean noise of the ring of pixels at
        Chebyshev distance R, for R = 1..MAX_LAG (see `blind_size_from_acf`).
      long_range: mean correlation at Chebyshev distance MAX_LAG - 1..MAX_LAG (texture leak).
      level_function: per brightness bin, (median block brightness, std per channel).
      blind_size: the BNN blind size the correlations call for.
      images, blocks: photos analysed, flat blocks kept.
      acf: the 2-D correlation rho[MAX_LAG + dy][MAX_LAG + dx] for |dy|, |dx| <= MAX_LAG
        (horizontal and vertical are its centre row and column); empty when not measured.
    """

    std: tuple[float, ...]
    horizontal: tuple[float, ...]
    vertical: tuple[float, ...]
    cross_channel: tuple[tuple[float, ...], ...]
    ring: tuple[float, ...]
    long_range: float
    level_function: tuple[tuple[float, tuple[float, ...]], ...]
    blind_size: int
    images: int
    blocks: int
    acf: tuple[tuple[float, ...], ...] = ()

    def summary(self) -> str:
        """One line: 'noise analysis: std R/G/B ..., lag-1 0.43, lag-2 0.05 ... -> blind size 5'."""
        lags = ", ".join(
            f"lag-{k} {(self.horizontal[k] + self.vertical[k]) / 2:.2f}"
            for k in range(1, MAX_LAG + 1)
        )
        std = "/".join(f"{s:.1f}" for s in self.std)
        rings = ", ".join(f"{r:.2f}" for r in self.ring)
        return (
            f"noise analysis ({self.images} photos, {self.blocks} flat blocks): std R/G/B {std}, "
            f"{lags}; ring correlations {rings} -> blind size {self.blind_size}"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded to 4 decimals)."""

        def r(x: Any) -> Any:
            return round(float(x), 4) if np.isscalar(x) else [r(v) for v in x]

        return {
            "method": "flat 32x32 blocks minus a plane; see sassid_jax/noise/analysis.py",
            "images": self.images,
            "flat_blocks": self.blocks,
            "std_8bit": dict(zip("RGB", r(self.std), strict=True)),
            "lags": list(range(MAX_LAG + 1)),
            "correlation_horizontal": r(self.horizontal),
            "correlation_vertical": r(self.vertical),
            "cross_channel_correlation": r(self.cross_channel),
            "ring_correlation": r(self.ring),
            "long_range_correlation": r(self.long_range),
            "noise_level_function": [
                {"brightness": r(b), "std_8bit": r(s)} for b, s in self.level_function
            ],
            "blind_size": self.blind_size,
            "blind_size_rule": f"2 * (largest ring R with correlation >= {LEAK_THRESHOLD}) + 1, "
            f"at least {MIN_BLIND_SIZE}",
        }


def _plane_basis(size: int) -> np.ndarray:
    """(size*size, 3) orthonormal basis of the constant, x and y ramps on a block."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
    q, _ = np.linalg.qr(np.stack([np.ones(size * size), x.ravel(), y.ravel()], axis=1))
    return q


def _windows(image: np.ndarray, size: int) -> np.ndarray:
    """(ny, nx, C, size, size) view of the blocks of one photo, stride size // 2."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))
    return windows[:: size // 2, :: size // 2]


def _residuals(blocks: np.ndarray) -> np.ndarray:
    """(n, C, size, size) blocks minus their least-squares plane per channel, float64."""
    n, c, size, _ = blocks.shape
    flat = blocks.reshape(n, c, size * size).astype(np.float64)
    q = _plane_basis(size)
    return (flat - (flat @ q) @ q.T).reshape(blocks.shape)


def _block_stats(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of one photo (row-major): mean brightness (n,), clipped fraction of the
    worst channel (n,), residual variance per channel (n, C) (plane dof corrected)."""
    mean, clipped, var = [], [], []
    for row in _windows(image, size):  # a row of blocks at a time keeps memory small
        res = _residuals(row)
        mean.append(row.mean(axis=(1, 2, 3)))
        clipped.append(((row == 0) | (row == 255)).mean(axis=(2, 3)).max(axis=1))
        var.append((res**2).sum(axis=(2, 3)) / (size * size - 3))
    return np.concatenate(mean), np.concatenate(clipped), np.concatenate(var)


def _block_size(images: Sequence[np.ndarray]) -> int:
    side = min(min(im.shape[:2]) for im in images)
    size = min(BLOCK, side - side % 2)
    if size < MIN_BLOCK:
        raise NoiseAnalysisError(
            f"noise analysis needs photos of at least {MIN_BLOCK}x{MIN_BLOCK} px, got one of "
            f"{side} px on its short side"
        )
    return size


def _select(mean: np.ndarray, var: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """Indices of the kept (flattest) blocks, one array per brightness bin."""
    idx = np.flatnonzero(valid)
    bins = min(BINS, len(idx))
    edges = np.quantile(mean[idx], np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, mean[idx], side="right") - 1, 0, bins - 1)
    kept = []
    for b in range(bins):
        members = idx[which == b]
        if len(members):
            k = max(1, int(round(KEEP * len(members))))
            flattest = members[np.argsort(var[members].sum(axis=1), kind="stable")[:k]]
            # Large photos: an evenly spaced subset keeps the memory bounded, not the bias.
            kept.append(flattest[np.linspace(0, k - 1, min(k, MAX_KEPT)).round().astype(int)])
    return kept


def autocorrelation_2d(residuals: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Pooled normalized autocorrelation of block residuals (float64).

    Args:
      residuals: (n, size, size) zero-mean blocks (any channels flattened into n).
      window: largest offset; must be < size.
    Returns:
      (2 * window + 1, 2 * window + 1) rho[window + dy, window + dx], rho at (0, 0) = 1 (all
      zeros when the residuals are identically zero). Per offset: the mean product over the
      pairs inside blocks, over the mean square.
    """
    size = residuals.shape[-1]
    pad = size + window
    spectrum = np.abs(np.fft.rfft2(residuals, s=(pad, pad))) ** 2
    full = np.fft.irfft2(spectrum.sum(axis=0), s=(pad, pad))
    offsets = np.arange(-window, window + 1)
    sums = full[np.ix_(offsets % pad, offsets % pad)]
    pairs = np.outer(size - np.abs(offsets), size - np.abs(offsets)) * len(residuals)
    cov = sums / pairs
    zero = cov[window, window]
    return cov / zero if zero > 0 else np.zeros_like(cov)


def ring_correlations(acf: np.ndarray, max_ring: int = MAX_LAG) -> np.ndarray:
    """Correlation of the centre noise with the mean noise of each ring R = 1..max_ring.

    Ring R: the 8R pixels at Chebyshev distance R; its value is
    mean_{p in ring} rho(p) / sqrt(mean_{p, q in ring} rho(p - q)).

    Args:
      acf: (2w + 1, 2w + 1) autocorrelation rho[w + dy, w + dx] (`autocorrelation_2d`),
        w >= 2 * max_ring.
      max_ring: the largest ring.
    Returns:
      (max_ring,) float64, ring 1 first (0 for a ring of zero variance).
    """
    w = acf.shape[0] // 2
    out = []
    for r in range(1, max_ring + 1):
        pts = np.array([(y, x) for y in range(-r, r + 1) for x in range(-r, r + 1)])
        pts = pts[np.abs(pts).max(axis=1) == r]
        cov_centre = acf[w + pts[:, 0], w + pts[:, 1]].mean()
        d = pts[:, None, :] - pts[None, :, :]
        var_ring = acf[w + d[..., 0], w + d[..., 1]].mean()
        out.append(cov_centre / np.sqrt(var_ring) if var_ring > 0 else 0.0)
    return np.asarray(out)


def blind_size_from_acf(acf: np.ndarray, threshold: float = LEAK_THRESHOLD) -> int:
    """The smallest odd blind size that hides every ring whose noise still 'matters'.

    b = max(MIN_BLIND_SIZE, 2 L + 1), L the largest ring R (1..MAX_LAG) whose ring
    correlation (`ring_correlations`) is >= threshold. Why rings, 0.1 and at least 3: the
    "Blind size" section of the page the module docstring links.

    Args:
      acf: (2w + 1, 2w + 1) autocorrelation (`autocorrelation_2d`), w >= 2 * MAX_LAG.
      threshold: ring correlation from which a ring leaks (0.1).
    Returns:
      odd int in [MIN_BLIND_SIZE, 2 * MAX_LAG + 1].
    """
    rings = ring_correlations(acf)
    above = np.flatnonzero(rings >= threshold)
    largest = int(above[-1]) + 1 if len(above) else 0
    return max(MIN_BLIND_SIZE, 2 * largest + 1)


def _kept_residuals(images: Sequence[np.ndarray], size: int, kept: np.ndarray) -> np.ndarray:
    """(k, C, size, size) residuals of the blocks with pooled (row-major, photo after photo)
    indices `kept`."""
    out, start = [], 0
    for image in images:
        windows = _windows(image, size)
        count = windows.shape[0] * windows.shape[1]
        mine = kept[(kept >= start) & (kept < start + count)] - start
        out.append(_residuals(windows.reshape(count, *windows.shape[2:])[mine]))
        start += count
    return np.concatenate(out)


def analyze_noise(images: Sequence[np.ndarray]) -> NoiseAnalysis:
    """Noise statistics of one camera's noisy photos, pooled.

    Args:
      images: (H, W, 3) uint8 RGB photos, each at least MIN_BLOCK px on its short side.
    Returns:
      the NoiseAnalysis (std in 8-bit levels, correlations in [-1, 1]); logs a warning when
      texture inflates it (|long_range| above TEXTURE_WARNING: periodic texture
      correlates negatively too).
    Raises:
      NoiseAnalysisError: no photos, too small, every block over half clipped, or no noise
        measurable (flat photos: noise std below NO_NOISE_STD in every channel).
    """
    if not images:
        raise NoiseAnalysisError("noise analysis needs at least one photo")
    size = _block_size(images)
    stats = [_block_stats(im, size) for im in images]
    mean, clipped, var = (np.concatenate(parts) for parts in zip(*stats, strict=True))
    valid = clipped <= MAX_CLIPPED
    if not valid.any():
        raise NoiseAnalysisError(
            f"noise analysis: every {size}x{size} block is more than half clipped (0 or 255)"
        )
    kept = _select(mean, var, valid)
    levels = [var[k].mean(axis=0) for k in kept]
    sel = _kept_residuals(images, size, np.concatenate(kept))
    acf = autocorrelation_2d(sel.reshape(-1, size, size), min(WINDOW, size - 1))
    w = acf.shape[0] // 2
    chans = sel.transpose(1, 0, 2, 3).reshape(sel.shape[1], -1)
    energy = np.sqrt((chans**2).sum(axis=1))
    cross = (chans @ chans.T) / np.maximum(np.outer(energy, energy), 1e-12)
    chebyshev = np.maximum.outer(np.abs(np.arange(-w, w + 1)), np.abs(np.arange(-w, w + 1)))
    analysis = NoiseAnalysis(
        std=tuple(float(s) for s in np.sqrt(np.mean(levels, axis=0))),
        horizontal=tuple(float(v) for v in acf[w, w : w + MAX_LAG + 1]),
        vertical=tuple(float(v) for v in acf[w : w + MAX_LAG + 1, w]),
        cross_channel=tuple(tuple(float(v) for v in row) for row in cross),
        ring=tuple(float(v) for v in ring_correlations(acf, min(MAX_LAG, w // 2))),
        long_range=float(acf[(chebyshev >= MAX_LAG - 1) & (chebyshev <= MAX_LAG)].mean()),
        level_function=tuple(
            (float(np.median(mean[k])), tuple(float(s) for s in np.sqrt(level)))
            for k, level in zip(kept, levels, strict=True)
        ),
        blind_size=blind_size_from_acf(acf),
        images=len(images),
        blocks=int(sum(len(k) for k in kept)),
        acf=tuple(
            tuple(float(v) for v in row)
            for row in acf[w - MAX_LAG : w + MAX_LAG + 1, w - MAX_LAG : w + MAX_LAG + 1]
        ),
    )
    if max(analysis.std) < NO_NOISE_STD:
        raise NoiseAnalysisError(
            f"noise analysis: no noise measurable (std {max(analysis.std):.2g} 8-bit levels in "
            f"its flattest blocks): the photos are flat or already clean"
        )
    if abs(analysis.long_range) > TEXTURE_WARNING:
        logging.warning(
            "noise analysis: long-range correlation %.2f: the photos have few flat regions, so "
            "texture inflates the estimates (noise level and blind size are upper bounds)",
            analysis.long_range,
        )
    return analysis
