"""AT-BSN(D) (Chen et al., CVPR 2024): AT-BSN's BNN distilled into a student without blind spot.

  python launch.py --config configs/atbsn_distill.py --workdir runs/atbsn_distill

Two stages: AT-BSN's stage 1 (configs/atbsn.py), then the student (role unet, AT-BSN's N_BSN:
the BNN trunk with ordinary convolutions and a 3x3 conv + LeakyReLU head) learns with the sum
of L1 losses to the frozen teacher at blind sizes 0, 1, 3, 5, 7, 9 and 11, started from the
teacher's trunk (all but dec1's convolutions, as the authors' load_network_bsn2nbsn). The
student is the test-time network; the teacher's row is at blind size 3. Expected: not measured
at this default budget (the shared 2-core machine ran it at ~0.3 steps/s, past the session's
time); at 100 steps per stage (bench/COMPARE.md, shared machine): student 21.99 dB / SSIM 0.5317,
teacher at blind size 3 21.95 / 0.4337, from a noisy 17.23 dB.
A trained teacher instead of stage 1: --config.stage_order='("distill",)'
--config.pretrained.bnn=RUN_OR_PTH. Published recipe (codes/options/train/distill_atbsn.yml):
width 48, 128x128 crops, batch 8, Adam at 3e-4 cosine-annealed to 0 over 100k iterations, after
the teacher's 400k. This short CPU recipe: width 32, 64x64 crops, batch 4, 400 + 400 steps at
1e-3 (cosine), normalize=True.
"""

import ml_collections

from sassid_jax.configs import atbsn


def get_config() -> ml_collections.ConfigDict:
    c = atbsn.get_config()
    # the student's width follows the teacher's (its trunk starts as the teacher's)
    c.networks.unet = ml_collections.ConfigDict(
        {"arch": "atbsn_student", "width": c.networks.bnn.get_ref("width"), "normalize": True}
    )
    c.stage_order = ("bnn", "distill")
    c.stages.distill = ml_collections.ConfigDict(
        {"learners": ("unet",), "losses": ("atbsn_distill",), "steps": 400, "lr": 1e-3}
    )
    c.eval.network = "unet"
    return c
