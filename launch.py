"""The one entry point. All logic lives in the sassid_jax library; this file parses flags.

python launch.py --config configs/default.py --workdir runs/default            # train
python launch.py --mode denoise --checkpoint runs/default --input IN --output OUT
python launch.py --mode eval --config configs/sidd_validation.py --checkpoint CKPT --output DIR
python launch.py --mode submit --config configs/dnd.py --checkpoint CKPT --output DIR
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (get_config()).")
flags.DEFINE_enum("mode", "train", ["train", "denoise", "eval", "submit"], "What to do.")
flags.DEFINE_string("workdir", None, "train: run folder (checkpoints, logs, results).")
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "train: resume a workdir even if its config.json differs from --config.",
)
flags.DEFINE_string(
    "checkpoint",
    None,
    "denoise/eval/submit: our run folder (or a checkpoint "
    "in it) or an authors' .pth (eval/submit: config.eval.network picks which).",
)
flags.DEFINE_string("input", None, "denoise: an image file or a folder of images.")
flags.DEFINE_string("output", None, "denoise: output file or folder; eval/submit: folder.")
flags.DEFINE_bool("ensemble", False, "denoise: average the 8 flips/rotations (x8 slower).")
flags.DEFINE_bool("overwrite", False, "denoise: redo outputs that already exist.")
flags.DEFINE_integer("tile", 1024, "denoise: tile side in pixels (memory ~ tile^2).")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "multi-process: host:port of process 0 (else JAX reads SLURM/TPU env).",
)
flags.DEFINE_integer("num_processes", None, "multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "multi-process: this process's index.")

REQUIRED = {
    "train": ("workdir",),
    "denoise": ("checkpoint", "input", "output"),
    "eval": ("checkpoint", "output"),
    "submit": ("checkpoint", "output"),
}


def _run(mode: str) -> int:
    from sassid_jax import evaluate, sharding, submission, train
    from sassid_jax.checkpoint_io import CheckpointInputError
    from sassid_jax.data.sources import DatasetUnavailableError

    try:
        if mode == "eval":
            evaluate.run_eval(FLAGS.config, FLAGS.checkpoint, FLAGS.output)
        elif mode == "submit":
            submission.run_submit(FLAGS.config, FLAGS.checkpoint, FLAGS.output)
        else:
            sharding.initialize_distributed(
                FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
            )
            train.train_and_evaluate(
                FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change
            )
    except (
        ValueError,
        DatasetUnavailableError,
        CheckpointInputError,
        sharding.ClusterJoinError,
    ) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    missing = [f"--{f}" for f in REQUIRED[FLAGS.mode] if not FLAGS[f].value]
    if missing:
        print(f"error: --mode {FLAGS.mode} needs {', '.join(missing)}", file=sys.stderr)
        return 2
    from sassid_jax.logs import quiet_libraries

    quiet_libraries()
    if FLAGS.mode == "denoise":
        from sassid_jax.denoise import run_denoise

        return run_denoise(
            FLAGS.checkpoint,
            FLAGS.input,
            FLAGS.output,
            ensemble=FLAGS.ensemble,
            overwrite=FLAGS.overwrite,
            tile=FLAGS.tile,
        )
    return _run(FLAGS.mode)


if __name__ == "__main__":
    app.run(main)
