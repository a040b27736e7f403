"""Camera-pipeline noise simulator: clean sRGB uint8 -> realistically noisy sRGB uint8.

A clean image runs backwards through a simple ISP to raw, gets shot and read noise on a Bayer
mosaic, and only that noise runs forwards again (white balance, demosaic, colour matrix,
gamma), so `clean` stays the exact target. All randomness comes from the caller's
`np.random.Generator`. Arrays are HWC. Pipeline, defaults and validation:
docs/noise.md#simulator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

__all__ = [
    "NoiseParams",
    "NoiseRange",
    "noise_autocorrelation",
    "sample_noise_params",
    "simulate_camera_noise",
]

Matrix3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


@dataclasses.dataclass(frozen=True)
class NoiseParams:
    """The per-image values sampled for one simulated photo.

    Attributes:
      shot: raw shot-noise gain; variance contribution shot * x for raw signal x in [0, 1].
      read: raw read-noise variance (signal independent), in raw [0, 1] units squared.
      red_gain: white-balance gain of the red channel (green gain is 1).
      blue_gain: white-balance gain of the blue channel.
      exposure: linear brightness factor applied to the clean linear image before the raw
        (< 1 darkens the scene, which raises the relative noise, like a short exposure).
      rgb2cam: 3x3 row-stochastic matrix mapping linear sRGB to camera RGB; its inverse is the
        ISP's colour-correction matrix.
      tone_curve: whether the smoothstep tone curve is part of this image's ISP.
    """

    shot: float
    read: float
    red_gain: float
    blue_gain: float
    exposure: float
    rgb2cam: Matrix3
    tone_curve: bool


@dataclasses.dataclass(frozen=True)
class NoiseRange:
    """Ranges the per-image NoiseParams are drawn from; the defaults are the project's
    default settings (their sources: the simulator's doc page, linked above).

    Attributes:
      shot: (min, max) of the log-uniform raw shot-noise gain, 0 < min <= max.
      read_slope, read_intercept, read_log_std: log(read) = slope * log(shot) + intercept
        + N(0, std^2) (Brooks et al.'s fit).
      red_gain: (min, max) of the uniform red white-balance gain.
      blue_gain: (min, max) of the uniform blue white-balance gain.
      exposure: (min, max) of the uniform linear brightness factor.
      ccm_mix: each off-diagonal entry of rgb2cam, before its rows are normalized to sum 1, is
        uniform in [0, ccm_mix].
      tone_curve_prob: probability that the image's ISP includes the smoothstep tone curve.
    """

    shot: tuple[float, float] = (4e-4, 7e-3)
    read_slope: float = 2.18
    read_intercept: float = 1.2
    read_log_std: float = 0.26
    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    exposure: tuple[float, float] = (0.7, 1.0)
    ccm_mix: float = 0.35
    tone_curve_prob: float = 0.5


def sample_noise_params(
    rng: np.random.Generator, noise_range: NoiseRange = NoiseRange()
) -> NoiseParams:
    """Draws one image's NoiseParams.

    Args:
      rng: the source of randomness (advanced by the draws).
      noise_range: the ranges drawn from; ValueError unless 0 < shot min <= max.
    Returns:
      the NoiseParams (shot, read in raw [0, 1] units; rgb2cam rows summing to 1).
    """
    lo, hi = noise_range.shot
    if not 0 < lo <= hi:
        raise ValueError(f"NoiseRange.shot must satisfy 0 < min <= max, got {noise_range.shot}")
    log_shot = rng.uniform(np.log(lo), np.log(hi))
    log_read = (
        noise_range.read_slope * log_shot
        + noise_range.read_intercept
        + rng.normal(0.0, noise_range.read_log_std)
    )
    mix = rng.uniform(0.0, noise_range.ccm_mix, size=(3, 3))
    np.fill_diagonal(mix, 1.0)
    rgb2cam = mix / mix.sum(axis=1, keepdims=True)
    return NoiseParams(
        shot=float(np.exp(log_shot)),
        read=float(np.exp(log_read)),
        red_gain=float(rng.uniform(*noise_range.red_gain)),
        blue_gain=float(rng.uniform(*noise_range.blue_gain)),
        exposure=float(rng.uniform(*noise_range.exposure)),
        rgb2cam=tuple(tuple(float(v) for v in row) for row in rgb2cam),  # type: ignore[arg-type]
        tone_curve=bool(rng.uniform() < noise_range.tone_curve_prob),
    )


# ----------------------------------------------------------------------------- ISP pieces
def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer function, [0, 1] -> [0, 1], any shape."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, [0, 1] -> [0, 1], any shape (input clipped to [0, 1])."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _tone_curve(x: np.ndarray) -> np.ndarray:
    """Smoothstep tone curve 3x^2 - 2x^3, [0, 1] -> [0, 1]."""
    return 3.0 * x**2 - 2.0 * x**3


def _inverse_tone_curve(y: np.ndarray) -> np.ndarray:
    """Inverse of the smoothstep tone curve, [0, 1] -> [0, 1]."""
    y = np.clip(y, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def _bayer_sites(height: int, width: int) -> dict[str, np.ndarray]:
    """(H, W) boolean masks of the four RGGB sites: R (even row, even column), Gr (even row,
    odd column), Gb (odd row, even column), B (odd row, odd column)."""
    rows = np.arange(height)[:, None] % 2 == 1
    cols = np.arange(width)[None, :] % 2 == 1
    return {"r": ~rows & ~cols, "gr": ~rows & cols, "gb": rows & ~cols, "b": rows & cols}


# Malvar-He-Cutler (ICASSP 2004) gradient-corrected bilinear demosaicing kernels.
_K_GREEN_AT_RB = (
    np.array(
        [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]
    )
    / 8.0
)
# Red (blue) at a green site whose horizontal neighbours are red (blue); transpose: vertical.
_K_ROW = (
    np.array(
        [
            [0, 0, 0.5, 0, 0],
            [0, -1, 0, -1, 0],
            [-1, 4, 5, 4, -1],
            [0, -1, 0, -1, 0],
            [0, 0, 0.5, 0, 0],
        ]
    )
    / 8.0
)
# Red at a blue site and blue at a red site.
_K_DIAG = (
    np.array(
        [
            [0, 0, -1.5, 0, 0],
            [0, 2, 0, 2, 0],
            [-1.5, 0, 6, 0, -1.5],
            [0, 2, 0, 2, 0],
            [0, 0, -1.5, 0, 0],
        ]
    )
    / 8.0
)


def _demosaic(raw: np.ndarray, sites: dict[str, np.ndarray]) -> np.ndarray:
    """Malvar-He-Cutler demosaic of an RGGB raw (linear; bilinear plus a Laplacian correction,
    which keeps the noise correlations close to real sRGB noise).

    Args:
      raw: (H, W) float mosaic.
      sites: the RGGB site masks from `_bayer_sites`.
    Returns:
      (H, W, 3) float RGB. 'mirror' boundaries keep the Bayer parity at the borders.
    """
    green = ndimage.convolve(raw, _K_GREEN_AT_RB, mode="mirror")
    row = ndimage.convolve(raw, _K_ROW, mode="mirror")
    col = ndimage.convolve(raw, _K_ROW.T, mode="mirror")
    diag = ndimage.convolve(raw, _K_DIAG, mode="mirror")
    r, gr, gb, b = sites["r"], sites["gr"], sites["gb"], sites["b"]
    red = np.select([r, gr, gb], [raw, row, col], default=diag)
    blue = np.select([b, gb, gr], [raw, row, col], default=diag)
    green = np.where(r | b, green, raw)
    return np.stack([red, green, blue], axis=-1)


def _validate_image(clean: np.ndarray) -> None:
    if not isinstance(clean, np.ndarray) or clean.ndim != 3 or clean.shape[-1] != 3:
        shape = getattr(clean, "shape", None)
        raise ValueError(f"clean must be an (H, W, 3) uint8 array, got shape {shape}")
    if clean.dtype != np.uint8:
        raise ValueError(f"clean must be uint8, got dtype {clean.dtype} (shape {clean.shape})")
    if clean.shape[0] < 2 or clean.shape[1] < 2:
        raise ValueError(f"clean must be at least 2x2 pixels, got shape {clean.shape}")


def simulate_camera_noise(
    clean: np.ndarray,
    rng: np.random.Generator,
    params: NoiseParams | None = None,
    noise_range: NoiseRange = NoiseRange(),
) -> tuple[np.ndarray, NoiseParams]:
    """Makes a realistic noisy sRGB photo from a clean one.

    Args:
      clean: (H, W, 3) uint8 sRGB image, values [0, 255].
      rng: source of all randomness (parameters, if not given, then the noise).
      params: the ISP / noise parameters; sampled from `noise_range` with `rng` when None.
      noise_range: ranges for sampling `params` (ignored when `params` is given).
    Returns:
      (noisy, params): noisy (H, W, 3) uint8 sRGB in [0, 255] and the parameters used.
    Raises:
      ValueError: if `clean` is not an (H, W, 3) uint8 array.
    """
    _validate_image(clean)
    if params is None:
        params = sample_noise_params(rng, noise_range)
    height, width = clean.shape[:2]
    rgb2cam = np.asarray(params.rgb2cam, dtype=np.float64)
    cam2rgb = np.linalg.inv(rgb2cam)
    gains = np.array([params.red_gain, 1.0, params.blue_gain])

    # Unprocess: sRGB -> linear RGB -> camera RGB before white balance.
    x = clean.astype(np.float64) / 255.0
    if params.tone_curve:
        x = _inverse_tone_curve(x)
    linear = _srgb_to_linear(x) * params.exposure
    cam = np.clip(linear @ rgb2cam.T, 0.0, 1.0) / gains  # inverse CCM, inverse white balance

    # Mosaic and raw noise (signal-dependent variance from the raw signal level).
    sites = _bayer_sites(height, width)
    channel = np.select([sites["r"], sites["b"]], [0, 2], default=1)  # (H, W) colour index
    raw = np.take_along_axis(cam, channel[..., None], axis=-1)[..., 0]
    std = np.sqrt(np.maximum(params.shot * raw + params.read, 0.0))
    raw_noise = std * rng.standard_normal(raw.shape)

    # Process. White balance, demosaic and CCM are linear, so the processed noisy image is
    # the clean linear image plus the processed noise; processing the noise alone keeps the
    # clean image as the exact target (no demosaicing artefacts in noisy - clean).
    raw_noise = raw_noise * gains[channel]
    y = linear + _demosaic(raw_noise, sites) @ cam2rgb.T
    y = linear_to_srgb(y / params.exposure)
    if params.tone_curve:
        y = _tone_curve(y)
    noisy = np.clip(np.floor(y * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return noisy, params


def noise_autocorrelation(noisy: np.ndarray, clean: np.ndarray, lag: int) -> float:
    """Normalized spatial autocorrelation of the residual noisy - clean at a pixel lag.

    r_c = (noisy - clean)[..., c] as float, minus its mean, per channel c. Then

        rho(lag) = sum_c [sum r_c[:, :-lag] r_c[:, lag:] + sum r_c[:-lag] r_c[lag:]]
                   / (2 sum_c sum r_c^2),

    i.e. the horizontal and vertical lag correlations averaged, with channels pooled (a
    channel average weighted by each channel's noise energy).

    Args:
      noisy, clean: (H, W, C) or (H, W) arrays of the same shape, any numeric dtype.
      lag: pixel offset >= 1 and smaller than both H and W.
    Returns:
      rho in [-1, 1] (0.0 when the residual is identically zero).
    """
    if noisy.shape != clean.shape:
        raise ValueError(f"shape mismatch: noisy {noisy.shape} vs clean {clean.shape}")
    res = noisy.astype(np.float64) - clean.astype(np.float64)
    if res.ndim == 2:
        res = res[..., None]
    if lag < 1 or lag >= min(res.shape[0], res.shape[1]):
        raise ValueError(f"lag must be in [1, min(H, W)), got {lag} for shape {noisy.shape}")
    res = res - res.mean(axis=(0, 1), keepdims=True)
    energy = float(np.sum(res * res))
    if energy == 0.0:
        return 0.0
    horizontal = float(np.sum(res[:, :-lag] * res[:, lag:]))
    vertical = float(np.sum(res[:-lag] * res[lag:]))
    return (horizontal + vertical) / (2.0 * energy)
