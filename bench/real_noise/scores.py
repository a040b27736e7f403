"""What the real-noise bench measures: PSNR/SSIM, BM3D, noise and supervision diagnostics,
and the no-reference measures of the DND protocol. Images are (H, W, 3), values on [0, 255].
"""

from __future__ import annotations

from typing import Any

import numpy as np


def score(clean: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of one image against its ground truth (published protocol)."""
    from sassid_jax.evaluation import metrics

    s = metrics.evaluate_pairs([(clean, image)])
    return {"psnr": round(s["psnr"], 3), "ssim": round(s["ssim"], 4)}


def bm3d_denoise(noisy_u8: np.ndarray, factor: float = 1.0) -> tuple[np.ndarray, float]:
    """BM3D (colour) with sigma estimated from the noisy image (times factor); returns the
    output on [0, 255] and the estimated sigma on the 0-255 scale."""
    import bm3d
    from skimage.restoration import estimate_sigma

    x = noisy_u8.astype(np.float64) / 255.0
    sigma = float(estimate_sigma(x, channel_axis=-1, average_sigmas=True))
    out = bm3d.bm3d_rgb(x, sigma * factor)
    return np.asarray(out, np.float32) * 255.0, sigma * 255.0


def upscale(img: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour k x enlargement (for panels)."""
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def noise_autocorrelation(noisy, clean, max_lag: int = 6) -> dict[str, list[float]]:
    """Normalised autocorrelation of the real noise (noisy - clean) at lags 0..max_lag.

    Analysis only (it reads the ground truth): how far the spatial correlation reaches,
    against the blind sizes (b = 1 hides lag 0 only; b = 9 hides lags up to 4).
    """
    n = noisy.astype(np.float64) - clean.astype(np.float64)
    n = n - n.mean(axis=(0, 1))
    var = np.mean(n * n)
    out = {}
    for axis, name in ((0, "vertical"), (1, "horizontal")):
        vals = []
        for lag in range(max_lag + 1):
            a = np.take(n, range(0, n.shape[axis] - lag), axis=axis)
            b = np.take(n, range(lag, n.shape[axis]), axis=axis)
            vals.append(round(float(np.mean(a * b) / var), 4))
        out[name] = vals
    return out


def _region_psnr(clean, image, mask) -> float:
    from sassid_jax.evaluation.metrics import quantize

    d = quantize(np.asarray(image, np.float32)) - clean.astype(np.float32)
    return round(float(10 * np.log10(255.0**2 / np.mean(d[mask] ** 2))), 3)


def bnn_eval_size_sweep(nets, bnn_params, example, whole) -> dict[str, Any]:
    """Stage-1 PSNR when the BNN sees isolated 32/64/128 blocks or the whole 256 block, and
    the whole-block output's PSNR near the borders (<= 32 px from an edge) vs the centre.

    A BNN trained on 64x64 crops has only ever produced outputs whose receptive field ends
    at a zero-padded crop border less than 64 px away; on a whole 256 block most pixels are
    further than that from every border.
    """
    from sassid_jax.evaluation import scoring

    clean = example[0]["clean"]
    res: dict[str, Any] = {}
    for block in (32, 64, 128):
        out = scoring.predict_all(nets, {"bnn": bnn_params}, example, bnn_block=block)
        res[f"blocks_{block}"] = score(clean, out["bnn"][0])["psnr"]
    res["whole"] = score(clean, whole)["psnr"]
    h, w = clean.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))
    res["whole_border_32px"] = _region_psnr(clean, whole, dist < 32)
    res["whole_centre_beyond_64px"] = _region_psnr(clean, whole, dist >= 64)
    out64 = scoring.predict_all(nets, {"bnn": bnn_params}, example, bnn_block=64)
    res["blocks_64_centre_beyond_64px"] = _region_psnr(clean, out64["bnn"][0], dist >= 64)
    return res


def stage3_targets(clean, bnn, lan) -> dict[str, dict[str, float]]:
    """PSNR of what the U-Net is asked to reproduce, for several alpha thresholds.

    The stage-3 loss (1-a)|U-BNN| + a|U-LAN| is minimised per pixel by BNN where a < 0.5,
    LAN where a > 0.5 and anything between them where a = 0.5 ("hard" target, the midpoint
    there); "soft" is the blend (1-a) BNN + a LAN. No retraining: a diagnostic of the
    supervision the teachers give, on the SIDD pair (uses its ground truth).
    """
    from sassid_jax.methods.sasl import flatness_alpha

    res = {}
    for lower, upper in ((1, 5), (0.5, 5), (2, 5), (1, 3), (1, 7)):
        a = np.asarray(flatness_alpha(bnn[None], lower, upper))[0]
        hard = np.where(a < 0.5, bnn, np.where(a > 0.5, lan, 0.5 * (bnn + lan)))
        soft = (1 - a) * bnn + a * lan
        res[f"{lower}/{upper}"] = {
            "hard_psnr": score(clean, hard)["psnr"],
            "soft_psnr": score(clean, soft)["psnr"],
            "frac_flat": round(float((a < 0.5).mean()), 3),
            "frac_texture": round(float((a > 0.5).mean()), 3),
        }
    return res


def flat_residual_std(image, mask) -> float:
    """Std of (image - its 7x7 local mean) over the masked pixels, all channels.

    In a flat region the signal is locally constant, so this high-pass residual is (nearly)
    all noise: for the noisy input it estimates the noise std (slightly low for correlated
    noise, part of which the 7x7 mean keeps), for a denoised image the noise left over.
    """
    from scipy.ndimage import uniform_filter

    x = np.asarray(image, np.float64)
    local = uniform_filter(x, size=(7, 7, 1), mode="reflect")
    r = (x - local)[mask]
    return float(np.sqrt(np.mean(r**2)))


def lowpass_bias(image, noisy, size: int = 15) -> float:
    """RMS difference between the size x size local means of an output and of its input.

    Noise is zero-mean, so a denoiser should keep the local mean: this measures colour
    casts and brightness shifts (for the clean SIDD image it is the residual of the real
    noise after a 15x15 mean, about 2 on the 0-255 scale).
    """
    from scipy.ndimage import uniform_filter

    a = uniform_filter(np.asarray(image, np.float64), size=(size, size, 1), mode="reflect")
    b = uniform_filter(np.asarray(noisy, np.float64), size=(size, size, 1), mode="reflect")
    return float(np.sqrt(np.mean((a - b) ** 2)))
