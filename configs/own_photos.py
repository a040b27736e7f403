"""Train SASL on your own camera's noisy photos (no ground truth needed).

  python launch.py --config configs/own_photos.py --workdir runs/mine \
      --config.dataset.noisy_dir=PATH/noisy [--config.dataset.clean_dir=PATH/clean]

noisy_dir: your noisy photos (PNG/JPEG/TIFF, any sizes); clean_dir (optional): references with
the same file names, only to score the result. The main job's sizes and steps (minutes on a
CPU), with the BNN blind size measured from the noise of the photos (`"auto"`; see it with
`--mode analyze`). Expected (bench/OWN_PHOTOS.md, 2026-11-29): U-Net 27.84 dB on the real SIDD
block from 16.15 (trained on five SIDD blocks), 28.09 dB from 26.01 on mildly noisy simulated
photos. What it chooses by itself and why: docs/self_tuning.md.
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.name = "noisy_image_folder"
    with c.ignore_type():  # an int field in the default config; "auto" is resolved at training
        c.networks.bnn.blind_size = "auto"
    return c
