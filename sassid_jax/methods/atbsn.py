"""AT-BSN (Chen et al., CVPR 2024): one blind-spot network at several blind sizes, distilled.

Stage 1 trains the BNN at blind size 9 with L1 to the noisy input (as SASL's first stage) and
denoises at blind size 3; AT-BSN(D) distils it into a student without blind spot with the sum
of the L1 losses to the teacher at blind sizes 0, 1, 3, 5, 7, 9 and 11. Images are NHWC
float32 on the [0, 255] scale. Details: docs/peers.md#at-bsn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
