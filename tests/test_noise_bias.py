"""The mean bias of camera sRGB noise (sassid_jax/bias.py) and its removal by the colour
anchor (colour_anchor.anchor with debias), checked against sampled truths."""

import dataclasses

import numpy as np
import pytest

from sassid_jax.inference import colour_anchor
from sassid_jax.noise import bias
from sassid_jax.noise import simulator as simulator


def _camera_samples(x: float, sigma_lin: float, n: int, seed: int) -> np.ndarray:
    """n sRGB values (levels, float) of a clean linear value x under Gaussian linear noise,
    clipped and gamma-encoded: the model's own forward process, sampled."""
    z = x + sigma_lin * np.random.default_rng(seed).standard_normal(n)
    return 255.0 * simulator.linear_to_srgb(z)


@pytest.mark.parametrize(
    ("x", "sigma_lin"),
    [(0.3, 0.05), (0.2, 0.08), (0.05, 0.03), (0.5, 0.1), (0.9, 0.1), (0.01, 0.02)],
)
def test_table_gives_the_sampled_bias_from_the_sampled_mean_and_std(x, sigma_lin):
    y = _camera_samples(x, sigma_lin, 400_000, seed=1)
    truth = y.mean() - 255.0 * float(simulator.linear_to_srgb(np.float64(x)))
    got = float(bias.bias(np.float32(y.mean()), np.float32(y.std())))
    assert abs(truth) > 0.3  # a case where the bias matters
    assert got == pytest.approx(truth, abs=max(0.4, 0.1 * abs(truth))), (truth, got)


def test_no_noise_no_bias_and_the_table_is_finite():
    table = bias.bias_table()
    assert table.shape == (256, int(bias.STD_MAX / bias.STD_STEP) + 1)
    assert np.isfinite(table).all()
    np.testing.assert_allclose(table[:, 0], 0.0, atol=0.05)
    # gamma is concave: mid-tones are biased down; clipping at black biases shadows up
    assert table[128, 40] < -1.0 and table[10, 40] > 1.0


def test_anchor_removes_the_bias_of_a_flat_patch():
    clean_level = 90.0
    x = float(
        np.interp(
            clean_level / 255,
            simulator.linear_to_srgb(np.linspace(0, 1, 4001)),
            np.linspace(0, 1, 4001),
        )
    )
    noisy = _camera_samples(x, 0.06, 96 * 96 * 3, seed=2).reshape(96, 96, 3).astype(np.float32)
    perfect = np.full_like(noisy, clean_level)  # a denoiser that found the clean patch
    kept = colour_anchor.anchor_image(perfect, noisy, 8.0, debias=False)
    fixed = colour_anchor.anchor_image(perfect, noisy, 8.0)
    assert noisy.mean() - clean_level < -3.0  # the input's own bias
    assert abs(kept.mean() - noisy.mean()) < 0.2  # without debias the anchor keeps it
    assert abs(fixed.mean() - clean_level) < 0.5, fixed.mean()


def test_debias_brings_a_simulated_camera_photo_closer_to_clean():
    """The simulator's full ISP (mosaic, demosaic, colour matrix, clip, gamma): the anchored
    clean image (a perfect denoiser) is closer to clean with the bias removed than without."""
    yy, xx = np.mgrid[:128, :128] / 128.0
    clean = np.stack([40 + 150 * xx, 30 + 120 * yy, 60 + 80 * xx * yy], -1).astype(np.uint8)
    rng = np.random.default_rng(3)
    params = simulator.sample_noise_params(rng)
    params = dataclasses.replace(params, shot=0.02, read=1e-4, tone_curve=False)
    noisy, _ = simulator.simulate_camera_noise(clean, rng, params)
    ref = clean.astype(np.float32)
    mse = lambda a: float(np.mean((a - ref) ** 2))  # noqa: E731
    kept = colour_anchor.anchor_image(ref, noisy, 8.0, debias=False)
    fixed = colour_anchor.anchor_image(ref, noisy, 8.0)
    assert mse(fixed) < 0.7 * mse(kept), (mse(fixed), mse(kept))
