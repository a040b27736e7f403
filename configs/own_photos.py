"""Train SASL on your own camera's noisy photos (no ground truth needed).

  python launch.py --config configs/own_photos.py --workdir runs/mine \
      --config.dataset.noisy_dir=PATH/noisy [--config.dataset.clean_dir=PATH/clean]

noisy_dir: your noisy photos (PNG/JPEG/TIFF, any sizes); clean_dir (optional): clean
references with the same file names, used only to score the result. The folders are read
once into a TFDS dataset (noisy_image_folder). Sizes and steps are the main job's (minutes on
a CPU); for a full-size run, start from configs/sasl_paper.py and set the same fields.

networks.bnn.blind_size is "auto": before training, the noise of the noisy photos is measured
(`sassid_jax.noise.analysis`; see it with `--mode analyze --input PATH/noisy`) and the blind
size is the smallest that hides the neighbours whose noise still correlates with a pixel's
(5 for SIDD-like phone noise). Set an odd integer to choose it yourself.
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.name = "noisy_image_folder"
    with c.ignore_type():  # an int field in the default config; "auto" is resolved at training
        c.networks.bnn.blind_size = "auto"
    return c
