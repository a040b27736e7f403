"""Subprocess worker for test_prepare.py: one of two processes training on a fresh data_dir.

  python tests/prepare_worker.py PORT PID WORKDIR DATA_DIR PHOTOS SYNC_DIR

Counts `NoisyImageFolder.download_and_prepare` calls. Process 1 touches SYNC_DIR/waiting when
it starts waiting for process 0, and process 0 builds only after that file exists, so the
test sees a real wait. Prints one JSON line with the result.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402


class _Recorder(logging.Handler):
    """Keeps the prepare module's log messages; touches `flag` when a wait starts."""

    def __init__(self, flag: Path) -> None:
        super().__init__(logging.INFO)
        self.flag, self.messages = flag, []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if message.startswith("waiting"):
            self.flag.touch()


def main(port: str, pid: str, workdir: str, data_dir: str, photos: str, sync: str) -> dict:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from sassid_jax import train
    from sassid_jax.data import folder, prepare
    from sassid_jax.training import sharding
    from tests.test_train import tiny_config

    flag = Path(sync) / "waiting"
    recorder = _Recorder(flag)
    logger = logging.getLogger(prepare.__name__)
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    builds = []
    original = folder.NoisyImageFolder.download_and_prepare

    def counted(self, *args, **kwargs):
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # let process 1 start waiting first
        builds.append(str(self.data_path))
        return original(self, *args, **kwargs)

    folder.NoisyImageFolder.download_and_prepare = counted
    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, int(pid), 60)
    config = tiny_config(Path(data_dir), {"bnn": 2})
    config.stage_order = ("bnn",)
    config.dataset.name, config.dataset.noisy_dir = "noisy_image_folder", photos
    config.eval.save_panels = False
    train.train_and_evaluate(config, workdir)
    return {
        "process": jax.process_index(),
        "count": jax.process_count(),
        "builds": builds,
        "messages": recorder.messages,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])), flush=True)
