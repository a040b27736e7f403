"""AT-BSN (Chen et al., CVPR 2024), stage 1: the BNN trained at blind size 9, tested at 3.

  python launch.py --config configs/atbsn.py --workdir runs/atbsn

One stage: the BNN (AT-BSN's network is our BNN, its blind size chosen per call) learns with
L1 to the noisy input at blind size 9, as SASL's first stage; at test time it runs at blind
size 3 (inference.blind_size), the authors' raw output (no colour anchor, no safeguard). The
final report scores it on 64x64 blocks, the crop size it trained on (eval.bnn_block, as SASL's
BNN): a BNN trained on small crops does not transfer to whole images (here 11.7 dB whole
against 23.2 dB on blocks); `--mode eval` and `--mode denoise` run whole images, right for
the authors' weights (256x256 crops). Expected (measured 2026-12-03 on this project's 2-core
CPU shared with other jobs, load ~5: 11 min 44 s, 2.1 GB): held-out BNN at blind size 3
23.18 dB / SSIM 0.4959 from a noisy 17.23 dB, colour shift 2.4/2.2/7.1 (at its training
blind size 9: 21.49 / 0.3842).
Published recipe (hnmizuho/AT-BSN, codes/options/train/train_atbsn.yml): width 48, 256x256
crops, batch 8, Adam (0.9, 0.999, no weight decay) at 3e-4 cosine-annealed to 0 over 400k
iterations, inputs on [0, 255] (normalize=False). This short CPU recipe has the main job's
size: width 32, 64x64 crops, batch 4, 400 steps at 1e-3 (cosine), normalize=True.
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    # AT-BSN's network is the BNN (arch "bnn"), trained at blind size 9 as SASL's first stage
    c.networks.bnn.update({"arch": "bnn", "blind_size": 9, "width": 32, "normalize": True})
    c.stage_order = ("bnn",)  # L1 to the noisy input, 400 steps at 1e-3 (the main job's)
    c.stages = ml_collections.ConfigDict({"bnn": c.stages.bnn.to_dict()})
    c.eval.network = "bnn"  # scored on crop_size blocks, as SASL's BNN (eval.bnn_block)
    c.inference.blind_size = 3
    c.postprocess.colour_sigma = 0.0
    c.postprocess.safeguard = "off"
    return c
