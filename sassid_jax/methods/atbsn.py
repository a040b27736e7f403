"""AT-BSN (Chen et al., CVPR 2024): one blind-spot network at several blind sizes, distilled.

Stage 1 trains the BNN at blind size 9 with L1 to the noisy input (as SASL's first stage) and
denoises at blind size 3; AT-BSN(D) distils it into a student without blind spot with the sum
of the L1 losses to the teacher at blind sizes 0, 1, 3, 5, 7, 9 and 11. Images are NHWC
float32 on the [0, 255] scale. Details: docs/peers.md#at-bsn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

TRAIN_BLIND_SIZE = 9
TEST_BLIND_SIZE = 3
DISTILL_BLIND_SIZES = (0, 1, 3, 5, 7, 9, 11)


def teacher_outputs(
    teacher: Callable[[jax.Array, int], jax.Array],
    x: jax.Array,
    blind_sizes: Sequence[int] = DISTILL_BLIND_SIZES,
) -> list[jax.Array]:
    """The teacher at each blind size, gradients stopped.

    Args:
      teacher: (x, blind size) -> output, e.g. a bound `BNN` called with its blind size.
      x: (N, H, W, 3) noisy batch.
      blind_sizes: the sizes b (0 or odd).
    Returns:
      one (N, H, W, 3) array per blind size, in that order.
    """
    return [jax.lax.stop_gradient(teacher(x, b)) for b in blind_sizes]


def distillation_loss(student_out: jax.Array, teacher_outs: Sequence[jax.Array]) -> jax.Array:
    """AT-BSN(D)'s loss: the sum over blind sizes of mean |student - teacher(b)|.

    Args:
      student_out: the student's output, (N, H, W, 3).
      teacher_outs: the teacher's outputs at each blind size (`teacher_outputs`), same shape.
    Returns:
      float32 scalar.
    """
    student = student_out.astype(jnp.float32)
    return sum(jnp.mean(jnp.abs(student - t.astype(jnp.float32))) for t in teacher_outs)


# The student's trunk convolutions the authors do not copy from the teacher (dec1 differs).
STUDENT_OWN = ("dec1_0", "dec1_1")


def teacher_forward(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
    """The frozen teacher of AT-BSN(D)'s stage, stacked over DISTILL_BLIND_SIZES.

    Args:
      module: the teacher, a `BNN` (blind size per call).
      params: its parameters.
      x: (N, H, W, 3) noisy batch on [0, 255].
    Returns:
      (7, N, H, W, 3), one output per blind size (gradients stopped).
    """
    outs = teacher_outputs(lambda z, b: module.apply({"params": params}, z, b), x)
    return jnp.stack(outs)


def student_from_teacher(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict[str, Any]:
    """The student's parameters with the teacher's trunk copied in (the authors'
    `load_network_bsn2nbsn`): every trunk convolution but dec1's.

    Args:
      student: `ATBSNStudent` parameters ({"trunk": ...}).
      teacher: `BNN` parameters ({"trunk": ..., "head_*": ...}) of the same width.
    Returns:
      the student's parameters, its dec1 convolutions kept.
    Raises:
      ValueError: the widths differ (naming the convolution and both shapes).
    """
    trunk = dict(student["trunk"])
    for name, conv in teacher["trunk"].items():
        if name in STUDENT_OWN:
            continue
        theirs, ours = jnp.shape(conv["kernel"]), jnp.shape(trunk[name]["kernel"])
        if theirs != ours:
            raise ValueError(
                f"AT-BSN(D): the student starts from the teacher's trunk, but trunk/{name} is "
                f"{theirs} in the teacher and {ours} in the student: give both one width"
            )
        trunk[name] = conv
    return {**student, "trunk": trunk}


def student_start(learners: Mapping[str, Any], teachers: Mapping[str, Any]) -> dict[str, Any]:
    """AT-BSN(D)'s stage start: the student (role unet) from the teacher's (role bnn) trunk.

    Args:
      learners: {"unet": fresh student params, ...}.
      teachers: {"bnn": trained teacher params, ...}.
    Returns:
      the learners with the student's trunk taken from the teacher.
    """
    return {**learners, "unet": student_from_teacher(learners["unet"], teachers["bnn"])}
