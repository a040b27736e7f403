"""Evaluation protocol, self-ensemble, SIDD submission and the eval / submit modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from skimage.metrics import structural_similarity

from sassid_jax import benchmark
from sassid_jax.inference import dihedral, inverse_dihedral
from tests.test_denoise import _unet_state_dict, write_torch_zip
from tests.test_sidd import fake_blocks, write_blocks

REPO = Path(__file__).resolve().parents[1]


def _direct_psnr_ssim(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """The published protocol written out with numpy and scikit-image."""
    q = np.clip(np.floor(out.astype(np.float64) + 0.5), 0, 255)
    mse = np.mean((q - clean.astype(np.float64)) ** 2)
    psnr = 10 * np.log10(255.0**2 / mse)
    ssim = structural_similarity(clean, q.astype(np.uint8), channel_axis=-1, data_range=255)
    return psnr, ssim


def test_scores_equal_numpy_and_scikit_image():
    noisy, gt = fake_blocks(images=2, blocks=2, size=48)
    rng = np.random.default_rng(1)
    examples, outputs = [], []
    for i in range(2):
        for j in range(2):
            examples.append(
                {
                    "noisy": noisy[i, j],
                    "clean": gt[i, j],
                    "name": f"{i}{j}",
                    "phone": ("S6", "GP")[i],
                    "iso": (100, 1600)[j],
                }
            )
            outputs.append(gt[i, j] + rng.normal(0, 6, gt[i, j].shape).astype(np.float32))
    result = benchmark.score_examples(examples, outputs)
    direct = [_direct_psnr_ssim(e["clean"], o) for e, o in zip(examples, outputs, strict=True)]
    assert result["psnr"] == pytest.approx(np.mean([d[0] for d in direct]), abs=1e-4)
    assert result["ssim"] == pytest.approx(np.mean([d[1] for d in direct]), abs=1e-4)
    for (name, s), d in zip(result["per_image"].items(), direct, strict=True):
        assert s["ssim"] == pytest.approx(d[1], abs=1e-4), name
    assert result["per_phone"]["GP"]["psnr"] == pytest.approx(
        np.mean([direct[2][0], direct[3][0]]), abs=1e-4
    )
    assert result["per_iso"]["1600"]["images"] == 2
    assert "S6" in benchmark.format_scores("x", result)


def test_ensemble_is_the_mean_of_the_eight_transforms():
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (32, 64, 3)).astype(np.float32) for _ in range(3)]
    images.append(rng.uniform(0, 255, (40, 50, 3)).astype(np.float32))  # padded to 64x64

    def lopsided(x):  # not equivariant: depends on position and orientation
        x = np.asarray(x)
        ramp = np.arange(x.shape[2], dtype=np.float32)[None, None, :, None]
        return x * 0.5 + ramp + np.roll(x, 1, axis=1) * 0.25

    got = benchmark.denoise_images(lopsided, images, ensemble=True, batch=2)
    for image, out in zip(images, got, strict=True):
        assert out.shape == image.shape
        expected = np.mean(
            [inverse_dihedral(_pad_crop(lopsided, dihedral(image, t)), t) for t in range(8)], axis=0
        )
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    plain = benchmark.denoise_images(lambda x: x, images, batch=3)
    for image, out in zip(images, plain, strict=True):
        np.testing.assert_array_equal(out, image)


def _pad_crop(fn, image):
    from sassid_jax.inference import pad_to_multiple

    h, w = image.shape[:2]
    return np.asarray(fn(pad_to_multiple(np.ascontiguousarray(image))[None]))[0, :h, :w]


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
        benchmark.write_sidd_submission("unused.mat", examples[:5], outputs[:5], 1.0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SubmitSrgb.mat"
        benchmark.write_sidd_submission(path, examples, outputs, 0.25)
        mat = scipy.io.loadmat(path)
    blocks = mat["DenoisedBlocksSrgb"]
    assert blocks.dtype == np.uint8 and blocks.shape == noisy.shape
    expected = np.clip(noisy.astype(np.int64) + 1, 0, 255)  # x + 0.5 rounds half up
    expected[0, 0, 0, 0, 0] = 255
    np.testing.assert_array_equal(blocks, expected)
    assert mat["TimeMPSrgb"].item() == 0.25


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_official_lan_on_a_validation_mat_from_the_sidd_pair(shared_data, tmp_path):
    """The authors' LAN through `--mode eval`, against a direct computation."""
    from sassid_jax.convert import load_torch_params
    from sassid_jax.nn import LAN

    noisy = np.asarray(Image.open(shared_data / "sidd_pair" / "noisy.png").convert("RGB"))
    gt = np.asarray(Image.open(shared_data / "sidd_pair" / "gt.png").convert("RGB"))
    write_blocks(tmp_path / "dl", noisy[None, None], gt[None, None])
    weights = shared_data / "weights" / "official_LAN.pth"
    run = _launch(
        "--mode=eval",
        "--config=configs/sidd_validation.py",
        f"--config.dataset.manual_dir={tmp_path / 'dl'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        "--config.eval.network=lan",
        f"--checkpoint={weights}",
        f"--output={tmp_path / 'out'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "eval_sidd_validation_srgb.json").read_text())

    module = LAN(blind_size=3, width=64, num_blocks=6, normalize=False)
    params = load_torch_params(weights, "lan", module)
    out = np.asarray(module.apply({"params": params}, noisy[None].astype(np.float32)))[0]
    psnr, ssim = _direct_psnr_ssim(gt, out)
    assert result["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert result["ssim"] == pytest.approx(ssim, abs=1e-4)
    assert result["psnr"] > result["noisy_psnr"] + 5  # the released LAN does denoise
    assert "sidd_validation_srgb" in run.stdout


def test_submit_mode_writes_sidd_submission_from_a_pth(tmp_path, monkeypatch):
    noisy, _ = fake_blocks(images=1, blocks=2, size=32)
    write_blocks(tmp_path / "dl", noisy, prefix="Benchmark")
    ckpt = tmp_path / "unet.pth"
    write_torch_zip(ckpt, _unet_state_dict(8), monkeypatch)
    run = _launch(
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


@pytest.mark.parametrize("case", ["unprepared", "wrong_mode", "missing_flag"])
def test_eval_and_submit_errors_exit_2(tmp_path, case):
    base = [
        f"--checkpoint={tmp_path / 'x.pth'}",
        f"--output={tmp_path / 'out'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    ]
    if case == "unprepared":
        run = _launch("--mode=eval", "--config=configs/sidd_validation.py", *base)
        message = "prepare SIDD first"
    elif case == "wrong_mode":
        run = _launch("--mode=submit", "--config=configs/sidd_validation.py", *base)
        message = "--mode submit needs one of"
    else:
        run = _launch("--mode=eval", "--config=configs/sidd_validation.py")
        message = "--mode eval needs --checkpoint, --output"
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr
    assert not (tmp_path / "out").exists()
