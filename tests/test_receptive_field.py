"""Blind regions by gradients: BNN never sees its b x b window, LAN sees only b_L x b_L."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax import lax

from sassid_jax.nn import BNN, LAN


def _dependence(module, shape, pixel, seeds=6, interceptor=None):
    """|d out[pixel] / d x| summed over channels, unioned (summed) over random inputs/params."""
    i, j = pixel

    def out(x, params):
        if interceptor is None:
            return module.apply(params, x)[0, i, j].sum()
        with nn.intercept_methods(interceptor):
            return module.apply(params, x)[0, i, j].sum()

    grad_fn = jax.jit(jax.grad(out))
    init = jax.jit(module.init)  # one compiled program instead of op-by-op dispatch
    total = np.zeros(shape[1:3])
    for seed in range(seeds):
        kx, kp = jax.random.split(jax.random.key(seed))
        x = jax.random.uniform(kx, shape, maxval=255.0)
        grad = grad_fn(x, init(kp, x))
        total += np.abs(np.asarray(grad))[0].sum(-1)
    return total


@pytest.mark.parametrize("blind", [1, 3, 9])
@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (1, 64, 96, 3)])
def test_bnn_blind_window_is_exact(blind, shape):
    i, j = 30, 37
    dep = _dependence(BNN(blind_size=blind, width=4), shape, (i, j))
    r = blind // 2
    window = dep[i - r : i + r + 1, j - r : j + r + 1]
    assert np.all(window == 0.0), f"b={blind}: output sees its blind window"
    # Just outside the window, in each of the four directions, the output does depend.
    for di, dj in [(-(r + 1), 0), (r + 1, 0), (0, -(r + 1)), (0, r + 1)]:
        assert dep[i + di, j + dj] > 0, f"b={blind}: no dependence at offset ({di}, {dj})"
    # and the ring just outside the window is seen everywhere along its four sides' centres
    assert np.count_nonzero(dep) > dep.size // 2


def _stop_global_mean(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    return lax.stop_gradient(out) if context.method_name == "global_mean" else out


@pytest.mark.parametrize("blind", [1, 3, 5])
def test_lan_conv_path_sees_only_its_window(blind):
    i, j = 13, 20
    shape = (1, 32, 40, 3)
    module = LAN(blind_size=blind, width=16, num_blocks=2)
    local = _dependence(module, shape, (i, j), seeds=2, interceptor=_stop_global_mean)
    r = blind // 2
    seen = np.zeros_like(local, dtype=bool)
    seen[i - r : i + r + 1, j - r : j + r + 1] = True
    assert np.all(local[seen] > 0)
    assert np.all(local[~seen] == 0)
    # With the channel attention's global mean, every pixel has a (small) influence.
    full = _dependence(module, shape, (i, j), seeds=2)
    assert np.all(full[~seen] > 0)
    assert full[~seen].max() < full[seen].min()
