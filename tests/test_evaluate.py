"""The evaluation protocol's scores and `--mode eval` (scoring.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from sassid_jax.evaluation import scoring
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
    result = scoring.score_examples(examples, outputs)
    direct = [_direct_psnr_ssim(e["clean"], o) for e, o in zip(examples, outputs, strict=True)]
    assert result["psnr"] == pytest.approx(np.mean([d[0] for d in direct]), abs=1e-4)
    assert result["ssim"] == pytest.approx(np.mean([d[1] for d in direct]), abs=1e-4)
    for (name, s), d in zip(result["per_image"].items(), direct, strict=True):
        assert s["ssim"] == pytest.approx(d[1], abs=1e-4), name
    assert result["per_phone"]["GP"]["psnr"] == pytest.approx(
        np.mean([direct[2][0], direct[3][0]]), abs=1e-4
    )
    assert result["per_iso"]["1600"]["images"] == 2
    assert "S6" in scoring.format_scores("x", result)


def test_official_lan_on_a_validation_mat_from_the_sidd_pair(launch, shared_data, tmp_path):
    """The authors' LAN through `--mode eval`, against a direct computation."""
    from sassid_jax.io.torch_params import load_torch_params
    from sassid_jax.nn import LAN

    noisy = np.asarray(Image.open(shared_data / "sidd_pair" / "noisy.png").convert("RGB"))
    gt = np.asarray(Image.open(shared_data / "sidd_pair" / "gt.png").convert("RGB"))
    write_blocks(tmp_path / "dl", noisy[None, None], gt[None, None])
    weights = shared_data / "weights" / "official_LAN.pth"
    run = launch(
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


@pytest.mark.parametrize("case", ["unprepared", "missing_flag"])
def test_eval_errors_exit_2(launch, tmp_path, case):
    base = [
        f"--checkpoint={tmp_path / 'x.pth'}",
        f"--output={tmp_path / 'out'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    ]
    if case == "unprepared":
        run = launch("--mode=eval", "--config=configs/sidd_validation.py", *base)
        message = "prepare SIDD first"
    else:
        run = launch("--mode=eval", "--config=configs/sidd_validation.py")
        message = "--mode eval needs --checkpoint, --output"
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr
    assert not (tmp_path / "out").exists()


def test_eval_of_a_pth_without_the_network_names_the_config_field(shared_data):
    from sassid_jax.io.checkpoints import CheckpointInputError, load_network_or_hint

    weights = shared_data / "weights" / "official_LAN.pth"
    with pytest.raises(CheckpointInputError) as info:
        load_network_or_hint(weights, "unet", "--config.eval.network=")
    assert str(info.value) == (
        f"{weights}: this .pth holds a LAN, not a U-Net; add --config.eval.network=lan"
    )
    module, _ = load_network_or_hint(weights, "lan", "--config.eval.network=")
    assert type(module).__name__ == "LAN"
