"""TBSN (Li et al., AAAI 2025): a blind-spot transformer trained on PD-5 sub-images, tested with
PD 2 and R3.

  python launch.py --config configs/tbsn.py --workdir runs/tbsn
  python launch.py --mode denoise --config configs/tbsn.py --checkpoint model_sidd.pth \
      --input IN --output OUT

One stage: TBSN (role bnn, blind to its own PD-2 lattice but for its channel attention) runs on
the first PD-5 sub-image x[:, 0::5, 0::5] of each crop and learns with L1 to that sub-image. At
test time: the four PD-2 sub-images on the batch axis, then R3 (8 passes at full resolution,
16% of the elements reset to the noisy value, averaged; masks from config.seed);
--config.inference.r3_repeats=0 gives the deterministic PD-2 output. The authors' raw output
(no colour anchor, no safeguard). An authors' state_dict (`model_sidd.pth`, with or without
`bsn.`) loads with its sizes read from the tensors.
Published recipe (nagejacob/TBSN, option/tbsn_sidd.json): TBSN(dim=48, num_blocks=(4, 4, 4),
num_refinement_blocks=4), 12.75 M parameters, 640x640 crops of SIDD-Medium (128x128
sub-images), batch 4, AdamW (weight decay 0.01, PyTorch's default) at 3e-4, x0.1 at 40% and
80% of 100k iterations. The crops need photos or tiles of at least 640 px; the default
embedded data's tiles are smaller, so the published crop size is for a full SIDD-Medium copy.
This short CPU recipe is the parity fixture's size, TBSN(dim=16, one block per level), 160x160
crops (32x32 sub-images), batch 4, 400 steps of AdamW at 3e-4 with x0.1 at steps 160 and 320
(the authors' code at full size takes 41 s per train step at 4 x 128^2 on this 2-core CPU,
issue 24). Its result is not measured yet.
"""

import ml_collections

from sassid_jax.configs import apbsn
from sassid_jax.methods import tbsn


def get_config() -> ml_collections.ConfigDict:
    # AP-BSN's evaluation: the test network is the bnn role, on whole images, PD 2 + R3, raw
    c = apbsn.get_config()
    c.crop_size = 160  # a multiple of 5 x 32: the PD-5 sub-image's side a multiple of 32
    c.networks.bnn = ml_collections.ConfigDict({"arch": "tbsn", **tbsn.SMALL_SIZE})
    c.optimizer.weight_decay = 0.01  # AdamW, as the authors' torch.optim.AdamW
    stage = c.stages.apbsn.to_dict() | {
        "losses": ("tbsn",),
        "lr": 3e-4,
        "schedule": "step",  # x0.1 at 40% and 80% of the steps, as published
        "decay_every": 160,
    }
    c.stage_order = ("tbsn",)
    c.stages = ml_collections.ConfigDict({"tbsn": stage})
    return c
