"""Deterministic, resumable tf.data training pipeline: random crops and flips of photos.

Every sample is a pure function of (seed, global index), so a resumed run sees the same
batches and each process reads its own slice of every global batch. Images are drawn in
proportion to their area, crops uniformly inside them, with the 8 flips/transposes of the
square. Details: docs/data.md#the-training-pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["hide_gpus_from_tf", "numpy_batches", "train_dataset"]


def hide_gpus_from_tf() -> None:
    """Makes TensorFlow see no GPU, so that it never takes accelerator memory from JAX.

    Must run before TF initializes its devices; later calls are a no-op (TF's RuntimeError
    is swallowed: TF is CPU-only in this project).
    """
    with contextlib.suppress(RuntimeError, ValueError):
        tf.config.set_visible_devices([], "GPU")


def _validate(
    images: Sequence[np.ndarray], crop_size: int, batch_size: int, process_count: int
) -> None:
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if process_count <= 0:
        raise ValueError(f"process_count must be positive, got {process_count}")
    if batch_size % process_count:
        raise ValueError(
            f"global batch_size {batch_size} is not divisible by process_count {process_count}"
        )
    if len(images) == 0:
        raise ValueError("images is empty: need at least one training image")
    for index, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image {index} must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}"
            )
        if image.shape[0] < crop_size or image.shape[1] < crop_size:
            raise ValueError(
                f"image {index} of shape {image.shape} is smaller than crop_size {crop_size}"
            )


def train_dataset(
    images: Sequence[np.ndarray],
    *,
    crop_size: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    augment: bool = True,
    aux: Sequence[np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Random square crops of `images` for training, batched per process.

    Args:
      images: training photos, each (H, W, 3) uint8 in [0, 255], sizes may differ.
      crop_size: side of the square crops; every image must be at least this large.
      batch_size: GLOBAL batch size (all processes together).
      seed: the run's data seed.
      start_step: first training step to produce (to resume a run).
      num_steps: number of steps to produce from start_step; None for an endless stream.
      process_index, process_count: this process and the number of processes.
      augment: apply the random flips and transpose.
      aux: optional per-image float32 maps (H_i, W_i, K), cropped and flipped together with
        their image and appended as K more channels (precomputed teacher outputs, see
        sassid_jax.training.teacher_cache); the image channels are the same as without aux.
    Returns:
      A dataset whose n-th element is the local batch of step start_step + n: float32
      (batch_size // process_count, crop_size, crop_size, 3 + K) in [0, 255] (K = 0 without
      aux).
    Raises:
      ValueError: on non-positive sizes, a batch not divisible by process_count, a bad
        process_index, or an image that is not (H, W, 3) uint8 or smaller than the crop.
    """
    _validate(images, crop_size, batch_size, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if start_step < 0 or (num_steps is not None and num_steps < 0):
        raise ValueError(f"need start_step >= 0 and num_steps >= 0, got {start_step}, {num_steps}")
    hide_gpus_from_tf()
    local = batch_size // process_count
    aux_crop = None if aux is None else _aux_cropper(images, aux, crop_size)

    heights = np.array([im.shape[0] for im in images], dtype=np.int64)
    widths = np.array([im.shape[1] for im in images], dtype=np.int64)
    sizes = heights * widths * 3
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cum_areas = np.cumsum(heights * widths).astype(np.int64)
    flat = tf.constant(np.concatenate([np.asarray(im).reshape(-1) for im in images]))
    heights_t, widths_t = tf.constant(heights), tf.constant(widths)
    offsets_t, cum_areas_t = tf.constant(offsets), tf.constant(cum_areas)
    rows = tf.range(crop_size, dtype=tf.int64)
    cols = tf.range(crop_size * 3, dtype=tf.int64)

    def sample(global_index: tf.Tensor) -> tf.Tensor:
        """(crop, crop, 3) float32 crop for one global sample index."""
        key = tf.stack([tf.constant(seed, tf.int64), global_index])
        seeds = tf.random.experimental.stateless_split(key, num=6)
        pixel = tf.random.stateless_uniform(
            [], seeds[0], minval=0, maxval=int(cum_areas[-1]), dtype=tf.int64
        )
        idx = tf.searchsorted(cum_areas_t, pixel[None], side="right")[0]
        height, width = heights_t[idx], widths_t[idx]
        top = tf.random.stateless_uniform(
            [], seeds[1], minval=0, maxval=height - crop_size + 1, dtype=tf.int64
        )
        left = tf.random.stateless_uniform(
            [], seeds[2], minval=0, maxval=width - crop_size + 1, dtype=tf.int64
        )
        start = offsets_t[idx] + top * width * 3 + left * 3
        gather_index = start + rows[:, None] * width * 3 + cols[None, :]
        crop = tf.reshape(tf.gather(flat, gather_index), [crop_size, crop_size, 3])
        if aux_crop is not None:
            crop = tf.concat([tf.cast(crop, tf.float32), aux_crop(idx, top, left)], axis=-1)
        if augment:
            flips = [tf.random.stateless_uniform([], s) < 0.5 for s in tf.unstack(seeds[3:])]
            crop = tf.cond(flips[0], lambda: tf.reverse(crop, [0]), lambda: crop)
            crop = tf.cond(flips[1], lambda: tf.reverse(crop, [1]), lambda: crop)
            crop = tf.cond(flips[2], lambda: tf.transpose(crop, [1, 0, 2]), lambda: crop)
        return tf.cast(crop, tf.float32)

    def global_index(i: tf.Tensor) -> tf.Tensor:
        """Local stream position i -> global sample index of this process."""
        step, j = i // local, i % local
        return step * batch_size + process_index * local + j

    if num_steps is None:
        positions = tf.data.Dataset.counter(start_step * local, dtype=tf.int64)
    else:
        positions = tf.data.Dataset.range(
            start_step * local, (start_step + num_steps) * local, output_type=tf.int64
        )
    ds = positions.map(global_index).map(
        sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _aux_cropper(images: Sequence[np.ndarray], aux: Sequence[np.ndarray], crop_size: int):
    """(image index, top, left) -> the (crop, crop, K) float32 window of that image's aux map."""
    aux = [np.asarray(a, dtype=np.float32) for a in aux]
    if len(aux) != len(images) or any(
        a.ndim != 3 or a.shape[:2] != im.shape[:2] or a.shape[2] != aux[0].shape[2]
        for a, im in zip(aux, images, strict=False)
    ):
        raise ValueError(
            "aux must hold one (H, W, K) map per image, same H, W and K for all: "
            f"got {[a.shape for a in aux]} for images {[im.shape for im in images]}"
        )
    k = aux[0].shape[2]
    widths = tf.constant(np.array([a.shape[1] for a in aux], dtype=np.int64))
    sizes = np.array([a.size for a in aux], dtype=np.int64)
    offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
    flat = tf.constant(np.concatenate([a.reshape(-1) for a in aux]))
    rows = tf.range(crop_size, dtype=tf.int64)
    cols = tf.range(crop_size * k, dtype=tf.int64)

    def crop(idx: tf.Tensor, top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        row = widths[idx] * k
        start = offsets[idx] + top * row + left * k
        window = tf.gather(flat, start + rows[:, None] * row + cols[None, :])
        return tf.reshape(window, [crop_size, crop_size, k])

    return crop


def numpy_batches(ds: tf.data.Dataset) -> Iterator[np.ndarray]:
    """Iterates a dataset from `train_dataset` as numpy float32 (B, crop, crop, 3 + K)
    arrays in [0, 255] (K aux channels, 0 without aux)."""
    yield from ds.as_numpy_iterator()
