"""The quality check of a denoised photo without ground truth, and the safeguard blend.

`check_output` estimates an output's PSNR and its input's from the noisy photo alone
(`quality_estimate`) and, with postprocess.safeguard = "blend", returns w * output +
(1 - w) * noisy when the estimated gain is <= 0 dB. Photos are (H, W, 3) on [0, 255]: noisy
uint8, outputs float32 (not rounded). Details: docs/inference.md#safeguard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.inference.colour_anchor import anchor, estimate_bias
from sassid_jax.inference.quality_estimate import QualityEstimate, blend, estimate_quality

FIELD = "postprocess.safeguard"
MODES = ("blend", "off")
CROPS = 4  # crops of up to 256x256 per photo for the estimate
PROBES = 1  # Monte-Carlo probes per crop


def config_mode(config: Any) -> str:
    """config.postprocess.safeguard: "blend" or "off" ("off" when absent, as in run folders
    written before it existed).

    Raises:
      ConfigError: naming the field, for any other value.
    """
    post = config.get("postprocess") or {}
    mode = post.get("safeguard", "off")
    if mode not in MODES:
        raise ConfigError(f"{FIELD} must be one of {MODES}, got {mode!r}")
    return mode


def denoiser_fn(module: nn.Module, params: Any, colour_sigma: float) -> Callable:
    """The function whose quality is estimated: the network, then the colour anchor without
    its bias removal (SURE measures against the noisy photo's mean; `check_output` accounts
    for the bias).

    Args:
      module, params: the network and its parameters.
      colour_sigma: the anchor's blur in pixels (0: none).
    Returns:
      A jnp function (1, H, W, 3) float32 on [0, 255] -> same shape, differentiable (the
      estimate takes its Jacobian).
    """

    def fn(x: jax.Array) -> jax.Array:
        return anchor(module.apply({"params": params}, x), x, colour_sigma, debias=False)

    return fn


@dataclasses.dataclass(frozen=True)
class Checked:
    """A checked output.

    Attributes:
      output: the (H, W, 3) float32 image on [0, 255] handed back (blended or as given).
      estimate: the quality estimate of the network on the noisy photo.
      blended: whether the safeguard blended `output` with the input.
    """

    output: np.ndarray
    estimate: QualityEstimate
    blended: bool

    def to_json(self) -> dict[str, Any]:
        """The estimate as results.json keeps it per photo (PSNRs in dB, the weight applied)."""
        e = self.estimate
        return {
            "estimated_noisy_psnr": e.noisy_psnr,
            "estimated_output_psnr": e.output_psnr,
            "estimated_gain_db": e.gain_db,
            "blend_weight": e.blend_weight if self.blended else 1.0,
            "blended": self.blended,
        }


def check_output(
    fn: Callable,
    noisy: np.ndarray,
    output: np.ndarray,
    mode: str,
    seed: int = 0,
    colour_sigma: float = 0.0,
) -> Checked:
    """Estimate `fn`'s quality on `noisy` and apply the safeguard to `output` (fn's result on
    the whole photo: tiled or ensembled outputs are fine, the estimate runs on crops).

    Args:
      fn: see `denoiser_fn` (build it once per network: its compiled programs are cached).
      noisy: (H, W, 3) uint8 photo, H, W >= 32.
      output: (H, W, 3) float32 denoised photo on [0, 255].
      mode: "blend" or "off".
      seed: seeds the estimate's crops and probes.
      colour_sigma: the anchor's blur (`fn`'s) when `output` had the noise's mean bias
        removed (colour_anchor.anchor): the estimate counts that bias in the input's error
        and a blend mixes in the input less the same bias. 0: no bias removal.
    Returns:
      The `Checked` output: `output` (float32), or the blend when mode is "blend" and the
      estimated gain is <= 0 dB.
    Raises:
      UserInputError: the photo gives no estimate (not (H, W, 3), under 32 px, no noise the
        analysis can measure).
    """
    noisy = np.asarray(noisy)
    bias = np.zeros(noisy.shape, np.float32)
    if colour_sigma:
        bias = np.asarray(estimate_bias(noisy.astype(np.float32), output, colour_sigma))
    energy = float(np.mean(bias.astype(np.float64) ** 2))
    est = estimate_quality(fn, noisy, seed=seed, probes=PROBES, crops=CROPS, bias_energy=energy)
    if mode == "blend" and est.gain_db <= 0.0:
        return Checked(blend(output, noisy - bias, est.blend_weight), est, True)
    return Checked(np.asarray(output, np.float32), est, False)


def try_check(
    fn: Callable,
    noisy: np.ndarray,
    output: np.ndarray,
    mode: str,
    name: str,
    say: Callable,
    colour_sigma: float = 0.0,
) -> Checked | None:
    """`check_output` that reports a photo giving no estimate instead of raising.

    Args:
      fn, noisy, output, mode, colour_sigma: as in `check_output`.
      name: the photo's name, for the line.
      say: takes one log line.
    Returns:
      The `Checked` output, or None after say("<name>: no quality estimate (<why>)") for a
      photo that gives no estimate (too small, all clipped).
    """
    try:
        return check_output(fn, noisy, output, mode, colour_sigma=colour_sigma)
    except UserInputError as e:
        say(f"{name}: no quality estimate ({e})")
        return None


def verdict(name: str, checked: Checked) -> str:
    """One log line for photo `name`: the estimate of `checked`, and what the safeguard did."""
    e = checked.estimate
    line = (
        f"{name}: estimated PSNR {e.output_psnr:.1f} dB against the noisy input's "
        f"{e.noisy_psnr:.1f} dB (gain {e.gain_db:+.1f} dB, from the noisy photo alone)"
    )
    if e.gain_db > 0:
        return line
    if checked.blended:
        return (
            f"{line}: NOT better than the input; safeguard: returned "
            f"{e.blend_weight:.2f} x output + {1 - e.blend_weight:.2f} x input "
            f"(estimated {e.blend_psnr:.1f} dB)"
        )
    return f"{line}: NOT better than the input (safeguard off)"


def photo_check(module: nn.Module, params: Any, sigma: float, mode: str, say: Callable) -> Callable:
    """The check of --mode denoise: `check_output` on one photo at a time.

    Args:
      module, params: the network and its parameters.
      sigma: the colour anchor's blur in pixels (0: none).
      mode: "blend" or "off".
      say: takes one line per photo: its estimate (`verdict`), as a warning when the
        output is estimated no better than the input, or why the photo has no estimate.
    Returns:
      check(name, rgb, output) -> output, rgb and output (H, W, 3) float on [0, 255]: the
      checked output (float32, maybe blended), or `output` as given without an estimate.
    """
    fn = denoiser_fn(module, params, sigma)

    def check(name: str, rgb: np.ndarray, output: np.ndarray) -> np.ndarray:
        noisy = np.clip(np.floor(np.asarray(rgb) + 0.5), 0, 255).astype(np.uint8)
        checked = try_check(fn, noisy, output, mode, name, say, sigma)
        if checked is None:
            return output
        line = verdict(name, checked)
        say(line if checked.estimate.gain_db > 0 else f"warning: {line}")
        return checked.output

    return check
