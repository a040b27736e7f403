"""The command line: `sassid` (console script) and `python launch.py` (same flags and modes).

  sassid --config configs/default.py --workdir runs/default            # train
  sassid --mode denoise --checkpoint runs/default --input IN --output OUT
  sassid --mode eval --config configs/sidd_validation.py --checkpoint CKPT --output DIR
  sassid --mode submit --config configs/dnd.py --checkpoint CKPT --output DIR
  sassid --mode prepare --config configs/sasl_paper.py --config.dataset.data_dir=gs://b/tfds
  sassid --mode analyze --input PHOTO_OR_FOLDER [--output DIR]        # noise of your photos

Every path flag (--workdir, --checkpoint, --input, --output) and the config's data folders
may be a bucket URL (gs://bucket/run): files go through etils.epath (README, "Scaling out").
`--config` is a local Python file.

Any config field can be overridden (`--config.stages.bnn.steps=1000`), and JAX's own options
are flags too (`--jax_platforms=cpu`, `--jax_compilation_cache_dir=DIR`,
`--jax_default_matmul_precision=highest`; `--helpfull` lists them all).

`--config PATH` is looked up as given (relative to the current directory) first, then
relative to the folder that holds the installed `sassid_jax` and `configs` packages (the
repository root for a checkout or an editable install), so `--config configs/dnd.py` works
from any directory.

Errors: a `UserInputError` (bad config field, file, checkpoint, dataset) and every flag error
(unknown flag, bad value, missing config file, unknown config field) print one line
`error: ...` on stderr and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from sassid_jax import configuration
from sassid_jax.errors import UserInputError
from sassid_jax.logs import quiet_libraries, quiet_native_logs

FLAGS = flags.FLAGS
MODES = ("train", "denoise", "eval", "submit", "prepare", "analyze")
REQUIRED = {
    "train": ("workdir",),
    "denoise": ("checkpoint", "input", "output"),
    "eval": ("checkpoint", "output"),
    "submit": ("checkpoint", "output"),
    "prepare": (),
    "analyze": ("input",),
}
DEFAULT_CONFIG = "configs/default.py"
# The folder holding the sassid_jax and configs packages (a checkout's root, or site-packages).
INSTALL_ROOT = Path(__file__).resolve().parents[1]
EXIT_USER_ERROR = 2
HELP_FLAGS = ("help", "h", "?", "helpshort", "helpfull", "helpxml")
OUR_FLAGS = (
    "config",
    "mode",
    "workdir",
    "allow_config_change",
    "checkpoint",
    "input",
    "output",
    "ensemble",
    "overwrite",
    "tile",
    "max_pixels",
    "coordinator_address",
    "num_processes",
    "process_id",
)


class FlagInputError(UserInputError):
    """A bad command line: unknown flag, bad value, missing config file, unknown field."""


def resolve_config_path(value: str) -> str:
    """`--config` value -> an existing file: as given, else under INSTALL_ROOT.

    A ':' suffix (ml_collections' get_config argument) is kept. FlagInputError if neither
    exists.
    """
    path, sep, arg = value.partition(":")
    if Path(path).expanduser().is_file():
        return str(Path(path).expanduser()) + sep + arg
    if not Path(path).is_absolute() and (INSTALL_ROOT / path).is_file():
        return str(INSTALL_ROOT / path) + sep + arg
    where = {str(Path.cwd())} if Path(path).is_absolute() else {str(Path.cwd()), str(INSTALL_ROOT)}
    raise FlagInputError(
        f"--config: no config file {path!r} (looked in {', '.join(sorted(where))})"
    )


def with_resolved_config(argv: list[str]) -> list[str]:
    """argv with every `--config=PATH` / `--config PATH` replaced by the resolved path."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in ("--config", "-config"):
            if eq:
                out[i] = f"{name}={resolve_config_path(value)}"
            elif i + 1 < len(out):
                out[i + 1] = resolve_config_path(out[i + 1])
    return out


def define_flags(argv: list[str]) -> None:
    """Define our flags (the config flag reads its overrides from argv) and JAX's."""
    try:
        default = resolve_config_path(DEFAULT_CONFIG)
    except FlagInputError:
        default = DEFAULT_CONFIG  # only an error if used (no --config given)
    config_flags.DEFINE_config_file("config", default, "Config file (get_config()).", sys_argv=argv)
    flags.DEFINE_enum(
        "mode",
        "train",
        list(MODES),
        "What to do (prepare: build the config's datasets into dataset.data_dir, then exit).",
    )
    flags.DEFINE_string("workdir", None, "train: run folder (checkpoints, logs, results).")
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "train: resume a workdir even if its config.json differs from --config.",
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "denoise/eval/submit: our run folder (or a checkpoint in it) or an authors' .pth "
        "(eval/submit: config.eval.network picks which).",
    )
    flags.DEFINE_string("input", None, "denoise/analyze: an image file or a folder of images.")
    flags.DEFINE_string(
        "output",
        None,
        "denoise: output file or folder; eval/submit: folder; analyze: folder (default: .).",
    )
    flags.DEFINE_bool("ensemble", False, "denoise: average the 8 flips/rotations (x8 slower).")
    flags.DEFINE_float(
        "colour_sigma",
        None,
        "denoise: keep the input's local mean colour, blur std in pixels (0 = off; default: "
        "the run's postprocess.colour_sigma, 0 for a .pth).",
    )
    flags.DEFINE_enum(
        "safeguard",
        None,
        ["blend", "off", "none"],
        "denoise: blend = mix the output with the input where its estimated PSNR is no better; "
        "off = only warn; none = no estimate (default: the run's postprocess.safeguard).",
    )
    flags.DEFINE_bool("overwrite", False, "denoise: redo outputs that already exist.")
    flags.DEFINE_integer("tile", 1024, "denoise: tile side in pixels (memory ~ tile^2).")
    flags.DEFINE_integer(
        "max_pixels", None, "denoise: largest width x height read (default: Pillow's bomb guard)."
    )
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "multi-process: host:port of process 0; without it SLURM, Open MPI, Cloud TPU and "
        "Kubernetes are detected from the environment; --num_processes=1 forces one process.",
    )
    flags.DEFINE_integer("num_processes", None, "multi-process: number of processes.")
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index.")
    for name in OUR_FLAGS:  # --help lists the main module's key flags: make ours key flags
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    app.define_help_flags()
    jax.config.config_with_absl()


def _unknown_override(argv: list[str]) -> str | None:
    """The first `--config.FIELD` override of argv naming no field of the config, or None."""
    value = None
    for i, item in enumerate(argv):
        name, eq, rest = item.partition("=")
        if name in ("--config", "-config"):
            value = rest if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    path, _, arg = (value or resolve_config_path(DEFAULT_CONFIG)).partition(":")
    spec = importlib.util.spec_from_file_location("sassid_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(*([arg] if arg else []))
    for item in argv:
        name = item.split("=", 1)[0].lstrip("-")
        if name.startswith(("config.", "noconfig.")):
            field = name.split(".", 1)[1]
            try:
                config_path.get_value(field, config)
            except (KeyError, AttributeError, IndexError, ValueError):
                return f"--{name}: {path} has no field {field!r}"
    return None


def _define_and_parse(argv: list[str]) -> list[str]:
    """Define and parse all flags; FlagInputError (one line) for any flag error."""
    try:
        argv = with_resolved_config(argv)
        define_flags(argv)
        return FLAGS(argv)
    except flags.Error as e:  # one line, except a config file's own traceback
        raise FlagInputError(str(e)) from e
    except (KeyError, AttributeError) as e:  # ml_collections: an override of no field
        message = _unknown_override(argv)
        if message is None:
            raise
        raise FlagInputError(message) from e


def _validate(mode: str) -> None:
    """Config checks of `mode` before any work (ConfigError naming the field)."""
    if mode == "train":
        configuration.validate_config(FLAGS.config)
    elif mode in ("eval", "submit"):
        configuration.validate_eval_config(FLAGS.config, mode)
    elif mode == "prepare":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes import prepare

        prepare.check_config(FLAGS.config)


def dispatch(mode: str) -> int:
    """Run `mode` with the parsed flags; returns the exit code."""
    _validate(mode)
    quiet_libraries()
    if mode == "denoise":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes.denoise import run_denoise

        return run_denoise(
            FLAGS.checkpoint,
            FLAGS.input,
            FLAGS.output,
            ensemble=FLAGS.ensemble,
            overwrite=FLAGS.overwrite,
            tile=FLAGS.tile,
            max_pixels=FLAGS.max_pixels,
            colour_sigma=FLAGS.colour_sigma,
            safeguard=FLAGS.safeguard,
        )
    if mode == "analyze":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes.analyze import run_analyze

        return run_analyze(FLAGS.input, FLAGS.output)
    if mode == "eval":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes import evaluate

        evaluate.run_eval(FLAGS.config, FLAGS.checkpoint, FLAGS.output)
    elif mode == "submit":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes import submit

        submit.run_submit(FLAGS.config, FLAGS.checkpoint, FLAGS.output)
    elif mode == "prepare":
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax.modes import prepare

        prepare.run_prepare(
            FLAGS.config, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
    else:
        # late import: only the mode that runs loads its stack (TensorFlow, ...)
        from sassid_jax import train
        from sassid_jax.training import sharding

        sharding.initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
        train.train_and_evaluate(
            FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change
        )
    return 0


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: list[str]) -> int:
    """absl main: check the mode's required flags, then run it; UserInputError -> exit 2."""
    try:
        if len(argv) > 1:
            raise FlagInputError(f"unexpected arguments: {argv[1:]}")
        missing = [f"--{f}" for f in REQUIRED[FLAGS.mode] if not FLAGS[f].value]
        if missing:
            raise FlagInputError(f"--mode {FLAGS.mode} needs {', '.join(missing)}")
        return dispatch(FLAGS.mode)
    except UserInputError as e:
        return _fail(e)


def run(argv: list[str] | None = None) -> None:
    """Entry point of `sassid` and launch.py: parse argv (default sys.argv), run, exit."""
    quiet_native_logs()  # before anything loads TensorFlow
    argv = list(sys.argv if argv is None else argv)
    main_module = sys.modules.get("__main__")
    if main_module is not None and not main_module.__doc__:
        main_module.__doc__ = __doc__  # what --help prints above the flags
    try:
        parsed = _define_and_parse(argv)
    except UserInputError as e:
        sys.exit(_fail(e))
    except SystemExit as e:  # absl's help flags print the usage and exit 1: asked-for help is 0
        asked = any(a.lstrip("-").split("=")[0] in HELP_FLAGS for a in argv[1:])
        sys.exit(0 if asked and e.code == 1 else e.code)
    app.run(main, argv=argv, flags_parser=lambda _: parsed)
