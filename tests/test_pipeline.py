"""Tests of the deterministic, resumable tf.data training pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from sassid_jax.data.pipeline import numpy_batches, train_dataset

CROP = 16
BATCH = 6


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, size=shape, dtype=np.uint8)
        for shape in [(40, 50, 3), (24, 24, 3), (64, 32, 3)]
    ]


def _batches(images, **kwargs) -> list[np.ndarray]:
    kwargs = {"crop_size": CROP, "batch_size": BATCH, "seed": 0, "num_steps": 4} | kwargs
    return list(numpy_batches(train_dataset(images, **kwargs)))


def _find_crop(images, crop: np.ndarray) -> bool:
    """True if `crop` (float, HWC) is a slice of one of the images."""
    for image in images:
        windows = np.lib.stride_tricks.sliding_window_view(image, (CROP, CROP, 3))[..., 0, :, :, :]
        if np.any(np.all(windows == crop.astype(np.uint8), axis=(-3, -2, -1))):
            return True
    return False


def test_shapes_dtype_range(images):
    batches = _batches(images)
    assert len(batches) == 4
    for batch in batches:
        assert batch.shape == (BATCH, CROP, CROP, 3)
        assert batch.dtype == np.float32
        assert batch.min() >= 0.0 and batch.max() <= 255.0
        np.testing.assert_array_equal(batch, np.round(batch))


def test_crops_without_augmentation_are_image_slices(images):
    batches = _batches(images, augment=False, num_steps=2)
    for crop in np.concatenate(batches):
        assert _find_crop(images, crop)


def test_augmentation_changes_crops(images):
    plain = np.concatenate(_batches(images, augment=False))
    augmented = np.concatenate(_batches(images, augment=True))
    assert np.any(plain != augmented)
    # Augmented crops are symmetries of slices: some one of the 8 must be a slice.
    for crop in augmented[:4]:
        variants = [np.rot90(c, k) for c in (crop, crop[::-1]) for k in range(4)]
        assert any(_find_crop(images, v) for v in variants)


def test_uses_all_images(images):
    crops = np.concatenate(_batches(images, augment=False, num_steps=10))
    found = set()
    for crop in crops:
        for index, image in enumerate(images):
            if _find_crop([image], crop):
                found.add(index)
    assert found == {0, 1, 2}


def test_same_seed_same_batches_different_seed_different(images):
    a, b, c = _batches(images, seed=5), _batches(images, seed=5), _batches(images, seed=6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(np.any(x != z) for x, z in zip(a, c, strict=True))
    # Different steps differ too.
    assert np.any(a[0] != a[1])


def test_resume_gives_the_uninterrupted_batches(images):
    full = _batches(images, num_steps=7)
    resumed = _batches(images, start_step=4, num_steps=3)
    for x, y in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(x, y)
    # The endless stream agrees as well.
    endless = numpy_batches(
        train_dataset(images, crop_size=CROP, batch_size=BATCH, seed=0, start_step=4)
    )
    for expected in full[4:]:
        np.testing.assert_array_equal(next(endless), expected)


def test_processes_read_disjoint_slices_of_the_global_batch(images):
    single = _batches(images)
    parts = [_batches(images, process_index=p, process_count=3) for p in range(3)]
    for step, batch in enumerate(single):
        locals_ = [part[step] for part in parts]
        assert all(local.shape == (BATCH // 3, CROP, CROP, 3) for local in locals_)
        np.testing.assert_array_equal(np.concatenate(locals_), batch)
        assert np.any(locals_[0] != locals_[1])


def test_errors(images):
    with pytest.raises(ValueError, match=r"batch_size 6 is not divisible by process_count 4"):
        train_dataset(images, crop_size=CROP, batch_size=6, seed=0, process_count=4)
    with pytest.raises(ValueError, match=r"image 1 of shape \(24, 24, 3\)"):
        train_dataset(images, crop_size=32, batch_size=BATCH, seed=0)
    with pytest.raises(ValueError, match="crop_size"):
        train_dataset(images, crop_size=0, batch_size=BATCH, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_dataset(images, crop_size=CROP, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        train_dataset([images[0].astype(np.float32)], crop_size=CROP, batch_size=BATCH, seed=0)
    with pytest.raises(ValueError, match="process_index"):
        train_dataset(images, crop_size=CROP, batch_size=BATCH, seed=0, process_index=1)
