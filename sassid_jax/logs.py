"""Log set-up for command-line runs: our progress lines at INFO, libraries' chatter hidden."""

from __future__ import annotations

import logging

from absl import logging as absl_logging

QUIET_PACKAGES = ("/orbax/", "/jax/", "/flax/", "/clu/", "/tensorflow_datasets/", "/etils/")


class _LibraryInfoFilter(logging.Filter):
    """Drop INFO-and-below records emitted from third-party packages (absl's one logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(p in record.pathname for p in QUIET_PACKAGES)


def quiet_libraries() -> None:
    """Attach the filter to the absl handler (and the root handlers)."""
    absl_logging.set_verbosity(absl_logging.INFO)
    handlers = [absl_logging.get_absl_handler(), *logging.getLogger().handlers]
    for handler in handlers:
        handler.addFilter(_LibraryInfoFilter())
