"""Training stages as data: which networks learn, which losses they minimise.

A stage names its learners and its losses; every network a loss reads that is not a learner is
a frozen teacher. Losses read {network name: (N, H, W, 3) output on [0, 255]}, the noisy batch
x and the stage (the U-Net loss reads its alpha thresholds). SASL's three stages, the joint
ablation and the blind-spot baseline: docs/method.md#losses-and-stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence

import jax

from sassid_jax.methods import sasl
from sassid_jax.nn import NETWORK_NAMES

Outputs = Mapping[str, jax.Array]
LossFn = Callable[[Outputs, jax.Array, "Stage"], jax.Array]
PAPER_ALPHA = (1.0, 5.0)  # the paper's flatness thresholds (configs: alpha.lower / alpha.upper)


def _bnn(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.bnn_loss(out["bnn"], x)


def _lan(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.lan_loss(out["lan"], out["bnn"])


def _unet(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    alpha = sasl.flatness_alpha(out["bnn"], stage.alpha_lower, stage.alpha_upper)
    return sasl.adaptive_loss(out["unet"], out["bnn"], out["lan"], alpha)


# loss name -> (function, networks whose outputs it reads)
LOSSES: dict[str, tuple[LossFn, tuple[str, ...]]] = {
    "bnn": (_bnn, ("bnn",)),
    "lan": (_lan, ("lan", "bnn")),
    "unet": (_unet, ("unet", "bnn", "lan")),
}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
      name: stage name (also its checkpoint folder).
      learners: networks whose parameters this stage trains.
      losses: names in LOSSES, summed.
      alpha_lower, alpha_upper: thresholds of the flatness map alpha on the BNN output's
        local std (pixel values on [0, 255]) for the U-Net loss (config.alpha).
    """

    name: str
    learners: tuple[str, ...]
    losses: tuple[str, ...]
    alpha_lower: float = PAPER_ALPHA[0]
    alpha_upper: float = PAPER_ALPHA[1]

    @property
    def uses(self) -> tuple[str, ...]:
        """Every network whose output the losses read, in NETWORK_NAMES order."""
        used = {n for loss in self.losses for n in LOSSES[loss][1]}
        return tuple(n for n in NETWORK_NAMES if n in used)

    @property
    def teachers(self) -> tuple[str, ...]:
        """Frozen networks: read by the losses, trained by an earlier stage."""
        return tuple(n for n in self.uses if n not in self.learners)

    def loss(self, outputs: Outputs, x: jax.Array) -> jax.Array:
        """Sum of this stage's losses.

        Args:
          outputs: {network name: (N, H, W, 3) output on the [0, 255] scale} for every
            network in `uses`.
          x: the noisy batch, (N, H, W, 3) on the [0, 255] scale.
        Returns:
          float32 scalar.
        """
        return sum(LOSSES[name][0](outputs, x, self) for name in self.losses)


def make_stage(
    name: str,
    learners: Sequence[str],
    losses: Sequence[str],
    *,
    alpha_lower: float = PAPER_ALPHA[0],
    alpha_upper: float = PAPER_ALPHA[1],
) -> Stage:
    """Build a Stage, raising ValueError naming the bad field and value.

    Args:
      name: the stage's name (config.stages key).
      learners: networks it trains, from NETWORK_NAMES; each must be read by a loss.
      losses: names in LOSSES, at least one.
      alpha_lower, alpha_upper: config.alpha.lower / upper (default: the paper's 1 and 5).
    Returns:
      the Stage.
    """
    for loss in losses:
        if loss not in LOSSES:
            raise ValueError(f"stages.{name}.losses: unknown loss {loss!r}; known: {list(LOSSES)}")
    for learner in learners:
        if learner not in NETWORK_NAMES:
            raise ValueError(
                f"stages.{name}.learners: unknown network {learner!r}; known: {NETWORK_NAMES}"
            )
    if not learners or not losses:
        raise ValueError(f"stages.{name}: needs at least one learner and one loss")
    stage = Stage(name, tuple(learners), tuple(losses), float(alpha_lower), float(alpha_upper))
    idle = [n for n in stage.learners if n not in stage.uses]
    if idle:
        raise ValueError(f"stages.{name}.learners: {idle} are read by none of the losses")
    return stage


def check_order(stages: Sequence[Stage], pretrained: Collection[str] = ()) -> None:
    """Every teacher must be learnt by an earlier stage or be `pretrained`; raises ValueError
    naming it and both remedies.

    Args:
      stages: the stages in training order.
      pretrained: networks given trained weights (config.pretrained).
    """
    learnt: set[str] = set(pretrained)
    for stage in stages:
        missing = [t for t in stage.teachers if t not in learnt]
        if missing:
            flags = " ".join(f"--config.pretrained.{m}=PATH" for m in missing)
            raise ValueError(
                f"stage {stage.name!r} reads {missing} as frozen teachers, but no earlier "
                "stage trains them: add their stages before it to stage_order, or give "
                f"trained weights with {flags} (a run folder or an authors' .pth)"
            )
        learnt.update(stage.learners)
