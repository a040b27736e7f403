"""Estimated PSNR of a denoiser's output from the noisy photo alone (MC-SURE), and a blend.

Stein's unbiased risk estimate with a Monte-Carlo divergence, for correlated, signal-dependent
noise measured on the photo itself. Photos are (H, W, 3) uint8 RGB on [0, 255]; a denoise_fn
maps (1, H, W, 3) float32 on [0, 255] to the same shape and must be differentiable by JAX.
Details and validation: docs/inference.md#quality-estimate.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.errors import UserInputError
from sassid_jax.inference.colour_anchor import blur
from sassid_jax.noise import analysis as noise_analysis
from sassid_jax.noise.analysis import NoiseAnalysis

DenoiseFn = Callable[[jax.Array], jax.Array]
CROP = 256  # largest crop side (px)
MULTIPLE = 32  # crop sides are multiples of this (the U-Net's pooling grid)
BRIGHTNESS_SIGMA = 2.0  # px; smoothing of the channel mean that reads the level function
PEAK = 255.0


class QualityEstimateError(UserInputError, ValueError):
    """A photo the estimate cannot use (too small, wrong shape); one line."""


@dataclasses.dataclass(frozen=True)
class QualityEstimate:
    """Estimated quality of f(x) against the unknown clean photo (PSNR in dB, peak 255).

    Attributes:
      noisy_psnr, output_psnr: estimated PSNR of the noisy photo and of f(x).
      gain_db: output_psnr - noisy_psnr.
      blend_weight: w* in [0, 1] minimising the estimated MSE of w f(x) + (1 - w) x.
      blend_psnr: estimated PSNR of that blend (>= max of the two above, up to rounding).
      distance: D, mean |f(x) - x|^2 per value (8-bit levels squared).
      noise_variance: s2, mean noise variance per value.
      divergence: C, mean b . J_f b per value (probe average).
      crops, probes: crops used and probes per crop.
    """

    noisy_psnr: float
    output_psnr: float
    gain_db: float
    blend_weight: float
    blend_psnr: float
    distance: float
    noise_variance: float
    divergence: float
    crops: int
    probes: int

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"estimated PSNR: noisy {self.noisy_psnr:.2f} dB, output {self.output_psnr:.2f} dB "
            f"(gain {self.gain_db:+.2f} dB); blend w*={self.blend_weight:.2f} -> "
            f"{self.blend_psnr:.2f} dB (D={self.distance:.1f}, s2={self.noise_variance:.1f}, "
            f"C={self.divergence:.1f}; {self.crops} crops x {self.probes} probes)"
        )


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB (peak 255) of a mean squared error in 8-bit levels (floored at 1e-10)."""
    return 10.0 * math.log10(PEAK**2 / max(mse, 1e-10))


def blend_mse(w: float, distance: float, noise_variance: float, divergence: float) -> float:
    """Estimated MSE of the blend w f(x) + (1 - w) x: w^2 D - 2 w (s2 - C) + s2.

    Args:
      w: weight of f(x), in [0, 1].
      distance: D, mean |f(x) - x|^2 per value (8-bit levels squared).
      noise_variance: s2, mean noise variance per value (levels squared).
      divergence: C, mean b . J_f(x) b per value (levels squared).
    Returns:
      The estimated MSE per value, in levels squared.
    """
    return w * w * distance - 2.0 * w * (noise_variance - divergence) + noise_variance


def blend_weight(distance: float, noise_variance: float, divergence: float) -> float:
    """The weight w* = (s2 - C) / D that minimises `blend_mse`, clipped to [0, 1].

    Args:
      distance, noise_variance, divergence: D, s2 and C as in `blend_mse`.
    Returns:
      w* in [0, 1]; 1 when D <= 0 (f(x) == x: any w gives the same).
    """
    if distance <= 0:
        return 1.0
    return float(np.clip((noise_variance - divergence) / distance, 0.0, 1.0))


def blend(output: np.ndarray, noisy: np.ndarray, w: float) -> np.ndarray:
    """The blend w * output + (1 - w) * noisy.

    Args:
      output: (H, W, 3) float denoised photo on [0, 255].
      noisy: (H, W, 3) uint8 or float photo on [0, 255].
      w: weight of `output`, in [0, 1].
    Returns:
      (H, W, 3) float32 on [0, 255], not rounded.
    """
    out = np.asarray(output, np.float32)
    return np.float32(w) * out + np.float32(1.0 - w) * np.asarray(noisy, np.float32)


def separable_acf(analysis: NoiseAnalysis) -> np.ndarray:
    """The noise's 2-D autocorrelation for the probes: (2L + 1, 2L + 1) float64, centre = lag 0
    (L = `noise.analysis.MAX_LAG`). The analysis's own, or when it holds none, the separable
    model rho_v(dy) rho_h(dx) of its vertical and horizontal lags 0..L."""
    if analysis.acf:
        return np.asarray(analysis.acf, np.float64)
    v, h = np.asarray(analysis.vertical), np.asarray(analysis.horizontal)
    return np.outer(np.concatenate([v[:0:-1], v]), np.concatenate([h[:0:-1], h]))


def spatial_amplitude(acf: np.ndarray, h: int, w: int) -> np.ndarray:
    """The FFT amplitude that turns unit white noise into unit-variance circular noise with the
    2-D autocorrelation `acf` (0 beyond its lags; negative power clipped).

    Args:
      acf: (2L + 1, 2L + 1) correlations, centre = lag 0 (`separable_acf`).
      h, w: the noise field's height and width in pixels.
    Returns:
      (h, w) float64 amplitude, to multiply the 2-D FFT of the white noise with.
    """
    lag = acf.shape[0] // 2
    circ = np.zeros((h, w))
    dy, dx = np.mgrid[-lag : lag + 1, -lag : lag + 1]
    keep = (np.abs(dy) <= h // 2) & (np.abs(dx) <= w // 2)
    circ[dy[keep] % h, dx[keep] % w] = acf[keep]
    power = np.maximum(np.fft.fft2(circ).real, 0.0)
    return np.sqrt(power / max(power.mean(), 1e-12))


def colour_mixing(analysis: NoiseAnalysis) -> np.ndarray:
    """(3, 3) float64 symmetric square root of the analysis's cross-channel correlation
    (negative eigenvalues clipped, rows scaled to unit norm): unit white noise (..., 3) times
    its transpose has that correlation and unit variance."""
    corr = np.asarray(analysis.cross_channel, np.float64)
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    root = vecs @ np.diag(np.sqrt(np.maximum(vals, 0.0))) @ vecs.T
    return root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-12)


def noise_std_map(noisy: np.ndarray, analysis: NoiseAnalysis) -> np.ndarray:
    """The noise std per pixel and channel, read from the analysis's level function at each
    pixel's brightness (the channel mean blurred by BRIGHTNESS_SIGMA px).

    Args:
      noisy: (H, W, 3) uint8 or float photo on [0, 255].
      analysis: the noise of that photo's camera.
    Returns:
      (H, W, 3) float64 std in 8-bit levels.
    """
    x = jnp.asarray(np.asarray(noisy, np.float32).mean(axis=2)[None, :, :, None])
    bright = np.asarray(blur(x, BRIGHTNESS_SIGMA))[0, :, :, 0]
    levels = sorted(analysis.level_function)
    centres = np.array([b for b, _ in levels])
    var = np.array([s for _, s in levels]) ** 2  # (bins, 3)
    return np.stack([np.sqrt(np.interp(bright, centres, var[:, c])) for c in range(3)], axis=-1)


def synthesize_noise(
    std_map: np.ndarray, analysis: NoiseAnalysis, acf: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One probe: Gaussian noise with the analysis's cross-channel correlation, a spatial
    autocorrelation and a per-pixel std.

    Args:
      std_map: (H, W, 3) std per pixel and channel in levels (`noise_std_map`).
      analysis: the noise whose cross-channel correlation the probe gets.
      acf: (2L + 1, 2L + 1) spatial autocorrelation (`separable_acf`).
      rng: draws the white noise.
    Returns:
      (H, W, 3) float32 noise in 8-bit levels, zero-mean.
    """
    h, w, _ = std_map.shape
    white = rng.standard_normal((h, w, 3)) @ colour_mixing(analysis).T
    amp = spatial_amplitude(acf, h, w)[:, :, None]
    field = np.fft.ifft2(np.fft.fft2(white, axes=(0, 1)) * amp, axes=(0, 1)).real
    return (field * std_map).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _terms_fn(denoise_fn: DenoiseFn) -> Callable[[jax.Array, jax.Array], tuple]:
    """Jitted (x, b) -> (sum |f(x) - x|^2, sum b . J_f(x) b) on (1, h, w, 3) float32.

    Reverse mode (b . J^T b = b . J b): the networks' layers define custom VJPs only."""

    def terms(x: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        out, pullback = jax.vjp(denoise_fn, x)
        (jtb,) = pullback(b)
        return jnp.sum(jnp.square(out - x)), jnp.sum(b * jtb)

    return jax.jit(terms)


def crop_boxes(h: int, w: int, crops: int, seed: int) -> list[tuple[int, int, int, int]]:
    """The crops of an h x w photo that the estimate runs on.

    Args:
      h, w: the photo's height and width in pixels (>= MULTIPLE).
      crops: largest number of boxes.
      seed: seeds the positions (same seed, same boxes).
    Returns:
      Up to `crops` (top, left, height, width) boxes, sides multiples of MULTIPLE and at most
      CROP; one box when that covers the whole photo.
    Raises:
      QualityEstimateError: the photo is smaller than MULTIPLE x MULTIPLE.
    """
    ch, cw = min(CROP, h - h % MULTIPLE), min(CROP, w - w % MULTIPLE)
    if ch < MULTIPLE or cw < MULTIPLE:
        raise QualityEstimateError(
            f"quality estimate needs a photo of at least {MULTIPLE}x{MULTIPLE} px, got {w}x{h}"
        )
    if (ch, cw) == (h, w):
        return [(0, 0, h, w)]
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, h - ch + 1, size=crops)
    lefts = rng.integers(0, w - cw + 1, size=crops)
    return [(int(t), int(lf), ch, cw) for t, lf in zip(tops, lefts, strict=True)]


def estimate_quality(
    denoise_fn: DenoiseFn,
    noisy: np.ndarray,
    analysis: NoiseAnalysis | None = None,
    seed: int = 0,
    probes: int = 2,
    crops: int = 8,
    bias_energy: float = 0.0,
) -> QualityEstimate:
    """MC-SURE estimate of f(x)'s PSNR, its gain over the noisy photo and the best blend.

    Args:
      denoise_fn: (1, h, w, 3) float32 on [0, 255] -> same shape; JAX-differentiable. Called
        (and differentiated, one vjp per probe) on crops whose sides are multiples of 32.
      noisy: (H, W, 3) uint8 RGB photo, H, W >= 32.
      analysis: the noise of this camera's photos; None: `analyze_noise([noisy])`. Its 2-D
        autocorrelation shapes the probes (`separable_acf`).
      seed: seeds the crop positions and the probes.
      probes: probes per crop (the divergence's Monte-Carlo sample).
      crops: largest number of CROP x CROP crops of a large photo.
      bias_energy: the mean square (levels^2) of the noisy photo's own mean bias when the
        output removes it (`colour_anchor.estimate_bias`): part of the noisy photo's error,
        none of the output's (SURE measures against E[x], which then is the clean photo plus
        that bias). 0: the noise is taken as zero-mean.
    Returns:
      The `QualityEstimate`, PSNRs in dB (peak 255).
    Raises:
      QualityEstimateError: not an (H, W, 3) photo, or smaller than 32 px.
    """
    noisy = np.asarray(noisy)
    if noisy.ndim != 3 or noisy.shape[2] != 3:
        raise QualityEstimateError(f"quality estimate needs an (H, W, 3) photo, got {noisy.shape}")
    if analysis is None:
        analysis = noise_analysis.analyze_noise([noisy])
    acf = separable_acf(analysis)
    boxes = crop_boxes(noisy.shape[0], noisy.shape[1], crops, seed)
    std_map = noise_std_map(noisy, analysis)
    rng = np.random.default_rng([seed, 1])
    terms = _terms_fn(denoise_fn)
    dist = div = var = 0.0
    for top, left, ch, cw in boxes:
        x = jnp.asarray(noisy[top : top + ch, left : left + cw][None].astype(np.float32))
        std = std_map[top : top + ch, left : left + cw]
        var += float(np.mean(std.astype(np.float64) ** 2))
        for _ in range(probes):
            b = synthesize_noise(std, analysis, acf, rng)
            d, c = terms(x, jnp.asarray(b[None]))
            dist += float(d) / (probes * x.size)
            div += float(c) / (probes * x.size)
    n = len(boxes)
    dist, div, var = dist / n, div / n, var / n
    w = blend_weight(dist, var, div)
    noisy_psnr = psnr_from_mse(var + bias_energy)
    output_psnr = psnr_from_mse(blend_mse(1.0, dist, var, div))
    return QualityEstimate(
        noisy_psnr=noisy_psnr,
        output_psnr=output_psnr,
        gain_db=output_psnr - noisy_psnr,
        blend_weight=w,
        blend_psnr=psnr_from_mse(blend_mse(w, dist, var, div)),
        distance=dist,
        noise_variance=var,
        divergence=div,
        crops=n,
        probes=probes,
    )
