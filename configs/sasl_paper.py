"""The published recipe (docs/method.md, "Training recipe"), faithful to the authors' code.

  python launch.py --config configs/sasl_paper.py --workdir runs/paper \
      --config.dataset.manual_dir=$HOME/sidd

SIDD-Medium sRGB noisy images, random 256x256 crops with flips and transpose, batch 8,
Adam(3e-4, 0.9/0.999, 1e-8) with cosine decay to 0 over each stage, 400k steps per stage,
BNN b=9 C=48, LAN b=3 width 64, U-Net C=48, raw [0, 255] inputs (normalize=False), alpha
thresholds 1/5, the authors' raw outputs (no colour anchor, no safeguard); validates on
sidd_validation_srgb every 20k steps. Expected: the paper reports 37.39 dB / 0.934 on SIDD
validation (docs/method.md, "Published figures"); not reproduced here (no SIDD download; it
needs an accelerator). manual_dir: the SIDD downloads (docs/reproducing.md).
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.name = "sidd_medium_srgb"
    c.dataset.eval_name = "sidd_validation_srgb"  # every train.eval_every steps and at the end
    c.crop_size = 256
    c.batch_size = 8
    c.networks.bnn.update({"blind_size": 9, "width": 48, "normalize": False})
    c.networks.lan.update({"blind_size": 3, "width": 64, "num_blocks": 6, "normalize": False})
    c.networks.unet.update({"width": 48, "normalize": False})
    c.alpha.update({"lower": 1.0, "upper": 5.0})
    for name in c.stage_order:
        c.stages[name].update({"steps": 400_000, "lr": 3e-4})
    c.train.update(
        {"log_every": 100, "eval_every": 20_000, "checkpoint_every": 5_000, "keep_checkpoints": 3}
    )
    c.eval.max_images = 0
    c.postprocess.colour_sigma = 0.0  # the authors' raw outputs
    c.postprocess.safeguard = "off"
    c.eval.bnn_block = 0  # 256x256 validation blocks = the training crop size
    return c
