"""Colour anchoring (inference/colour_anchor.py), the colour-shift metric, and their use in the
eval / denoise paths."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sassid_jax.errors import ConfigError
from sassid_jax.evaluation import metrics
from sassid_jax.inference import colour_anchor, predict
from sassid_jax.modes import denoise as dn


def _scene(h=96, w=80, seed=0):
    """A smooth clean image with edges, (h, w, 3) float32 on [30, 220]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([120 + 60 * np.sin(4 * xx), 90 + 50 * yy, 150 - 40 * xx * yy], -1)
    base[h // 3 : h // 2, w // 4 : w // 2] += 40  # a bright square: an edge to keep
    return np.clip(base + rng.normal(0, 2, base.shape), 30, 220).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.7, 3.0, 8.0])
@pytest.mark.parametrize("shape", [(40, 50, 3), (9, 7, 3), (2, 33, 17, 3)])
def test_blur_equals_scipy_gaussian_filter(sigma, shape):
    x = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    got = np.asarray(colour_anchor.blur(x, sigma))
    spatial = (0, sigma, sigma, 0) if x.ndim == 4 else (sigma, sigma, 0)
    want = ndimage.gaussian_filter(x.astype(np.float64), spatial, mode="reflect", truncate=3.0)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_anchor_removes_a_networks_colour_shift_and_keeps_its_details():
    clean = _scene()
    rng = np.random.default_rng(2)
    noisy = clean + rng.normal(0, 10, clean.shape).astype(np.float32)
    # a "denoiser" that is right up to a colour cast of its own (+6 R, -4 B)
    shifted = clean + np.float32([6.0, 0.0, -4.0])
    anchored = colour_anchor.anchor_image(shifted, noisy, 8.0, debias=False)  # white noise
    noisy_shift = metrics.colour_shift(clean, noisy)[0]
    before = metrics.colour_shift(clean, shifted)[0]
    after = metrics.colour_shift(clean, anchored)[0]
    np.testing.assert_allclose(before, [6.0, 0.0, -4.0], atol=0.6)
    assert np.all(np.abs(after) <= np.abs(noisy_shift) + 0.5), (after, noisy_shift)
    # the details stay: the anchored image is far closer to clean than the noisy input
    psnr = lambda a: float(metrics.psnr(clean, a)[0])  # noqa: E731
    assert psnr(anchored) > psnr(shifted) + 3 and psnr(anchored) > psnr(noisy) + 10


def test_anchor_without_debias_keeps_the_inputs_mean_colour_and_zero_sigma_is_off():
    rng = np.random.default_rng(3)
    noisy = rng.uniform(0, 255, (2, 64, 48, 3)).astype(np.float32)
    output = rng.uniform(0, 255, noisy.shape).astype(np.float32)
    anchored = np.asarray(colour_anchor.anchor(output, noisy, 5.0, debias=False))
    np.testing.assert_allclose(anchored.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), atol=0.5)
    np.testing.assert_array_equal(colour_anchor.anchor_image(output, noisy, 0.0), output)


def test_colour_shift_metric_is_signed_per_channel_after_rounding():
    clean = np.full((1, 8, 8, 3), 100, np.uint8)
    out = np.full((1, 8, 8, 3), 100.0, np.float32) + np.float32([2.4, -3.6, 0.0])
    np.testing.assert_allclose(metrics.colour_shift(clean, out), [[2.0, -4.0, 0.0]])
    scores = metrics.evaluate_pairs([(clean[0], out[0]), (clean[0], clean[0])])
    assert scores["shift_list"] == [[2.0, -4.0, 0.0], [0.0, 0.0, 0.0]]
    assert scores["shift"] == [1.0, 2.0, 0.0]


@pytest.mark.parametrize("value", [-1.0, "8", True, float("nan")])
def test_config_sigma_refuses_bad_values_in_one_line(value):
    config = {"postprocess": {"colour_sigma": value}}  # as read from a config.json
    with pytest.raises(ConfigError, match="postprocess.colour_sigma") as info:
        colour_anchor.config_sigma(config)
    assert "\n" not in str(info.value)


def test_config_sigma_of_old_runs_is_off():
    assert colour_anchor.config_sigma({"eval": {}}) == 0.0
    assert colour_anchor.config_sigma({"postprocess": {"colour_sigma": 4}}) == 4.0


def test_denoise_images_and_denoise_mode_anchor(tmp_path, monkeypatch, capsys):
    clean = _scene(64, 64)
    noisy = np.clip(clean + np.random.default_rng(4).normal(0, 5, clean.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    cast = np.float32([8.0, -8.0, 0.0])
    apply_fn = lambda x: np.asarray(x) * 0 + clean + cast  # noqa: E731  (cast clean image)
    (raw,) = predict.denoise_images(apply_fn, [noisy])
    (fixed,) = predict.denoise_images(apply_fn, [noisy], colour_sigma=8.0)
    assert np.abs(metrics.colour_shift(clean, raw)[0] - cast).max() < 0.6
    assert np.abs(metrics.colour_shift(clean, fixed)[0]).max() < 1.0
    # --mode denoise: the run's postprocess.colour_sigma, or the flag
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"postprocess": {"colour_sigma": 8.0}}))
    assert dn.denoiser_settings(run)[0] == 8.0
    assert dn.denoiser_settings(tmp_path / "authors.pth")[0] == 0.0
    monkeypatch.setattr(
        dn,
        "load_denoiser",
        lambda checkpoint, network="unet", arch=None, attributes=None: (None, None),
    )
    monkeypatch.setattr(predict, "jit_apply", lambda module, params: apply_fn)
    Image.fromarray(noisy).save(tmp_path / "in.png")
    for sigma, name, limit in ((None, "a.png", 1.0), (0.0, "b.png", 9.0)):
        code = dn.run_denoise(
            str(run),
            str(tmp_path / "in.png"),
            str(tmp_path / name),
            colour_sigma=sigma,
            safeguard="none",
        )
        assert code == 0, capsys.readouterr()
        out = np.asarray(Image.open(tmp_path / name)).astype(np.float32)
        shift = np.abs(out.mean((0, 1)) - clean.mean((0, 1))).max()
        assert (shift < limit) and (sigma is None or shift > 7.0), (sigma, shift)
    code = dn.run_denoise(
        str(run),
        str(tmp_path / "in.png"),
        str(tmp_path / "c.png"),
        colour_sigma=-2.0,
        safeguard="none",
    )
    assert code == 2 and "--colour_sigma" in capsys.readouterr().err
