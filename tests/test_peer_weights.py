"""Loading AP-BSN's and AT-BSN's state_dicts: the forms the authors save, masks, wrong files.

Uses the fixtures of ../shared/data/parity/peers (a test skips, naming the file, only when one
is missing); writing the trainer checkpoint form needs PyTorch (a test dependency only).
"""

from __future__ import annotations

from pathlib import Path

import flax
import numpy as np
import pytest

from configs import default
from sassid_jax.errors import ConfigError
from sassid_jax.io.checkpoints import load_network
from sassid_jax.io.torch_format import read_state_dict
from sassid_jax.io.torch_params import CheckpointMismatchError, load_torch_params
from sassid_jax.nn import make_network
from sassid_jax.training import pretrained
from tests.test_peer_parity import PEERS

APBSN = "apbsn_c16_m2_seed0.pth"
TEACHER = "atbsn_c16_seed1.pth"
STUDENT = "atbsn_student_c16_seed2.pth"


def _path(name: str) -> Path:
    if not (PEERS / name).is_file():
        pytest.skip(f"peer parity fixture {PEERS / name} is missing")
    return PEERS / name


def _dbsnl():
    return make_network("dbsnl", width=16, num_blocks=2)


def _assert_same(a: dict, b: dict) -> None:
    fa, fb = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg="/".join(k))


def _save(tmp_path: Path, obj, name: str = "x.pth") -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _torch_state(name: str) -> dict:
    torch = pytest.importorskip("torch")
    return torch.load(_path(name), weights_only=True)


def test_apbsn_trainer_checkpoint_and_bare_keys_load_alike(tmp_path):
    torch = pytest.importorskip("torch")
    bare = load_torch_params(_path(APBSN), "dbsnl", _dbsnl())
    state = _torch_state(APBSN)
    weights = [v.clone().requires_grad_() for k, v in state.items() if not k.endswith("mask")]
    optimizer = torch.optim.Adam(weights, lr=1e-4)
    sum(w.sum() for w in weights).backward()
    optimizer.step()  # an optimizer state with tensors, ints, floats, tuples, None and bools
    trainer = {
        "epoch": 3,
        "model_weight": {"denoiser": state},
        "optimizer_weight": {"denoiser": optimizer.state_dict()},
    }
    _assert_same(load_torch_params(_save(tmp_path, trainer), "dbsnl", _dbsnl()), bare)
    stripped = {k.removeprefix("bsn."): v for k, v in state.items()}  # as TBSN's loader keeps it
    _assert_same(load_torch_params(_save(tmp_path, stripped, "s.pth"), "dbsnl", _dbsnl()), bare)


def test_apbsn_mask_buffers_are_checked(tmp_path):
    state = _torch_state(APBSN)
    state["bsn.branch2.body.0.mask"][0, 0, 0, 0] = 0.0
    with pytest.raises(CheckpointMismatchError, match=r"branch2\.body\.0\.mask' is not a centre"):
        load_torch_params(_save(tmp_path, state), "dbsnl", _dbsnl())


def test_apbsn_masked_weights_centre_is_ignored():
    """The authors zero the masked kernel's centre in place; a file saved before that loads."""
    params = load_torch_params(_path(APBSN), "dbsnl", _dbsnl())
    state = read_state_dict(_path(APBSN))
    kernel = np.transpose(state["bsn.branch1.body.0.weight"], (2, 3, 1, 0))
    np.testing.assert_array_equal(params["branch1"]["masked"]["kernel"], kernel)


@pytest.mark.parametrize(
    ("name", "arch", "kwargs", "message"),
    [
        (STUDENT, "dbsnl", {"width": 16, "num_blocks": 2}, r"unexpected key 'unet\.intro\.conv"),
        (APBSN, "bnn", {"width": 16}, r"unexpected key 'bsn\.head\.0\.weight'"),
        (TEACHER, "atbsn_student", {"width": 16}, r"dec1\.conv2\.conv\.weight' has shape \(32, 32"),
        (STUDENT, "bnn", {"width": 16}, r"'unet\.dec1\.conv2\.conv\.weight' has shape \(3, 32"),
        (
            APBSN,
            "dbsnl",
            {"width": 16, "num_blocks": 3},
            r"'bsn\.branch1\.body\.8\.weight'.*blocks\?$",
        ),
        (TEACHER, "bnn", {"width": 32}, r"'unet\.intro\.conv\.weight' has shape \(16, 3, 3, 3\)"),
    ],
)
def test_wrong_file_gets_one_line_naming_the_key(name, arch, kwargs, message):
    with pytest.raises(CheckpointMismatchError, match=message) as info:
        load_torch_params(_path(name), arch, make_network(arch, **kwargs))
    assert "\n" not in str(info.value)


def test_teacher_loads_into_the_bnn_with_any_blind_size():
    a = load_torch_params(_path(TEACHER), "bnn", make_network("bnn", width=16, blind_size=3))
    b = load_torch_params(_path(TEACHER), "bnn", make_network("bnn", width=16, blind_size=0))
    _assert_same(a, b)


def test_atbsn_d_doublenet_file_gives_student_and_teacher(tmp_path):
    """AT-BSN(D) saves its `DoubleNet`: the student under `nbsn.`, the teacher under `bsn.`."""
    teacher, student = _torch_state(TEACHER), _torch_state(STUDENT)
    both = {f"nbsn.{k}": v for k, v in student.items()} | {
        f"bsn.{k}": v for k, v in teacher.items()
    }
    path = _save(tmp_path, both)
    for name, arch in ((STUDENT, "atbsn_student"), (TEACHER, "bnn")):
        module = make_network(arch, width=16)
        _assert_same(
            load_torch_params(path, arch, module), load_torch_params(_path(name), arch, module)
        )


@pytest.mark.parametrize(
    ("name", "role", "arch", "cls"),
    [
        (APBSN, "unet", "dbsnl", "DBSNl"),
        (TEACHER, "bnn", None, "BNN"),
        (STUDENT, "unet", "atbsn_student", "ATBSNStudent"),
    ],
)
def test_load_network_reads_the_peers_files_with_their_sizes(name, role, arch, cls):
    """A `.pth` of a peer loads for a role of that architecture (AT-BSN's teacher: the BNN's own
    form), its sizes read from the tensors."""
    module, params = load_network(_path(name), role, arch)
    assert type(module).__name__ == cls and module.width == 16 and module.normalize is False
    assert getattr(module, "num_blocks", 2) == 2
    _assert_same(params, load_torch_params(_path(name), arch or role, module))


def test_pretrained_network_follows_the_role_architecture():
    config = default.get_config()
    config.networks.unet.update({"arch": "dbsnl", "width": 16, "num_blocks": 2, "normalize": False})
    loaded = pretrained.load_one(config, "unet", str(_path(APBSN)))
    assert loaded.source == "authors' .pth"
    config.networks.unet.arch = "unet"
    del config.networks.unet["num_blocks"]
    with pytest.raises(ConfigError, match=r"^pretrained.unet: .*not a U-Net checkpoint"):
        pretrained.load_one(config, "unet", str(_path(APBSN)))
