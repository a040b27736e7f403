"""SIGTERM to one process of a multi-process run: every process stops at the same step."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_sharding import _env, _free_port
from tests.test_train import assert_same_params, run_params, tiny_config

WORKER = str(REPO_ROOT / "tests" / "preemption_worker.py")


def _start(workdir: Path, data: Path, logs: Path) -> list[subprocess.Popen]:
    """Both processes of a two-process run of preemption_worker, stderr to logs/<pid>.log."""
    port = _free_port()
    logs.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [sys.executable, WORKER, str(port), str(pid), str(workdir), str(data)],
            env=_env(1),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"{pid}.log").open("w"),
        )
        for pid in (0, 1)
    ]


def _wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    return [p.wait(timeout=timeout) for p in procs]


def _wait_for_step(log: Path, procs: list[subprocess.Popen], step: int) -> None:
    deadline = time.time() + 300
    while f"stage bnn step {step}/" not in log.read_text():
        assert all(p.poll() is None for p in procs), log.read_text()[-3000:]
        assert time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step(data_dir, tmp_path):
    from tests.preemption_worker import STEPS

    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = _start(ref, data_dir, tmp_path / "ref_logs")  # meanwhile: the uninterrupted run
    procs = _start(run, data_dir, tmp_path / "logs")
    try:
        _wait_for_step(tmp_path / "logs" / "1.log", procs, 4)
        procs[1].send_signal(signal.SIGTERM)
        codes = _wait(procs)
    except BaseException:
        for p in procs + reference:
            p.kill()
        raise
    logs = [(tmp_path / "logs" / f"{pid}.log").read_text() for pid in (0, 1)]
    assert codes == [128 + signal.SIGTERM] * 2, [log[-2000:] for log in logs]
    stops = [
        re.findall(r"stage bnn: stopped at step (\d+) \(checkpoint written\)", x) for x in logs
    ]
    assert stops[0] == stops[1] and len(stops[0]) == 1, stops
    step = int(stops[0][0])
    assert 4 <= step < STEPS
    saved = [p.name for p in (run / "checkpoints" / "bnn").iterdir()]
    assert saved == [str(step)]
    assert _wait(reference) == [0, 0], (tmp_path / "ref_logs" / "0.log").read_text()[-3000:]
    assert _wait(_start(run, data_dir, tmp_path / "resumed_logs")) == [0, 0]
    config = tiny_config(data_dir, {"bnn": STEPS})
    config.stage_order = ("bnn",)
    assert_same_params(run_params(run, config), run_params(ref, config))
