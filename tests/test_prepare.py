"""Preparing datasets once: `--mode prepare`, process 0 builds while the others wait, timeouts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import default
from sassid_jax.data import prepare, sources
from sassid_jax.data.folder import NoisyImageFolder, folder_config, prepare_folder
from sassid_jax.errors import ConfigError
from tests.conftest import REPO_ROOT

WORKER = str(REPO_ROOT / "tests" / "prepare_worker.py")


def _photos(folder: Path, count: int = 3, size: int = 64) -> Path:
    """`count` random (size, size, 3) PNGs in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return folder


def _dataset_cfg(data_dir: Path, photos: Path, name: str = "noisy_image_folder"):
    cfg = default.get_config().dataset
    cfg.name, cfg.noisy_dir, cfg.data_dir = name, str(photos), str(data_dir)
    return cfg


def _version_dirs(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "noisy_image_folder").glob("*/*") if p.is_dir())


def _ours(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("noisy_image_folder:")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_prepare_once_and_both_train(tmp_path):
    photos, data_dir, sync = _photos(tmp_path / "photos"), tmp_path / "tfds", tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(port), str(pid), str(tmp_path / "run")]
            + [str(data_dir), str(photos), str(sync)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    first, second = (json.loads(out.splitlines()[-1]) for out, _ in outs)
    assert (first["process"], second["process"], first["count"]) == (0, 1, 2)
    (built,) = first["builds"]  # process 0 built exactly once (train and eval share it)
    assert second["builds"] == []  # process 1 never built
    assert any(m.startswith("preparing dataset noisy_image_folder") for m in first["messages"])
    assert any(m.startswith("waiting up to") for m in second["messages"])
    assert any("prepared by process 0 after" in m for m in second["messages"])
    (version,) = _version_dirs(data_dir)  # one dataset folder, no leftover incomplete one
    assert str(version) == built and (version / prepare.MARKER).is_file()
    assert not list(data_dir.rglob("*incomplete*"))
    assert (tmp_path / "run" / "results.json").is_file()


def test_waiting_process_times_out_with_one_line(tmp_path):
    cfg = _dataset_cfg(tmp_path / "tfds", _photos(tmp_path / "photos"))
    config = folder_config(cfg.noisy_dir)

    def make():
        return NoisyImageFolder(config=config, data_dir=cfg.data_dir)

    with pytest.raises(prepare.PrepareTimeoutError) as error:
        prepare.prepare_once("noisy_image_folder", make, wait_s=0.3, main=False, poll_s=0.1)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("dataset 'noisy_image_folder': not prepared in ")
    assert str(cfg.data_dir) in message and "--mode prepare" in message
    assert not (tmp_path / "tfds").exists()  # a waiting process never builds


def test_waiting_process_needs_the_marker_of_process_0(tmp_path):
    """A dataset TFDS reports prepared but process 0 has not marked complete (e.g. still
    being copied into a bucket) is not read; once process 0 has looked, it is."""
    cfg = _dataset_cfg(tmp_path / "tfds", _photos(tmp_path / "photos"))
    make = lambda: NoisyImageFolder(config=folder_config(cfg.noisy_dir), data_dir=cfg.data_dir)  # noqa: E731
    make().download_and_prepare()  # prepared without our marker
    with pytest.raises(prepare.PrepareTimeoutError):
        prepare.prepare_once("noisy_image_folder", make, wait_s=0.2, main=False, poll_s=0.1)
    first = prepare.prepare_once("noisy_image_folder", make, main=True)
    assert first.action == "already prepared" and Path(first.where, prepare.MARKER).is_file()
    waited = prepare.prepare_once("noisy_image_folder", make, wait_s=0.2, main=False)
    assert waited.action == "already prepared"
    assert waited.builder.info.splits["train"].num_examples == 3


def test_prepare_datasets_of_each_kind(tmp_path):
    photos, others = _photos(tmp_path / "photos"), _photos(tmp_path / "others", count=2)
    direct = sources.prepare_datasets(_dataset_cfg(tmp_path / "tfds", photos, "image_folder"))
    assert [p.action for p in direct] == ["nothing to prepare"]
    assert "read directly" in direct[0].describe() and not (tmp_path / "tfds").exists()
    cfg = _dataset_cfg(tmp_path / "tfds", photos)
    cfg.eval_noisy_dir = str(others)
    first = sources.prepare_datasets(cfg)  # training and evaluation folders: two datasets
    assert [p.action for p in first] == ["prepared", "prepared"]
    assert len(_version_dirs(tmp_path / "tfds")) == 2
    assert first[0].describe().startswith("noisy_image_folder: prepared in ")
    again = sources.prepare_datasets(cfg)
    assert [p.action for p in again] == ["already prepared"] * 2
    assert [p.where for p in again] == [p.where for p in first]


def test_prepare_timeout_must_be_positive():
    cfg = default.get_config().dataset
    assert prepare.wait_seconds(cfg) == prepare.DEFAULT_WAIT_S
    cfg.prepare_timeout = -1.0
    with pytest.raises(ConfigError, match="dataset.prepare_timeout must be a positive"):
        prepare.wait_seconds(cfg)


def test_prepare_mode_through_the_command_line(tmp_path):
    photos, data_dir = _photos(tmp_path / "photos"), tmp_path / "tfds"

    def launch():
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / "launch.py"), "--mode=prepare"]
            + ["--config=configs/own_photos.py", f"--config.dataset.noisy_dir={photos}"]
            + [f"--config.dataset.data_dir={data_dir}"],
            cwd=REPO_ROOT,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    (version,) = _version_dirs(data_dir)
    (line,) = _ours(first.stdout)  # (TFDS prints its own progress lines too)
    assert line.startswith("noisy_image_folder: prepared in ") and line.endswith(f"into {version}")
    second = launch()
    assert second.returncode == 0, second.stderr[-3000:]
    assert _ours(second.stdout) == [f"noisy_image_folder: already prepared in {version}"]


def test_folder_prepare_returns_a_readable_builder(tmp_path):
    photos = _photos(tmp_path / "photos", count=2)
    prepared = prepare_folder(str(photos), data_dir=str(tmp_path / "tfds"))
    assert prepared.action == "prepared" and prepared.seconds > 0
    assert prepared.builder.info.splits["train"].num_examples == 2
