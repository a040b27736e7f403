"""The safeguard (inference/safeguard.py): estimate, blend when no better, config, messages."""

import numpy as np
import pytest

from sassid_jax.errors import ConfigError
from sassid_jax.evaluation import metrics
from sassid_jax.inference import colour_anchor, safeguard


def _photo(std: float, seed: int = 0, size: int = 256):
    """A clean photo, smooth on its left three quarters (where the noise can be measured)
    and finely striped on the rest (detail a blur destroys), and its noisy version (white
    noise of `std`)."""
    yy, xx = np.mgrid[:size, :size] / size
    clean = np.stack([90 + 80 * xx, 70 + 60 * yy, 160 - 50 * xx * yy], -1)
    stripes = 30 * np.sin(2 * np.pi * np.arange(size) / 4)[None, :, None]
    clean[:, 3 * size // 4 :] += stripes[:, 3 * size // 4 :]
    noisy = clean + np.random.default_rng(seed).normal(0, std, clean.shape)
    return clean, np.clip(np.floor(noisy + 0.5), 0, 255).astype(np.uint8)


def _run(fn, noisy):
    return np.asarray(fn(noisy[None].astype(np.float32)))[0]


def test_config_mode():
    assert safeguard.config_mode({}) == "off"  # run folders from before the field
    assert safeguard.config_mode({"postprocess": {"safeguard": "blend"}}) == "blend"
    with pytest.raises(ConfigError, match="postprocess.safeguard") as info:
        safeguard.config_mode({"postprocess": {"safeguard": "maybe"}})
    assert "\n" not in str(info.value)


def test_a_denoiser_worse_than_its_input_is_blended_and_the_blend_is_better():
    clean, noisy = _photo(std=3.0)
    blur = lambda x: colour_anchor.blur(x, 4.0)  # noqa: E731  (far too strong for std 3)
    output = _run(blur, noisy)
    psnr = lambda a: float(metrics.psnr(clean, a)[0])  # noqa: E731
    assert psnr(output) < psnr(noisy)  # the case is what it claims
    checked = safeguard.check_output(blur, noisy, output, "blend")
    assert checked.blended and checked.estimate.gain_db <= 0
    assert 0 <= checked.estimate.blend_weight < 1
    assert psnr(checked.output) > psnr(output) + 1
    assert "NOT better than the input" in safeguard.verdict("x.png", checked)
    off = safeguard.check_output(blur, noisy, output, "off")
    assert not off.blended and np.array_equal(off.output, output)
    assert "safeguard off" in safeguard.verdict("x.png", off)


def test_a_denoiser_better_than_its_input_is_left_alone():
    clean, noisy = _photo(std=25.0, seed=1)
    denoiser = lambda x: colour_anchor.blur(x, 1.5)  # noqa: E731  (helps on heavy noise)
    output = _run(denoiser, noisy)
    assert float(metrics.psnr(clean, output)[0]) > float(metrics.psnr(clean, noisy)[0]) + 3
    checked = safeguard.check_output(denoiser, noisy, output, "blend")
    assert not checked.blended and checked.estimate.gain_db > 0
    assert np.array_equal(checked.output, output)
    assert checked.to_json()["blend_weight"] == 1.0


def test_photo_check_warns_through_say_and_survives_tiny_photos():
    said = []
    module = type("Blur", (), {"apply": staticmethod(lambda v, x: colour_anchor.blur(x, 4.0))})
    check = safeguard.photo_check(module(), None, 0.0, "blend", said.append)
    clean, noisy = _photo(std=3.0)
    output = _run(lambda x: colour_anchor.blur(x, 4.0), noisy)
    got = check("a.png", noisy.astype(np.float32), output)
    assert not np.array_equal(got, output) and said and said[0].startswith("warning: a.png")
    tiny = noisy[:20, :20].astype(np.float32)
    assert np.array_equal(check("t.png", tiny, tiny), tiny)
    assert "no quality estimate" in said[-1]


def test_with_debias_the_inputs_own_bias_counts_against_it_and_a_blend_removes_it_too():
    clean, noisy = _photo(std=3.0)
    blur = lambda x: colour_anchor.blur(x, 4.0)  # noqa: E731
    output = _run(blur, noisy)
    plain = safeguard.check_output(blur, noisy, output, "blend")
    fixed = safeguard.check_output(blur, noisy, output, "blend", colour_sigma=8.0)
    bias = np.asarray(colour_anchor.estimate_bias(noisy.astype(np.float32), output, 8.0))
    assert np.abs(bias).max() > 0.05  # the modelled bias of this photo, small but not zero
    energy = float(np.mean(bias.astype(np.float64) ** 2))
    want = 10 * np.log10(255**2 / (255**2 / 10 ** (plain.estimate.noisy_psnr / 10) + energy))
    assert fixed.estimate.noisy_psnr == pytest.approx(want, abs=1e-6)
    assert fixed.estimate.output_psnr == pytest.approx(plain.estimate.output_psnr, abs=1e-6)
    w = fixed.estimate.blend_weight
    np.testing.assert_allclose(fixed.output, w * output + (1 - w) * (noisy - bias), atol=1e-3)
