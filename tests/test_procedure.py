"""Test-time procedures (config.inference): blind size, PD, R3; tiling; eval and denoise."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from configs import apbsn as apbsn_config
from configs import atbsn as atbsn_config
from configs import atbsn_distill
from sassid_jax.inference import predict
from sassid_jax.inference.procedure import Procedure, jit_procedure, network_fn
from sassid_jax.io.checkpoints import load_network
from sassid_jax.methods import apbsn
from sassid_jax.modes.denoise import run_denoise
from sassid_jax.nn import BNN, DBSNl, UNet
from tests.test_peer_parity import PEERS


def _x(shape=(1, 32, 32, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, maxval=255.0)


def _dbsnl():
    net = DBSNl(width=8, num_blocks=1)
    return net, net.init(jax.random.key(1), _x())["params"]


def test_plain_procedure_is_the_network():
    net = UNet(width=4)
    p = net.init(jax.random.key(0), _x())["params"]
    np.testing.assert_array_equal(
        jit_procedure(net, p, Procedure())(_x()), net.apply({"params": p}, _x())
    )


def test_blind_size_runs_the_bnn_at_that_size_and_needs_a_bnn():
    net = BNN(width=4, blind_size=9)
    p = net.init(jax.random.key(0), _x())["params"]
    out = network_fn(net, p, Procedure(blind_size=3))(_x())
    np.testing.assert_array_equal(out, net.apply({"params": p}, _x(), 3))
    assert not np.array_equal(out, net.apply({"params": p}, _x()))
    unet = UNet(width=4)
    with pytest.raises(ValueError, match="needs a BNN, not UNet"):
        network_fn(unet, {}, Procedure(blind_size=3))


def test_pd_and_r3_are_apbsns_denoise_with_the_seeds_key():
    net, p = _dbsnl()
    x = _x((1, 30, 34, 3))
    proc = Procedure(pd_factor=2, r3_repeats=3, r3_prob=0.2, seed=7)
    expected = apbsn.denoise(
        lambda z: net.apply({"params": p}, z),
        x,
        factor=2,
        r3_repeats=3,
        r3_prob=0.2,
        key=jax.random.key(7),
    )
    np.testing.assert_allclose(jit_procedure(net, p, proc)(x), expected, rtol=1e-6, atol=1e-4)
    other = jit_procedure(net, p, Procedure(pd_factor=2, r3_repeats=3, r3_prob=0.2, seed=8))(x)
    assert not np.allclose(other, expected)  # the masks come from the seed


def test_r3_off_is_the_deterministic_pd_output():
    net, p = _dbsnl()
    x = _x((1, 32, 32, 3))
    out = jit_procedure(net, p, Procedure(pd_factor=2))(x)
    expected = apbsn.pd_forward(lambda z: net.apply({"params": p}, z), x, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_tiled_pd_equals_the_whole_image_but_at_its_borders():
    """Tile starts are multiples of 32, so each tile's PD-2 sub-images are crops of the whole
    image's; with 128 px of context the network's field never reaches a tile's cut. At the
    image's borders the mosaic's 2 px gaps let it see the neighbouring sub-images' far edges,
    which are those of the tile, not of the whole image (docs/peers.md#tiling)."""
    net, p = _dbsnl()
    image = np.asarray(_x((1, 352, 320, 3))[0])
    fn = jit_procedure(net, p, Procedure(pd_factor=2))
    whole = predict.predict_image(fn, image)
    tiled = predict.denoise(fn, image, tile=288, margin=128)
    inner = (slice(32, -32), slice(32, -32))
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-3)
    assert np.abs(tiled - whole).max() > 1e-3  # the borders differ


def _fixture(name: str) -> Path:
    if not (PEERS / name).is_file():
        pytest.skip(f"peer parity fixture {PEERS / name} is missing")
    return PEERS / name


def _authors_file(tmp_path: Path, name: str) -> Path:
    """The parity fixture `name`; AP-BSN's with its last conv scaled and shifted (x 400, + 128)
    so that its random-weight output spans [0, 255] (it is near 0), saved by PyTorch."""
    path = _fixture(name)
    if not name.startswith("apbsn"):
        return path
    torch = pytest.importorskip("torch")
    state = torch.load(path, weights_only=True)
    state["bsn.tail.6.weight"] = state["bsn.tail.6.weight"] * 400
    state["bsn.tail.6.bias"] = state["bsn.tail.6.bias"] * 400 + 128
    torch.save(state, tmp_path / "APBSN.pth")
    return tmp_path / "APBSN.pth"


def _photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("fixture", "module", "network", "proc"),
    [
        ("apbsn_c16_m2_seed0.pth", apbsn_config, "bnn", Procedure(pd_factor=2)),
        ("atbsn_c16_seed1.pth", atbsn_config, "bnn", Procedure(blind_size=3)),
        ("atbsn_student_c16_seed2.pth", atbsn_distill, "unet", Procedure()),
    ],
)
def test_denoise_runs_the_methods_procedure_on_an_authors_pth(
    tmp_path, capsys, fixture, module, network, proc
):
    path = _authors_file(tmp_path, fixture)
    config = module.get_config()
    config.inference.r3_repeats = 0  # R3 off: deterministic
    source, out = _photo(tmp_path), tmp_path / "out.png"
    assert run_denoise(str(path), str(source), str(out), config=config) == 0
    arch = config.networks[network].arch
    net, params = load_network(path, network, arch)
    noisy = np.asarray(Image.open(source), np.float32)
    expected = predict.predict_image(jit_procedure(net, params, proc), noisy)
    got = np.asarray(Image.open(out), np.float32)
    rounded = np.clip(np.floor(expected + 0.5), 0, 255)
    assert rounded.std() > 10  # a photo, not a clipped constant
    assert np.abs(got - rounded).max() <= 1


def test_denoise_with_r3_is_reproducible(tmp_path, capsys):
    path = _authors_file(tmp_path, "apbsn_c16_m2_seed0.pth")
    config = apbsn_config.get_config()
    config.inference.r3_repeats = 2
    source = _photo(tmp_path)
    outs = []
    for name in ("a.png", "b.png"):
        assert run_denoise(str(path), str(source), str(tmp_path / name), config=config) == 0
        outs.append(np.asarray(Image.open(tmp_path / name)))
    np.testing.assert_array_equal(*outs)
    config.inference.r3_repeats = 0
    assert run_denoise(str(path), str(source), str(tmp_path / "c.png"), config=config) == 0
    assert not np.array_equal(outs[0], np.asarray(Image.open(tmp_path / "c.png")))
