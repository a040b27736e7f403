"""Noise analysis from noisy photos alone, checked against truths known without it: the
camera simulator (noisy - clean), correlated Gaussian noise of known autocorrelation and the
real SIDD pair (noisy - ground truth)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from absl import logging as absl_logging
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from configs import own_photos
from sassid_jax import configuration
from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.io.photos import Photo, read_rgb8, write_photo
from sassid_jax.modes.analyze import JSON_NAME, PLOT_NAME, PLOT_SIZE, run_analyze
from sassid_jax.noise.analysis import (
    MAX_LAG,
    TEXTURE_WARNING,
    NoiseAnalysisError,
    analyze_noise,
    blind_size_from_acf,
)
from sassid_jax.noise.blind_size import resolve_blind_size, resolve_config_blind_size
from sassid_jax.noise.simulator import noise_autocorrelation, simulate_camera_noise

LAG_TOLERANCE = 0.1  # per lag, horizontal and vertical
STD_TOLERANCE = 0.25  # relative, per channel (docs/noise.md#validation states it)
WINDOW = 2 * MAX_LAG


def _truth(noisy: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-direction lag correlations (channels pooled, like noise_autocorrelation), per
    channel std, cross-channel correlation and 2-D autocorrelation of noisy - clean."""
    r = noisy.astype(np.float64) - clean.astype(np.float64)
    r -= r.mean(axis=(0, 1))
    energy = np.sum(r * r)
    h, w = r.shape[:2]
    acf = np.zeros((2 * WINDOW + 1, 2 * WINDOW + 1))
    for dy in range(-WINDOW, WINDOW + 1):
        for dx in range(-WINDOW, WINDOW + 1):
            a = r[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            b = r[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            acf[dy + WINDOW, dx + WINDOW] = np.sum(a * b) / a.size / (energy / r.size)
    return {
        "horizontal": acf[WINDOW, WINDOW : WINDOW + MAX_LAG + 1],
        "vertical": acf[WINDOW : WINDOW + MAX_LAG + 1, WINDOW],
        "std": r.std(axis=(0, 1)),
        "cross": np.corrcoef(r.reshape(-1, 3).T),
        "acf": acf,
    }


def _check_against_truth(noisy: np.ndarray, clean: np.ndarray) -> None:
    estimate, truth = analyze_noise([noisy]), _truth(noisy, clean)
    for direction in ("horizontal", "vertical"):
        err = np.abs(np.array(getattr(estimate, direction)) - truth[direction])
        assert err.max() <= LAG_TOLERANCE, (direction, getattr(estimate, direction), truth)
    for lag in (1, 2):  # the per-direction truth agrees with the simulator's own estimator
        pooled = (truth["horizontal"][lag] + truth["vertical"][lag]) / 2
        assert pooled == pytest.approx(noise_autocorrelation(noisy, clean, lag), abs=0.01)
    ratio = np.array(estimate.std) / truth["std"]
    assert np.all(np.abs(ratio - 1) <= STD_TOLERANCE), (estimate.std, truth["std"])
    assert np.abs(np.array(estimate.cross_channel) - truth["cross"]).max() <= LAG_TOLERANCE
    assert estimate.blind_size == blind_size_from_acf(truth["acf"])


@pytest.mark.parametrize("seed", [0, 1])
def test_camera_simulator_noise_from_the_noisy_photo_alone(seed):
    clean = skdata.rocket()  # a photo with flat sky, as the method needs
    noisy, _ = simulate_camera_noise(clean, np.random.default_rng(seed))
    _check_against_truth(noisy, clean)


def _smooth_scene(size: int = 256) -> np.ndarray:
    """A clean piecewise smooth RGB image in [60, 190] (no clipping with the noise below)."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 70 + 100 * np.stack([x, y, (x + y) / 2], axis=-1)
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05)[..., None]
    return np.where(disc, base * 0.7 + 20, base)


def _gaussian_acf(width: float) -> np.ndarray:
    """Autocorrelation of white noise blurred by a Gaussian of std `width`: exp(-d^2/4w^2)."""
    d = np.arange(-WINDOW, WINDOW + 1)
    if width == 0:
        return np.outer(d == 0, d == 0).astype(float)
    return np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (4 * width**2))


@pytest.mark.parametrize(("width", "expected"), [(0.0, 3), (0.7, 5), (1.2, 7), (1.5, 9)])
def test_blind_size_of_noise_with_known_correlation(width, expected):
    # The rule on the analytic autocorrelation (rings hidden: 1; 2; 3; 4).
    assert blind_size_from_acf(_gaussian_acf(width)) == expected
    # Width 1.5 (lag-3 correlation 0.37): the plane removal reads its far rings low (limit 2
    # in docs/noise.md#limits); the estimate then hides one ring fewer.
    expected_estimate = expected - 2 if width >= 1.5 else expected
    rng = np.random.default_rng(7)
    white = rng.standard_normal((256, 256, 3))
    noise = ndimage.gaussian_filter(white, (width, width, 0)) if width else white
    noise = noise / noise.std(axis=(0, 1)) * np.array([6.0, 4.0, 8.0])
    clean = _smooth_scene()
    noisy = np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)
    estimate = analyze_noise([noisy])
    truth = _gaussian_acf(width)[WINDOW, WINDOW : WINDOW + MAX_LAG + 1]
    for direction in (estimate.horizontal, estimate.vertical):
        assert np.abs(np.array(direction) - truth).max() <= LAG_TOLERANCE, (direction, truth)
    assert estimate.blind_size == expected_estimate
    assert resolve_blind_size("auto", [noisy]) == expected_estimate


def test_sidd_pair_from_the_noisy_photo_alone(shared_data):
    pair = shared_data / "sidd_pair"
    if not (pair / "noisy.png").is_file():
        pytest.skip(f"{pair} is absent")
    noisy, clean = read_rgb8(pair / "noisy.png"), read_rgb8(pair / "gt.png")
    _check_against_truth(noisy, clean)
    # README of the shared data: lag-1 0.43, lag-2 0.05; the ring rule gives 5 (see
    # blind_size_from_acf: ring 2 correlates ~0.17, ring 3 ~0.03).
    assert analyze_noise([noisy]).blind_size == 5


def test_texture_only_inflates_the_estimate():
    """Limit (1) of the method: on a textured photo the estimate errs upwards, the safe way."""
    clean = skdata.chelsea()
    noisy, _ = simulate_camera_noise(clean, np.random.default_rng(3))
    estimate, truth = analyze_noise([noisy]), _truth(noisy, clean)
    assert np.min(np.array(estimate.horizontal) - truth["horizontal"]) >= -0.05
    assert np.min(np.array(estimate.std) / truth["std"]) >= 1 - STD_TOLERANCE


def test_unusable_photos_are_user_errors():
    with pytest.raises(NoiseAnalysisError, match="at least 24x24"):
        analyze_noise([np.zeros((20, 64, 3), np.uint8)])
    with pytest.raises(NoiseAnalysisError, match="clipped"):
        analyze_noise([np.full((64, 64, 3), 255, np.uint8)])
    with pytest.raises(NoiseAnalysisError, match="at least one photo"):
        analyze_noise([])


def test_resolve_blind_size_values():
    assert resolve_blind_size(9, []) == 9
    assert resolve_blind_size("7", []) == 7  # a command-line override of the "auto" field
    for bad in (4, 0, "big", True, 2.0):
        with pytest.raises(ConfigError, match="networks.bnn.blind_size"):
            resolve_blind_size(bad, [])


def test_resolve_config_blind_size_logs_and_sets_the_int(caplog):
    config = own_photos.get_config()
    assert config.networks.bnn.blind_size == "auto"
    configuration.validate_config(config)  # "auto" is a valid value
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.standard_normal((256, 256, 3)), (0.7, 0.7, 0))
    photo = np.clip(np.round(_smooth_scene() + 30 * noise), 0, 255).astype(np.uint8)
    absl_logging.get_absl_logger().propagate = True
    with caplog.at_level(logging.INFO):
        resolved = resolve_config_blind_size(config, [photo])
    assert resolved.networks.bnn.blind_size == 5
    assert config.networks.bnn.blind_size == "auto"  # the input config is left alone
    assert any(
        "lag-1" in r.getMessage() and "blind size 5" in r.getMessage() for r in caplog.records
    )
    assert resolve_config_blind_size(resolved, []) is resolved
    with config.ignore_type():
        config.networks.lan.blind_size = "auto"  # LAN's blind size stays an int
    with pytest.raises(ConfigError, match="networks.lan.blind_size"):
        configuration.validate_config(config)


def test_run_analyze_writes_json_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for name in ("a.png", "b.png"):
        noisy = np.clip(np.round(_smooth_scene(96) + 5 * rng.standard_normal((96, 96, 3))), 0, 255)
        write_photo(folder / name, Photo(noisy.astype(np.uint8)))
    write_photo(folder / "tiny.png", Photo(np.zeros((16, 16, 3), np.uint8)))
    out = tmp_path / "out"
    with pytest.raises(UserInputError, match=r"tiny\.png: 16x16 px, too small .*at least 24 px"):
        run_analyze(str(folder), str(out))
    (folder / "tiny.png").unlink()
    assert run_analyze(str(folder), str(out)) == 0
    report = json.loads((out / JSON_NAME).read_text())
    assert set(report["photos"]) == {"a.png", "b.png"}
    assert report["all"]["images"] == 2
    assert len(report["all"]["correlation_horizontal"]) == MAX_LAG + 1
    assert report["all"]["std_8bit"]["R"] == pytest.approx(5.0, rel=STD_TOLERANCE)
    plot = read_rgb8(out / PLOT_NAME)
    assert plot.shape == (PLOT_SIZE[1], PLOT_SIZE[0], 3) and plot.min() < 100  # drawn


def test_training_resolves_auto_blind_size_before_config_json(tmp_path):
    """A run with networks.bnn.blind_size='auto' analyses its training photos and stores the
    int it chose in config.json (so a resume compares like with like)."""
    import json

    from sassid_jax import train
    from tests.test_train import tiny_config

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):  # smooth photos with white noise: nothing correlates beyond lag 0
        base = np.linspace(60, 190, 96)[None, :, None] * np.ones((96, 1, 3))
        noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"p{i}.png")
    config = tiny_config(tmp_path / "tfds")
    config.dataset.name, config.dataset.noisy_dir = "image_folder", str(folder)
    with config.ignore_type():
        config.networks.bnn.blind_size = "auto"
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path / "run", stop_after=("bnn", 1))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["networks"]["bnn"]["blind_size"] == 3


def test_flat_photo_reports_no_noise_and_texture_warns(caplog):
    """A perfectly flat photo has no noise to measure: an error saying so (not blind size 13
    blamed on texture); a periodic texture (negative long-range correlation) warns."""
    with pytest.raises(NoiseAnalysisError, match="no noise measurable"):
        analyze_noise([np.full((96, 96, 3), 100, np.uint8)])
    yy, xx = np.mgrid[:128, :128]
    texture = np.clip((np.sin(xx / 1.5) + np.sin(yy / 2.3)) * 60 + 128, 0, 255).astype(np.uint8)
    absl_logging.get_absl_logger().propagate = True
    with caplog.at_level(logging.WARNING):
        result = analyze_noise([np.stack([texture] * 3, axis=-1)])
    assert abs(result.long_range) > TEXTURE_WARNING
    assert "texture inflates the estimates" in caplog.text
