"""Train only the U-Net on your own noisy photos, with a trained BNN and LAN as frozen teachers.

  python launch.py --config configs/own_photos_teachers.py --workdir runs/mine_unet \
      --config.dataset.noisy_dir=PATH/noisy \
      --config.pretrained.bnn=PATH/BNN.pth --config.pretrained.lan=PATH/LAN.pth

SASL's third stage alone (minutes on a CPU; the U-Net keeps configs/own_photos.py's size and
steps). The teachers are `.pth` files of the authors' code (they release the LAN) or our run
folders; their network fields here are the authors' architectures, checked against the
weights before training: BNN blind size 9, width 48; LAN blind size 3, width 64, 6 blocks;
both raw [0, 255] inputs (normalize=False). A `.pth` does not store the BNN's blind size: set
--config.networks.bnn.blind_size if yours differs. Expected: not measured here.
"""

import ml_collections

from sassid_jax.configs import own_photos


def get_config() -> ml_collections.ConfigDict:
    c = own_photos.get_config()
    with c.ignore_type():  # own_photos made it a str ("auto"); a pretrained BNN's is known
        c.networks.bnn.blind_size = 9
    c.networks.bnn.update({"width": 48, "normalize": False})
    c.networks.lan.update({"blind_size": 3, "width": 64, "num_blocks": 6, "normalize": False})
    c.stage_order = ("unet",)
    return c
