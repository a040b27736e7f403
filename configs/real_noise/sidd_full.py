"""Real-noise bench, SIDD full protocol: more images, more steps.

  python -m bench.real_noise --config=configs/real_noise/sidd_full.py \
      --config.out=scratch/quality_real/full --config.run.train.eval_every=200

As sidd_short.py, but training on the noisy block of the SIDD pair plus the four SIDD noisy
blocks, with 1000 / 400 / 800 steps for BNN / LAN / U-Net (chosen from the steps/s of the short
runs on the shared 2-core CPU to fit a per-stage time budget). Expected (bench/REAL_NOISE.md,
section 2): SASL U-Net 26.46 dB, LAN 26.09, BNN 24.45, blind spot 17.22 on the SIDD pair.
"""

import ml_collections

from sassid_jax.configs.real_noise import sidd_short


def get_config() -> ml_collections.ConfigDict:
    c = sidd_short.get_config()
    c.protocol = "full"
    c.out = "scratch/quality_real/full"
    c.extra_images = True
    for name, steps in (("bnn", 1000), ("lan", 400), ("unet", 800)):
        c.run.stages[name].steps = steps
    return c
