"""Tests for sassid_jax.evaluation.metrics against NumPy and scikit-image references."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sassid_jax.evaluation.metrics import evaluate_pairs, psnr, quantize, ssim

PAIR_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sidd_pair"
SSIM_TOL = 1e-4


def _ref_quantize(x: np.ndarray) -> np.ndarray:
    """Protocol rounding (independent of the code under test) of float32 outputs.

    Like the metrics, values are first cast to float32 (what a network produces), then
    rounded in float64.
    """
    x64 = np.asarray(x, np.float32).astype(np.float64)
    return np.clip(np.floor(x64 + 0.5), 0.0, 255.0)


def _sk_ssim(clean: np.ndarray, denoised: np.ndarray) -> float:
    return float(
        structural_similarity(
            clean.astype(np.float64), _ref_quantize(denoised), channel_axis=-1, data_range=255
        )
    )


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Real-like smooth RGB image, float64 in [0, 255] -> (h, w, 3)."""
    img = gaussian_filter(rng.uniform(0, 255, (h, w, 3)), (6, 6, 0))
    img = (img - img.min()) / (img.max() - img.min()) * 255.0
    return img


def _real_pair() -> tuple[np.ndarray, np.ndarray]:
    if not (PAIR_DIR / "gt.png").exists() or not (PAIR_DIR / "noisy.png").exists():
        pytest.skip(f"real SIDD pair not found in {PAIR_DIR}")
    from PIL import Image

    gt = np.asarray(Image.open(PAIR_DIR / "gt.png").convert("RGB"))
    noisy = np.asarray(Image.open(PAIR_DIR / "noisy.png").convert("RGB"))
    return gt, noisy


ssim_jit = jax.jit(ssim)
psnr_jit = jax.jit(psnr)


@pytest.mark.parametrize("module", [np, jnp])
def test_quantize_half_integers_and_clipping(module) -> None:
    x = module.asarray([0.5, 254.5, -3.0, 300.0, 1.49, 1.5, 2.5, -0.4, 0.0], dtype=np.float32)
    out = quantize(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out), [1, 255, 0, 255, 1, 2, 3, 0, 0])
    assert isinstance(out, np.ndarray) == (module is np)


def test_psnr_matches_numpy_and_skimage() -> None:
    rng = np.random.default_rng(0)
    clean = np.round(_smooth_image(rng, 64, 48)).astype(np.uint8)
    cases = [
        rng.integers(0, 256, clean.shape).astype(np.float32),
        clean.astype(np.float32) + rng.normal(0, 5, clean.shape).astype(np.float32),
        clean.astype(np.float32) + rng.normal(0, 0.7, clean.shape).astype(np.float32),
    ]
    for den in cases:
        q = _ref_quantize(den)
        mse = np.mean((clean.astype(np.float64) - q) ** 2)
        direct = 10 * np.log10(255.0**2 / mse)
        sk = peak_signal_noise_ratio(clean.astype(np.float64), q, data_range=255)
        got = np.asarray(psnr_jit(clean, den))
        assert got.shape == (1,)
        assert abs(got[0] - direct) < 1e-4
        assert abs(got[0] - sk) < 1e-4
    # batch form gives one value per image
    batch = np.stack(cases)
    got = np.asarray(psnr_jit(np.stack([clean] * 3), batch))
    assert got.shape == (3,)
    for i, den in enumerate(cases):
        assert abs(got[i] - psnr(clean, den)[0]) < 1e-5


def test_psnr_rounds_denoised_and_inf_on_identity() -> None:
    clean = np.full((8, 8, 3), 100, np.uint8)
    assert np.isinf(np.asarray(psnr(clean, clean.astype(np.float32) + 0.49))[0])
    # 100.5 rounds to 101 -> error 1 everywhere -> 20*log10(255)
    got = float(psnr(clean, clean.astype(np.float32) + 0.5)[0])
    assert abs(got - 20 * np.log10(255.0)) < 1e-4


def test_psnr_real_pair() -> None:
    gt, noisy = _real_pair()
    sk = peak_signal_noise_ratio(gt, noisy, data_range=255)
    assert abs(float(psnr_jit(gt, noisy)[0]) - sk) < 1e-4


def test_ssim_random_uint8_pairs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(3):
        a = rng.integers(0, 256, (40, 56, 3)).astype(np.uint8)
        b = rng.integers(0, 256, (40, 56, 3)).astype(np.uint8)
        assert abs(float(ssim_jit(a, b)[0]) - _sk_ssim(a, b)) < SSIM_TOL
        assert abs(float(ssim_jit(a, a)[0]) - 1.0) < 1e-6


@pytest.mark.parametrize("sigma", [0.5, 2.0, 10.0, 30.0, 80.0])
def test_ssim_smooth_vs_noisy(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    clean = np.round(_smooth_image(rng, 256, 256)).astype(np.uint8)
    noisy = clean + rng.normal(0, sigma, clean.shape)  # float64, unclipped: quantize clips
    ref = _sk_ssim(clean, noisy)
    got = float(ssim_jit(clean, noisy)[0])
    assert abs(got - ref) < SSIM_TOL, (got, ref)


def test_quantize_casts_to_float32_first() -> None:
    x = np.array([200.49999999, 200.4], np.float64)  # the first becomes 200.5 in float32
    np.testing.assert_array_equal(quantize(x), [201.0, 200.0])
    np.testing.assert_array_equal(np.asarray(quantize(jnp.asarray(x))), [201.0, 200.0])


def test_ssim_flat_region_is_accurate() -> None:
    # worst case for float32 cancellation: large mean, tiny variance
    rng = np.random.default_rng(2)
    clean = np.full((64, 64, 3), 231, np.uint8)
    noisy = clean + rng.normal(0, 0.6, clean.shape)
    assert abs(float(ssim_jit(clean, noisy)[0]) - _sk_ssim(clean, noisy)) < SSIM_TOL


def test_ssim_non_square() -> None:
    rng = np.random.default_rng(3)
    clean = np.round(_smooth_image(rng, 96, 160)).astype(np.uint8)
    noisy = clean + rng.normal(0, 12, clean.shape)
    got = np.asarray(ssim_jit(clean, noisy))
    assert got.shape == (1,)
    assert abs(got[0] - _sk_ssim(clean, noisy)) < SSIM_TOL


def test_ssim_batch() -> None:
    rng = np.random.default_rng(4)
    clean = np.stack([np.round(_smooth_image(rng, 48, 64)).astype(np.uint8) for _ in range(4)])
    noisy = clean + rng.normal(0, 1, clean.shape) * np.array([1, 5, 20, 60])[:, None, None, None]
    got = np.asarray(ssim_jit(clean, noisy))
    assert got.shape == (4,)
    ref = np.array([_sk_ssim(c, n) for c, n in zip(clean, noisy, strict=True)])
    np.testing.assert_allclose(got, ref, atol=SSIM_TOL, rtol=0)
    assert np.all(np.diff(ref) < 0)  # more noise -> lower SSIM (the images really differ)


def test_ssim_real_pair() -> None:
    gt, noisy = _real_pair()
    ref = float(structural_similarity(gt, noisy, channel_axis=-1, data_range=255))
    assert abs(float(ssim_jit(gt, noisy)[0]) - ref) < SSIM_TOL
    # a mildly perturbed "denoised" output, close to real denoiser scores
    rng = np.random.default_rng(5)
    den = gt + rng.normal(0, 2.0, gt.shape)
    assert abs(float(ssim_jit(gt, den)[0]) - _sk_ssim(gt, den)) < SSIM_TOL


def test_ssim_rejects_tiny_images() -> None:
    with pytest.raises(ValueError):
        ssim(np.zeros((6, 20, 3)), np.zeros((6, 20, 3)))


def test_evaluate_pairs() -> None:
    rng = np.random.default_rng(6)
    c1 = np.round(_smooth_image(rng, 32, 32)).astype(np.uint8)
    d1 = c1 + rng.normal(0, 5, c1.shape)
    c2 = np.round(_smooth_image(rng, 40, 24)).astype(np.uint8)
    d2 = c2 + rng.normal(0, 15, c2.shape)
    res = evaluate_pairs([(c1, d1), (c2, d2)])
    p = [
        peak_signal_noise_ratio(c.astype(np.float64), _ref_quantize(d), data_range=255)
        for c, d in [(c1, d1), (c2, d2)]
    ]
    s = [_sk_ssim(c1, d1), _sk_ssim(c2, d2)]
    assert res["count"] == 2
    assert all(type(v) is float for v in res["psnr_list"] + res["ssim_list"])
    assert type(res["psnr"]) is float and type(res["ssim"]) is float
    np.testing.assert_allclose(res["psnr_list"], p, atol=1e-4)
    np.testing.assert_allclose(res["ssim_list"], s, atol=SSIM_TOL)
    assert abs(res["psnr"] - np.mean(p)) < 1e-4
    assert abs(res["ssim"] - np.mean(s)) < SSIM_TOL
