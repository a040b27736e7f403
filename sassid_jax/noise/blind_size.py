"""`networks.bnn.blind_size = "auto"`: the BNN blind size read from the training photos' noise.

The rule and its reasons are in `noise_analysis.blind_size_from_acf`: the smallest odd size
(at least 3) that hides every ring of neighbours whose noise still correlates >= 0.1 with the
centre's. Training calls `resolve_config_blind_size` before building the networks.

On the command line `--config.networks.bnn.blind_size=7` overrides a config whose value is
"auto" (a str field) with the string "7"; both resolve to the int.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from sassid_jax.errors import ConfigError
from sassid_jax.noise.analysis import NoiseAnalysis, analyze_noise

AUTO = "auto"
MAX_IMAGES = 32  # "auto" analyses at most this many (evenly spaced) photos
FIELD = "networks.bnn.blind_size"


def blind_size_value(value: Any, field: str = FIELD) -> int | str:
    """An odd int >= 1, its decimal string, or "auto" -> the int or "auto"; else ConfigError
    naming `field`."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == AUTO:
        return AUTO
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % 2:
        return value
    raise ConfigError(f"{field} must be an odd integer >= 1 or {AUTO!r}, got {value!r}")


def analyse_sample(images: Sequence[np.ndarray]) -> NoiseAnalysis:
    """`analyze_noise` of at most MAX_IMAGES evenly spaced photos ((H, W, 3) uint8)."""
    images = list(images)
    if len(images) > MAX_IMAGES:
        picks = np.linspace(0, len(images) - 1, MAX_IMAGES).round().astype(int)
        images = [images[i] for i in picks]
    return analyze_noise(images)


def photos_of(train_images: Any) -> Sequence[np.ndarray]:
    """The noisy photos to analyse: the list itself, or MAX_IMAGES evenly spaced tiles of a
    `tiles.TileSource` (SIDD-Medium), whose `source[i]['noisy']` is one (tile, tile, 3) tile."""
    if isinstance(train_images, Sequence):
        return train_images
    picks = np.linspace(0, len(train_images) - 1, min(MAX_IMAGES, len(train_images)))
    return [train_images.source[int(i)]["noisy"] for i in picks.round()]


def resolve_blind_size(value: Any, images: Sequence[np.ndarray]) -> int:
    """A `networks.bnn.blind_size` value -> int: "auto" analyses `images` ((H, W, 3) uint8
    noisy photos; see `analyse_sample`); an odd int or its decimal string is returned as is.
    ConfigError for any other value; noise_analysis.NoiseAnalysisError for unusable photos."""
    resolved = blind_size_value(value)
    if resolved != AUTO:
        return int(resolved)
    return analyse_sample(images).blind_size


def resolve_config_blind_size(config: Any, train_images: Any) -> Any:
    """`config` with `networks.bnn.blind_size` an int; a copy when that changes anything.

    "auto": analyse `train_images` ((H, W, 3) uint8 noisy photos, or a TileSource), log the
    analysis line ("noise analysis (...): std R/G/B ..., lag-1 0.43, lag-2 0.05, ... -> blind
    size 5") and set the size it gives. Call it before building the networks, and before
    comparing the config with a resumed run's config.json (the same photos give the same size).
    """
    value = config.networks.bnn.blind_size
    resolved = blind_size_value(value)
    if resolved == value and resolved != AUTO:
        return config
    if resolved == AUTO:
        analysis = analyse_sample(photos_of(train_images))
        logging.info("%s", analysis.summary())
        resolved = analysis.blind_size
    config = copy.deepcopy(config)
    with config.ignore_type():
        config.networks.bnn.blind_size = int(resolved)
    return config
