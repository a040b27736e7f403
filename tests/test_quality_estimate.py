"""MC-SURE quality estimate: exact checks on noise of known covariance, and real SIDD noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from sassid_jax.inference import colour_anchor
from sassid_jax.inference import quality_estimate as qe
from sassid_jax.io import checkpoints, photos
from sassid_jax.noise import analysis as noise_analysis
from sassid_jax.noise.analysis import NoiseAnalysis

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SIDD = DATA / "sidd_pair"
LAGS = 7


def known(std=(20.0, 20.0, 20.0), lag1=0.0, cross=None) -> NoiseAnalysis:
    """A NoiseAnalysis of stationary noise: correlation lag1 at distance 1 (both axes)."""
    cross = np.eye(3) if cross is None else cross
    corr = (1.0, lag1) + (0.0,) * (LAGS - 2)
    return NoiseAnalysis(
        std=tuple(std), horizontal=corr, vertical=corr,
        cross_channel=tuple(tuple(float(v) for v in r) for r in cross), ring=(0.0,) * 6,
        long_range=0.0, level_function=((0.0, tuple(std)), (255.0, tuple(std))),
        blind_size=3, images=1, blocks=1,
    )  # fmt: skip


def scene(size: int = 256, seed: int = 0) -> np.ndarray:
    """(size, size, 3) float clean image on [40, 215]: smooth shapes plus fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 128 + 50 * np.sin(6 * xx + 3 * yy) * np.cos(4 * yy)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size, 3)), (1.5, 1.5, 0)) * 60
    return np.clip(base[..., None] + texture + np.array([10.0, 0.0, -10.0]), 40, 215)


def linear_fn(a: float, sigma: float):
    return lambda x: a * x + (1 - a) * colour_anchor.blur(x, sigma)


def true_mse(fn, noisy: np.ndarray, clean: np.ndarray) -> float:
    out = np.asarray(fn(jnp.asarray(noisy[None], jnp.float32)))[0].astype(np.float64)
    return float(np.mean((out - clean) ** 2))


def white_case(std=20.0, seed=1):
    clean = scene()
    noisy = clean + np.random.default_rng(seed).normal(0, std, clean.shape)
    return clean, noisy.astype(np.float32), known((std,) * 3)


def correlated_case(seed=2):
    """Noise with lag-1 correlation 0.5 on both axes (2-tap box per axis, circular) and
    channels mixed by a fixed matrix: an exactly known separable covariance."""
    clean = scene()
    z = np.random.default_rng(seed).normal(0, 1, clean.shape)
    z = (z + np.roll(z, 1, 0)) / np.sqrt(2)
    z = (z + np.roll(z, 1, 1)) / np.sqrt(2)
    mix = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.3], [0.0, 0.3, 1.0]])
    n = z @ mix.T
    cov = mix @ mix.T
    std = np.sqrt(np.diag(cov))
    analysis = known(15 * std, 0.5, cov / np.outer(std, std))
    return clean, (clean + 15 * n).astype(np.float32), analysis


@pytest.mark.parametrize("case", [white_case, correlated_case])
@pytest.mark.parametrize("a,sigma", [(0.0, 1.0), (0.3, 2.0)])
def test_sure_matches_true_mse_of_linear_denoiser(case, a, sigma):
    clean, noisy, analysis = case()
    fn = linear_fn(a, sigma)
    est = qe.estimate_quality(fn, noisy, analysis, seed=0, probes=2)
    true_out = true_mse(fn, noisy, clean)
    true_noisy = float(np.mean((noisy - clean) ** 2))
    assert abs(est.noise_variance - true_noisy) < 0.02 * true_noisy
    est_out = qe.blend_mse(1.0, est.distance, est.noise_variance, est.divergence)
    # SURE's own error on one noise draw is O(s2 / sqrt(N)); 3% of s2 over 196k values
    assert abs(est_out - true_out) < 0.03 * true_noisy, (est_out, true_out)
    assert abs(est.output_psnr - qe.psnr_from_mse(true_out)) < 0.3


def test_blend_weight_minimises_true_mse():
    """A heavy blur on mild noise is worse than the input; w* < 1 is close to the true best."""
    clean, noisy, analysis = white_case(std=6.0)
    fn = linear_fn(0.0, 3.0)
    est = qe.estimate_quality(fn, noisy, analysis, seed=0, probes=2)
    out = np.asarray(fn(jnp.asarray(noisy[None])))[0].astype(np.float64)
    true_out = np.mean((out - clean) ** 2)
    true_noisy = np.mean((noisy - clean) ** 2)
    assert true_out > true_noisy and est.gain_db < 0 and est.output_psnr < est.noisy_psnr
    diff = out - noisy
    best = np.sum(diff * (clean - noisy)) / np.sum(diff**2)
    assert 0 < est.blend_weight < 1 and abs(est.blend_weight - best) < 0.05
    blended = qe.blend(out, noisy, est.blend_weight)
    true_blend = np.mean((blended - clean) ** 2)
    assert true_blend < min(true_out, true_noisy)
    assert abs(est.blend_psnr - qe.psnr_from_mse(true_blend)) < 0.2


def test_identity_gives_no_gain():
    clean, noisy, analysis = white_case()
    est = qe.estimate_quality(lambda x: x, noisy, analysis, seed=0, probes=1)
    assert est.distance == 0 and abs(est.gain_db) < 0.05
    assert abs(est.blend_psnr - est.noisy_psnr) < 0.05


def test_blend_algebra():
    d, s2, c = 300.0, 400.0, 150.0
    w = qe.blend_weight(d, s2, c)
    assert w == pytest.approx((s2 - c) / d)
    ws = np.linspace(0, 1, 101)
    assert qe.blend_mse(w, d, s2, c) <= min(qe.blend_mse(v, d, s2, c) for v in ws) + 1e-9
    assert qe.blend_mse(0.0, d, s2, c) == s2 and qe.blend_mse(1.0, d, s2, c) == d - s2 + 2 * c
    assert qe.blend_weight(50.0, s2, c) == 1.0 and qe.blend_weight(d, s2, 500.0) == 0.0
    noisy, out = np.full((2, 2, 3), 10, np.uint8), np.full((2, 2, 3), 20.0)
    np.testing.assert_allclose(qe.blend(out, noisy, 0.25), 12.5)


def test_probe_statistics_follow_the_analysis():
    _, _, analysis = correlated_case()
    std_map = np.broadcast_to(np.array(analysis.std), (256, 256, 3))
    b = qe.synthesize_noise(
        std_map, analysis, qe.separable_acf(analysis), np.random.default_rng(0)
    ).astype(np.float64)
    np.testing.assert_allclose(b.std(axis=(0, 1)), analysis.std, rtol=0.03)
    z = b / np.array(analysis.std)
    corr = np.corrcoef(z.reshape(-1, 3).T)
    np.testing.assert_allclose(corr, analysis.cross_channel, atol=0.02)
    for axis in (0, 1):
        lag1 = np.mean(z * np.roll(z, 1, axis)) / np.mean(z * z)
        lag2 = np.mean(z * np.roll(z, 2, axis)) / np.mean(z * z)
        assert abs(lag1 - 0.5) < 0.02 and abs(lag2) < 0.02


def test_crops_and_bad_input():
    assert qe.crop_boxes(256, 224, 8, 0) == [(0, 0, 256, 224)]
    boxes = qe.crop_boxes(600, 700, 8, 0)
    assert len(boxes) == 8 and boxes == qe.crop_boxes(600, 700, 8, 0)
    assert all(b[2:] == (256, 256) and b[0] + 256 <= 600 and b[1] + 256 <= 700 for b in boxes)
    with pytest.raises(qe.QualityEstimateError, match="at least 32x32"):
        qe.crop_boxes(20, 100, 8, 0)
    with pytest.raises(qe.QualityEstimateError, match=r"\(H, W, 3\)"):
        qe.estimate_quality(lambda x: x, np.zeros((64, 64), np.uint8))


@pytest.mark.skipif(not SIDD.exists(), reason="needs ../shared/data/sidd_pair")
def test_noise_acf_extends_the_analysis_lags():
    noisy = photos.read_rgb8(SIDD / "noisy.png")
    analysis = noise_analysis.analyze_noise([noisy])
    acf = np.asarray(analysis.acf)
    lag = acf.shape[0] // 2
    np.testing.assert_allclose(acf[lag, lag:], analysis.horizontal, atol=1e-9)
    np.testing.assert_allclose(acf[lag:, lag], analysis.vertical, atol=1e-9)
    # demosaiced noise: the diagonal neighbour correlates more than the separable model says
    separable = qe.separable_acf(dataclasses.replace(analysis, acf=()))
    assert acf[lag + 1, lag + 1] > separable[lag + 1, lag + 1] + 0.03


@pytest.mark.skipif(not SIDD.exists(), reason="needs ../shared/data/sidd_pair")
@pytest.mark.parametrize(
    "network",
    [
        "blur",
        pytest.param(
            "lan",
            marks=pytest.mark.xfail(
                strict=True, reason="known: real sRGB noise is not Gaussian; LAN ~5 dB low"
            ),
        ),
    ],
)
def test_real_sidd_noise_within_1db(network):
    """Real SIDD noise, noise analysed from the noisy photo only: the estimate is within 1 dB
    of the truth for a fixed blur and for the authors' LAN trained on SIDD."""
    noisy = photos.read_rgb8(SIDD / "noisy.png")
    clean = photos.read_rgb8(SIDD / "gt.png").astype(np.float64)
    if network == "blur":
        fn = linear_fn(0.0, 1.5)
    else:
        weights = DATA / "weights" / "official_LAN.pth"
        if not weights.exists():
            pytest.skip("needs ../shared/data/weights/official_LAN.pth")
        module, params = checkpoints.load_network(weights, "lan")
        fn = lambda x: module.apply({"params": params}, x)  # noqa: E731
    est = qe.estimate_quality(fn, noisy, None, seed=0, probes=1)
    true_out = true_mse(fn, noisy.astype(np.float32), clean)
    true_noisy = float(np.mean((noisy - clean) ** 2))
    assert abs(est.noisy_psnr - qe.psnr_from_mse(true_noisy)) < 1.0
    assert abs(est.output_psnr - qe.psnr_from_mse(true_out)) < 1.0, est.summary()
