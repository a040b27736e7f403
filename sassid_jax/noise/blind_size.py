"""`networks.bnn.blind_size = "auto"`: the BNN blind size read from the training photos' noise.

The smallest odd size (at least 3) that hides every ring of neighbours whose noise still
correlates >= 0.1 with the centre's (`analysis.blind_size_from_acf`). Training calls
`resolve_config_blind_size` before building the networks. Details: docs/noise.md#blind-size.
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
    """A blind-size config value, checked: an odd int >= 1, its decimal string, or "auto".

    Args:
      value: the config value (an int, or a str from the command line).
      field: the dotted config field named in the ConfigError.
    Returns:
      the int, or "auto".
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == AUTO:
        return AUTO
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % 2:
        return value
    raise ConfigError(f"{field} must be an odd integer >= 1 or {AUTO!r}, got {value!r}")


def analyse_sample(images: Sequence[np.ndarray]) -> NoiseAnalysis:
    """`analyze_noise` of at most MAX_IMAGES evenly spaced photos ((H, W, 3) uint8 RGB);
    returns its NoiseAnalysis."""
    images = list(images)
    if len(images) > MAX_IMAGES:
        picks = np.linspace(0, len(images) - 1, MAX_IMAGES).round().astype(int)
        images = [images[i] for i in picks]
    return analyze_noise(images)


def photos_of(train_images: Any) -> Sequence[np.ndarray]:
    """The noisy photos to analyse: the list itself ((H, W, 3) uint8 each), or MAX_IMAGES
    evenly spaced tiles of a `data.tiles.TileSource` (SIDD-Medium), each (tile, tile, 3)
    uint8."""
    if isinstance(train_images, Sequence):
        return train_images
    picks = np.linspace(0, len(train_images) - 1, min(MAX_IMAGES, len(train_images)))
    return [train_images.source[int(i)]["noisy"] for i in picks.round()]


def resolve_blind_size(value: Any, images: Sequence[np.ndarray]) -> int:
    """A `networks.bnn.blind_size` value as an int.

    Args:
      value: an odd int, its decimal string (returned as the int), or "auto".
      images: for "auto", the noisy photos analysed ((H, W, 3) uint8; `analyse_sample`).
    Returns:
      odd int >= 1.
    Raises:
      ConfigError: any other value.
      analysis.NoiseAnalysisError: photos that cannot be analysed.
    """
    resolved = blind_size_value(value)
    if resolved != AUTO:
        return int(resolved)
    return analyse_sample(images).blind_size


def resolve_config_blind_size(config: Any, train_images: Any) -> Any:
    """`config` with `networks.bnn.blind_size` an int; a copy when that changes anything.

    Call it before building the networks, and before comparing the config with a resumed
    run's config.json (the same photos give the same size).

    Args:
      config: the run's ConfigDict.
      train_images: the noisy training photos ((H, W, 3) uint8 each) or a TileSource;
        analysed (and the analysis line logged) only for "auto".
    Returns:
      config itself when the size is an int already (or role bnn has none), else a deep
      copy with the int set.
    """
    value = config.networks.bnn.get("blind_size")
    if value is None:  # role bnn is another architecture (AP-BSN's DBSNl): no blind size
        return config
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
