"""Flatness map and stage losses against direct numpy formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sassid_jax.methods import sasl


def _numpy_sigma(image):
    m = image.mean(-1)
    p = np.pad(m, ((0, 0), (3, 3), (3, 3)), mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(p, (7, 7), axis=(1, 2))
    return win.std(axis=(-1, -2))[..., None]


def test_constant_image_gives_sigmoid_of_minus_lower():
    x = jnp.full((2, 16, 24, 3), 77.0)
    for lower in (0.5, 1.0, 2.0):
        alpha = np.asarray(sasl.flatness_alpha(x, lower=lower, upper=5.0))
        assert alpha.shape == (2, 16, 24, 1)
        np.testing.assert_allclose(alpha, 1 / (1 + np.exp(lower)), rtol=1e-6)


def test_local_std_matches_numpy_with_reflect_edges():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 20, 17, 3)).astype(np.float32)
    np.testing.assert_allclose(sasl.local_std(x), _numpy_sigma(x), rtol=1e-5, atol=1e-4)
    # 'reflect' (edge not repeated) differs from 'symmetric' at the border: check the corner.
    sym = np.pad(x.mean(-1), ((0, 0), (3, 3), (3, 3)), mode="symmetric")[:, :7, :7].std((1, 2))
    assert not np.allclose(np.asarray(sasl.local_std(x))[:, 0, 0, 0], sym)


def test_thresholds_respected():
    sigma = jnp.array([0.0, 0.5, 1.0, 3.0, 5.0, 6.0, 20.0])
    alpha = np.asarray(sasl.alpha_from_sigma(sigma, lower=1.0, upper=5.0))
    expected = [
        1 / (1 + np.exp(1.0)),
        1 / (1 + np.exp(0.5)),
        0.5,
        0.5,
        0.5,
        1 / (1 + np.exp(-1.0)),
        1 / (1 + np.exp(-15.0)),
    ]
    np.testing.assert_allclose(alpha, expected, rtol=1e-6)


def test_alpha_has_no_gradient():
    x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3), maxval=255.0)
    grad = jax.grad(lambda v: sasl.flatness_alpha(v).sum())(x)
    assert np.all(np.asarray(grad) == 0)


def test_bad_thresholds():
    with pytest.raises(ValueError, match="5.0 > 1.0"):
        sasl.flatness_alpha(jnp.zeros((1, 8, 8, 3)), lower=5.0, upper=1.0)


def test_losses_match_numpy_and_teachers_are_frozen():
    rng = np.random.default_rng(1)
    x, b, lan, u = (rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32) for _ in range(4))
    a = rng.uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(sasl.bnn_loss(b, x), np.abs(b - x).mean(), rtol=1e-6)
    np.testing.assert_allclose(sasl.lan_loss(lan, b), np.abs(lan - b).mean(), rtol=1e-6)
    expected = np.abs(b * (1 - a) - u * (1 - a)).mean() + np.abs(lan * a - u * a).mean()
    np.testing.assert_allclose(sasl.adaptive_loss(u, b, lan, a), expected, rtol=1e-6)
    grads = jax.grad(sasl.adaptive_loss, argnums=(0, 1, 2, 3))(u, b, lan, a)
    assert np.any(np.asarray(grads[0]) != 0)
    assert all(np.all(np.asarray(g) == 0) for g in grads[1:])
    assert np.all(np.asarray(jax.grad(sasl.lan_loss, argnums=1)(lan, b)) == 0)
