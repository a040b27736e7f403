"""Real-noise bench, SIDD short protocol (the faithfulness protocol).

  python -m bench.real_noise --config=configs/real_noise/sidd_short.py \
      --config.out=scratch/quality_real/short

Trains SASL (BNN b=9 -> LAN -> U-Net) and the blind-spot baseline (BNN b=1, same recipe)
self-supervised on the noisy block of the SIDD pair ALONE, then scores every network against
the pair's ground truth. Expected (bench/REAL_NOISE.md, section 1, 2026-11-24): SASL U-Net
27.40 dB and LAN 26.60 (the authors' code: 27.55, 26.78), blind spot 17.92, noisy 16.15.
`run` is the library config of every run (configs/default.py pinned to the protocol: width
32, 64x64 crops, batch 4, Adam 1e-3 cosine, normalize=True, 400 steps per stage); the bench
sets its dataset folders, seed and BNN blind size per run. Override any field, e.g.
--config.run.stages.unet.steps=800 --config.run.train.eval_every=200.
"""

import ml_collections

from sassid_jax.configs import default
from sassid_jax.configs.real_noise import bench_fields


def get_config() -> ml_collections.ConfigDict:
    c = bench_fields("sidd", "scratch/quality_real/short")
    c.protocol = "short"
    c.extra_images = False  # True: also train on the four SIDD noisy blocks (sidd_noisy/)
    c.allow_config_change = False  # resume a run folder made with another run config
    c.panel = ml_collections.ConfigDict({"y": 64, "x": 64, "size": 96, "zoom": 2})

    run = default.get_config()
    run.dataset.name = "image_folder"
    run.crop_size = 64  # run.eval.bnn_block follows it: stage 1 is scored on 64x64 blocks
    run.batch_size = 4
    run.networks.bnn.width = run.networks.unet.width = 32
    for name in ("bnn", "lan", "unet"):
        run.stages[name].steps = 400
        run.stages[name].lr = 1e-3
    run.train.checkpoint_every = 400
    run.train.log_every = 25
    run.train.eval_every = 0  # N > 0: also score on the SIDD pair every N steps (curve)
    c.run = run
    return c
