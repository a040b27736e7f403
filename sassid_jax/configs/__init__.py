"""The config files (`get_config()`), importable as `sassid_jax.configs.<name>`.

They are the repository's configs/ folder (`--config configs/X.py`). An installed package
holds them here (pyproject.toml maps configs/ onto this package); in a checkout this file
points the package at that folder.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "configs")]
