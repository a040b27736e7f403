"""Real-noise bench on DND: the networks of a SIDD run on the 34 DND crops (no training).

  python -m bench.real_noise --config=configs/real_noise/dnd.py \
      --config.from_run=scratch/quality_real/full --config.out=scratch/quality_real/dnd

DND has no public ground truth: reports the residual standard deviation in flat regions
(alpha of the SASL BNN's output < 0.5) before and after denoising, the low-pass bias, and
saves panels of a few crops; the SIDD pair rides along as a check of the measure. Expected
figures: bench/REAL_NOISE.md, section 3.
"""

import ml_collections

from sassid_jax.configs.real_noise import bench_fields


def get_config() -> ml_collections.ConfigDict:
    c = bench_fields("dnd", "scratch/quality_real/dnd")
    c.from_run = ""  # required: the out folder of a SIDD protocol run (its runs/ are read)
    c.max_images = 0  # first N DND crops only (0: all)
    c.bm3d_max = 0  # BM3D on the first N crops only (0: all); it is the slow part
    c.num_panels = 3  # panels of the first N crops
    c.panels = ""  # comma-separated crop names that also get panels (e.g. crop_17,extra_01)
    return c
