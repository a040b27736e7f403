"""Write the SIDD benchmark submission (SubmitSrgb.mat) with the x8 self-ensemble.

  python launch.py --mode submit --config configs/sidd_benchmark.py \
      --config.dataset.manual_dir=~/sidd --checkpoint runs/paper --output submission/sidd

manual_dir holds BenchmarkNoisyBlocksSrgb.mat. Upload submission/sidd/SubmitSrgb.mat; the
paper reports 37.41 dB / 0.934 from the benchmark server (docs/method.md, "Published
figures"; not reproduced here).
"""

import ml_collections

from sassid_jax.configs import sasl_paper


def get_config() -> ml_collections.ConfigDict:
    c = sasl_paper.get_config()
    c.dataset.name = "sidd_benchmark_srgb"
    c.dataset.eval_name = ""
    c.eval.ensemble = True  # submissions average the 8 flips x rotations (docs/method.md)
    return c
