"""The test-time procedure of a method's network: blind size, PD and R3 (config.inference).

Every config carries `inference.blind_size` (-1: each BNN as trained), `inference.pd_factor` (1:
no PD), `inference.r3_repeats` (0: no R3) and `inference.r3_prob`; those values leave SASL's
networks as they are. AT-BSN runs its BNN at blind size 3; AP-BSN runs PD with factor 2, then
R3 (8 passes, p = 0.16, masks drawn from config.seed); TBSN the same, its PD sub-images on
the batch axis without gaps and R3 unpadded. Images are NHWC float32 on [0, 255].
Details: docs/peers.md#test-time-procedures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sassid_jax.errors import ConfigError
from sassid_jax.methods import apbsn, tbsn
from sassid_jax.nn import BNN, TBSN, role_architecture

ApplyFn = Callable[[jax.Array], jax.Array]
AS_TRAINED = -1  # inference.blind_size: each BNN at its own (training) blind size


@dataclasses.dataclass(frozen=True)
class Procedure:
    """How a network denoises at test time.

    Attributes:
      blind_size: a BNN's blind size per call (0 or odd); AS_TRAINED: the module's own.
      pd_factor: PD factor (AP-BSN: 2), 2 px of zeros between sub-images; 1: no PD.
      r3_repeats: R3 passes after the first output; 0: no R3 (a deterministic output).
      r3_prob: R3's probability of resetting an element to the noisy value.
      seed: R3's PRNG seed (config.seed): each call draws its masks from key(seed).
    """

    blind_size: int = AS_TRAINED
    pd_factor: int = 1
    r3_repeats: int = 0
    r3_prob: float = apbsn.R3_PROB
    seed: int = 0

    @property
    def plain(self) -> bool:
        """Whether this is the network as it is (SASL's procedure)."""
        return self.blind_size == AS_TRAINED and self.pd_factor == 1 and self.r3_repeats == 0


def from_config(config: Mapping[str, Any] | Any, network: str | None = None) -> Procedure:
    """The procedure config.inference gives a network.

    Args:
      config: a run config (ConfigDict or its dict; no `inference` section: plain).
      network: the role it is for; PD and R3 are the test-time network's (config.eval.network)
        only, the blind size every BNN's (architecture 'bnn'); a TBSN that is not the
        test-time network (the teacher of TBSN's U-Net) runs at PD 2 without R3. None: the
        test-time network.
    Returns:
      the Procedure (checked: `check`).
    """
    check(config)
    cfg = dict(config.get("inference") or {})
    test_network = (config.get("eval") or {}).get("network", "unet")
    network = network or test_network
    full = network == test_network
    arch = architecture(config, network)
    teacher_pd = tbsn.TEST_PD_FACTOR if arch == "tbsn" else 1  # its own PD, not the U-Net's
    return Procedure(
        blind_size=int(cfg.get("blind_size", AS_TRAINED)) if arch == "bnn" else AS_TRAINED,
        pd_factor=int(cfg.get("pd_factor", 1)) if full else teacher_pd,
        r3_repeats=int(cfg.get("r3_repeats", 0)) if full else 0,
        r3_prob=float(cfg.get("r3_prob", apbsn.R3_PROB)),
        seed=int(config.get("seed", 0)),
    )


def _int_field(value: Any, field: str, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"inference.{field} must be an integer >= {least}, got {value!r}")


def check(config: Mapping[str, Any] | Any) -> None:
    """Raise ConfigError naming the first bad field of config.inference (absent: fine).

    Args:
      config: a run config (ConfigDict or dict).
    """
    cfg = dict(config.get("inference") or {})
    blind = cfg.get("blind_size", AS_TRAINED)
    if blind != AS_TRAINED:
        _int_field(blind, "blind_size", 0)
        if blind and blind % 2 == 0:
            raise ConfigError(
                f"inference.blind_size must be -1 (as trained), 0 or odd, got {blind!r}"
            )
    _int_field(cfg.get("pd_factor", 1), "pd_factor", 1)
    _int_field(cfg.get("r3_repeats", 0), "r3_repeats", 0)
    prob = cfg.get("r3_prob", apbsn.R3_PROB)
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
        raise ConfigError(f"inference.r3_prob must be a number in [0, 1], got {prob!r}")


def network_fn(module: nn.Module, params: Any, procedure: Procedure) -> ApplyFn:
    """The network with `procedure` around it, as a jnp function (not jitted).

    Args:
      module: the network; a `BNN` when procedure.blind_size is not AS_TRAINED.
      params: its parameters.
      procedure: the test-time procedure.
    Returns:
      (N, H, W, 3) float32 on [0, 255] -> (N, H, W, 3), any H and W the network takes
      (PD pads to multiples of the factor and crops back; a TBSN's PD, to multiples of 32 x
      the factor, by reflection: `methods.tbsn.denoise`).
    Raises:
      ValueError: a blind size for a network that is not a BNN.
    """
    if procedure.blind_size != AS_TRAINED and not isinstance(module, BNN):
        raise ValueError(
            f"inference.blind_size={procedure.blind_size} needs a BNN, not {type(module).__name__}"
        )

    def net(x: jax.Array) -> jax.Array:
        if procedure.blind_size == AS_TRAINED:
            return module.apply({"params": params}, x)
        return module.apply({"params": params}, x, procedure.blind_size)

    is_tbsn = isinstance(module, TBSN)  # its own PD (stacked, no gaps) at any factor
    pd_denoise = tbsn.denoise if is_tbsn else apbsn.denoise

    def fn(x: jax.Array) -> jax.Array:
        key = jax.random.key(procedure.seed)
        if is_tbsn or procedure.pd_factor > 1:
            return pd_denoise(
                net,
                x,
                factor=procedure.pd_factor,
                r3_repeats=procedure.r3_repeats,
                r3_prob=procedure.r3_prob,
                key=key,
            )
        first = net(x)
        if not procedure.r3_repeats:
            return first
        uniforms = apbsn.r3_uniforms(key, x.shape, procedure.r3_repeats)
        return apbsn.r3_refine(net, x, first, uniforms, procedure.r3_prob)

    return fn


def jit_procedure(module: nn.Module, params: Any, procedure: Procedure) -> ApplyFn:
    """`network_fn` jitted, the parameters passed as arguments (one compilation per shape).

    Args:
      module, params, procedure: as `network_fn`.
    Returns:
      (N, H, W, 3) float32 on [0, 255] -> (N, H, W, 3) jax.Array.
    """
    if procedure.plain:
        apply = jax.jit(module.apply)
        return lambda x: apply({"params": params}, x)

    def run(p: Any, x: jax.Array) -> jax.Array:
        return network_fn(module, p, procedure)(x)

    jitted = jax.jit(run)
    return lambda x: jitted(params, jnp.asarray(x))


def architecture(config: Mapping[str, Any] | Any, network: str) -> str:
    """The architecture config.networks.<network> names (the role's own when absent), the
    one a `.pth` given with this config holds.

    Args:
      config: a run config (ConfigDict or dict).
      network: a role, 'bnn', 'lan' or 'unet'.
    Returns:
      a key of `nn.ARCHITECTURES`.
    """
    return role_architecture(network, dict((config.get("networks") or {}).get(network) or {}))


# Module attributes an authors' `.pth` cannot tell from its tensors, taken from the config.
CONFIG_ATTRIBUTES = ("input_scale",)


def pth_attributes(config: Mapping[str, Any] | Any, network: str) -> dict[str, Any]:
    """The attributes of config.networks.<network> a `.pth` given with this config takes
    (`CONFIG_ATTRIBUTES`: TBSN's U-Net is SASL's with input_scale=1/255, same keys).

    Args:
      config: a run config (ConfigDict or dict).
      network: a role, 'bnn', 'lan' or 'unet'.
    Returns:
      {attribute: value} for those the block sets (empty: none).
    """
    block = dict((config.get("networks") or {}).get(network) or {})
    return {k: block[k] for k in CONFIG_ATTRIBUTES if k in block}
