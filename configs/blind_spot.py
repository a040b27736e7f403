"""Baseline: a classic blind-spot network (BNN blind size 1) in the main job's three stages.

  python launch.py --config configs/blind_spot.py --workdir runs/blind_spot

Not measured on the embedded data. On the real SIDD block, the same recipe with b = 1 stays
near the noisy input (U-Net 17.92 dB from 16.15, against 27.40 with b = 9): a one-pixel blind
spot leaves the correlated neighbours visible, so it learns the noise (bench/REAL_NOISE.md,
section 1).
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.networks.bnn.blind_size = 1
    return c
