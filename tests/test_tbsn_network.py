"""TBSN: its size, its input check, its blind region by gradients, loading the authors' keys.

The blind region of output pixel p is the PD-2 lattice p + 2Z^2 on every path but the channel
attention's global weights (`ChannelAttention.channel_weights`); with those weights' gradient
stopped the dependence there is exactly zero, and the leak through them is measured and bounded
(docs/parity_peers.md#tbsn-receptive-field-and-leak).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax import lax

from sassid_jax.io.torch_format import read_state_dict
from sassid_jax.io.torch_params import (
    TBSN_LEVELS,
    CheckpointMismatchError,
    convert_state_dict,
    expected_shapes,
    load_torch_params,
    tbsn_param_path,
    tbsn_sizes,
)
from sassid_jax.nn import TBSN, make_network
from sassid_jax.nn.tbsn import overlap_window_size, window_mask
from tests.test_tbsn_parity import PEERS, SMALL, TBSN_FILE

PIXEL = (29, 34)  # an output pixel away from the borders of a 64 x 64 input
SHAPE = (1, 64, 64, 3)
# Leak through the channel attention, measured (TBSN(dim=8), random init, 2 seeds, 64^2):
# sum |d out[p] / d x| over the blind lattice / the sum over the rest 2.7e-4; the largest
# |gradient| on the lattice / the largest elsewhere 5.1e-6 (docs/parity_peers.md). Bounds ~4x
# and ~20x above.
LEAK_SUM_BOUND = 1e-3
LEAK_MAX_BOUND = 1e-4


def _stop_channel_weights(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    return lax.stop_gradient(out) if context.method_name == "channel_weights" else out


def _dependence(module: nn.Module, local: bool, seeds: int = 2) -> np.ndarray:
    """|d out[0, PIXEL] / d x| summed over channels and seeds; local: channel weights stopped."""
    i, j = PIXEL

    def out(x, params):
        if not local:
            return module.apply(params, x)[0, i, j].sum()
        with nn.intercept_methods(_stop_channel_weights):
            return module.apply(params, x)[0, i, j].sum()

    grad_fn = jax.jit(jax.grad(out))
    init = jax.jit(module.init)
    total = np.zeros(SHAPE[1:3])
    for seed in range(seeds):
        kx, kp = jax.random.split(jax.random.key(seed))
        x = jax.random.uniform(kx, SHAPE, maxval=255.0)
        total += np.abs(np.asarray(grad_fn(x, init(kp, x))))[0].sum(-1)
    return total


def _lattice() -> np.ndarray:
    rows, cols = np.indices(SHAPE[1:3])
    return ((rows - PIXEL[0]) % 2 == 0) & ((cols - PIXEL[1]) % 2 == 0)


@pytest.fixture(scope="module")
def small_tbsn() -> nn.Module:
    return TBSN(dim=8, num_blocks=(1, 1, 1), num_refinement_blocks=1, spatial_dim_head=4)


@pytest.mark.parametrize(("kwargs", "count"), [({}, 12_746_780), (SMALL, 368_747)])
def test_parameter_count(kwargs, count):
    """The published TBSN has the paper's 12.75 M parameters (frozen masks not counted)."""
    shapes = expected_shapes(TBSN(**kwargs))
    assert sum(int(np.prod(s)) for s in shapes.values()) == count


def test_input_size_check_is_one_line():
    x = np.zeros((1, 48, 64, 3), np.float32)
    with pytest.raises(ValueError, match=r"^TBSN: height and width must be multiples of 32") as e:
        TBSN(**SMALL).init(jax.random.key(0), x)
    assert "\n" not in str(e.value)


def test_local_path_never_sees_the_pd2_lattice(small_tbsn):
    dep = _dependence(small_tbsn, local=True)
    blind = _lattice()
    assert np.all(dep[blind] == 0.0), "the conv / window-attention path sees p + 2Z^2"
    i, j = PIXEL
    for di, dj in [(0, 1), (1, 0), (1, 1), (-1, 0), (0, -1), (-1, -1), (1, -1), (-1, 1)]:
        assert dep[i + di, j + dj] > 0, f"no dependence at offset ({di}, {dj})"
    assert np.count_nonzero(dep[~blind]) > 0.5 * (~blind).sum()


def test_channel_attention_leak_is_small_and_bounded(small_tbsn):
    dep = _dependence(small_tbsn, local=False)
    blind = _lattice()
    assert np.all(dep[blind] > 0), "the global channel attention reaches every pixel"
    total = dep[blind].sum() / dep[~blind].sum()
    largest = dep[blind].max() / dep[~blind].max()
    assert total < LEAK_SUM_BOUND, f"leak into the blind lattice (sum) {total:.3g}"
    assert largest < LEAK_MAX_BOUND, f"leak into the blind lattice (max) {largest:.3g}"


def _fixture_state() -> dict[str, np.ndarray]:
    if not (PEERS / TBSN_FILE).is_file():
        pytest.skip(f"peer parity fixture {PEERS / TBSN_FILE} is missing")
    return dict(read_state_dict(PEERS / TBSN_FILE))


def _assert_same(a: dict, b: dict) -> None:
    fa, fb = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg="/".join(k))


def test_bsn_prefixed_keys_load_alike():
    state = _fixture_state()
    module = TBSN(**SMALL)
    prefixed = {f"bsn.{k}": v for k, v in state.items()}
    _assert_same(
        convert_state_dict(prefixed, "tbsn", module), convert_state_dict(state, "tbsn", module)
    )


@pytest.mark.parametrize(
    ("key", "index", "message"),
    [
        ("patch_embed.proj.mask", (0, 0, 0, 0), r"'patch_embed\.proj\.mask' is not a centre mask"),
        (
            "latent.0.spatial_attn.fixed_pos_emb.attention_mask",
            (0, 5, 7),
            r"'latent\.0\.spatial_attn\.fixed_pos_emb\.attention_mask'.*not the window mask",
        ),
    ],
)
def test_frozen_buffers_are_checked(key, index, message):
    state = _fixture_state()
    state[key] = np.array(state[key], copy=True)
    state[key][index] = 0.0 if state[key][index] else -np.inf
    with pytest.raises(CheckpointMismatchError, match=message) as e:
        convert_state_dict(state, "tbsn", TBSN(**SMALL))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (SMALL | {"dim": 32}, r"key 'patch_embed\.proj\.weight' has shape \(16, 3, 3, 3\)"),
        (
            SMALL | {"num_blocks": (1, 2, 1)},
            r"32 parameters of TBSN\(dim=16, num_blocks=\(1, 2, 1\)\) are missing",
        ),
        (
            SMALL | {"channel_heads": (1, 2, 2)},
            r"key 'latent\.0\.channel_attn\.temperature' has shape \(4, 1, 1\)",
        ),
    ],
)
def test_wrong_module_gets_one_line_naming_the_key(kwargs, message):
    with pytest.raises(CheckpointMismatchError, match=message) as e:
        load_torch_params(PEERS / TBSN_FILE, "tbsn", TBSN(**kwargs))
    assert "\n" not in str(e.value)


def test_other_networks_refuse_tbsn_keys():
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key") as e:
        convert_state_dict(_fixture_state(), "unet", make_network("unet", width=16))
    assert "\n" not in str(e.value)


def test_published_layout_loads_at_full_width():
    """The published model_sidd.pth: the fixture's keys with 4 blocks per sequence, width 48.

    Built from the fixture's key names (block 0 repeated), our full-size shapes as OIHW and
    random values; the frozen buffers as the authors' code makes them."""
    small = _fixture_state()
    module = TBSN()
    expected = expected_shapes(module)
    rng = np.random.default_rng(0)
    state: dict[str, np.ndarray] = {}
    ours: dict[tuple[str, ...], np.ndarray] = {}
    for key in small:
        first, _, rest = key.partition(".")
        names = [f"{first}.{i}.{rest[2:]}" for i in range(4)] if rest[:2] == "0." else [key]
        for name in names:
            if name.endswith("attention_mask"):
                state[name] = small[key]  # the same (1, 64, 144) at any width
                continue
            if name.endswith(".mask"):
                state[name] = np.ones((48, 3, 3, 3), np.float32)
                state[name][:, :, 1, 1] = 0.0
                continue
            path = tbsn_param_path(name)
            value = rng.standard_normal(expected[path]).astype(np.float32)
            ours[path] = value
            if path[-1] == "kernel":
                value = value.transpose(3, 2, 0, 1)
            elif path[-1] == "temperature":
                value = value.reshape(-1, 1, 1)
            state[f"bsn.{name}"] = value
    assert ours.keys() == expected.keys()
    _assert_same(convert_state_dict(state, "tbsn", module), flax.traverse_util.unflatten_dict(ours))


def _torch_key(path: tuple[str, ...]) -> str:
    """The authors' state_dict key of one of our TBSN parameter paths (inverse of the loader)."""
    *module, leaf = path
    torch_leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    head, *rest = module
    if head == "patch_embed":
        return "patch_embed.proj.weight"
    if head.startswith(("down", "up")):
        return f"{head}.body.0.weight"
    if not rest:
        return f"{head}.{torch_leaf}"
    seq, _, index = head.rpartition("_")
    if rest[0].startswith("norm"):
        return f"{seq}.{index}.{rest[0]}.body.{torch_leaf}"
    if leaf in ("rel_height", "rel_width"):
        return f"{seq}.{index}.spatial_attn.rel_pos_emb.{leaf}"
    return ".".join([seq, index, *rest, torch_leaf])


def _authors_state(module: TBSN, params: dict) -> dict[str, np.ndarray]:
    """Our parameters in the authors' layout (OIHW kernels, (h, 1, 1) temperatures), with
    the frozen buffers their code keeps: the centre mask and every block's window mask."""
    state = {}
    for path, value in flax.traverse_util.flatten_dict(params).items():
        value = np.asarray(value)
        if path[-1] == "kernel":
            value = value.transpose(3, 2, 0, 1)
        elif path[-1] == "temperature":
            value = value.reshape(-1, 1, 1)
        state[_torch_key(path)] = value
        if path[-1] == "rel_height":
            seq = path[0].rpartition("_")[0]
            level = TBSN_LEVELS[seq]
            keys = overlap_window_size(module.window_size, module.overlap_ratio[level])
            mask = window_mask(module.window_size, keys)[None]
            state[
                _torch_key(path).replace("rel_pos_emb.rel_height", "fixed_pos_emb.attention_mask")
            ] = mask
    mask = np.ones_like(state["patch_embed.proj.weight"])
    mask[:, :, 1, 1] = 0.0
    state["patch_embed.proj.mask"] = mask
    return state


def test_sizes_and_weights_round_trip_through_the_authors_layout():
    """Every constructor argument is read back from the tensors (`tbsn_sizes`), biases, the
    with-bias layer norm and a second overlap ratio included, and every weight comes back."""
    module = TBSN(
        dim=8,
        num_blocks=(1, 2, 1),
        num_refinement_blocks=2,
        channel_heads=(2, 2, 4),
        spatial_heads=(1, 2, 1),
        overlap_ratio=(0.5, 0.25, 0.5),
        spatial_dim_head=4,
        bias=True,
        ffn_expansion_factor=2.0,
        layer_norm_type="WithBias",
    )
    rng = np.random.default_rng(0)  # random values of our shapes (no init compiled)
    flat = {
        p: rng.standard_normal(s).astype(np.float32) for p, s in expected_shapes(module).items()
    }
    params = flax.traverse_util.unflatten_dict(flat)
    state = _authors_state(module, params)
    assert all(tbsn_param_path(k) for k in state if not k.endswith("mask"))
    assert TBSN(**tbsn_sizes(state)) == module
    assert TBSN(**tbsn_sizes({f"bsn.{k}": v for k, v in state.items()})) == module
    _assert_same(convert_state_dict(state, "tbsn", module), params)
