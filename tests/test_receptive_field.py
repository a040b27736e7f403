"""Blind regions by gradients: BNN never sees its b x b window (b chosen per call), LAN sees
only b_L x b_L, DBSNl (alone and inside AP-BSN's PD) never sees the pixel itself, AT-BSN's
student sees it."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax import lax

from sassid_jax.methods import apbsn
from sassid_jax.nn import BNN, LAN, ATBSNStudent, DBSNl


def _dependence(module, shape, pixel, seeds=6, interceptor=None, call=None):
    """|d out[pixel] / d x| summed over channels, unioned (summed) over random inputs/params.
    `call(module, params, x)` replaces `module.apply(params, x)` when given."""
    i, j = pixel

    def apply(params, x):
        return module.apply(params, x) if call is None else call(module, params, x)

    def out(x, params):
        if interceptor is None:
            return apply(params, x)[0, i, j].sum()
        with nn.intercept_methods(interceptor):
            return apply(params, x)[0, i, j].sum()

    grad_fn = jax.jit(jax.grad(out))
    init = jax.jit(module.init)  # one compiled program instead of op-by-op dispatch
    total = np.zeros(shape[1:3])
    for seed in range(seeds):
        kx, kp = jax.random.split(jax.random.key(seed))
        x = jax.random.uniform(kx, shape, maxval=255.0)
        grad = grad_fn(x, init(kp, x))
        total += np.abs(np.asarray(grad))[0].sum(-1)
    return total


def _blind_window_is_exact(dep, blind, i, j):
    r = blind // 2
    window = dep[i - r : i + r + 1, j - r : j + r + 1]
    assert np.all(window == 0.0), f"b={blind}: output sees its blind window"
    # Just outside the window, in each of the four directions, the output does depend.
    for di, dj in [(-(r + 1), 0), (r + 1, 0), (0, -(r + 1)), (0, r + 1)]:
        assert dep[i + di, j + dj] > 0, f"b={blind}: no dependence at offset ({di}, {dj})"
    # and the ring just outside the window is seen everywhere along its four sides' centres
    assert np.count_nonzero(dep) > dep.size // 2


@pytest.mark.parametrize("blind", [1, 3, 9])
@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (1, 64, 96, 3)])
def test_bnn_blind_window_is_exact(blind, shape):
    i, j = 30, 37
    _blind_window_is_exact(_dependence(BNN(blind_size=blind, width=4), shape, (i, j)), blind, i, j)


@pytest.mark.parametrize("blind", [0, 1, 5, 11])
def test_bnn_blind_size_per_call(blind):
    """One module (default b = 9) called at another b: that b's window, or none for b = 0."""
    i, j = 30, 37

    def call(module, params, x):
        return module.apply(params, x, blind)

    dep = _dependence(BNN(blind_size=9, width=4), (1, 64, 64, 3), (i, j), seeds=3, call=call)
    if blind == 0:
        assert dep[i, j] > 0 and np.count_nonzero(dep) > dep.size // 2
    else:
        _blind_window_is_exact(dep, blind, i, j)


def test_dbsnl_is_blind_to_the_pixel_only():
    i, j = 13, 20
    dep = _dependence(DBSNl(width=8, num_blocks=2), (1, 32, 40, 3), (i, j), seeds=2)
    assert dep[i, j] == 0.0
    ring = dep[i - 1 : i + 2, j - 1 : j + 2].copy()
    ring[1, 1] = 1.0
    assert np.all(ring > 0), "DBSNl does not see every neighbour of the pixel"
    # reach: masked 5x5 (2) plus two blocks dilated by 3 (3 each) = 8 pixels
    assert np.all(dep[: i - 8] == 0) and np.any(dep[i - 8] > 0)


def test_apbsn_pd_forward_sees_only_its_own_sub_image():
    """Through PD 2, output p depends only on pixels p + 2 a (a != 0): its own sub-image."""
    i, j = 30, 37

    def call(module, params, x):
        return apbsn.pd_forward(lambda z: module.apply(params, z), x, 2, 2)

    dep = _dependence(DBSNl(width=8, num_blocks=2), (1, 64, 64, 3), (i, j), seeds=2, call=call)
    rows, cols = np.nonzero(dep)
    assert dep[i, j] == 0.0 and len(rows) > 8
    assert np.all((rows - i) % 2 == 0) and np.all((cols - j) % 2 == 0)
    assert dep[i - 2, j] > 0 and dep[i, j + 2] > 0


def test_atbsn_student_sees_the_pixel():
    i, j = 13, 20
    dep = _dependence(ATBSNStudent(width=4), (1, 32, 64, 3), (i, j), seeds=2)
    assert dep[i, j] > 0 and np.count_nonzero(dep) > dep.size // 2


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
