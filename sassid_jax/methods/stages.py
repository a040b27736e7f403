"""Training stages as data: which networks learn, which losses they minimise.

A stage names its learners and its losses; every network a loss reads that is not a learner is
a frozen teacher. Losses read {network name: output on [0, 255]}, the noisy batch x and the
stage (the U-Net loss reads its alpha thresholds); a loss may say how it runs a network (AP-BSN
through PD, AT-BSN's teacher at several blind sizes) and how its learner starts (AT-BSN(D)'s
student from the teacher's trunk). SASL's three stages, the joint ablation, the blind-spot
baseline and the peers' stages: docs/method.md#losses-and-stages, docs/peers.md#training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from sassid_jax.methods import apbsn, atbsn, sasl, tbsn
from sassid_jax.nn import NETWORK_NAMES

Outputs = Mapping[str, jax.Array]
LossFn = Callable[[Outputs, jax.Array, "Stage"], jax.Array]
# (module, params, x) -> the output a loss reads; the default is module.apply({"params": p}, x)
Forward = Callable[[nn.Module, Any, jax.Array], jax.Array]
# (learner params {name: params}, teacher params {name: params}) -> learner params
Start = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
PAPER_ALPHA = (1.0, 5.0)  # the paper's flatness thresholds (configs: alpha.lower / alpha.upper)


def _bnn(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.bnn_loss(out["bnn"], x)


def _lan(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.lan_loss(out["lan"], out["bnn"])


def _unet(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    alpha = sasl.flatness_alpha(out["bnn"], stage.alpha_lower, stage.alpha_upper)
    return sasl.adaptive_loss(out["unet"], out["bnn"], out["lan"], alpha)


def _atbsn_distill(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return atbsn.distillation_loss(out["unet"], list(out["bnn"]))


def _apbsn(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.l1(out["bnn"], x)


def _tbsn(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.l1(out["bnn"], tbsn.train_input(x))


def _tbsn_distill(out: Outputs, x: jax.Array, stage: Stage) -> jax.Array:
    return sasl.l1(out["unet"], out["bnn"])


def plain_forward(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
    """The network on x as it is: module.apply({"params": params}, x)."""
    return module.apply({"params": params}, x)


@dataclasses.dataclass(frozen=True)
class Loss:
    """One entry of LOSSES.

    Attributes:
      fn: (outputs, x, stage) -> float32 scalar.
      reads: the networks whose outputs it reads.
      forwards: {network: how the loss runs it} where not `plain_forward`.
      start: how the stage's learners start from its teachers (None: from their init).
      crop_multiple: the training crop side must be a multiple of it (AP-BSN's PD factor,
        TBSN's PD factor x 32).
      image_forwards: the networks of `forwards` whose forward is an image-wise procedure
        (any H x W, e.g. TBSN's distillation target): a frozen teacher run so may be
        precomputed on whole training images (train.teachers='precomputed').
    """

    fn: LossFn
    reads: tuple[str, ...]
    forwards: Mapping[str, Forward] = dataclasses.field(default_factory=dict)
    start: Start | None = None
    crop_multiple: int = 1
    image_forwards: tuple[str, ...] = ()


LOSSES: dict[str, Loss] = {
    "bnn": Loss(_bnn, ("bnn",)),
    "lan": Loss(_lan, ("lan", "bnn")),
    "unet": Loss(_unet, ("unet", "bnn", "lan")),
    # AT-BSN(D): the student (role unet) against the teacher (role bnn) at 7 blind sizes
    "atbsn_distill": Loss(
        _atbsn_distill,
        ("unet", "bnn"),
        forwards={"bnn": atbsn.teacher_forward},
        start=atbsn.student_start,
    ),
    # AP-BSN: the blind-spot network (role bnn) through PD factor 5, L1 to the noisy input
    "apbsn": Loss(
        _apbsn, ("bnn",), forwards={"bnn": apbsn.train_apply}, crop_multiple=apbsn.TRAIN_PD_FACTOR
    ),
    # TBSN: the network (role bnn) on the first PD-5 sub-image of each crop, L1 to that image
    "tbsn": Loss(
        _tbsn, ("bnn",), forwards={"bnn": tbsn.train_apply}, crop_multiple=tbsn.CROP_MULTIPLE
    ),
    # TBSN's U-Net (role unet): L1 to the frozen TBSN at PD 2, then one full-resolution pass
    "tbsn_distill": Loss(
        _tbsn_distill,
        ("unet", "bnn"),
        forwards={"bnn": tbsn.teacher_forward},
        image_forwards=("bnn",),
    ),
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
        used = {n for loss in self.losses for n in LOSSES[loss].reads}
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
        return sum(LOSSES[name].fn(outputs, x, self) for name in self.losses)

    def forward(self, network: str) -> Forward:
        """How this stage's losses run `network` (`plain_forward` unless a loss says)."""
        for loss in self.losses:
            if network in LOSSES[loss].forwards:
                return LOSSES[loss].forwards[network]
        return plain_forward

    def outputs(
        self, networks: Mapping[str, nn.Module], params: Mapping[str, Any], x: jax.Array
    ) -> dict[str, jax.Array]:
        """The outputs the losses read.

        Args:
          networks: modules by name.
          params: parameters of every network in `uses` (learners and teachers).
          x: the noisy batch, (N, H, W, 3) on [0, 255].
        Returns:
          {network: its `forward` on x}, for every network in `uses`.
        """
        return {n: self.forward(n)(networks[n], params[n], x) for n in self.uses}

    def start(self, learners: Mapping[str, Any], teachers: Mapping[str, Any]) -> dict[str, Any]:
        """The learners' starting parameters: each loss's `start` applied in turn.

        Args:
          learners: {learner: freshly initialised params}.
          teachers: {teacher: trained params}.
        Returns:
          {learner: params} (a copy of `learners` when no loss has a `start`).
        """
        params = learners
        for loss in self.losses:
            if LOSSES[loss].start is not None:
                params = LOSSES[loss].start(params, teachers)
        return dict(params)

    @property
    def starts_from_teachers(self) -> bool:
        """Whether a loss starts the learners from the teachers (`start`)."""
        return any(LOSSES[loss].start is not None for loss in self.losses)

    @property
    def crop_multiple(self) -> int:
        """The multiple the training crop side needs for these losses (1: any)."""
        return math.lcm(*(LOSSES[loss].crop_multiple for loss in self.losses))

    @property
    def plain_teachers(self) -> bool:
        """Whether every teacher runs as `plain_forward`."""
        return all(self.forward(t) is plain_forward for t in self.teachers)

    def image_forward(self, network: str) -> bool:
        """Whether `network` runs plainly or through an image-wise procedure
        (`Loss.image_forwards`), so that its output on a whole image can be cropped."""
        if self.forward(network) is plain_forward:
            return True
        return any(network in LOSSES[loss].image_forwards for loss in self.losses)

    @property
    def precomputable_teachers(self) -> bool:
        """Whether every teacher is an `image_forward` (train.teachers='precomputed' needs it)."""
        return all(self.image_forward(t) for t in self.teachers)


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
    for network in stage.uses:
        readers = [n for n in losses if network in LOSSES[n].reads]
        ways = {LOSSES[n].forwards.get(network, plain_forward) for n in readers}
        if len(ways) > 1:
            raise ValueError(
                f"stages.{name}.losses: {list(losses)} run {network!r} in different ways "
                "(plain, through PD, at several blind sizes): put them in separate stages"
            )
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
