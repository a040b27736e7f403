"""Parity with the authors' code: reference outputs in ../shared/data/parity (skipped if absent).

Tolerances from ../shared/data/README.md: networks max|diff| <= 1e-5 * max|ref|, sigma
<= 1e-6 * max|sigma|, alpha maps <= 1e-5 (absolute; alpha is in (0, 1)), losses 1e-5 relative.

The networks run at full float32 precision: on GPUs from Ampere on, XLA's default for float32
convolutions is TF32, which misses these tolerances (measured on an H100: max|diff| 0.18 on
outputs up to 267, 7e-4 relative; with "highest" all parity tests pass).
"""

import jax
import numpy as np
import pytest

from sassid_jax.io.torch_params import load_torch_params
from sassid_jax.methods import sasl
from sassid_jax.nn import make_network

CHECKPOINTS = {
    "bnn": ("parity/bnn_b9_c48_seed0.pth", "bnn_out_nchw"),
    "unet": ("parity/unet_c48_seed0.pth", "unet_out_nchw"),
    "lan": ("weights/official_LAN.pth", "lan_out_nchw"),
}


def _nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def ref(shared_data):
    with np.load(shared_data / "parity" / "reference_outputs.npz") as f:
        return {k: _nhwc(v) if v.ndim == 4 else v for k, v in f.items()}


@pytest.mark.parametrize("network", ["bnn", "unet", "lan"])
def test_network_parity(shared_data, ref, network):
    path, key = CHECKPOINTS[network]
    params = load_torch_params(shared_data / path, network)
    with jax.default_matmul_precision("highest"):
        apply = jax.jit(make_network(network).apply)
        out = np.asarray(apply({"params": params}, ref["input_nchw"]))
    expected = ref[key]
    diff = np.abs(out - expected).max()
    assert diff <= 1e-5 * np.abs(expected).max(), f"{network}: max|diff| = {diff}"


def test_sigma_parity(ref):
    sigma = np.asarray(sasl.local_std(ref["bnn_out_nchw"]))
    expected = ref["sigma_nchw"]
    assert np.abs(sigma - expected).max() <= 1e-6 * np.abs(expected).max()


@pytest.mark.parametrize(
    "source, key",
    [
        ("bnn_out_nchw", "alpha_nchw"),
        ("lan_out_nchw", "alpha_of_lan_out_nchw"),
        ("gt_nchw", "alpha_of_gt_nchw"),
    ],
)
def test_alpha_parity(ref, source, key):
    alpha = np.asarray(sasl.flatness_alpha(ref[source], lower=1.0, upper=5.0))
    assert alpha.shape == ref[key].shape
    assert np.abs(alpha - ref[key]).max() <= 1e-5


def test_loss_parity(ref):
    x, gt = ref["input_nchw"], ref["gt_nchw"]
    bnn, lan, unet = ref["bnn_out_nchw"], ref["lan_out_nchw"], ref["unet_out_nchw"]
    got = {
        "loss_stage1": sasl.bnn_loss(bnn, x),
        "loss_stage2": sasl.lan_loss(lan, bnn),
        "loss_stage3": sasl.adaptive_loss(unet, bnn, lan, sasl.flatness_alpha(bnn)),
        "loss_stage3_gt_as_bnn_lan_as_unet_bnn_as_lan": sasl.adaptive_loss(
            lan, gt, bnn, sasl.flatness_alpha(gt)
        ),
    }
    for key, value in got.items():
        np.testing.assert_allclose(float(value), float(ref[key]), rtol=1e-5, err_msg=key)
