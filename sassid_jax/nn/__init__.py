"""Flax Linen networks of SASL: BNN (blind neighborhood), LAN (locally aware), U-Net."""

from sassid_jax.nn.bnn import BNN
from sassid_jax.nn.lan import LAN
from sassid_jax.nn.unet import UNet

__all__ = ["BNN", "LAN", "NETWORK_NAMES", "UNet", "make_network"]

NETWORKS = {"bnn": BNN, "lan": LAN, "unet": UNet}
# The one tuple of network names, in training order (BNN -> LAN -> U-Net).
NETWORK_NAMES = tuple(NETWORKS)


def make_network(name: str, **kwargs):
    """Build a network by name ('bnn', 'lan', 'unet'); kwargs are the module's attributes."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)
