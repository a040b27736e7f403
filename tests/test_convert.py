"""Checkpoint reading (no pickled code), key mapping and clear mismatch errors."""

import io
import pickle
import zipfile

import numpy as np
import pytest

from sassid_jax.errors import UserInputError
from sassid_jax.io.torch_format import TorchFormatError, read_state_dict
from sassid_jax.io.torch_params import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
    check_finite,
    convert_state_dict,
    load_torch_params,
)
from sassid_jax.nn import BNN, LAN, UNet
from tests.test_networks import PAPER_COUNTS


def _fixture(shared_data, network):
    return {
        "bnn": shared_data / "parity" / "bnn_b9_c48_seed0.pth",
        "unet": shared_data / "parity" / "unet_c48_seed0.pth",
        "lan": shared_data / "weights" / "official_LAN.pth",
    }[network]


@pytest.mark.parametrize("network", ["bnn", "unet", "lan"])
def test_fixture_sizes_equal_our_parameter_counts(shared_data, network):
    state = read_state_dict(_fixture(shared_data, network))
    unique = {k: v for k, v in state.items() if not (network == "bnn" and "output_conv" in k)}
    assert sum(v.size for v in unique.values()) == PAPER_COUNTS[network]
    params = load_torch_params(_fixture(shared_data, network), network)
    leaves = [v for block in _leaves(params) for v in block]
    assert sum(v.size for v in leaves) == PAPER_COUNTS[network]


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield [tree]


def test_kernel_is_transposed_oihw_to_hwio(shared_data):
    state = read_state_dict(_fixture(shared_data, "unet"))
    params = load_torch_params(_fixture(shared_data, "unet"), "unet")
    w = state["decode_block_1.0.weight"]  # (96, 99, 3, 3)
    np.testing.assert_array_equal(params["trunk"]["dec1_0"]["kernel"][2, 0, 98, 5], w[5, 98, 2, 0])
    np.testing.assert_array_equal(params["out"]["bias"], state["output_conv.bias"])


def test_wrong_network_names_the_key(shared_data):
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key 'output_block\.0\.weight'"):
        load_torch_params(_fixture(shared_data, "bnn"), "unet")
    with pytest.raises(CheckpointMismatchError, match="U-Net checkpoint"):
        load_torch_params(_fixture(shared_data, "unet"), "bnn")
    with pytest.raises(CheckpointMismatchError, match="unexpected key 'encode_block_1.0.weight'"):
        load_torch_params(_fixture(shared_data, "unet"), "lan")


def test_wrong_width_names_key_and_shapes(shared_data):
    with pytest.raises(
        CheckpointMismatchError,
        match=r"encode_block_1\.0\.weight' has shape "
        r"\(48, 3, 3, 3\).*expects \(3, 3, 3, 32\)",
    ):
        load_torch_params(_fixture(shared_data, "unet"), "unet", UNet(width=32))


def test_wrong_lan_blind_size(shared_data):
    with pytest.raises(CheckpointMismatchError, match="blind size"):
        load_torch_params(_fixture(shared_data, "lan"), "lan", LAN(blind_size=5))


def test_missing_key_is_named(shared_data):
    state = read_state_dict(_fixture(shared_data, "lan"))
    del state["conv.4.tail.bias"]
    with pytest.raises(CheckpointMismatchError, match="nrb/tail/bias"):
        convert_state_dict(state, "lan", LAN(), source="x.pth")


def test_small_bnn_roundtrip_from_synthetic_state_dict():
    """A tiny synthetic state_dict in the authors' naming converts (no shared data needed)."""
    module = BNN(blind_size=3, width=4)
    rng = np.random.default_rng(0)
    state = {}
    shapes = {"encode_block_1.0": (4, 3), "encode_block_1.2": (4, 4)}
    shapes.update({f"encode_block_{i}.0": (4, 4) for i in range(2, 7)})
    shapes.update({"decode_block_5.0": (8, 8), "decode_block_5.2": (8, 8)})
    for lvl in (4, 3, 2):
        shapes.update({f"decode_block_{lvl}.0": (8, 12), f"decode_block_{lvl}.2": (8, 8)})
    shapes.update({"decode_block_1.0": (8, 11), "decode_block_1.2": (8, 8)})
    for name, (o, i) in shapes.items():
        state[f"{name}.weight"] = rng.normal(size=(o, i, 3, 3)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(size=(o,)).astype(np.float32)
    for name, (o, i) in {
        "output_block.0": (32, 32),
        "output_block.2": (8, 32),
        "output_block.4": (3, 8),
    }.items():
        state[f"{name}.weight"] = rng.normal(size=(o, i, 1, 1)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(size=(o,)).astype(np.float32)
    params = convert_state_dict(state, "bnn", module)
    assert params["head_2"]["kernel"].shape == (1, 1, 8, 3)
    np.testing.assert_array_equal(params["trunk"]["enc1_1"]["bias"], state["encode_block_1.2.bias"])


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _zip_with_pickle(tmp_path, payload):
    buf = io.BytesIO()
    pickle.dump(payload, buf, protocol=2)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", buf.getvalue())
    return path


def test_pickled_code_is_refused(tmp_path, capsys):
    path = _zip_with_pickle(tmp_path, {"a": _Evil()})
    refused = (
        r"evil\.pth: 'evil/data\.pkl': refusing to load global '(__builtin__|builtins)\.print'"
    )
    with pytest.raises(TorchFormatError, match=refused):
        read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(TorchFormatError, match="notes.pth: not a zip-format"):
        read_state_dict(bad)
    with pytest.raises(TorchFormatError, match="no such checkpoint"):
        read_state_dict(tmp_path / "missing.pth")


def test_load_errors_are_user_input_errors():
    for error in (TorchFormatError, CheckpointMismatchError, NonFiniteWeightsError):
        assert issubclass(error, UserInputError) and issubclass(error, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_source_and_key(bad):
    tree = {"trunk": {"enc1_0": {"kernel": np.ones((3, 3, 3, 4), np.float32)}}, "n": np.arange(3)}
    check_finite(tree, "run/checkpoints/7")
    tree["trunk"]["enc1_0"]["kernel"][1, 2, 0, 3] = bad
    with pytest.raises(NonFiniteWeightsError, match=r"^run/checkpoints/7: weight 'trunk/enc1_0/k"):
        check_finite(tree, "run/checkpoints/7")


def test_non_finite_pth_is_refused_naming_file_and_key(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "encode_block_1.0.weight": torch.zeros(4, 3, 3, 3),
        "encode_block_1.0.bias": torch.ones(4),
    }
    state["encode_block_1.0.bias"][2] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    message = r"diverged\.pth: weight 'encode_block_1\.0\.bias' holds 1 NaN and 0 infinite values"
    with pytest.raises(NonFiniteWeightsError, match=message) as info:
        load_torch_params(path, "unet", UNet(width=4))
    assert len(str(info.value).splitlines()) == 1
