"""Tests of the camera-pipeline noise simulator and the noise autocorrelation estimator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from sassid_jax.noise.simulator import (
    NoiseParams,
    NoiseRange,
    noise_autocorrelation,
    sample_noise_params,
    simulate_camera_noise,
)

SIDD_PAIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sidd_pair"
PHOTOS = ("astronaut", "chelsea", "immunohistochemistry", "rocket")
SAMPLES_PER_PHOTO = 6


def _psnr(noisy: np.ndarray, clean: np.ndarray) -> float:
    mse = np.mean((noisy.astype(np.float64) - clean.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def default_stats() -> dict[str, np.ndarray]:
    """Lag-1, lag-2 autocorrelation and PSNR of default-range samples on a few photos."""
    rng = np.random.default_rng(1234)
    lag1, lag2, psnr = [], [], []
    for photo in PHOTOS:
        clean = getattr(skdata, photo)()
        for _ in range(SAMPLES_PER_PHOTO):
            noisy, _ = simulate_camera_noise(clean, rng)
            lag1.append(noise_autocorrelation(noisy, clean, 1))
            lag2.append(noise_autocorrelation(noisy, clean, 2))
            psnr.append(_psnr(noisy, clean))
    return {"lag1": np.array(lag1), "lag2": np.array(lag2), "psnr": np.array(psnr)}


def test_default_noise_is_spatially_correlated_like_real_srgb_noise(default_stats):
    lag1, lag2 = default_stats["lag1"], default_stats["lag2"]
    assert np.all((lag1 >= 0.3) & (lag1 <= 0.6)), lag1
    assert np.all(lag2 < 0.15), lag2
    # On average close to the SIDD pair (0.43 / 0.05).
    assert 0.36 < lag1.mean() < 0.50, lag1.mean()
    assert lag2.mean() < 0.1, lag2.mean()


def test_default_noise_psnr_spread(default_stats):
    psnr = default_stats["psnr"]
    assert np.all((psnr >= 18.0) & (psnr <= 38.0)), psnr
    assert psnr.min() < 25.0, psnr
    assert psnr.max() > 30.0, psnr


def test_noise_is_signal_dependent():
    """Brighter raw signal -> larger shot noise in linear space; check via flat patches."""
    rng = np.random.default_rng(0)
    params = dataclasses.replace(sample_noise_params(rng), tone_curve=False)
    params = dataclasses.replace(params, shot=5e-3, read=1e-6)
    dark = np.full((128, 128, 3), 40, np.uint8)
    bright = np.full((128, 128, 3), 200, np.uint8)
    noisy_dark, _ = simulate_camera_noise(dark, np.random.default_rng(1), params)
    noisy_bright, _ = simulate_camera_noise(bright, np.random.default_rng(1), params)
    # In sRGB the gamma compresses bright noise, but both must be clearly noisy and differ.
    std_dark = (noisy_dark.astype(float) - dark).std()
    std_bright = (noisy_bright.astype(float) - bright).std()
    assert std_dark > 1.0 and std_bright > 1.0
    assert abs(std_dark - std_bright) > 0.5


def test_zero_noise_returns_clean_image():
    rng = np.random.default_rng(0)
    params = dataclasses.replace(sample_noise_params(rng), shot=0.0, read=0.0)
    clean = skdata.astronaut()[:128, :160]
    noisy, _ = simulate_camera_noise(clean, rng, params)
    assert np.abs(noisy.astype(int) - clean.astype(int)).max() <= 1


def test_shapes_dtype_and_params():
    clean = skdata.chelsea()[:101, :77]  # odd sizes
    noisy, params = simulate_camera_noise(clean, np.random.default_rng(3))
    assert noisy.shape == clean.shape and noisy.dtype == np.uint8
    assert isinstance(params, NoiseParams)
    lo, hi = NoiseRange().shot
    assert lo <= params.shot <= hi
    assert np.any(noisy != clean)


def test_deterministic_for_a_seed():
    clean = skdata.astronaut()[:96, :96]
    a, pa = simulate_camera_noise(clean, np.random.default_rng(7))
    b, pb = simulate_camera_noise(clean, np.random.default_rng(7))
    c, _ = simulate_camera_noise(clean, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert pa == pb
    assert np.any(a != c)


def test_given_params_are_used():
    clean = skdata.astronaut()[:64, :64]
    params = sample_noise_params(np.random.default_rng(0))
    _, used = simulate_camera_noise(clean, np.random.default_rng(1), params)
    assert used == params


def test_sample_params_within_range():
    noise_range = NoiseRange()
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sample_noise_params(rng, noise_range)
        assert noise_range.shot[0] <= p.shot <= noise_range.shot[1]
        assert noise_range.red_gain[0] <= p.red_gain <= noise_range.red_gain[1]
        assert noise_range.blue_gain[0] <= p.blue_gain <= noise_range.blue_gain[1]
        np.testing.assert_allclose(np.sum(p.rgb2cam, axis=1), 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((16, 16), np.uint8),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((16, 16, 3), np.float32),
    ],
)
def test_invalid_input_raises(bad):
    with pytest.raises(ValueError, match=r"shape|dtype"):
        simulate_camera_noise(bad, np.random.default_rng(0))


def test_autocorrelation_of_white_noise_is_zero_and_of_blurred_noise_positive():
    rng = np.random.default_rng(0)
    clean = np.full((256, 256, 3), 128.0)
    white = clean + rng.normal(0, 5, clean.shape)
    assert abs(noise_autocorrelation(white, clean, 1)) < 0.02
    box = white.copy()
    box[:, 1:] = (white[:, 1:] + white[:, :-1]) / 2  # horizontal 2-tap average
    # Horizontal lag-1 correlation 0.5, vertical 0 -> averaged 0.25.
    assert noise_autocorrelation(box, clean, 1) == pytest.approx(0.25, abs=0.03)


def test_autocorrelation_on_real_sidd_pair():
    if not SIDD_PAIR.is_dir():
        pytest.skip(f"real SIDD pair {SIDD_PAIR} is absent")
    from PIL import Image

    noisy = np.asarray(Image.open(SIDD_PAIR / "noisy.png").convert("RGB"))
    clean = np.asarray(Image.open(SIDD_PAIR / "gt.png").convert("RGB"))
    assert noise_autocorrelation(noisy, clean, 1) == pytest.approx(0.43, abs=0.03)
    assert noise_autocorrelation(noisy, clean, 2) == pytest.approx(0.05, abs=0.03)
