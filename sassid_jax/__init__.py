"""sassid_jax: JAX/Flax reimplementation of SASL (Li et al., CVPR 2023)."""

__version__ = "0.1.0"
