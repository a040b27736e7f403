"""TBSN as a method: its config, its training stage, its test-time procedure on the authors' file.

Uses the parity fixtures of ../shared/data/parity/peers (a test skips, naming the file, only when
one is missing).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tbsn as tbsn_config
from sassid_jax import train
from sassid_jax.configuration import validate_config
from sassid_jax.inference import predict, procedure
from sassid_jax.io.checkpoints import load_network
from sassid_jax.methods import tbsn
from sassid_jax.methods.stages import LOSSES
from sassid_jax.modes.denoise import run_denoise
from sassid_jax.nn import TBSN
from sassid_jax.training.train_step import make_optimizer
from tests.test_peer_methods import _tiny
from tests.test_peer_parity import _max_diff, _npz
from tests.test_tbsn_parity import PEERS, REFERENCE, SMALL, TBSN_FILE


def _fixture(name: str):
    if not (PEERS / name).is_file():
        pytest.skip(f"peer parity fixture {PEERS / name} is missing")
    return PEERS / name


def test_config_validates_with_the_published_procedure():
    config = tbsn_config.get_config()
    validate_config(config)
    p = procedure.from_config(config)
    assert (p.pd_factor, p.r3_repeats, p.r3_prob, p.blind_size) == (2, 8, 0.16, -1)
    config.inference.r3_repeats = 0
    validate_config(config)
    # AdamW as the authors': with a zero gradient the update is the decay, -lr x 0.01 x w
    optimizer, w = make_optimizer(config, "tbsn"), {"w": np.ones(3, np.float32)}
    update, _ = optimizer.update({"w": np.zeros(3, np.float32)}, optimizer.init(w), w)
    np.testing.assert_allclose(update["w"], -3e-4 * 0.01, rtol=1e-6)
    config.crop_size = 150  # 30 px sub-images: not a multiple of 32
    with pytest.raises(Exception, match=r"crop_size must be a multiple of 160"):
        validate_config(config)


def test_stage_trains_on_the_first_pd5_sub_image():
    x = jax.random.uniform(jax.random.key(0), (2, 160, 160, 3), maxval=255.0)
    net = TBSN(dim=8, num_blocks=(1, 1, 1), num_refinement_blocks=1, spatial_dim_head=4)
    # jitted: one compiled program each instead of op-by-op dispatch of a transformer
    params = jax.jit(net.init)(jax.random.key(1), x[:, ::5, ::5])["params"]
    loss = LOSSES["tbsn"]
    out = jax.jit(lambda p, x: loss.forwards["bnn"](net, p, x))(params, x)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(tbsn.train_input(x), x[:, ::5, ::5])
    assert np.isfinite(float(loss.fn({"bnn": out}, x, None)))


def test_authors_file_loads_with_its_sizes_and_runs_the_pd2_procedure():
    module, params = load_network(_fixture(TBSN_FILE), "bnn", "tbsn")
    assert module == TBSN(**SMALL)
    ref = _npz(REFERENCE)
    run = procedure.jit_procedure(module, params, procedure.Procedure(pd_factor=2))
    with jax.default_matmul_precision("highest"):
        got = np.asarray(run(ref["x128"]))
    diff, tol = _max_diff(got, ref["tbsn_pd2_x128"])
    assert diff <= tol


def test_denoise_runs_tbsns_procedure_on_the_authors_file(tmp_path):
    path = _fixture(TBSN_FILE)
    config = tbsn_config.get_config()
    config.inference.r3_repeats = 1
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(source)
    assert run_denoise(str(path), str(source), str(out), config=config) == 0
    net, params = load_network(path, "bnn", "tbsn")
    noisy = np.asarray(Image.open(source), np.float32)
    proc = procedure.from_config(config)
    expected = predict.predict_image(procedure.jit_procedure(net, params, proc), noisy)
    got = np.asarray(Image.open(out), np.float32)
    assert got.shape == noisy.shape
    assert np.abs(got - np.clip(np.floor(expected + 0.5), 0, 255)).max() <= 1


@pytest.mark.slow  # ~75 s on the shared 2-core CPU: compiles TBSN's train step, PD 2 and R3
def test_tiny_tbsn_run_trains_and_evaluates_with_pd_and_r3(data_dir, tmp_path):
    config = _tiny(tbsn_config.get_config(), data_dir)
    config.networks.bnn.update({"dim": 8, "spatial_dim_head": 4, "spatial_heads": (1, 1, 1)})
    config.inference.r3_repeats = 1
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert set(results["table"]) == {"noisy", "bnn"}
    assert np.isfinite(results["table"]["bnn"]["psnr"])
    assert all(np.isfinite(loss) for _, loss in results["loss_history"]["tbsn"])
