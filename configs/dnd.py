"""Write the DND sRGB benchmark submission (50 bundle files) with the x8 self-ensemble.

  python launch.py --mode submit --config configs/dnd.py \
      --config.dataset.manual_dir=~/dnd --checkpoint runs/paper --output submission/dnd

manual_dir holds info.mat and images_srgb/0001.mat .. 0050.mat. Each 512x512 box is denoised
with up to 64 px of context per side (80 px, or less at image borders, rounded down to a
multiple of 32), one file per box in submission/dnd/boxes/ (a stopped run resumes there);
upload the files in submission/dnd/bundled/. The paper reports 38.34 dB / 0.941 from the
benchmark server (docs/method.md, "Published figures"; not reproduced here).
"""

import ml_collections

from sassid_jax.configs import sasl_paper


def get_config() -> ml_collections.ConfigDict:
    c = sasl_paper.get_config()
    c.dataset.name = "dnd_srgb"
    c.dataset.eval_name = ""
    c.eval.ensemble = True
    return c
