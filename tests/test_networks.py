"""Shapes, input validation, parameter counts and non-square inputs of BNN, LAN and U-Net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sassid_jax.io.torch_params import expected_shapes
from sassid_jax.nn import BNN, LAN, UNet, layers, make_network
from sassid_jax.nn.trunk import EncoderDecoder

# Parameter counts of the authors' networks (unique tensors of their state_dicts; BNN's
# output_conv aliases output_block.4). The parity fixtures are checked against these in
# test_convert.py.
PAPER_COUNTS = {"bnn": 1_268_547, "unet": 1_083_747, "lan": 94_939}


def _count(module):
    return sum(int(np.prod(s)) for s in expected_shapes(module).values())


@pytest.mark.parametrize("name", ["bnn", "unet", "lan"])
def test_paper_parameter_counts(name):
    assert _count(make_network(name)) == PAPER_COUNTS[name]


@pytest.mark.parametrize(
    "module", [BNN(blind_size=3, width=4), UNet(width=4), LAN(width=8, num_blocks=2)]
)
@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 32, 96, 3)])
def test_output_shape_and_dtype(module, shape):
    x = jax.random.uniform(jax.random.key(0), shape, maxval=255.0)
    params = jax.jit(module.init)(jax.random.key(1), x)
    y = jax.jit(module.apply)(params, x)
    assert y.shape == shape and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.parametrize("shape", [(2, 32, 64, 3), (1, 64, 64, 3)])
def test_bnn_equals_branch_by_branch_reference(shape):
    """The grouped-branch BNN equals running the trunk once per rotation (any H x W)."""
    module = BNN(blind_size=5, width=4)
    x = jax.random.uniform(jax.random.key(0), shape, maxval=255.0)
    params = jax.jit(module.init)(jax.random.key(1), x)["params"]
    trunk = jax.jit(EncoderDecoder(width=4, upward=True).apply)
    branches = []
    for r in range(4):
        y = trunk({"params": params["trunk"]}, jnp.rot90(x, r, axes=(1, 2)))
        branches.append(jnp.rot90(layers.shift_down(y, 3), -r, axes=(1, 2)))
    h = jnp.concatenate(branches, axis=-1)
    for i in range(3):
        h = layers.conv2d(h, params[f"head_{i}"]["kernel"]) + params[f"head_{i}"]["bias"]
        h = layers.leaky_relu(h) if i < 2 else h
    y = jax.jit(module.apply)({"params": params}, x)
    np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("module", [BNN(width=4), UNet(width=4)])
@pytest.mark.parametrize("shape", [(1, 48, 64, 3), (1, 64, 40, 3)])
def test_size_not_multiple_of_32_rejected(module, shape):
    with pytest.raises(ValueError, match=f"H={shape[1]}, W={shape[2]}"):
        module.init(jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("module", [BNN(width=4), UNet(width=4), LAN(width=8)])
def test_non_rgb_rejected(module):
    with pytest.raises(ValueError, match="got 4"):
        module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))


@pytest.mark.parametrize(
    ("cls", "blind"),
    [(cls, b) for cls in (BNN, LAN) for b in (0, 2, 8, -3) if (cls, b) != (BNN, 0)],
)
def test_bad_blind_size_rejected(cls, blind):
    """(BNN: blind size 0 is valid, no blind spot at all, as in AT-BSN's distillation.)"""
    with pytest.raises(ValueError, match=f"got {blind}"):
        cls(blind_size=blind)


def test_bnn_blind_size_per_call_shares_parameters():
    """A call's blind size equals a module built with it; the attribute is only the default."""
    x = jax.random.uniform(jax.random.key(0), (1, 32, 64, 3), maxval=255.0)
    params = jax.jit(BNN(width=4).init)(jax.random.key(1), x)
    for b in (0, 1, 3, 9):
        built = jax.jit(BNN(blind_size=b, width=4).apply)(params, x)
        np.testing.assert_array_equal(
            jax.jit(BNN(width=4).apply, static_argnums=2)(params, x, b), built
        )
    with pytest.raises(ValueError, match="BNN: blind_size must be 0 or an odd integer >= 1, got 4"):
        BNN(width=4).apply(params, x, 4)


def test_peer_parameter_counts():
    """AP-BSN's DBSNl (width 128, 9 blocks) and AT-BSN's student and teacher (width 48)."""
    assert _count(make_network("dbsnl")) == 3_656_131
    assert _count(make_network("atbsn_student")) == 1_003_011
    assert _count(make_network("bnn", width=48)) == 1_268_547
    with pytest.raises(ValueError, match="DBSNl: width must be an even integer"):
        make_network("dbsnl", width=15)


@pytest.mark.parametrize("arch", ["dbsnl", "atbsn_student"])
def test_peer_output_shape(arch):
    module = make_network(arch, width=8, **({"num_blocks": 1} if arch == "dbsnl" else {}))
    shape = (2, 32, 64, 3) if arch == "atbsn_student" else (1, 21, 34, 3)
    x = jax.random.uniform(jax.random.key(0), shape, maxval=255.0)
    y = jax.jit(module.apply)(jax.jit(module.init)(jax.random.key(1), x), x)
    assert y.shape == shape and y.dtype == jnp.float32


def test_unknown_network_name():
    with pytest.raises(ValueError, match="'bsn'"):
        make_network("bsn")


def test_normalize_switch_keeps_scale():
    """normalize=True maps [0, 255] in to [0, 255] out: zero weights give the mid-grey 127.5."""
    module = UNet(width=4, normalize=True)
    x = jnp.full((1, 32, 32, 3), 200.0)
    params = jax.tree.map(jnp.zeros_like, module.init(jax.random.key(0), x))
    np.testing.assert_allclose(module.apply(params, x), 127.5)


def test_bf16_compute_runs_close_to_f32():
    module = UNet(width=8)
    x = jax.random.uniform(jax.random.key(0), (1, 64, 64, 3), maxval=255.0)
    params = jax.jit(module.init)(jax.random.key(1), x)
    y32 = jax.jit(module.apply)(params, x)
    y16 = jax.jit(UNet(width=8, dtype=jnp.bfloat16).apply)(params, x)
    assert y16.dtype == jnp.float32
    rel = float(jnp.abs(y16 - y32).mean() / jnp.abs(y32).mean())
    assert rel < 0.05
