"""The paper's joint-training ablation: one stage trains BNN, LAN and U-Net together.

  python launch.py --config configs/joint.py --workdir runs/joint

The summed loss is L_bnn + L_lan + L_unet over the main job's total steps (950); each target
(BNN output for the LAN, BNN/LAN outputs and alpha for the U-Net) is stop-gradient'ed, as in
the staged recipe. Expected: not measured here; the paper reports 37.12 dB on SIDD validation
jointly against 37.39 dB in three stages (docs/method.md, "Published figures").
"""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    steps = sum(c.stages[name].steps for name in c.stage_order)
    c.stage_order = ("joint",)
    c.stages = ml_collections.ConfigDict()
    c.stages.joint = ml_collections.ConfigDict(
        {
            "learners": ("bnn", "lan", "unet"),
            "losses": ("bnn", "lan", "unet"),
            "steps": steps,
            "lr": 1e-3,
        }
    )
    return c
