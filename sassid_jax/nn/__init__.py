"""Networks (Flax Linen, NHWC, [0, 255] inputs): one module per architecture.

- `bnn`: the blind-neighborhood network (BNN): pixel p never sees the b x b window around p.
- `lan`: the locally aware network (LAN): a b_L x b_L receptive field and channel attention.
- `unet`: the U-Net, the denoiser used at test time.
- `atbsn_student`: AT-BSN(D)'s student, the U-Net trunk ending in a 3x3 conv and LeakyReLU.
- `dbsnl`: AP-BSN's DBSNl: centre-masked and dilated convolutions, blind to the pixel itself.
- `tbsn`: TBSN's transformer: channel and masked window attention, blind to its PD-2 lattice.
- `pd`: pixel-shuffle downsampling (PD) and its inverse, sub-images stacked or tiled.
- `trunk`: the encoder-decoder shared by the BNN and the U-Net, and the input scaling.
- `layers`: convolutions, shifts, pooling and initialisers as pure `lax` ops.
- `checks`: input checks shared by the networks (blind sizes, batch shapes).

A config names each role's architecture (`networks.<role>.arch`, default: the role's own
name); `ARCHITECTURES` maps those names to modules.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from sassid_jax.nn.atbsn_student import ATBSNStudent
from sassid_jax.nn.bnn import BNN
from sassid_jax.nn.dbsnl import DBSNl
from sassid_jax.nn.lan import LAN
from sassid_jax.nn.tbsn import TBSN
from sassid_jax.nn.unet import UNet

__all__ = [
    "ARCHITECTURES",
    "ATBSNStudent",
    "BNN",
    "DBSNl",
    "LAN",
    "NETWORK_NAMES",
    "TBSN",
    "UNet",
    "make_network",
]

# Architecture name -> module. The BNN is also AT-BSN's teacher (blind size per call).
ARCHITECTURES = {
    "bnn": BNN,
    "lan": LAN,
    "unet": UNet,
    "atbsn_student": ATBSNStudent,
    "dbsnl": DBSNl,
    "tbsn": TBSN,
}
# The one tuple of network roles, in training order (BNN -> LAN -> U-Net).
NETWORK_NAMES = ("bnn", "lan", "unet")
# The architecture a role has when its config block names none (older configs, run folders).
DEFAULT_ARCHITECTURES = {role: role for role in NETWORK_NAMES}


def make_network(arch: str, **kwargs: Any) -> nn.Module:
    """Build a network by architecture name.

    Args:
      arch: a key of ARCHITECTURES ('bnn', 'lan', 'unet', 'atbsn_student', 'dbsnl', 'tbsn').
      **kwargs: the module's attributes (e.g. width=32, normalize=True).
    Returns:
      the unbound Linen module; ValueError for an unknown name.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown network {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)


def role_architecture(role: str, block: Mapping[str, Any]) -> str:
    """The architecture of a role: its config block's `arch`, else the role's default.

    Args:
      role: a name of NETWORK_NAMES.
      block: config.networks.<role> as a mapping (may lack 'arch').
    Returns:
      the architecture name (a key of ARCHITECTURES if the config was validated).
    """
    return block.get("arch") or DEFAULT_ARCHITECTURES[role]


def network_for_role(role: str, block: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """The module a role's config block describes (`arch` picks the class, the rest are its
    attributes).

    Args:
      role: a name of NETWORK_NAMES.
      block: config.networks.<role> as a mapping (e.g. `.to_dict()`), with or without 'arch'.
      **overrides: further attributes (e.g. dtype), taking precedence over the block.
    Returns:
      the unbound Linen module.
    """
    attributes = {k: v for k, v in block.items() if k != "arch"} | overrides
    return make_network(role_architecture(role, block), **attributes)
