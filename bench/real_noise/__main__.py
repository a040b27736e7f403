"""python -m bench.real_noise --config=configs/real_noise/<protocol>.py [--config.<field>=...]

See bench/real_noise/__init__.py for the protocols and outputs.
"""

from __future__ import annotations

import logging
import sys

from bench import common

common.on_path()

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A protocol of configs/real_noise/ (get_config()).", lock_config=True
)
QUIET = ("absl", "orbax", "jax", "tensorflow", "PIL", "matplotlib")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"unexpected arguments {argv[1:]}: every setting is a --config.<field>")
    cfg = _CONFIG.value
    if cfg is None:
        sys.exit("--config is required, e.g. --config=configs/real_noise/sidd_short.py")
    from bench.real_noise import runs

    runs.check_methods(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    if cfg.part == "sidd":
        from bench.real_noise.sidd import run_sidd

        run_sidd(cfg)
    elif cfg.part == "dnd":
        from bench.real_noise.dnd import run_dnd

        run_dnd(cfg)
    else:
        sys.exit(f"config.part must be 'sidd' or 'dnd', got {cfg.part!r}")


if __name__ == "__main__":
    app.run(main)
