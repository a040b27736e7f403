"""Estimated PSNR of a denoiser's output from the noisy photo alone, and a safeguard blend.

Method: Stein's unbiased risk estimate with a Monte-Carlo divergence (MC-SURE, Ramani, Blu and
Unser, "Monte-Carlo SURE", TIP 2008), generalised to correlated, signal-dependent noise. With
noisy x = y + n, n ~ N(0, Sigma) and a denoiser f, per value (N = H * W * 3):

  E|f(x) - y|^2 / N = D - s2 + 2 C,  D = |f(x) - x|^2 / N,  s2 = tr(Sigma) / N,
  C = tr(Sigma J_f(x)) / N = E_b[b . J_f(x) b] / N  for probes b ~ N(0, Sigma),

one `jax.vjp` per probe (b . J^T b = b . J b: exact, no finite-difference step to tune, and
reverse mode works with the networks' custom-VJP layers, where `jax.jvp` does not).
The noisy photo's own MSE is s2. The blend g = w f + (1 - w) x has g - x = w (f - x) and
J_g = w J_f + (1 - w) I, so its estimated MSE is w^2 D - 2 w (s2 - C) + s2, a parabola
minimised at w* = (s2 - C) / D, clipped to [0, 1] (MSE(w*) = s2 - (s2 - C)^2 / D <= s2: the
blend never does worse than the input, up to the estimate's own error).

Sigma comes from `noise_analysis.analyze_noise` (run on the photos being denoised; a user has
nothing else). Probes: white Gaussian noise, colour-mixed by the symmetric square root of the
3x3 cross-channel correlation, spatially filtered (FFT, circular) by the square root of a
separable power spectrum rho(dy, dx) = rho_v(dy) rho_h(dx) built from the measured lags 0..6,
normalised to unit variance, then scaled per pixel and channel by the noise level function's
std at the pixel's brightness (channel mean, Gaussian-blurred with sigma 2 px; the variance is
interpolated linearly between the brightness bins and held constant beyond them). The
separable model misses some diagonal correlation of demosaiced noise; the level function and
the std are the analysis's (25% accuracy in std claimed there), and an error delta in s2
moves the output MSE estimate by about -delta (1 - 2 C / s2): the noise level is what limits
the accuracy, not the Monte-Carlo divergence (relative error ~ sqrt(2 / N) per probe).
Large photos are estimated on up to `crops` random crops (multiples of 32 px, at most
CROP x CROP, fixed seed); each crop is denoised alone, so border context differs slightly from
whole-photo inference.

The 2-D autocorrelation of the analysis (lags up to 6 in both axes) replaces the separable
model whenever the analysis holds it: demosaiced noise correlates more diagonally (SIDD
(1, 1): 0.26, separable 0.19), which moved a blur's estimate on the SIDD pair from 2.2 dB off
to within 1 dB.

Validation (`python bench/quality_estimate.py --probes 1`, 2026-11-29, noise analysed on
each photo alone; est / true PSNR dB, error = est - true output PSNR, "+a" = colour anchor):
  main run (newmain/runs/default), U-Net: chelsea0 23.23/25.25 (-2.02), chelsea1
  21.43/23.93 (-2.50), coffee0 21.24/20.27 (+0.97), coffee1 20.14/19.85 (+0.29); +a:
  -2.28, -2.45, +0.80, +0.09. Noisy PSNR within 0.7 dB on all four.
  SIDD pair, authors' LAN: 22.47/27.41 (-4.94); +a 23.37/25.52 (-2.15).
  4-step U-Net on SIDD (worse than input): 11.62/12.15 (-0.53), w* 0.25 (true best 0.30),
  blend 17.65/17.93 dB vs noisy 16.15; +a: +0.10, w* 0.64 (0.65).
  blur sigma 2 on chelsea0 clean + white std 5: 27.71/28.53, but noisy 25.91/34.13
  (so w* 0.75 where the true best is 0.21).
So the 1 dB target is met for half of the cases only. The error comes from the noise
statistics, not from SURE (exact on noise of known covariance, tests): on the main photos
texture leaks into the analysed correlations (chelsea lag-2 0.18 vs true 0.08: C too high,
PSNR too low) or heavy clipping (coffee: 23% of values at 0/255) lowers them; with mild
noise on a textured photo the analysis over-states the noise (8 dB here) and the blur looks
helpful. On SIDD, even the true 2-D covariance leaves the LAN ~4.5-5 dB off (C 178 against a
realised n . f / N of ~100; the anchor halves the gap): sRGB camera noise is clipped and not
Gaussian, and Stein's lemma then fails for a network this nonlinear. Treat the estimate as
a rough, usually conservative guide, and w* < 1 as a warning.

Arrays: photos (H, W, 3) uint8 RGB on [0, 255]; denoise_fn maps (1, H, W, 3) float32 on
[0, 255] to the same shape and must be differentiable by JAX.
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
    """Estimated MSE of w f(x) + (1 - w) x: w^2 D - 2 w (s2 - C) + s2."""
    return w * w * distance - 2.0 * w * (noise_variance - divergence) + noise_variance


def blend_weight(distance: float, noise_variance: float, divergence: float) -> float:
    """w* = (s2 - C) / D clipped to [0, 1] (1 when f(x) == x: any w is the same)."""
    if distance <= 0:
        return 1.0
    return float(np.clip((noise_variance - divergence) / distance, 0.0, 1.0))


def blend(output: np.ndarray, noisy: np.ndarray, w: float) -> np.ndarray:
    """w * output + (1 - w) * noisy, float32 (H, W, 3) on [0, 255] (not rounded)."""
    out = np.asarray(output, np.float32)
    return np.float32(w) * out + np.float32(1.0 - w) * np.asarray(noisy, np.float32)


def separable_acf(analysis: NoiseAnalysis) -> np.ndarray:
    """The analysis's 2-D autocorrelation ((2 MAX_LAG + 1) square, centre = lag 0), or when it
    holds none, the separable model rho_v(dy) rho_h(dx) of its lags 0..MAX_LAG."""
    if analysis.acf:
        return np.asarray(analysis.acf, np.float64)
    v, h = np.asarray(analysis.vertical), np.asarray(analysis.horizontal)
    return np.outer(np.concatenate([v[:0:-1], v]), np.concatenate([h[:0:-1], h]))


def spatial_amplitude(acf: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) FFT amplitude turning unit white noise into unit-variance (circular) noise with
    the 2-D autocorrelation `acf` ((2L + 1, 2L + 1), centre = lag 0; 0 beyond; negative
    power clipped)."""
    lag = acf.shape[0] // 2
    circ = np.zeros((h, w))
    dy, dx = np.mgrid[-lag : lag + 1, -lag : lag + 1]
    keep = (np.abs(dy) <= h // 2) & (np.abs(dx) <= w // 2)
    circ[dy[keep] % h, dx[keep] % w] = acf[keep]
    power = np.maximum(np.fft.fft2(circ).real, 0.0)
    return np.sqrt(power / max(power.mean(), 1e-12))


def colour_mixing(analysis: NoiseAnalysis) -> np.ndarray:
    """(3, 3) symmetric square root of the cross-channel correlation (negative eigenvalues
    clipped, diagonal renormalised to 1), so mixed unit white noise has that correlation."""
    corr = np.asarray(analysis.cross_channel, np.float64)
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    root = vecs @ np.diag(np.sqrt(np.maximum(vals, 0.0))) @ vecs.T
    return root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-12)


def noise_std_map(noisy: np.ndarray, analysis: NoiseAnalysis) -> np.ndarray:
    """(H, W, 3) noise std per pixel and channel from the level function, read at the
    brightness of each pixel (channel mean blurred by BRIGHTNESS_SIGMA px)."""
    x = jnp.asarray(np.asarray(noisy, np.float32).mean(axis=2)[None, :, :, None])
    bright = np.asarray(blur(x, BRIGHTNESS_SIGMA))[0, :, :, 0]
    levels = sorted(analysis.level_function)
    centres = np.array([b for b, _ in levels])
    var = np.array([s for _, s in levels]) ** 2  # (bins, 3)
    return np.stack([np.sqrt(np.interp(bright, centres, var[:, c])) for c in range(3)], axis=-1)


def synthesize_noise(
    std_map: np.ndarray, analysis: NoiseAnalysis, acf: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(H, W, 3) float32 Gaussian noise with the analysis's cross-channel correlation, the
    2-D spatial autocorrelation acf (see `spatial_amplitude`) and per-pixel std std_map."""
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
    """Up to `crops` (top, left, height, width) boxes, sides multiples of MULTIPLE and at most
    CROP; one box when it covers the whole photo. Deterministic in seed."""
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
        (and differentiated, one jvp per probe) on crops whose sides are multiples of 32.
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
