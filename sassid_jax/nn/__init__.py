"""Networks (Flax Linen, NHWC, [0, 255] inputs): one module per architecture.

- `bnn`: the blind-neighborhood network (BNN): pixel p never sees the b x b window around p.
- `lan`: the locally aware network (LAN): a b_L x b_L receptive field and channel attention.
- `unet`: the U-Net, the denoiser used at test time.
- `trunk`: the encoder-decoder shared by the BNN and the U-Net, and the input scaling.
- `layers`: convolutions, shifts, pooling and initialisers as pure `lax` ops.
- `checks`: input checks shared by the networks (blind sizes, batch shapes).
"""

from sassid_jax.nn.bnn import BNN
from sassid_jax.nn.lan import LAN
from sassid_jax.nn.unet import UNet

__all__ = ["BNN", "LAN", "NETWORK_NAMES", "UNet", "make_network"]

NETWORKS = {"bnn": BNN, "lan": LAN, "unet": UNet}
# The one tuple of network names, in training order (BNN -> LAN -> U-Net).
NETWORK_NAMES = tuple(NETWORKS)


def make_network(name: str, **kwargs):
    """Build a network by name ('bnn', 'lan', 'unet'); kwargs are the module's attributes
    (e.g. width=32, normalize=True). Returns the unbound Linen module; ValueError for an
    unknown name."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)
