"""TBSN(D): the U-Net's target, its precomputation, configs/tbsn_distill.py and its U-Net .pth.

The target is the fixture TBSN on the authors' own PD-2 output (`tbsn_pd2_x128`), reached
through the teacher cache; `--mode denoise` and `--mode eval` with configs/tbsn_distill.py
build the authors' U-Net on its [0, 1] scale (input_scale from the config), which its keys
cannot tell; a tiny distillation run from the authors' TBSN (slow).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from sassid_jax import train
from sassid_jax.configs import tbsn_distill
from sassid_jax.configuration import validate_config
from sassid_jax.inference import procedure
from sassid_jax.io.checkpoints import load_network
from sassid_jax.methods import stages
from sassid_jax.methods import tbsn as tbsn_method
from sassid_jax.modes import denoise as dn
from sassid_jax.modes import evaluate
from sassid_jax.nn import TBSN, UNet
from sassid_jax.training import teacher_cache
from sassid_jax.training.train_step import build_stages
from tests.test_peer_methods import _tiny
from tests.test_peer_parity import PEERS, _max_diff, _npz, _require
from tests.test_tbsn_parity import REFERENCE, TBSN_FILE, UNET_FILE


def test_config_stages_and_procedures():
    config = tbsn_distill.get_config()
    validate_config(config)
    tbsn_stage, distill = build_stages(config)
    assert tbsn_stage.crop_multiple == tbsn_method.CROP_MULTIPLE
    assert config.crop_size % tbsn_method.CROP_MULTIPLE == 0
    assert distill.learners == ("unet",) and distill.teachers == ("bnn",)
    assert not distill.plain_teachers and distill.precomputable_teachers
    assert procedure.from_config(config, "unet").plain
    teacher = procedure.from_config(config, "bnn")
    assert (teacher.pd_factor, teacher.r3_repeats) == (tbsn_method.TEST_PD_FACTOR, 0)
    assert procedure.pth_attributes(config, "unet") == {"input_scale": 1 / 255}


def test_precomputed_target_is_tbsn_on_its_pd2_output():
    """The cache runs `teacher_forward` on the whole image: TBSN(up(TBSN(down(x))))."""
    _require(TBSN_FILE, REFERENCE)
    ref = _npz(REFERENCE)
    network, params = load_network(PEERS / TBSN_FILE, "bnn", "tbsn")
    assert isinstance(network, TBSN)
    forwards = {"bnn": stages.LOSSES["tbsn_distill"].forwards["bnn"]}
    with jax.default_matmul_precision("highest"):
        (got,) = teacher_cache.precompute(
            {"bnn": network}, {"bnn": params}, ("bnn",), [ref["x128"][0]], forwards=forwards
        )
        want = jax.jit(network.apply)({"params": params}, ref["tbsn_pd2_x128"])[0]
    diff, tol = _max_diff(got, np.asarray(want))
    assert got.shape == (128, 128, 3) and diff <= tol, f"max|diff| = {diff:.3g} > {tol:.3g}"


def test_denoise_with_config_runs_the_authors_unet_on_its_scale(tmp_path, monkeypatch):
    _require(UNET_FILE, REFERENCE)
    ref = _npz(REFERENCE)
    config = tbsn_distill.get_config()
    module, params = load_network(
        PEERS / UNET_FILE, "unet", "unet", procedure.pth_attributes(config, "unet")
    )
    assert isinstance(module, UNet) and module.input_scale == 1 / 255
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(module.apply({"params": params}, ref["x64"])) / 255
    diff, tol = _max_diff(ours, ref["unet_x64_01"])
    assert diff <= tol, f"unet_x64_01: max|diff| = {diff:.3g} > {tol:.3g}"
    # The CLI path builds the module with the config's input_scale (the fixture's biases are
    # all 0, so its output cannot tell: a bias-free U-Net of LeakyReLUs is scale-equivariant).
    built = []
    jit_apply = dn.predict.jit_apply
    monkeypatch.setattr(dn.predict, "jit_apply", lambda m, p: built.append(m) or jit_apply(m, p))
    photo = np.clip(np.round(ref["x64"][0]), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    args = (str(PEERS / UNET_FILE), str(tmp_path / "in.png"), str(out))
    assert dn.run_denoise(*args, config=config) == 0
    assert [m.input_scale for m in built] == [1 / 255]
    expected = np.asarray(module.apply({"params": params}, photo[None].astype(np.float32)))[0]
    got = np.asarray(Image.open(out), np.float32)
    assert np.abs(got - np.clip(expected, 0, 255)).max() <= 1.0


@pytest.mark.slow  # ~35 s on the shared 2-core CPU: the U-Net's train step, TBSN's target
def test_tiny_distill_run_from_the_authors_tbsn_trains_its_unet(data_dir, tmp_path):
    """The distillation stage alone, the teacher the fixture .pth (`pretrained.bnn`); TBSN's
    own stage runs in test_tbsn_method.py."""
    _require(TBSN_FILE)
    config = _tiny(tbsn_distill.get_config(), data_dir)
    config.stage_order = ("distill",)
    config.pretrained.bnn = str(PEERS / TBSN_FILE)
    config.networks.unet.width = 8
    config.train.teachers = "online"  # the whole photos' targets take minutes here
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert set(results["table"]) == {"noisy", "unet"}  # a pretrained teacher is not scored
    assert np.isfinite(results["table"]["unet"]["psnr"])
    assert all(np.isfinite(loss) for _, loss in results["loss_history"]["distill"])


def test_eval_with_config_runs_the_authors_unet_on_its_scale(data_dir, tmp_path, monkeypatch):
    _require(UNET_FILE)
    config = tbsn_distill.get_config()
    config.dataset.data_dir, config.eval.max_images = str(data_dir), 1
    built = []
    jit = evaluate.procedure.jit_procedure
    monkeypatch.setattr(
        evaluate.procedure, "jit_procedure", lambda m, p, proc: built.append(m) or jit(m, p, proc)
    )
    result = evaluate.run_eval(config, str(PEERS / UNET_FILE), str(tmp_path / "eval"))
    assert [m.input_scale for m in built] == [1 / 255]
    assert np.isfinite(result["psnr"])
