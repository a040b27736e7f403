"""Train SASL on your own camera's noisy photos (no ground truth needed).

  python launch.py --config configs/own_photos.py --workdir runs/mine \
      --config.dataset.noisy_dir=PATH/noisy [--config.dataset.clean_dir=PATH/clean]

noisy_dir: your noisy photos (PNG/JPEG/TIFF, any sizes); clean_dir (optional): clean
references with the same file names, used only to score the result. The folders are read
once into a TFDS dataset (noisy_image_folder). Sizes and steps are the main job's (minutes on
a CPU); for a full-size run, start from configs/sasl_paper.py and set the same fields.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.name = "noisy_image_folder"
    return c
