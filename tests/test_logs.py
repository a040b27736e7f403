"""Log set-up: short prefixes, library chatter and TensorFlow's banners hidden, progress lines."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from sassid_jax import logs
from tests.conftest import REPO_ROOT


def _record(
    level: int, message: str, pathname: str = "/x/sassid_jax/train.py"
) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 7, message, None, None)


def test_short_prefix_marks_warnings():
    formatter = logs.ShortFormatter()
    info = formatter.format(_record(logging.INFO, "stage bnn step 25/400"))
    warning = formatter.format(_record(logging.WARNING, "texture inflates"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d train\] stage bnn step 25/400", info)
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING train\] texture inflates", warning)


@pytest.mark.parametrize(
    ("level", "message", "pathname", "kept"),
    [
        (logging.INFO, "stage bnn step 25", "/site-packages/sassid_jax/train.py", True),
        (logging.INFO, "Saving checkpoint", "/site-packages/orbax/checkpoint/manager.py", False),
        (logging.WARNING, "disk almost full", "/site-packages/orbax/checkpoint/manager.py", True),
        (
            logging.WARNING,
            "Metadata file does not exist: /r/checkpoints/unet/9/default/_CHECKPOINT_METADATA",
            "/site-packages/orbax/checkpoint/x.py",
            False,
        ),
        (logging.ERROR, "real trouble", "/site-packages/jax/_src/x.py", True),
    ],
)
def test_chatter_filter(level, message, pathname, kept):
    assert logs._LibraryChatterFilter().filter(_record(level, message, pathname)) is kept


def test_native_stderr_filter_drops_banners_only(capfd):
    with logs.native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are x\n")
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"E0000 something real went wrong\n")
    assert capfd.readouterr().err == "E0000 something real went wrong\n"


def test_progress_log_lines_and_eta(caplog):
    progress = logs.ProgressLog("final report: bnn on 2 images", 4, "predictions", every_s=0.0)
    with caplog.at_level(logging.INFO):
        for _ in range(4):
            progress.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # none at the end: the caller says it is done
    assert re.fullmatch(
        r"final report: bnn on 2 images: 1/4 predictions, 0m\d\ds so far, ETA 0m\d\ds", lines[0]
    )
    assert progress.seconds >= 0


def test_progress_log_is_quiet_for_short_loops(caplog):
    progress = logs.ProgressLog("quick", 3, every_s=3600.0)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            progress.advance()
    assert not caplog.records


def test_count():
    assert (logs.count(1, "image"), logs.count(4, "image")) == ("1 image", "4 images")


def test_format_seconds():
    assert logs.format_seconds(5.4) == "0m05s"
    assert logs.format_seconds(123) == "2m03s"
    assert logs.format_seconds(3723) == "1h02m03s"


QUIET_IMPORT = """
import os, sys
import jax  # sets TF_CPP_MIN_LOG_LEVEL=1 if unset, as the command line's import does
import numpy as np
import tensorflow_datasets as tfds  # loaded before, as the command line's imports do
from sassid_jax import logs
logs.quiet_native_logs()
assert "tensorflow" not in sys.modules
from sassid_jax.data import pipeline
images = [np.zeros((40, 40, 3), np.uint8)]
batches = pipeline.train_dataset(images, crop_size=32, batch_size=2, seed=0, num_steps=1)
print("batches", len(list(pipeline.numpy_batches(batches))))
print("level", os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
print("loader", type(sys.modules["tensorflow"].__loader__).__name__)
print("tfds note", tfds.core.DatasetBuilder._log_download_bytes(None))
"""


@pytest.mark.slow
def test_tensorflow_loads_without_its_banners():
    """A fresh process: TensorFlow's import prints no banner, its C++ notices (oneDNN's uint8
    fallback where it applies) are hidden, the environment is as JAX left it, and TFDS's
    print()ed notices are gone."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", QUIET_IMPORT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stderr == ""
    assert "batches 1" in done.stdout
    assert "level 1" in done.stdout  # TF read 3 as it loaded; XLA and child processes keep 1
    assert "loader SourceFileLoader" in done.stdout  # the real loader is back in place
    assert "tfds note None" in done.stdout  # the original would have read self.info
