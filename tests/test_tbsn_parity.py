"""Parity with TBSN's code: fixtures `tbsn_*` in ../shared/data/parity/peers (see its README).

The small random-weight TBSN and its distillation U-Net, saved by the authors' code, load
through `load_torch_params`; every block kind, the whole network, the PD procedures and the
U-Net reproduce the references within 1e-5 x max|reference| at highest matmul precision. A test
skips, naming the file, only when a fixture file is missing. `PYTHONPATH=. .venv/bin/python
tests/test_tbsn_parity.py` prints the table of docs/parity_peers.md.
"""

from __future__ import annotations

import functools
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from sassid_jax.io.torch_params import load_torch_params
from sassid_jax.methods import tbsn as tbsn_method
from sassid_jax.nn import TBSN, UNet
from sassid_jax.nn import tbsn as blocks
from sassid_jax.nn.pd import pd_stack
from tests.test_peer_parity import PEERS, _max_diff, _npz, _require, _table

TBSN_FILE = "tbsn_small_seed3.pth"
UNET_FILE = "tbsn_unet_c16_seed4.pth"
REFERENCE = "tbsn_reference.npz"
# The fixture's TBSN: TBSN(dim=16, num_blocks=[1, 1, 1], num_refinement_blocks=1,
# channel_heads=[1, 2, 4], spatial_heads=[1, 1, 2], spatial_dim_head=8), other arguments default.
SMALL = tbsn_method.SMALL_SIZE
# Each hooked module of the fixture (manifest.json): our module and its parameters' path.
BLOCKS = {
    "OverlapPatchEmbed": (blocks.Conv(16, 3, centre_masked=True), ("patch_embed",)),
    "CentralMaskedConv2d": (blocks.Conv(16, 3, centre_masked=True), ("patch_embed",)),
    "TransformerBlock": (blocks.TransformerBlock(1, 1, 8), ("encoder_level1_0",)),
    "DilatedOCA": (blocks.WindowAttention(1, 8), ("encoder_level1_0", "spatial_attn")),
    "DilatedMDTA": (blocks.ChannelAttention(1), ("encoder_level1_0", "channel_attn")),
    "FeedForward": (blocks.FeedForward(), ("encoder_level1_0", "channel_ffn")),
    "Downsample": (blocks.Downsample(), ("down1_2",)),
    "Upsample": (blocks.Upsample(), ("up3_2",)),
}
NETWORK_CASES = ("tbsn_x64", "pd2_stack_x128", "tbsn_pd2_x128", "pd5_train_x120", "unet_x64_01")
CASES = (*(f"{name}_out" for name in BLOCKS), *NETWORK_CASES)


def _apply(module: nn.Module, params: dict, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(lambda p, z: module.apply({"params": p}, z))(params, x))


def _whole(
    network: nn.Module, params: dict, x64: np.ndarray, x128: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """TBSN on x64 and TBSN's PD-2 forward of x128, one compilation."""

    @jax.jit
    def run(p: dict, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        def bsn(z: jax.Array) -> jax.Array:
            return network.apply({"params": p}, z)

        return bsn(a), tbsn_method.pd_forward(bsn, b)

    return tuple(np.asarray(y) for y in run(params, x64, x128))


@functools.cache
def cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (ours, reference)}: every hooked block, TBSN, its PD procedures, the U-Net."""
    ref = _npz(REFERENCE)
    network = TBSN(**SMALL)
    params = load_torch_params(PEERS / TBSN_FILE, "tbsn", network)
    unet = UNet(width=16, input_scale=1 / 255)
    unet_params = load_torch_params(PEERS / UNET_FILE, "unet", unet)
    x120 = _npz("apbsn_reference.npz")["x120"]  # the same crop the TBSN fixture started from
    with jax.default_matmul_precision("highest"):
        got = {}
        for name, (module, path) in BLOCKS.items():
            sub = functools.reduce(lambda tree, key: tree[key], path, params)
            got[f"{name}_out"] = _apply(module, sub, ref[f"{name}_in"])
        got["tbsn_x64"], got["tbsn_pd2_x128"] = _whole(network, params, ref["x64"], ref["x128"])
        got["pd2_stack_x128"] = np.asarray(pd_stack(ref["x128"], 2))
        got["pd5_train_x120"] = np.asarray(tbsn_method.train_input(x120))
        got["unet_x64_01"] = _apply(unet, unet_params, ref["x64"]) / 255.0
    return {k: (v, ref[k]) for k, v in got.items()}


@pytest.fixture(scope="module")
def tbsn_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _require(TBSN_FILE, UNET_FILE, REFERENCE, "apbsn_reference.npz")
    return cases()


@pytest.mark.parametrize("case", CASES)
def test_tbsn_parity(tbsn_cases, case):
    diff, tol = _max_diff(*tbsn_cases[case])
    assert diff <= tol, f"{case}: max|diff| = {diff:.3g} > {tol:.3g}"


if __name__ == "__main__":
    sys.exit(print(_table({"TBSN": cases})))
