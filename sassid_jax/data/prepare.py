"""Prepare each TFDS dataset once per run: process 0 builds it, the other processes wait.

Process 0 prepares what is missing in the shared `dataset.data_dir` and then writes our own
completion marker, `MARKER` (TFDS's own "prepared" test can pass on a bucket before every
shard is there); the other processes poll for the marker, up to `dataset.prepare_timeout`.
Details: docs/data.md#prepare-once.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import tensorflow_datasets as tfds

from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.io.atomic_files import write_json

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 3600.0  # dataset.prepare_timeout when the config has none
POLL_S = 2.0
MARKER = "sassid_prepared.json"

Builder = tfds.core.DatasetBuilder


class PrepareTimeoutError(UserInputError):
    """A process waited longer than dataset.prepare_timeout for process 0 to prepare."""


class DataDirError(UserInputError):
    """dataset.data_dir cannot hold the prepared dataset (read-only, no space, no access)."""


# Errors of a data_dir that cannot be written: a user's setting, not a bug.
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What happened to one dataset: action is "prepared" (built here, in `seconds`),
    "already prepared", "waited" (for process 0, `seconds`) or "nothing to prepare"."""

    name: str
    where: str
    action: str
    seconds: float = 0.0
    builder: Builder | None = dataclasses.field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """One line for the user, e.g. "sasl_embedded: prepared in 12.3 s into DIR"."""
        if self.action == "prepared":
            return f"{self.name}: prepared in {self.seconds:.1f} s into {self.where}"
        if self.action == "waited":
            return (
                f"{self.name}: prepared by process 0 (waited {self.seconds:.1f} s) in {self.where}"
            )
        if self.action == "already prepared":
            return f"{self.name}: already prepared in {self.where}"
        return f"{self.name}: nothing to prepare ({self.where})"


def wait_seconds(cfg: Any) -> float:
    """dataset.prepare_timeout of `cfg` (the dataset block, or None), default
    DEFAULT_WAIT_S, in seconds. Raises ConfigError unless it is positive and finite."""
    value = cfg.get("prepare_timeout", DEFAULT_WAIT_S) if cfg is not None else DEFAULT_WAIT_S
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"dataset.prepare_timeout must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def is_main_process() -> bool:
    """True in process 0 of a multi-process JAX run, and in a single process."""
    return jax.process_index() == 0


def is_complete(builder: Builder) -> bool:
    """True once the dataset of `builder` is prepared and marked complete by process 0."""
    return (builder.data_path / MARKER).exists() and builder.is_prepared()


def is_prepared(builder: Builder) -> bool:
    """builder.is_prepared(), without TFDS's warning when the folder does not exist yet."""
    return builder.data_path.exists() and builder.is_prepared()


def mark_complete(builder: Builder, name: str, seconds: float) -> None:
    """Write MARKER into the builder's version folder (after TFDS has finished there), unless
    it is there already. A failed write (read-only data_dir) is logged, not raised.

    Args:
      builder: the prepared builder.
      name: the dataset's name, recorded in the marker and named in the log.
      seconds: how long preparing took, recorded in the marker.
    """
    path = builder.data_path / MARKER
    if path.exists():
        return
    payload = {"dataset": name, "builder_version": str(builder.version), "seconds": seconds}
    try:
        if "://" in os.fspath(path):
            path.write_text(json.dumps(payload, indent=2))
        else:
            write_json(os.fspath(path), payload)
    except OSError as e:
        log.warning("could not mark %s complete (%s): other processes will not see it", name, e)


def prepare_once(
    name: str,
    make_builder: Callable[[], Builder],
    build: Callable[[Builder], None] | None = None,
    *,
    wait_s: float = DEFAULT_WAIT_S,
    main: bool | None = None,
    poll_s: float = POLL_S,
) -> Prepared:
    """Make sure the dataset of `make_builder()` is prepared; returns what happened.

    Args:
      name: the dataset's name in messages (e.g. 'sasl_embedded').
      make_builder: a new builder (called again after a wait: a builder made before the
        dataset existed does not know its splits).
      build: prepares it (default: `builder.download_and_prepare()`); called in the main
        process only, and only when the dataset is not prepared.
      wait_s: how long a non-main process waits for process 0 (PrepareTimeoutError after).
      main: whether this process prepares (default: `is_main_process()`).
      poll_s: seconds between two looks while waiting.
    Returns:
      A `Prepared` whose `builder` is ready to read.
    """
    builder = make_builder()
    where = os.fspath(builder.data_path)
    if main is None:
        main = is_main_process()
    if not main:
        return _wait_for(name, builder, make_builder, wait_s, poll_s)
    if is_prepared(builder):
        mark_complete(builder, name, 0.0)
        return Prepared(name, where, "already prepared", 0.0, builder)
    log.info("preparing dataset %s into %s", name, where)
    start = time.monotonic()
    try:
        if build is None:
            builder.download_and_prepare()
        else:
            build(builder)
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise DataDirError(
            f"dataset.data_dir: cannot write dataset {name!r} into {e.filename or where} "
            f"({e.strerror}); set --config.dataset.data_dir to a writable folder"
        ) from e
    seconds = time.monotonic() - start
    mark_complete(builder, name, seconds)
    log.info("prepared dataset %s in %.1f s", name, seconds)
    return Prepared(name, where, "prepared", seconds, builder)


def _wait_for(
    name: str,
    builder: Builder,
    make_builder: Callable[[], Builder],
    wait_s: float,
    poll_s: float,
) -> Prepared:
    """Poll until process 0 has marked the dataset complete; a fresh builder then."""
    where = os.fspath(builder.data_path)
    if is_complete(builder):
        return Prepared(name, where, "already prepared", 0.0, make_builder())
    log.info("waiting up to %g s for process 0 to prepare dataset %s in %s", wait_s, name, where)
    start = time.monotonic()
    while not is_complete(builder):
        left = wait_s - (time.monotonic() - start)
        if left <= 0:
            raise PrepareTimeoutError(
                f"dataset {name!r}: not prepared in {where} after waiting {wait_s:g} s for "
                "process 0; process 0 must be able to prepare it (same dataset.data_dir on "
                "every host, its manual_dir files) or run `--mode prepare` first "
                "(dataset.prepare_timeout sets the wait)"
            )
        time.sleep(min(poll_s, left))
    seconds = time.monotonic() - start
    log.info("dataset %s prepared by process 0 after %.1f s", name, seconds)
    return Prepared(name, where, "waited", seconds, make_builder())
