"""Subprocess worker for test_bucket_paths.py: one command against the local GCS emulator.

  python tests/bucket_worker.py copy SRC DST          copy a file or a folder tree (epath)
  python tests/bucket_worker.py lock WORKDIR          take the workdir lock twice (JSON line)
  python tests/bucket_worker.py mat FOLDER            .mat files (v5 written, v7.3 given) there
  python tests/bucket_worker.py cli [--stop_after=STAGE:STEP] ARGS...   the sassid CLI

The caller sets the emulator's environment (see test_bucket_paths.emulator_env); this process
never reaches anything but 127.0.0.1.

The training runs given here turn TensorBoard off (--config.train.tensorboard=False, in the
test only): clu's SummaryWriter writes through tf.summary.create_file_writer, i.e.
TensorFlow's own GCS file system, whose endpoint is fixed (https://www.googleapis.com/storage/v1/,
no environment variable moves it), so it cannot reach the emulator: on a gs:// workdir
CreateSummaryFileWriter fails resolving www.googleapis.com (the library itself writes
TensorBoard files to gs:// workdirs through TensorFlow, which works against real GCS).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def copy(src: str, dst: str) -> None:
    """Copy the file or folder tree `src` to `dst` (either may be a gs:// URL)."""
    from etils import epath

    def walk(a: epath.Path, b: epath.Path) -> None:
        if a.is_dir():
            for child in a.iterdir():
                walk(child, b / child.name)
        else:
            b.parent.mkdir(parents=True, exist_ok=True)
            b.write_bytes(a.read_bytes())

    walk(epath.Path(src), epath.Path(dst))


def lock(workdir: str) -> dict:
    """Take the lock, try again (refused: this process holds it), release it."""
    from sassid_jax.io.workdir_lock import LOCK_NAME, WorkdirLockedError, acquire, release

    path = acquire(workdir)
    holder = json.loads(path.read_text())
    try:
        acquire(workdir)
        second = "taken"
    except WorkdirLockedError as e:
        second = str(e)
    release(path)
    return {"holder": holder, "second": second, "released": not (path.parent / LOCK_NAME).exists()}


def mat(folder: str) -> dict:
    """Write a MATLAB v5 file into `folder` and read it back with the v7.3 (HDF5) file the
    caller put there as v73.mat (variable 'x', (2, 3) after MATLAB's axis order)."""
    import numpy as np

    from sassid_jax.io.matfiles import is_hdf5, read_array, write_atomic_mat

    write_atomic_mat(f"{folder}/v5.mat", {"x": np.arange(6, dtype=np.uint8).reshape(2, 3)})
    return {
        name: {
            "hdf5": is_hdf5(f"{folder}/{name}"),
            "x": read_array(f"{folder}/{name}", "x").tolist(),
        }
        for name in ("v5.mat", "v73.mat")
    }


def cli(args: list[str]) -> None:
    """sassid's CLI, optionally stopping (--stop_after=STAGE:STEP first)."""
    from sassid_jax import cli as sassid_cli
    from sassid_jax import train

    if args and args[0].startswith("--stop_after="):
        stage, step = args.pop(0).split("=", 1)[1].split(":")
        train.train_and_evaluate = functools.partial(
            train.train_and_evaluate, stop_after=(stage, int(step))
        )
    sassid_cli.run(["sassid", *args])


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "copy":
        copy(*rest)
    elif command == "lock":
        print(json.dumps(lock(*rest)))
    elif command == "mat":
        print(json.dumps(mat(*rest)))
    else:
        cli(rest)
