"""Workdirs, data folders, checkpoints and photos as bucket URLs (gs://), on a local emulator.

A GCS emulator (tests/gcs_emulator.py: gcp-storage-emulator, in memory, bucket sasl-test) runs
on a free 127.0.0.1 port. Every command that touches the bucket runs in a subprocess
(tests/bucket_worker.py) given the emulator's environment (`emulator_env`); the pytest
process never gets it and never talks to the bucket. The whole path runs on
gs://sasl-test/run: training stopped mid-run, resumed to the end, `--mode eval` on an
image_folder whose folders are on the bucket, `--mode denoise` from the run folder and from
an authors'-format .pth, both with input and output on the bucket, and the workdir lock.
The bucket is then copied back here and checked against a local run of the same config.

Not covered, because they cannot reach the emulator: TensorBoard files on a gs:// workdir and
a TFDS data_dir on gs://. Both go through TensorFlow's own GCS file system
(tf.summary.create_file_writer; TFDS writes records with tf.io.TFRecordWriter in
tensorflow_datasets/core/file_adapters.py), whose endpoint is fixed to www.googleapis.com:
the run on the bucket turns TensorBoard off (train.tensorboard=False, bucket_worker.py) and
data_dir stays local here (the session's `data_dir` fixture, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sassid_jax.modes import denoise
from tests.conftest import REPO_ROOT
from tests.test_denoise import _unet_state_dict
from tests.test_sharding import TWO_PROCESS_STEPS
from tests.test_train import _launch_args, assert_same_params, run_params, tiny_config

BUCKET = "sasl-test"
WORKER = str(REPO_ROOT / "tests" / "bucket_worker.py")
EMULATOR = str(REPO_ROOT / "tests" / "gcs_emulator.py")


def emulator_env(port: int) -> dict[str, str]:
    """What a client process needs to use the emulator and nothing else: gcsfs (epath's
    gs:// backend, EPATH_USE_TF=false) and TensorStore (orbax) pointed at it, and no lookup
    of credentials or of the GCE metadata server."""
    url = f"http://127.0.0.1:{port}"
    return {
        "STORAGE_EMULATOR_HOST": url,
        "EPATH_USE_TF": "false",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "FSSPEC_GCS_TOKEN": "anon",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "GCE_METADATA_ROOT": "127.0.0.1:9",
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The port of a running emulator (stopped after the module)."""
    pytest.importorskip("gcp_storage_emulator")
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, EMULATOR, str(port), BUCKET], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def worker(port: int, *args: str, expect: int = 0) -> str:
    """Run tests/bucket_worker.py with the emulator's environment; its stdout."""
    env = {**os.environ, **emulator_env(port)}
    proc = subprocess.run(
        [sys.executable, WORKER, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == expect, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def _inputs(folder: Path) -> Path:
    """folder/noisy, folder/clean (two 40x48 PNGs each) and folder/unet.pth (authors' format)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        clean = rng.integers(40, 216, (40, 48, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
        for kind, image in (("noisy", noisy), ("clean", clean)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / kind / name)
    state = {k: torch.from_numpy(v) for k, v in _unet_state_dict(width=4).items()}
    torch.save(state, folder / "unet.pth")
    return folder


def test_mat_files_on_a_bucket(emulator, tmp_path):
    import h5py

    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as f:
        f.create_dataset("x", data=np.arange(6, dtype=np.float64).reshape(3, 2))
    worker(emulator, "copy", str(tmp_path / "v73.mat"), f"gs://{BUCKET}/mat/v73.mat")
    got = json.loads(worker(emulator, "mat", f"gs://{BUCKET}/mat"))
    expected = np.arange(6).reshape(3, 2).T.tolist()
    assert got["v5.mat"] == {"hdf5": False, "x": np.arange(6).reshape(2, 3).tolist()}
    assert got["v73.mat"] == {"hdf5": True, "x": expected}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.slow
def test_train_stop_resume_eval_denoise_on_a_bucket(
    emulator, data_dir, single_process_run, tmp_path
):
    config = tiny_config(data_dir, TWO_PROCESS_STEPS)  # the run of single_process_run, local
    local = single_process_run
    local_results = json.loads((local / "results.json").read_text())
    inputs = _inputs(tmp_path / "in")
    gs = f"gs://{BUCKET}"
    run = f"{gs}/run"
    worker(emulator, "copy", str(inputs), f"{gs}/in")

    args = _launch_args(config, Path("unused"))[2:] + ["--config.train.tensorboard=False"]
    args[args.index("--workdir") + 1] = run
    worker(emulator, "cli", "--stop_after=bnn:2", *args, expect=143)
    worker(emulator, "copy", f"{run}/checkpoints", str(tmp_path / "stopped"))
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["bnn"]
    assert [p.name for p in (tmp_path / "stopped" / "bnn").iterdir() if p.name.isdigit()] == ["2"]
    worker(emulator, "cli", *args)

    eval_args = ["--config", "configs/default.py", "--config.dataset.name=image_folder"]
    eval_args += [f"--config.dataset.noisy_dir={gs}/in/noisy"]
    eval_args += [f"--config.dataset.clean_dir={gs}/in/clean"]
    worker(
        emulator, "cli", "--mode", "eval", *eval_args, "--checkpoint", run, "--output", f"{gs}/eval"
    )
    io = ["--input", f"{gs}/in/noisy", "--output", f"{gs}/out"]
    worker(emulator, "cli", "--mode", "denoise", "--checkpoint", run, *io)
    pth = ["--checkpoint", f"{gs}/in/unet.pth", "--input", f"{gs}/in/noisy/a.png"]
    worker(emulator, "cli", "--mode", "denoise", *pth, "--output", f"{gs}/pth/a.png")
    lock = json.loads(worker(emulator, "lock", run))
    assert "in use by another run" in lock["second"] and lock["released"]

    down = tmp_path / "down"
    worker(emulator, "copy", gs, str(down))
    results = json.loads((down / "run" / "results.json").read_text())
    assert results["table"] == local_results["table"]
    assert (down / "run" / "config.json").is_file()
    assert not (down / "run" / "tensorboard").exists()  # train.tensorboard=False: the log only
    assert len(list((down / "run" / "panels").glob("*.png"))) == 1
    assert_same_params(run_params(down / "run", config), run_params(local, config))

    scores = json.loads((down / "eval" / "eval_image_folder.json").read_text())
    assert scores["images"] == 2 and scores["checkpoint"] == run
    assert set(scores["per_image"]) == {"a", "b"}

    expected = tmp_path / "expected"
    assert denoise.run_denoise(str(local), str(inputs / "noisy"), str(expected)) == 0
    for name in ("a.png", "b.png"):
        np.testing.assert_array_equal(_pixels(down / "out" / name), _pixels(expected / name))
    pth_local = tmp_path / "pth_a.png"
    code = denoise.run_denoise(
        str(inputs / "unet.pth"), str(inputs / "noisy" / "a.png"), str(pth_local)
    )
    assert code == 0
    np.testing.assert_array_equal(_pixels(down / "pth" / "a.png"), _pixels(pth_local))
