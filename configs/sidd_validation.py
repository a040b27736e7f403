"""Evaluate a trained network on the SIDD sRGB validation blocks (the paper's protocol).

  python launch.py --mode eval --config configs/sidd_validation.py \
      --config.dataset.manual_dir=~/sidd --checkpoint runs/paper --output results/

manual_dir holds ValidationNoisyBlocksSrgb.mat and ValidationGtBlocksSrgb.mat (and, for the
per-phone / per-ISO breakdown, the SIDD_Benchmark_Data scene folders). The checkpoint is our
run folder or an authors' .pth; eval.network picks the network (default the U-Net). Writes
results/eval_sidd_validation_srgb.json. Expected: the paper's 37.39 dB / 0.934 for a full run
(docs/method.md, "Published figures"); not reproduced here.
"""

import ml_collections

from sassid_jax.configs import sasl_paper


def get_config() -> ml_collections.ConfigDict:
    c = sasl_paper.get_config()
    c.dataset.name = "sidd_validation_srgb"
    c.dataset.eval_name = ""
    c.eval.ensemble = False  # the paper's validation figure is without the ensemble
    return c
