"""Input checks shared by the networks: blind sizes at construction, batches at call time.

Each raises ValueError with one line naming the network and the bad value (a network built or
called wrongly from code is a bug of the caller; configs are checked earlier, in
`sassid_jax.configuration`, with `ConfigError`).
"""

from __future__ import annotations

import jax


def check_blind_size(blind_size: int, network: str, allow_zero: bool = False) -> None:
    """Raise ValueError unless blind_size is an odd integer >= 1 (or 0, when allowed).

    Args:
      blind_size: the value to check.
      network: the network's name, for the message ('BNN', 'LAN').
      allow_zero: accept 0 too (the BNN at blind size 0: no blind spot at all).
    """
    if allow_zero and blind_size == 0 and isinstance(blind_size, int):
        return
    if not isinstance(blind_size, int) or blind_size < 1 or blind_size % 2 == 0:
        allowed = "0 or an odd integer >= 1" if allow_zero else "an odd integer >= 1"
        raise ValueError(f"{network}: blind_size must be {allowed}, got {blind_size!r}")


def check_rgb_batch(x: jax.Array, *, network: str, size_multiple: int = 1) -> None:
    """Raise ValueError (naming the bad value) unless x is an (N, H, W, 3) batch.

    Args:
      x: the network's input (any dtype; values are not checked).
      network: the network's name, for the message.
      size_multiple: H and W must be multiples of it (32 for BNN and U-Net, 1 for LAN).
    """
    if x.ndim != 4:
        raise ValueError(f"{network}: expected an NHWC batch (N, H, W, 3), got shape {x.shape}")
    n, h, w, c = x.shape
    if c != 3:
        raise ValueError(f"{network}: expected 3 (RGB) channels, got {c} (shape {x.shape})")
    if h % size_multiple or w % size_multiple:
        raise ValueError(
            f"{network}: height and width must be multiples of {size_multiple}, got "
            f"H={h}, W={w} (pad the image, e.g. with sassid_jax.inference.predict)"
        )
