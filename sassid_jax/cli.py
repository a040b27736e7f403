"""The command line: `sassid` (console script) and `python launch.py`, the same flags and modes.

`run()` parses the flags (ours, the config's `--config.FIELD=VALUE` overrides, JAX's), runs the
chosen `--mode` and exits; bad input (a `UserInputError` or any flag error) is one line
`error: ...` on stderr and exit code 2, anything else a bug with its traceback. `--help`
prints `usage()`.
`--config configs/X.py` is looked up as given, then among the package's config files
(`sassid_jax.configs`), so it works from any directory.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

import sassid_jax.configs
from sassid_jax import configuration
from sassid_jax.errors import UserInputError
from sassid_jax.logs import quiet_libraries, quiet_native_logs
from sassid_jax.nn import NETWORK_NAMES

FLAGS = flags.FLAGS


class Mode(NamedTuple):
    """One `--mode`: what it does (one line of `--help`) and the flags it needs."""

    summary: str
    required: tuple[str, ...]


MODES = {
    "train": Mode("train the config's networks (BNN -> LAN -> U-Net), evaluate them", ("workdir",)),
    "denoise": Mode(
        "denoise your photos with a trained network", ("checkpoint", "input", "output")
    ),
    "eval": Mode("score one network on the config's evaluation data", ("checkpoint", "output")),
    "submit": Mode("write SIDD or DND benchmark submission files", ("checkpoint", "output")),
    "prepare": Mode("build the config's datasets into dataset.data_dir, then exit", ()),
    "analyze": Mode("measure the noise of your photos (no network needed)", ("input",)),
}
EXAMPLES = (
    "sassid --config configs/default.py --workdir runs/default",
    "sassid --mode denoise --checkpoint runs/default --input photo.png --output out.png",
    "sassid --mode denoise --network lan --checkpoint official_LAN.pth --input IN --output OUT",
    "sassid --mode eval --config configs/sidd_validation.py --checkpoint runs/default --output DIR",
    "sassid --mode analyze --input PHOTO_OR_FOLDER",
)
# --help lists our flags under these headings (absl renders each group as a module's key flags).
FLAG_GROUPS = {
    "every mode": ("mode", "config"),
    "train": ("workdir", "allow_config_change"),
    "paths (denoise, eval, submit, analyze)": ("checkpoint", "input", "output"),
    "denoise": (
        "network",
        "ensemble",
        "colour_sigma",
        "safeguard",
        "overwrite",
        "tile",
        "max_pixels",
    ),
    "multi-process (train, prepare)": ("coordinator_address", "num_processes", "process_id"),
}
DEFAULT_CONFIG = "configs/default.py"
_COMMAND_LINE: list[str] = []  # the argv of `run` (denoise: were --config.* overrides given?)
# The config files: the repository's configs/ folder, or the installed package's copy of it.
CONFIG_DIR = Path(sassid_jax.configs.__path__[0])
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
HELP_FLAGS = ("help", "h", "?", "helpshort", "helpfull", "helpxml")


def usage(full: bool = False) -> str:
    """The text of `--help` (our flags) or, with full, of `--helpfull` (every flag, JAX's too).

    The same for every entry point (`sassid`, `python launch.py`, `cli.run([...])`).
    """
    width = max(len(name) for name in MODES)
    modes = [
        f"  {name:<{width}}  {mode.summary}"
        + (f"; needs {' '.join(f'--{f}' for f in mode.required)}" if mode.required else "")
        for name, mode in MODES.items()
    ]
    lines = [
        "sassid (or python launch.py): self-supervised denoising of real photos (SASL, CVPR 2023).",
        "",
        "usage: sassid [--mode MODE] [--config FILE.py] [--config.FIELD=VALUE ...] [flags]",
        "",
        "modes (--mode; default train):",
        *modes,
        "",
        "examples:",
        *(f"  {example}" for example in EXAMPLES),
        "",
        "Any config field is a flag (--config.stages.bnn.steps=1000); --config is looked up in",
        "the current folder, then in the installed package's. Path flags may be bucket URLs",
        "(gs://...). JAX's options are flags too (--jax_platforms=cpu); --helpfull lists them.",
        "Bad input: one line 'error: ...' on stderr and exit code 2.",
        "",
        "flags:",
        *map(FLAGS.module_help, FLAG_GROUPS),
        "",
    ]
    if full:
        lines += ["every flag, by the module that defines it:", FLAGS.get_help(), ""]
    else:
        lines += ["Try --helpfull to get a list of all flags.", ""]
    return "\n".join(lines)


class _HelpFlag(flags.BooleanFlag):
    """A help flag that prints `usage(full)` on stdout and exits 0."""

    def __init__(self, name: str, full: bool, short_name: str | None = None) -> None:
        text = "show every flag, JAX's too" if full else "show this help"
        super().__init__(name, False, text, short_name=short_name, allow_hide_cpp=True)
        self.full = full

    def parse(self, argument: Any) -> None:
        if self._parse(argument):
            sys.stdout.write(usage(self.full))
            sys.exit(0)


class FlagInputError(UserInputError):
    """A bad command line: unknown flag, bad value, missing config file, unknown field."""


def resolve_config_path(value: str) -> str:
    """`--config` value -> an existing file: as given, else `configs/X` as CONFIG_DIR/X.

    A ':' suffix (ml_collections' get_config argument) is kept. FlagInputError if neither
    exists.
    """
    path, sep, arg = value.partition(":")
    if Path(path).expanduser().is_file():
        return str(Path(path).expanduser()) + sep + arg
    parts = Path(path).parts
    shipped = CONFIG_DIR.joinpath(*parts[1:]) if parts[:1] == ("configs",) else None
    if shipped is not None and shipped.is_file():
        return str(shipped) + sep + arg
    where = {str(Path.cwd())} | ({str(CONFIG_DIR)} if shipped is not None else set())
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
    config_flags.DEFINE_config_file(
        "config", default, "a Python config file (get_config()); see configs/.", sys_argv=argv
    )
    flags.DEFINE_enum(
        "mode",
        "train",
        list(MODES),
        "what to do (the modes are listed above).",
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
        "(the network: denoise --network, eval/submit --config.eval.network).",
    )
    flags.DEFINE_string("input", None, "denoise/analyze: an image file or a folder of images.")
    flags.DEFINE_string(
        "output",
        None,
        "denoise: output file or folder; eval/submit: folder; analyze: folder (default: .).",
    )
    flags.DEFINE_enum(
        "network",
        "unet",
        list(NETWORK_NAMES),
        "denoise: which network of --checkpoint runs (a run folder: the last stage training "
        "it; a .pth must hold it; a .pth BNN runs with blind size 9, the authors'); default: "
        "--config's eval.network (configs/default.py: unet).",
    )
    flags.DEFINE_bool("ensemble", False, "denoise: average the 8 flips/rotations (x8 slower).")
    flags.DEFINE_float(
        "colour_sigma",
        None,
        "denoise: keep the input's local mean colour, blur std in pixels: 0 (off) to 256 and "
        "at most the photo's longer side (default: the run's postprocess.colour_sigma, 0 for "
        "a .pth).",
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
    for group, names in FLAG_GROUPS.items():  # usage() renders each group's key flags
        for name in names:
            FLAGS.register_key_flag_for_module(group, FLAGS[name])
    _define_help_flags()
    jax.config.config_with_absl()


def _define_help_flags() -> None:
    """absl's help flags, with --help (-h), --helpshort (-?) and --helpfull printing usage()."""
    app.define_help_flags()  # also --helpxml and --only_check_args (app.run defines them once)
    for name in ("help", "?", "helpshort", "helpfull"):
        delattr(FLAGS, name)
    flags.DEFINE_flag(_HelpFlag("help", full=False, short_name="h"))
    flags.DEFINE_flag(_HelpFlag("helpshort", full=False, short_name="?"))
    flags.DEFINE_flag(_HelpFlag("helpfull", full=True))


def _field_names(
    config: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = ""
) -> Iterator[str]:
    """The dotted names of every leaf field of a ConfigDict (or nested dict), in order."""
    for key, value in config.items():
        if isinstance(value, (Mapping, ml_collections.ConfigDict)) and value:
            yield from _field_names(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _unknown_override(argv: list[str]) -> str | None:
    """The first `--config.FIELD` override of argv naming no field of the config, as one line
    with the closest field name, or None."""
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
            flag, field = name.split(".", 1)
            try:
                config_path.get_value(field, config)
            except (KeyError, AttributeError, IndexError, ValueError):
                close = difflib.get_close_matches(field, list(_field_names(config)), n=1)
                hint = f"; did you mean --{flag}.{close[0]}?" if close else ""
                return f"--{name}: {path} has no field {field!r}{hint}"
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
            # --network, else the method's eval.network; --config: the method's procedure
            network=FLAGS.network if FLAGS["network"].present else None,
            config=FLAGS.config if FLAGS["config"].present or _overrides() else None,
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
        try:
            train.train_and_evaluate(
                FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change
            )
        except train.Interrupted as e:  # Ctrl-C: where it stopped and how to resume
            print(f"interrupted: {e}", file=sys.stderr)
            return EXIT_INTERRUPTED
    return 0


def _overrides() -> bool:
    """Whether the command line gives `--config.FIELD=VALUE` overrides (they make --config's
    config, the default one when no file is named, the one denoise uses)."""
    return any(a.lstrip("-").startswith(("config.", "noconfig.")) for a in _COMMAND_LINE[1:])


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: list[str]) -> int:
    """absl main: check the mode's required flags, then run it; UserInputError -> exit 2."""
    try:
        if len(argv) > 1:
            raise FlagInputError(f"unexpected arguments: {argv[1:]}")
        missing = [f"--{f}" for f in MODES[FLAGS.mode].required if not FLAGS[f].value]
        if missing:
            raise FlagInputError(f"--mode {FLAGS.mode} needs {', '.join(missing)}")
        return dispatch(FLAGS.mode)
    except UserInputError as e:
        return _fail(e)
    except KeyboardInterrupt:  # Ctrl-C outside a run's loop (set-up, another mode)
        print(f"interrupted (--mode {FLAGS.mode}): nothing more was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: list[str] | None = None) -> None:
    """Entry point of `sassid` and launch.py: parse argv (default sys.argv), run, exit."""
    quiet_native_logs()  # before anything loads TensorFlow
    argv = list(sys.argv if argv is None else argv)
    _COMMAND_LINE[:] = argv
    try:
        parsed = _define_and_parse(argv)
    except UserInputError as e:
        sys.exit(_fail(e))
    except SystemExit as e:  # absl's --helpxml prints and exits 1: asked-for help is 0
        asked = any(a.lstrip("-").split("=")[0] in HELP_FLAGS for a in argv[1:])
        sys.exit(0 if asked and e.code == 1 else e.code)
    app.run(main, argv=argv, flags_parser=lambda _: parsed)
