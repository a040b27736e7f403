"""Train only the U-Net on your own noisy photos, with the authors' trained BNN and LAN as
frozen teachers (SASL's third stage; minutes on a CPU).

  python launch.py --config configs/own_photos_teachers.py --workdir runs/mine_unet \
      --config.dataset.noisy_dir=PATH/noisy \
      --config.pretrained.bnn=PATH/BNN.pth --config.pretrained.lan=PATH/official_LAN.pth

The teachers may also be one of our run folders (or a checkpoint inside one, local or gs://).
Their network fields here are the authors' architectures, which the weights are checked
against before training: BNN blind size 9, width 48; LAN blind size 3, width 64, 6 blocks;
both fed raw [0, 255] values (normalize=False). A `.pth` does not store the BNN's blind size:
set --config.networks.bnn.blind_size if yours was trained with another. The U-Net keeps the
main job's size and steps (configs/own_photos.py).
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
