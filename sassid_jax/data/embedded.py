"""The embedded default dataset: scikit-image photographs with simulated camera noise.

`sasl_embedded` (TFDS, version 3.0.0) needs no download: seven training photos and four
held-out test crops, all with the noise of ONE simulated phone at SIDD-like levels, every
example seeded from its name so that it is bit-identical on every machine. It makes training
and evaluation run end to end anywhere; it is not a benchmark. Choices: docs/data.md#sasl_embedded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from skimage import data as skdata

from sassid_jax.data.pipeline import hide_gpus_from_tf
from sassid_jax.data.prepare import DEFAULT_WAIT_S, Prepared, prepare_once
from sassid_jax.noise.simulator import (
    NoiseParams,
    NoiseRange,
    sample_noise_params,
    simulate_camera_noise,
)

__all__ = [
    "SaslEmbedded",
    "TEST_CROPS",
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "load_split",
    "prepare_embedded",
]

TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
)
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "coffee")
# (photo, top, left, height, width, noise level index into the log-spaced shot levels).
TEST_CROPS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("chelsea", 22, 0, 256, 224, 0),
    ("chelsea", 22, 224, 256, 224, 2),
    ("coffee", 72, 12, 256, 288, 1),
    ("coffee", 72, 300, 256, 288, 3),
)
_NUM_TEST_LEVELS = 4
TRAIN_REALISATIONS = 3
CAMERA_SEED = 7
DATASET_NOISE = NoiseRange(shot=(8e-3, 3e-2))


def _seed(name: str) -> int:
    """A machine-independent 64-bit seed from an example name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def load_photo(photo: str) -> np.ndarray:
    """A clean scikit-image photo by name (TRAIN_PHOTOS, TEST_PHOTOS) as (H, W, 3) uint8 in
    [0, 255]; retina reduced to its 480 x 480 centre."""
    if photo.startswith("motorcycle_"):  # one stereo pair: (left, right, disparity)
        image = np.asarray(skdata.stereo_motorcycle()[photo == "motorcycle_right"])
    else:
        image = np.asarray(getattr(skdata, photo)())
    if photo == "retina":
        height, width = image.shape[:2]
        top, left = (height - 960) // 2, (width - 960) // 2
        square = image[top : top + 960, left : left + 960].astype(np.float64)
        image = np.floor(square.reshape(480, 2, 480, 2, 3).mean(axis=(1, 3)) + 0.5)
        image = image.astype(np.uint8)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"photo {photo!r} is not HxWx3 uint8: {image.shape} {image.dtype}")
    return image


def _test_shot_levels(noise_range: NoiseRange) -> np.ndarray:
    """(_NUM_TEST_LEVELS,) shot gains log-spaced over noise_range.shot, low to high."""
    lo, hi = noise_range.shot
    return np.exp(np.linspace(np.log(lo), np.log(hi), _NUM_TEST_LEVELS))


def camera_params() -> NoiseParams:
    """The dataset's one simulated phone: ISP parameters drawn once from DATASET_NOISE with
    CAMERA_SEED (its shot and read are replaced per example)."""
    return sample_noise_params(np.random.default_rng(CAMERA_SEED), DATASET_NOISE)


def _example(name: str, photo: str, clean: np.ndarray, shot: float | None) -> dict[str, Any]:
    """One example dict at noise level `shot` (drawn from DATASET_NOISE.shot if None)."""
    rng = np.random.default_rng(_seed(name))
    if shot is None:
        lo, hi = DATASET_NOISE.shot
        shot = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    log_read = DATASET_NOISE.read_slope * np.log(shot) + DATASET_NOISE.read_intercept
    params = dataclasses.replace(camera_params(), shot=float(shot), read=float(np.exp(log_read)))
    noisy, params = simulate_camera_noise(clean, rng, params)
    return {
        "noisy": noisy,
        "clean": clean,
        "name": name,
        "photo": photo,
        "shot": np.float32(params.shot),
        "read": np.float32(params.read),
    }


def generate_split(split: str) -> Iterator[dict[str, Any]]:
    """Yields the examples of `split` ('train' or 'test') in a fixed order: dicts with noisy,
    clean ((H, W, 3) uint8), name, photo (str), shot and read (float32)."""
    if split == "train":
        for photo in TRAIN_PHOTOS:
            clean = load_photo(photo)
            for r in range(TRAIN_REALISATIONS):
                yield _example(f"{photo}_{r}", photo, clean, None)
    elif split == "test":
        levels = _test_shot_levels(DATASET_NOISE)
        for index, (photo, top, left, height, width, level) in enumerate(TEST_CROPS):
            crop = load_photo(photo)[top : top + height, left : left + width]
            name = f"{photo}_crop{sum(c[0] == photo for c in TEST_CROPS[:index])}"
            yield _example(name, photo, np.ascontiguousarray(crop), float(levels[level]))
    else:
        raise ValueError(f"unknown split {split!r}; sasl_embedded has 'train' and 'test'")


class SaslEmbedded(tfds.core.GeneratorBasedBuilder):
    """scikit-image photographs with fixed simulated camera noise (no download)."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "One simulated phone at SIDD-like noise levels, 3 realisations per photo.",
        "3.0.0": "Train split adds motorcycle_left and motorcycle_right.",
    }
    code_path = None  # no checksums file to look up (docs/data.md#dataset-names)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "noisy": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    "clean": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    "name": tfds.features.Text(),
                    "photo": tfds.features.Text(),
                    "shot": tfds.features.Scalar(dtype=np.float32),
                    "read": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("noisy", "clean"),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # Nothing to download.
        return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for example in generate_split(split):
            yield example["name"], example


def prepare_embedded(data_dir: str | None = None, wait_s: float = DEFAULT_WAIT_S) -> Prepared:
    """Prepares `sasl_embedded` once (process 0 of a run; `prepare.prepare_once`). No network.

    Args:
      data_dir: TFDS data directory; None for the TFDS default (~/tensorflow_datasets).
      wait_s: how long processes other than 0 wait for process 0.
    Returns:
      what happened, with the builder ready to read.
    """
    hide_gpus_from_tf()
    return prepare_once("sasl_embedded", lambda: SaslEmbedded(data_dir=data_dir), wait_s=wait_s)


def load_split(
    split: str, data_dir: str | None = None, wait_s: float = DEFAULT_WAIT_S
) -> list[dict[str, Any]]:
    """Prepares `sasl_embedded` if needed (no network) and returns one split as numpy.

    Args:
      split: 'train' or 'test'.
      data_dir: TFDS data directory; None for the TFDS default (~/tensorflow_datasets).
      wait_s: in a multi-process run, how long processes other than 0 wait for process 0
        to prepare it.
    Returns:
      A list sorted by name of dicts with noisy and clean ((H, W, 3) uint8 in [0, 255]),
      name and photo (str), shot and read (float).
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; sasl_embedded has 'train' and 'test'")
    builder = prepare_embedded(data_dir, wait_s).builder
    examples = []
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        examples.append(
            {
                "noisy": example["noisy"],
                "clean": example["clean"],
                "name": example["name"].decode("utf-8"),
                "photo": example["photo"].decode("utf-8"),
                "shot": float(example["shot"]),
                "read": float(example["read"]),
            }
        )
    return sorted(examples, key=lambda e: e["name"])
