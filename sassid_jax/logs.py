"""Log set-up of command-line runs: short prefixes, our lines at INFO, libraries' chatter hidden.

`quiet_native_logs` runs first (before TensorFlow loads) and drops TensorFlow's C++ banners
and TFDS's printed notices; `quiet_libraries` sets the prefix `HH:MM:SS module] message`
(`HH:MM:SS WARNING module] ...` for warnings and errors) and drops libraries' INFO lines and
the harmless warnings of `NOISE`. `ProgressLog` logs the progress of a long loop.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from absl import logging as absl_logging

QUIET_PACKAGES = ("/orbax/", "/jax/", "/flax/", "/clu/", "/tensorflow_datasets/", "/etils/")
# Library warnings that are no problem of the run.
NOISE = (
    # orbax reading the item folder of a step (<step>/default): the metadata is one level up
    re.compile(r"Metadata file does not exist: .*_CHECKPOINT_METADATA"),
)
# Lines TensorFlow's C++ code writes to stderr while it loads (one banner per shared library).
NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on"
)
# TensorFlow's C++ log level: 3 = errors hidden too, as TF only feeds the input pipeline here
# (its failures raise in Python); TF_CPP_MIN_LOG_LEVEL=0 shows them. JAX sets the variable
# to 1 when it loads, if unset: that value counts as unset.
TF_LOG_LEVEL = "3"
JAX_DEFAULT_LEVEL = "1"
SHORT_FORMAT = "%(asctime)s %(mark)s%(module)s] %(message)s"


class ShortFormatter(logging.Formatter):
    """`HH:MM:SS module] message`; a warning or error shows its level after the time."""

    def __init__(self) -> None:
        super().__init__(SHORT_FORMAT, datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.mark = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        return super().formatMessage(record)


class _LibraryChatterFilter(logging.Filter):
    """Drop INFO-and-below records of third-party packages, and the warnings of NOISE."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return not any(p.search(record.getMessage()) for p in NOISE)
        return not any(p in record.pathname for p in QUIET_PACKAGES)


def quiet_libraries() -> None:
    """Short prefixes on absl's handler, and the chatter filter on it and the root handlers."""
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_handler = absl_logging.get_absl_handler()
    absl_handler.setFormatter(ShortFormatter())
    for handler in dict.fromkeys([absl_handler, *logging.getLogger().handlers]):
        if not any(isinstance(f, _LibraryChatterFilter) for f in handler.filters):
            handler.addFilter(_LibraryChatterFilter())


@contextlib.contextmanager
def native_stderr_filtered(noise: re.Pattern[str] = NATIVE_NOISE) -> Iterator[None]:
    """Within the block, lines written to file descriptor 2 (C++ code's stderr) matching
    `noise` are dropped; the others are written to stderr when the block ends."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not noise.search(line)))
            sys.stderr.flush()


def _load_tensorflow_quietly(load: Callable[[], None]) -> None:
    """Run TensorFlow's first import at TF_LOG_LEVEL (unless the environment asks for another
    level than JAX's default) and with its banners dropped; TensorFlow reads its level as it
    loads, and the environment is restored after (XLA read it when jaxlib loaded)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if level in (None, JAX_DEFAULT_LEVEL):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = TF_LOG_LEVEL
    try:
        with native_stderr_filtered():
            load()
    finally:
        if level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level


def _quiet_tfds(tfds: ModuleType) -> None:
    """TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded
    and prepared" with print(); data/prepare.py logs the same. Its progress bars stay in a
    terminal and go in a log file."""
    builder = tfds.core.DatasetBuilder
    for name in ("_log_download_bytes", "_log_download_done"):
        if hasattr(builder, name):
            setattr(builder, name, lambda self: None)
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()


class _QuietLoader(importlib.abc.Loader):
    """Wraps a module's loader: its first execution runs under `_load_tensorflow_quietly`
    (TensorFlow) or is followed by `_quiet_tfds` (TFDS)."""

    def __init__(self, name: str, loader: importlib.abc.Loader) -> None:
        self.name, self.loader = name, loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        if self.name == "tensorflow":
            _load_tensorflow_quietly(lambda: self.loader.exec_module(module))
        else:
            self.loader.exec_module(module)
            _quiet_tfds(module)

    def __getattr__(self, name: str) -> Any:  # resource readers etc.: the wrapped loader's
        return getattr(self.loader, name)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` and `tensorflow_datasets` once each and wraps their loaders."""

    def __init__(self) -> None:
        self.pending = {"tensorflow", "tensorflow_datasets"}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.pending:
            return None
        self.pending.discard(name)  # before find_spec below, which asks this finder again
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(name, spec.loader)
        return spec


def quiet_native_logs() -> None:
    """Before TensorFlow loads (the command line calls it first): TensorFlow's import at
    TF_LOG_LEVEL and without its oneDNN and absl banners, TFDS without its print()ed
    notices (also when loaded already)."""
    if "tensorflow_datasets" in sys.modules:  # cli.py's imports load it (without TensorFlow)
        _quiet_tfds(sys.modules["tensorflow_datasets"])
    if not any(isinstance(f, _QuietImports) for f in sys.meta_path):
        finder = _QuietImports()
        finder.pending -= set(sys.modules)
        sys.meta_path.insert(0, finder)


def count(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is 1: "1 image", "4 images"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_seconds(seconds: float) -> str:
    """A duration like 1h02m03s, 2m03s under an hour (seconds rounded)."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressLog:
    """Logs `<what>: i/n <unit>, <elapsed> so far, ETA <left>` while a loop of n items runs,
    at most every `every_s` seconds (a loop that ends sooner logs nothing); the line names
    the caller's module.

    Args:
      what: the phase, e.g. "final report".
      total: items the loop will count with `advance`.
      unit: their name, e.g. "predictions".
      every_s: seconds between two lines.
    """

    def __init__(self, what: str, total: int, unit: str = "", every_s: float = 10.0) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    @property
    def seconds(self) -> float:
        """Seconds since the loop started."""
        return time.monotonic() - self.start

    def advance(self, n: int = 1) -> None:
        """Count `n` more items done; log a line if `every_s` passed since the last one."""
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self.last < self.every_s:
            return
        self.last = now
        left = (now - self.start) * (self.total - self.done) / self.done
        logging.info(
            "%s: %d/%d%s, %s so far, ETA %s",
            self.what,
            self.done,
            self.total,
            f" {self.unit}" if self.unit else "",
            format_seconds(now - self.start),
            format_seconds(left),
            stacklevel=2,
        )
