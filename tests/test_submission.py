"""SIDD / DND submission files and `--mode submit` (submit.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from sassid_jax.modes import submit
from tests.test_denoise import _unet_state_dict, write_torch_zip
from tests.test_sidd import fake_blocks, write_blocks


def test_sidd_submission_file():
    noisy, _ = fake_blocks(images=2, blocks=3, size=32)
    examples = [
        {"image_index": i, "block_index": j, "noisy": noisy[i, j]}
        for i in range(2)
        for j in range(3)
    ]
    outputs = [e["noisy"].astype(np.float32) + 0.5 for e in examples]
    outputs[0][0, 0, 0] = 300.0
    with pytest.raises(ValueError, match="do not fill"):
        submit.write_sidd_submission("unused.mat", examples[:5], outputs[:5], 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SubmitSrgb.mat"
        submit.write_sidd_submission(path, examples, outputs, 0.25)
        mat = scipy.io.loadmat(path)
    blocks = mat["DenoisedBlocksSrgb"]
    assert blocks.dtype == np.uint8 and blocks.shape == noisy.shape
    expected = np.clip(noisy.astype(np.int64) + 1, 0, 255)  # x + 0.5 rounds half up
    expected[0, 0, 0, 0, 0] = 255
    np.testing.assert_array_equal(blocks, expected)
    assert mat["TimeMPSrgb"].item() == 0.25


def test_submit_mode_writes_sidd_submission_from_a_pth(launch, tmp_path, monkeypatch):
    noisy, _ = fake_blocks(images=1, blocks=2, size=32)
    write_blocks(tmp_path / "dl", noisy, prefix="Benchmark")
    ckpt = tmp_path / "unet.pth"
    write_torch_zip(ckpt, _unet_state_dict(8), monkeypatch)
    run = launch(
        "--mode=submit",
        "--config=configs/sidd_benchmark.py",
        f"--config.dataset.manual_dir={tmp_path / 'dl'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        f"--checkpoint={ckpt}",
        f"--output={tmp_path / 'sub'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    mat = scipy.io.loadmat(tmp_path / "sub" / "SubmitSrgb.mat")
    assert mat["DenoisedBlocksSrgb"].shape == noisy.shape
    assert mat["DenoisedBlocksSrgb"].dtype == np.uint8


def test_submit_mode_refuses_a_dataset_without_submission(launch, tmp_path):
    run = launch(
        "--mode=submit",
        "--config=configs/sidd_validation.py",
        f"--checkpoint={tmp_path / 'x.pth'}",
        f"--output={tmp_path / 'out'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "--mode submit needs one of" in run.stderr
    assert not (tmp_path / "out").exists()
