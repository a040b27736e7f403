"""Pixel-shuffle downsampling (PD), its inverse, and AP-BSN's R3, against direct formulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sassid_jax.methods import apbsn
from sassid_jax.nn.pd import pd_mosaic, pd_stack, pd_unmosaic, pd_unstack


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


@pytest.mark.parametrize(("factor", "pad"), [(1, 2), (2, 0), (2, 2), (5, 2), (3, 1)])
def test_pd_stack_and_mosaic_layouts(factor, pad):
    x = _x((2, 30, 60, 3))
    stack, mosaic = np.asarray(pd_stack(x, factor, pad)), np.asarray(pd_mosaic(x, factor, pad))
    h, w = 30 // factor + 2 * pad, 60 // factor + 2 * pad
    assert stack.shape == (factor * factor * 2, h, w, 3)
    assert mosaic.shape == (2, factor * h, factor * w, 3)
    for i in range(factor):
        for j in range(factor):
            for n in range(2):
                sub = np.pad(x[n, i::factor, j::factor], ((pad, pad), (pad, pad), (0, 0)))
                np.testing.assert_array_equal(stack[(i * factor + j) * 2 + n], sub)
                block = mosaic[n, i * h : (i + 1) * h, j * w : (j + 1) * w]
                np.testing.assert_array_equal(block, sub)
    np.testing.assert_array_equal(pd_unstack(stack, factor, pad), x)
    np.testing.assert_array_equal(pd_unmosaic(mosaic, factor, pad), x)


def test_pd_refuses_sizes_that_are_not_multiples():
    with pytest.raises(ValueError, match="multiples of the factor 5"):
        pd_mosaic(_x((1, 12, 10, 3)), 5, 2)


def _affine(z):
    """A stand-in network with a known output: 0.5 z + 3."""
    return 0.5 * z + 3.0


def test_r3_replays_given_fields_as_the_formula_says():
    x = _x((1, 12, 10, 3))
    first = np.asarray(apbsn.pd_forward(_affine, x, 2, 2))
    np.testing.assert_allclose(first, 0.5 * x + 3.0, rtol=1e-6)  # PD is undone exactly
    u = np.random.default_rng(1).uniform(size=(4, 1, 12, 10, 3)).astype(np.float32)
    got = apbsn.denoise(_affine, x, factor=2, pad=2, r3_prob=0.3, uniforms=u)
    ref = np.mean([0.5 * np.where(ut < 0.3, x, first) + 3.0 for ut in u], axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_r3_with_a_key_is_reproducible_and_equals_its_drawn_fields():
    x = _x((1, 14, 9, 3))  # odd width: padded to 10 for PD 2, cropped back
    run = jax.jit(lambda x, k: apbsn.denoise(_affine_nonlocal, x, key=k))
    a, b = run(x, jax.random.key(0)), run(x, jax.random.key(0))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(x, jax.random.key(1)))
    u = apbsn.r3_uniforms(jax.random.key(0), (1, 14, 10, 3), apbsn.R3_REPEATS)
    np.testing.assert_allclose(apbsn.denoise(_affine_nonlocal, x, uniforms=u), a, rtol=1e-6)
    off = apbsn.denoise(_affine_nonlocal, x, r3_repeats=0)
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))
    np.testing.assert_array_equal(off, apbsn.pd_forward(_affine_nonlocal, padded, 2, 2)[:, :, :9])
    with pytest.raises(ValueError, match="no PRNG key"):
        apbsn.denoise(_affine_nonlocal, x)


def _affine_nonlocal(z):
    """A stand-in network whose output mixes each pixel with its right neighbour."""
    return 0.5 * z + 0.25 * jnp.roll(z, 1, axis=2)
