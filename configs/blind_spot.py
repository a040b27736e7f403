"""Baseline: a classic blind-spot network (BNN blind size 1) in the same three-stage recipe."""

import ml_collections

from sassid_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.networks.bnn.blind_size = 1
    return c
