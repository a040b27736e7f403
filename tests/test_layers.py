"""The lax building blocks against direct numpy formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sassid_jax.nn import layers


def _numpy_conv_same(x, kernel, pad_rows, pad_cols):
    """Reference cross-correlation with explicit zero padding; x (N,H,W,C), kernel HWIO."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), pad_rows, pad_cols, (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
    for di in range(k):
        for dj in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, di : di + h, dj : dj + w], kernel[di, dj])
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_upward_conv_equals_pad_top_same_conv_crop(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 3, 4)).astype(np.float32)
    # The authors' form: pad k//2 zero rows on top, 'same' conv, drop the last k//2 rows.
    half = k // 2
    padded = np.pad(x, ((0, 0), (half, 0), (0, 0), (0, 0)))
    authors = _numpy_conv_same(padded, kernel, (half, half), (half, half))[:, : x.shape[1]]
    ours = np.asarray(layers.conv2d(jnp.asarray(x), jnp.asarray(kernel), upward=True))
    np.testing.assert_allclose(ours, authors, rtol=1e-4, atol=1e-4)


def test_upward_conv_sees_only_rows_above():
    x = jnp.zeros((1, 9, 9, 1))
    kernel = jnp.ones((3, 3, 1, 1))
    grad = jax.grad(lambda v: layers.conv2d(v, kernel, upward=True)[0, 4, 4, 0])(x)[0, ..., 0]
    rows, cols = np.nonzero(np.asarray(grad))
    assert set(rows) == {2, 3, 4} and set(cols) == {3, 4, 5}


def test_same_conv_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    ref = _numpy_conv_same(x, kernel, (1, 1), (1, 1))
    np.testing.assert_allclose(layers.conv2d(x, kernel), ref, rtol=1e-4, atol=1e-4)


def test_shift_down():
    x = jnp.arange(2 * 5 * 3 * 1, dtype=jnp.float32).reshape(2, 5, 3, 1) + 1
    y = np.asarray(layers.shift_down(x, 2))
    assert y.shape == x.shape
    np.testing.assert_array_equal(y[:, :2], 0)
    np.testing.assert_array_equal(y[:, 2:], np.asarray(x)[:, :3])
    np.testing.assert_array_equal(layers.shift_down(x, 0), x)


def test_pool_upsample_rot90():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    pooled = np.asarray(layers.max_pool_2x2(x))
    np.testing.assert_array_equal(pooled, x.reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4)))
    up = np.asarray(layers.upsample_nearest_2x(x))
    np.testing.assert_array_equal(up, x.repeat(2, axis=1).repeat(2, axis=2))
    r = np.asarray(layers.rot90(x, 1))
    assert r.shape == (2, 6, 4, 3)
    # numpy convention: result[i, j] = x[j, W - 1 - i]
    assert r[0, 1, 3, 0] == x[0, 3, 6 - 1 - 1, 0]
    np.testing.assert_array_equal(layers.rot90(layers.rot90(x, 1), -1), x)


def test_conv2d_module_init_statistics():
    x = jnp.zeros((1, 8, 8, 64))
    he = layers.Conv2D(256, 3, init_style="he_leaky").init(jax.random.key(0), x)["params"]
    std = float(np.std(he["kernel"]))
    assert abs(std - np.sqrt(2 / 1.01 / (9 * 64))) < 0.02 * std
    assert np.all(np.asarray(he["bias"]) == 0)
    torch = layers.Conv2D(256, 3, init_style="torch_default").init(jax.random.key(0), x)["params"]
    bound = 1 / np.sqrt(9 * 64)
    for leaf in ("kernel", "bias"):
        values = np.asarray(torch[leaf])
        assert values.max() <= bound and values.min() >= -bound
        assert values.max() > 0.9 * bound


@pytest.mark.parametrize("upward", [False, True])
def test_tap_kernel_grad_matches_xla_above_threshold(upward):
    """Above TAP_GRAD_MIN_PIXELS the CPU backend takes the per-tap kernel gradient: it must
    equal XLA's (jax.vjp of lax.conv_general_dilated), directly and through conv2d's VJP."""
    n, h, w = 1, 128, layers.TAP_GRAD_MIN_PIXELS // 128 + 8  # just above the threshold
    assert n * h * w >= layers.TAP_GRAD_MIN_PIXELS
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(n, h, w, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, h, w, 5)), jnp.float32)
    padding = layers.conv_padding(3, upward)

    def xla_conv(k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), padding, dimension_numbers=layers.DIMENSION_NUMBERS
        )

    (reference,) = jax.vjp(xla_conv, kernel)[1](dy)
    direct = layers.tap_kernel_grad(x, dy, kernel.shape, padding)
    (through_conv2d,) = jax.vjp(lambda k: layers.conv2d(x, k, upward=upward), kernel)[1](dy)
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(direct, reference, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(through_conv2d, reference, rtol=1e-4, atol=1e-5 * scale)
    assert direct.shape == kernel.shape


def _numpy_dilated_conv(x, kernel, d):
    """Reference dilated 'same' cross-correlation: out[i, j] = sum x[i + d a, j + d b] k[a, b]."""
    k = kernel.shape[0]
    r = d * (k // 2)
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
    for a in range(k):
        for b in range(k):
            view = xp[:, d * a : d * a + h, d * b : d * b + w]
            out += np.einsum("nhwc,co->nhwo", view, kernel[a, b])
    return out


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilated_conv_matches_numpy(dilation):
    rng = np.random.default_rng(dilation)
    x = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    got = jax.jit(layers.dilated_conv2d, static_argnums=2)(x, kernel, dilation)
    np.testing.assert_allclose(got, _numpy_dilated_conv(x, kernel, dilation), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [3, 5])
def test_centre_masked_conv_is_the_conv_of_the_masked_kernel(k):
    mask = np.asarray(layers.centre_mask((k, k, 2, 3)))
    assert mask[k // 2, k // 2].sum() == 0 and mask.sum() == (k * k - 1) * 6
    rng = np.random.default_rng(k)
    x = rng.normal(size=(1, 10, 8, 2)).astype(np.float32)
    conv = layers.Conv2D(3, k, init_style="torch_default", centre_masked=True)
    params = conv.init(jax.random.key(0), x)
    kernel = np.asarray(params["params"]["kernel"])
    assert np.all(kernel[k // 2, k // 2] != 0)  # the stored kernel keeps its centre
    ref = _numpy_conv_same(x, kernel * mask, (k // 2, k // 2), (k // 2, k // 2))
    ref += np.asarray(params["params"]["bias"])
    np.testing.assert_allclose(jax.jit(conv.apply)(params, x), ref, rtol=1e-4, atol=1e-4)
    grad = jax.grad(lambda v: conv.apply(params, v)[0, 4, 3].sum())(x)[0]
    assert np.all(np.asarray(grad)[4, 3] == 0) and np.all(np.asarray(grad)[3, 3] != 0)
