"""TBSN(D) (Li et al., AAAI 2025): TBSN distilled into a U-Net without blind spot.

  python launch.py --config configs/tbsn_distill.py --workdir runs/tbsn_distill
  python launch.py --mode denoise --config configs/tbsn_distill.py --checkpoint RUN_OR_PTH \
      --input IN --output OUT

Two stages: TBSN's (configs/tbsn.py), then the U-Net (role unet, SASL's U-Net on the authors'
[0, 1] scale: input_scale=1/255, normalize=False) learns with L1 the frozen TBSN's output at
PD 2 followed by one full-resolution TBSN pass (the authors' R3 with T = 1, p = 0;
methods/tbsn.py distill_target). The U-Net is the test-time network, plain (no PD, no R3);
the teacher's row is TBSN at PD 2 without R3. A U-Net .pth (same keys as SASL's) takes its
input_scale from this config: give --config with it. A trained TBSN instead of stage 1:
--config.stage_order='("distill",)' --config.pretrained.bnn=RUN_OR_PTH.
Published recipe (nagejacob/TBSN, option/knowledge_distillation_sidd.json, after
option/tbsn_sidd.json): Unet(dim=48), 128x128 crops of SIDD-Medium, batch 8, AdamW (weight
decay 0.01) at 3e-4, x0.1 at 40% and 80% of 100k iterations; TBSN trains on 640x640 crops.
One crop_size serves both stages here: at the published sizes run the two stages as two runs
(configs/tbsn.py with crop_size=640, then this config with stage_order=("distill",),
pretrained.bnn=that run, crop_size=128).
This short CPU recipe: the fixture-size TBSN of configs/tbsn.py (400 steps), then a width-32
U-Net, 400 steps of AdamW at 3e-4 with x0.1 at steps 160 and 320, batch 4, both stages on
160x160 crops: a multiple of 160 for TBSN's PD-5 sub-image, of 32 for the U-Net; the target
pads by reflection to multiples of 64 where needed (one crop size, no per-stage override).
The teacher's target is precomputed once per training photo (train.teachers='precomputed',
on whole photos, so its PD-2 sub-images and channel attention span the photo, not a crop as
the authors'): measured 51 s for an 872x1000 photo (4.4 GB peak), ~8 min for the 21 photos,
against ~9 s per step online (two TBSN passes of 4 x 192^2), ~1 h for 400 steps;
selection.max_crops=4 because the held-out loss runs the teacher online. Expected: not
measured yet.
"""

import ml_collections

from sassid_jax.configs import tbsn


def get_config() -> ml_collections.ConfigDict:
    c = tbsn.get_config()
    # the authors' Unet: SASL's U-Net on [0, 1] inputs and targets
    c.networks.unet = ml_collections.ConfigDict(
        {"arch": "unet", "width": 32, "normalize": False, "input_scale": 1 / 255}
    )
    c.stage_order = ("tbsn", "distill")
    c.stages.distill = ml_collections.ConfigDict(
        {
            "learners": ("unet",),
            "losses": ("tbsn_distill",),
            "steps": 400,
            "lr": 3e-4,
            "schedule": "step",  # x0.1 at 40% and 80% of the steps, as published
            "decay_every": 160,
            "decay": 0.1,
        }
    )
    c.train.teachers = "precomputed"  # the target costs two TBSN passes: once per photo
    c.selection.max_crops = 4  # the held-out loss runs the teacher on every evaluation
    c.eval.network = "unet"
    # the U-Net runs plainly; the TBSN teacher at PD 2 without R3 (inference.procedure)
    c.inference.update({"blind_size": -1, "pd_factor": 1, "r3_repeats": 0, "r3_prob": 0.16})
    return c
